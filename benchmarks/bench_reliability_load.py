"""Reliability under load (issue 15): the ``## Load`` section of docs/reliability.md.

A small toy model is trained and exported here (mf-bpr, one epoch on synthetic interactions, HNSW
index); ``segue serve``'s ``serve()`` runs in one process pinned to CPU 0 (``taskset -c 0``), and a
load generator in a second process (pinned to CPU 1 where there is one) keeps 1, 8 and 32 clients
busy with ``GET /recommend?user=&k=10`` for a fixed time, with and without one more client sending
the most expensive requests the server accepts (``POST /recommend`` with the maximum 1,000 items at
k=100, alternating with 100 items at the maximum k=1,000: k × items at the 100,000 bound). Two more
rows run 8 clients against the limits before issue 15 (10,000 items at k=1,000 accepted). It prints
p50 / p99 latency of the ordinary clients, their throughput and errors, and the expensive client's
own count and latency.

Usage::

    python benchmarks/bench_reliability_load.py            # print the section (about a minute)
    python benchmarks/bench_reliability_load.py --write    # also replace "## Load" in docs/reliability.md

:func:`load_section` returns the section's Markdown, for ``benchmarks/bench_reliability.py`` to include.
Numbers depend on the machine and on what else runs on it; the section says what the load average was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the toy model ------------------------------------------------------------------------------
def build_export(work: Path, n_users: int = 3000, n_items: int = 2000, per_user: int = 30) -> Path:
    """Train mf-bpr for one epoch on synthetic interactions (popularity-skewed, two taste clusters), export it."""
    import pandas as pd

    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import get_protocol
    from segue.pipeline import run
    from segue.serving.export import export_run
    from segue.training.trainer import TrainConfig

    rng = np.random.default_rng(0)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rows = []
    for u in range(n_users):
        half = u % 2
        w = pop * np.where((np.arange(n_items) < n_items // 2) == (half == 0), 3.0, 1.0)
        items = rng.choice(n_items, size=per_user, replace=False, p=w / w.sum())
        rows += [(f"u{u}", f"i{i}", float(t)) for t, i in enumerate(items)]
    frame = pd.DataFrame(rows, columns=["user", "item", "ts"])
    data = Interactions.from_frame(frame, timestamp="ts", name="synthetic")
    proto = get_protocol("loo-sampled", n_negatives=10)
    run_dir = work / "run"
    run("mf-bpr", data, protocol=proto, train_config=TrainConfig(epochs=1, progress=False), out=run_dir, log=None)
    return export_run(run_dir, work / "export", index="hnsw", m=16, ef_search=64)


# -- the load generator (second process) ------------------------------------------------------------
def _request(port: int, path: str, body: bytes | None) -> bytes:
    head = f"{'GET' if body is None else 'POST'} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    return (head + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytearray]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        body += chunk
    return status, body[length:]


def _client_loop(port: int, requests: list[bytes], stop: threading.Event, out: dict[str, Any]) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    lat, errors, i = [], 0, 0
    while not stop.is_set():
        t0 = time.perf_counter()
        sock.sendall(requests[i % len(requests)])
        status, buf = _read_response(sock, buf)
        lat.append((time.perf_counter() - t0) * 1e3)
        errors += status != 200
        i += 1
    sock.close()
    out["lat"], out["errors"] = lat, errors


def client_main(plan_file: str) -> None:
    """Run every row of the plan: ``clients`` ordinary clients (and maybe one expensive one) for ``seconds``."""
    plan = json.loads(Path(plan_file).read_text())
    port = plan["port"]
    ordinary = [_request(port, p, None) for p in plan["paths"]]
    expensive = [_request(port, "/recommend", b.encode()) for b in plan["expensive"]]
    results = []
    for row in plan["rows"]:
        stop = threading.Event()
        outs: list[dict[str, Any]] = [{} for _ in range(row["clients"])]
        threads = [
            threading.Thread(target=_client_loop, args=(port, ordinary[c * 97 :] + ordinary[: c * 97], stop, outs[c]))
            for c in range(row["clients"])
        ]
        heavy: dict[str, Any] = {}
        if row["expensive"]:
            threads.append(threading.Thread(target=_client_loop, args=(port, expensive, stop, heavy)))
        for t in threads:
            t.start()
        time.sleep(row["seconds"])
        stop.set()
        for t in threads:
            t.join()
        lat = np.concatenate([np.asarray(o["lat"]) for o in outs])
        res = {
            **row,
            "requests": len(lat),
            "errors": int(sum(o["errors"] for o in outs)),
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "rps": len(lat) / row["seconds"],
        }
        if heavy:
            h = np.asarray(heavy["lat"])
            res |= {"heavy_requests": len(h), "heavy_errors": heavy["errors"], "heavy_p50_ms": float(np.median(h))}
        results.append(res)
    sys.stdout.write(json.dumps(results) + "\n")


# -- section: load ------------------------------------------------------------------------------------
def _pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and cpu < (os.cpu_count() or 1):
        return ["taskset", "-c", str(cpu)]
    return []


def _load_rows(
    export: Path,
    settings: str,
    paths: list[str],
    expensive: list[str],
    rows: list[dict[str, Any]],
    work: Path,
    env: dict[str, str],
) -> list[dict[str, Any]]:
    """Start ``serve(export, settings=SETTINGS)`` pinned to CPU 0, run the rows from a second process, stop it."""
    port = _free_port()
    code = (
        f"from segue.serving.app import ServerSettings, serve; serve({str(export)!r}, port={port}, settings={settings})"
    )
    server = subprocess.Popen([*_pin(0), sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(_request(port, "/health", None))
                    if _read_response(s, bytearray())[0] == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        plan = {"port": port, "paths": paths, "expensive": expensive, "rows": rows}
        client = [*_pin(1), sys.executable, __file__, "--client"]
        # warm-up (first-request paths, caches), then the rows
        (work / "warm.json").write_text(json.dumps({**plan, "rows": [{"clients": 2, "expensive": True, "seconds": 1}]}))
        subprocess.run([*client, str(work / "warm.json")], env=env, check=True, capture_output=True)
        (work / "plan.json").write_text(json.dumps(plan))
        out = subprocess.run([*client, str(work / "plan.json")], env=env, check=True, capture_output=True, text=True)
        return list(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(10)


COMMAND = "python benchmarks/bench_reliability.py --write"  # the whole page; this script alone: its --write
DOC = ROOT / "docs" / "reliability.md"


def load_section(seconds: float = 4.0, clients: tuple[int, ...] = (1, 8, 32), compare_unbounded: bool = True) -> str:
    """Run the load benchmark and return the Markdown body of the ``## Load`` section."""
    from segue.serving.app import MAX_ITEMS, MAX_K, MAX_WORK
    from segue.serving.export import ServingModel

    t_start = time.time()
    work = Path(tempfile.mkdtemp(prefix="segue-reliability-"))
    try:
        export = build_export(work)
        sm = ServingModel.load(export)
        t_built = time.time() - t_start
        rng = np.random.default_rng(1)
        users = sm.user_map.raw.astype(str)
        items = sm.item_map.raw.astype(str)
        paths = [f"/recommend?user={u}&k=10" for u in rng.choice(users, 5000)]
        # the most expensive requests the default limits accept: k x items at the MAX_WORK bound
        shapes = [(MAX_ITEMS, MAX_WORK // MAX_ITEMS), (MAX_WORK // MAX_K, MAX_K)]
        expensive = [
            json.dumps({"items": rng.choice(items, n, replace=False).tolist(), "k": min(k, sm.n_items)})
            for n, k in shapes * 10
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        rows = [{"clients": c, "expensive": e, "seconds": seconds} for c in clients for e in (False, True)]
        results = _load_rows(export, "None", paths, expensive, rows, work, env)
        if compare_unbounded:
            # the limits before issue 15: 10,000 items, k up to 1,000 and no k x items bound (the expensive client
            # then sends 10,000 items at k=1,000)
            old = "ServerSettings(max_items=10_000, max_work=10**7, max_body_bytes=1 << 24)"
            huge = [json.dumps({"items": rng.choice(items, 10_000).tolist(), "k": MAX_K}) for _ in range(4)]
            rows = [{"clients": 8, "expensive": e, "seconds": seconds} for e in (False, True)]
            for r in _load_rows(export, old, paths, huge, rows, work, env):
                results.append({**r, "limits": "before issue 15"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n_req = sum(r["requests"] + r.get("heavy_requests", 0) for r in results)
    table = []
    for r in results:
        heavy = "-"
        if r["expensive"]:
            heavy = f"{r['heavy_requests']} ({r['heavy_errors']} non-200), p50 {r['heavy_p50_ms']:.0f} ms"
        head = [r["clients"], "yes" if r["expensive"] else "no", r["requests"], r["errors"]]
        table.append([r.get("limits", "default"), *head, r["p50_ms"], r["p99_ms"], r["rps"], heavy])
    cols = ["limits", "clients", "+1 expensive client", "requests", "non-200", "p50 ms", "p99 ms", "requests/s"]
    return (
        f"mf-bpr toy ({sm.n_users:,} users, {sm.n_items:,} items, dim {sm.metadata['dim']}, HNSW) served by `serve()` "
        f"in one process{' pinned to CPU 0' if _pin(0) else ''}, the load generator in another "
        f"{'pinned to CPU 1' if _pin(1) else '(unpinned)'}; {seconds:g} s of closed-loop load per row, "
        f"{n_req:,} requests in all; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end. "
        "p50 / p99 are the ordinary clients' (GET /recommend, k=10); the last column is the expensive client's.\n\n"
        f"Command: `{COMMAND}` ({time.time() - t_start:.0f} s, model built in {t_built:.0f} s).\n\n"
        + _table([*cols, "expensive requests"], table)
    )


def write_doc(body: str) -> None:
    """Replace (or add) the ``## Load`` section of docs/reliability.md, keeping the others."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_reliability import write_doc as write_sections

    write_sections({"Load": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="Seconds of load per row.")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="Concurrent ordinary clients.")
    ap.add_argument(
        "--compare-unbounded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also run 8 clients against the limits before issue 15 (10,000 items, no k x items bound).",
    )
    ap.add_argument("--write", action="store_true", help='Replace the "## Load" section of docs/reliability.md.')
    ap.add_argument("--client", help=argparse.SUPPRESS)  # internal: run as the load generator
    args = ap.parse_args()
    if args.client:
        client_main(args.client)
        return
    sys.path.insert(0, str(ROOT))
    body = load_section(args.seconds, tuple(args.clients), args.compare_unbounded)
    print(body)
    if args.write:
        write_doc(body)


if __name__ == "__main__":
    main()
