"""Serving benchmark: ANN recall against exact search, HTTP latency under load, and a 1M-item index.

Prints Markdown tables (copied into docs/serving.md with the command that made them):

1. **ml-1m model** (mf-bpr; trained here for a few epochs unless ``--run-dir`` is given),
   exported with an HNSW index: recall@10 of HNSW against exact search over every user,
   with and without excluding the consumed items; both inner-product strategies (plain
   inner-product graph vs the L2 transform); in-process query latency of HNSW and exact.
2. **HTTP**: ``segue serve`` in one process, a load generator in a second process
   (threads with keep-alive ``http.client`` connections, a fixed number of requests):
   p50 / p99 latency and throughput of ``GET /recommend`` at 1, 8 and 32 concurrent clients
   (plus ``POST /recommend`` and ``GET /similar`` at 8).
3. **1M random items** (standard normal, dimension 64, inner product): HNSW build time,
   recall@10 and single-query latency for several ``ef_search``, and memory (faiss' own
   accounting, the file size, and the resident-memory growth of a fresh process loading it).

Usage::

    python benchmarks/bench_serving.py --quick            # ml-100k, 100k random items, few requests
    python benchmarks/bench_serving.py                    # ml-1m, 1,000,000 random items
    python benchmarks/bench_serving.py --run-dir runs/mf-ml-1m --skip-random

Numbers depend on the machine and on what else runs on it; the docs give the machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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


# -- helpers -----------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _per_query_ms(fn: Any, queries: np.ndarray, repeat: int) -> tuple[float, float]:
    """Median and p99 milliseconds of ``fn(q[None])`` over ``repeat`` single queries."""
    times = []
    for i in range(repeat):
        q = queries[i % len(queries)][None, :]
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 99))


# -- 1. the ml-1m model --------------------------------------------------------------------
def train_run(dataset: str, epochs: int, out: Path) -> Path:
    from segue.data.datasets import load_dataset
    from segue.pipeline import run
    from segue.training.trainer import TrainConfig

    if (out / "config.json").exists():
        print(f"re-using run directory {out}")
        return out
    t0 = time.perf_counter()
    data = load_dataset(dataset, progress=False)
    run("mf-bpr", data, train_config=TrainConfig(epochs=epochs, progress=False), out=out, overwrite=True, log=None)
    print(f"trained mf-bpr on {dataset} for {epochs} epochs in {time.perf_counter() - t0:.0f}s -> {out}")
    return out


def bench_model(run_dir: Path, export_dir: Path, args: argparse.Namespace) -> Path:
    from segue.serving.export import ServingModel, export_run
    from segue.serving.index import VectorIndex

    t0 = time.perf_counter()
    export_run(
        run_dir,
        export_dir,
        index="hnsw",
        m=args.m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
        overwrite=True,
        threads=2,
    )
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sm = ServingModel.load(export_dir, threads=1)
    load_s = time.perf_counter() - t0
    meta = sm.metadata
    if args.skip_model:
        return export_dir
    assert sm.index is not None and sm.user_vectors is not None
    users = np.arange(1, sm.n_users + 1)
    uq = np.asarray(sm.user_vectors[users])
    seen = [sm._seen(u) for u in users]
    items = np.asarray(sm.index.vectors)
    print(
        f"\n## 1. {meta['model']} on {meta['dataset']}: {sm.n_users} users, {sm.n_items} items, dim {meta['dim']}"
        f" (export {export_s:.1f}s incl. HNSW build {meta['index']['build_seconds']:.1f}s, load {load_s * 1e3:.0f} ms)\n"
    )
    rows = []
    for ef in sorted({32, 64, args.ef_search, 256}):
        sm.index.set_ef_search(ef)
        r_plain = sm.index.recall(uq, 10)
        r_seen = sm.index.recall(uq, 10, seen)
        got = sm.index.search(uq, 10, seen)
        med, p99 = _per_query_ms(lambda q, s=sm.index: s.search(q, 10), uq, args.latency_queries)
        rows.append([ef, r_plain, r_seen, f"{got.exact.mean():.1%}", med, p99])
    sm.index.set_ef_search(args.ef_search)
    emed, ep99 = _per_query_ms(lambda q: sm.index.search(q, 10, exact=True), uq, args.latency_queries)
    rows.append(["exact", 1.0, 1.0, "100%", emed, ep99])
    strategy = meta["index"].get("dot_strategy")
    print(f"HNSW (m={args.m}, ef_construction={args.ef_construction}, dot strategy {strategy}) against exact search:")
    print(
        _table(
            [
                "ef_search",
                "recall@10 (all users)",
                "recall@10 (seen excluded)",
                "exact fallback",
                "ms/query p50",
                "ms/query p99",
            ],
            rows,
        )
    )
    rows = []
    for strat in ("ip", "l2-transform"):
        vi = VectorIndex.build(
            items, "dot", "hnsw", m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search,
            dot_strategy=strat, threads=2,
        )  # fmt: skip
        rows.append([strat, vi.recall(uq, 10), vi.recall(items, 10)])
    print(f"\nInner-product strategies on the same item vectors (ef_search={args.ef_search}):")
    print(_table(["strategy", "recall@10 user queries", "recall@10 item queries"], rows))
    args.vectors_for_comparison = (items.copy(), uq.copy())
    return export_dir


# -- 2. HTTP load test ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request_bytes(host: str, port: int, path: str, body: bytes | None) -> bytes:
    head = f"{'GET' if body is None else 'POST'} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytearray]:
    """Read one HTTP/1.1 response with a Content-Length body from a keep-alive socket; (status, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    i = head.index(b"content-length:") + 15
    length = int(head[i : head.index(b"\r\n", i)])
    while len(buf) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    return status, buf[end + length :]


def run_clients(host: str, port: int, paths: list[str], bodies: list[bytes | None], clients: int) -> dict[str, Any]:
    """Fire ``len(paths)`` requests from ``clients`` threads over keep-alive connections.

    The client is deliberately minimal (pre-encoded requests, raw sockets) so that on a 2-core
    machine the load generator takes as little CPU from the server as possible.
    """
    per = len(paths) // clients
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)
    requests = [_request_bytes(host, port, p, b) for p, b in zip(paths, bodies, strict=True)]

    def worker(c: int) -> None:
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        barrier.wait()
        for i in range(c * per, (c + 1) * per):
            t0 = time.perf_counter()
            sock.sendall(requests[i])
            status, buf = _read_response(sock, buf)
            lat[c].append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                errors[c] += 1
        sock.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = np.concatenate([np.asarray(x) for x in lat])
    return {
        "requests": len(all_lat),
        "errors": int(sum(errors)),
        "p50_ms": float(np.percentile(all_lat, 50)),
        "p99_ms": float(np.percentile(all_lat, 99)),
        "mean_ms": float(all_lat.mean()),
        "throughput_rps": len(all_lat) / wall,
    }


def client_main(args: argparse.Namespace) -> None:
    """Entry point of the load-generator process: read the request plan, fire it, print JSON."""
    plan = json.loads(Path(args.client).read_text())
    bodies = [None if b is None else b.encode() for b in plan["bodies"]]
    # warm-up: connections, caches, the server's first-request paths
    run_clients(plan["host"], plan["port"], plan["paths"][:200], bodies[:200], 1)
    res = run_clients(plan["host"], plan["port"], plan["paths"], bodies, plan["clients"])
    sys.stdout.write(json.dumps(res) + "\n")


def bench_http(export_dir: Path, args: argparse.Namespace) -> None:
    from segue.serving.export import ServingModel

    sm = ServingModel.load(export_dir)
    rng = np.random.default_rng(0)
    raw_users = sm.user_map.raw.astype(str)
    raw_items = sm.item_map.raw.astype(str)
    port = _free_port()
    renice = (lambda: os.nice(args.nice)) if args.nice else None  # negative values need privileges
    server = subprocess.Popen(
        [sys.executable, "-c", f"from segue.serving.app import serve; serve({str(export_dir)!r}, port={port})"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        preexec_fn=renice,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        rss = _proc_rss_mb(server.pid)
        import importlib.util

        stack = (
            "httptools + uvloop"
            if importlib.util.find_spec("httptools") and importlib.util.find_spec("uvloop")
            else "h11 + asyncio"
        )
        print(
            f"\n## 2. HTTP on loopback: `segue serve` (1 process, uvicorn with {stack}, server RSS {rss:.0f} MB) and a load "
            f"generator in a second process; {args.requests} requests per row after 200 warm-up requests"
            f"{f'; both processes at nice {args.nice}' if args.nice else ''}\n"
        )
        rows = []
        plans: list[tuple[str, int, list[str], list[str | None]]] = []
        n = args.requests
        users = rng.choice(raw_users, n)
        user_paths = [f"/recommend?user={u}&k=10" for u in users]
        for c in args.clients:
            plans.append(("GET /recommend?user=&k=10", c, user_paths, [None] * n))
        sims = rng.choice(raw_items, n)
        plans.append(("GET /similar?item=&k=10", 8, [f"/similar?item={i}&k=10" for i in sims], [None] * n))
        bodies = [json.dumps({"items": rng.choice(raw_items, 20, replace=False).tolist(), "k": 10}) for _ in range(n)]
        plans.append(("POST /recommend (20 items)", 8, ["/recommend"] * n, bodies))
        for label, clients, paths, bods in plans:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump({"host": "127.0.0.1", "port": port, "clients": clients, "paths": paths, "bodies": bods}, f)
            cpu0 = _proc_cpu_s(server.pid)
            out = subprocess.run(
                [sys.executable, __file__, "--client", f.name],
                capture_output=True,
                text=True,
                check=True,
                preexec_fn=renice,
            )
            server_cpu_ms = (_proc_cpu_s(server.pid) - cpu0) / (len(paths) + 200) * 1e3  # incl. warm-up
            os.unlink(f.name)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(
                [
                    label,
                    clients,
                    res["requests"],
                    res["errors"],
                    res["p50_ms"],
                    res["p99_ms"],
                    res["throughput_rps"],
                    server_cpu_ms,
                    f"{os.getloadavg()[0]:.1f}",
                ]
            )
            print(f"  {label} x{clients}: p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms", file=sys.stderr)
        print(
            _table(
                [
                    "request",
                    "clients",
                    "requests",
                    "non-200",
                    "p50 ms",
                    "p99 ms",
                    "requests/s",
                    "server CPU ms/request",
                    "load avg (1 min)",
                ],
                rows,
            )
        )
    finally:
        server.terminate()
        server.wait(10)


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- 3. 1M random items ---------------------------------------------------------------------
def bench_libraries(args: argparse.Namespace, item_vectors: np.ndarray | None, user_queries: np.ndarray | None) -> None:
    """faiss HNSW against hnswlib, same graph parameters, both plain inner-product graphs."""
    try:
        import hnswlib
    except ImportError:
        print("\n(hnswlib is not installed: library comparison skipped)")
        return
    from segue.serving.index import VectorIndex, set_threads

    rng = np.random.default_rng(1)
    sets = []
    if item_vectors is not None and user_queries is not None:
        sets.append(("ml-1m mf-bpr items", item_vectors, user_queries))
    n = args.compare_n
    sets.append((f"{n:,} random (dim {args.dim})", rng.standard_normal((n, args.dim), dtype=np.float32), None))
    print(f"\n## 4. faiss vs hnswlib: HNSW m={args.m}, ef_construction={args.ef_construction}, inner product\n")
    rows = []
    for name, x, q in sets:
        if q is None:
            q = rng.standard_normal((args.random_queries, x.shape[1]), dtype=np.float32)
        set_threads(2)
        t0 = time.perf_counter()
        fa = VectorIndex.build(
            x, "dot", "hnsw", m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search,
            dot_strategy="ip",
        )  # fmt: skip
        fa_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        hn = hnswlib.Index(space="ip", dim=x.shape[1])
        hn.init_index(max_elements=len(x), ef_construction=args.ef_construction, M=args.m, random_seed=0)
        hn.set_num_threads(2)
        hn.add_items(x, np.arange(len(x)))
        hn_build = time.perf_counter() - t0
        set_threads(1)
        hn.set_num_threads(1)
        ref = fa.search(q, 10, exact=True).ids - 1
        for ef in (64, args.ef_search, 256):
            fa.set_ef_search(ef)
            hn.set_ef(ef)
            f_rec = float(
                np.mean([len(np.intersect1d(a - 1, b)) / 10 for a, b in zip(fa.search(q, 10).ids, ref, strict=True)])
            )
            h_rec = float(
                np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(hn.knn_query(q, k=10)[0], ref, strict=True)])
            )
            f_ms, _ = _per_query_ms(lambda v, f=fa: f.index.search(v, 10), q, args.latency_queries)
            h_ms, _ = _per_query_ms(lambda v, h=hn: h.knn_query(v, k=10), q, args.latency_queries)
            rows.append([name, ef, f_rec, h_rec, f_ms, h_ms, f"{fa_build:.1f} / {hn_build:.1f}"])
    print(
        _table(
            [
                "vectors",
                "ef",
                "recall@10 faiss",
                "recall@10 hnswlib",
                "ms/query faiss",
                "ms/query hnswlib",
                "build s (faiss / hnswlib)",
            ],
            rows,
        )
    )


def bench_random(args: argparse.Namespace, work: Path) -> None:
    import faiss

    from segue.serving.index import VectorIndex, _choose_dot_strategy, _l2_transform, set_threads

    n, d, m, efc = args.n_random, args.dim, args.m, args.random_ef_construction
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((args.random_queries, d), dtype=np.float32)
    print(f"\n## 3. {n:,} random items (standard normal, seed 0, dim {d}), inner product\n")
    set_threads(2)
    t0 = time.perf_counter()
    strategy, recalls = _choose_dot_strategy(x, queries, m, efc, args.ef_search)
    print(
        f"dot strategy chosen on a 20,000-item sample: {strategy} (sample recall@10 {recalls}, "
        f"{time.perf_counter() - t0:.0f}s)"
    )
    path = work / f"random-n{n}-d{d}-m{m}-efc{efc}-{strategy}.faiss"
    if path.exists() and path.with_suffix(".json").exists():
        vi = VectorIndex.load(path)
        print(f"re-using the index built earlier with the same data and parameters: {path}")
    else:
        stored, top = _l2_transform(x) if strategy == "l2-transform" else (x, None)
        metric = faiss.METRIC_L2 if strategy == "l2-transform" else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexHNSWFlat(stored.shape[1], m, metric)
        index.hnsw.efConstruction = efc
        t0 = time.perf_counter()
        chunk = 50_000
        for start in range(0, n, chunk):  # in chunks, so that --max-build-seconds caps the build
            index.add(stored[start : start + chunk])
            if time.perf_counter() - t0 > args.max_build_seconds and start + chunk < n:
                print(f"build capped at {args.max_build_seconds:.0f}s: {index.ntotal:,} of {n:,} items indexed")
                break
        params: dict[str, Any] = {"m": m, "ef_construction": efc, "ef_search": args.ef_search, "dot_strategy": strategy}
        if top is not None:
            params["max_sq_norm"] = top
        params["build_seconds"] = round(time.perf_counter() - t0, 1)
        vi = VectorIndex(index, "hnsw", "dot", params)
        vi.save(path)
    print(
        f"HNSW build: {vi.params.get('build_seconds', float('nan')):.0f}s for {vi.n:,} items "
        f"(m={m}, ef_construction={efc}, 2 threads)"
    )
    set_threads(1)
    t0 = time.perf_counter()
    ref = vi.search(queries, 10, exact=True).ids
    exact_ms = (time.perf_counter() - t0) / len(queries) * 1e3
    rows = []
    for ef in args.ef_sweep:
        vi.set_ef_search(ef)
        got = vi.search(queries, 10).ids
        rec = float(np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(got, ref, strict=True)]))
        med, p99 = _per_query_ms(lambda q: vi.search(q, 10), queries, args.latency_queries)
        rows.append([ef, rec, med, p99])
    emed, ep99 = _per_query_ms(lambda q: vi.search(q, 10, exact=True), queries, min(50, args.latency_queries))
    rows.append(["exact", 1.0, emed, ep99])
    print(f"recall@10 against exact search ({len(queries)} random queries); single-query latency, 1 thread:")
    print(_table(["ef_search", "recall@10", "ms/query p50", "ms/query p99"], rows))
    print(f"(exact search batched over all {len(queries)} queries: {exact_ms:.1f} ms/query)")
    out = subprocess.run(
        [sys.executable, __file__, "--probe-load", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    vec_mib = vi.n * (vi.dim + (1 if vi.transform else 0)) * 4 / 2**20
    print(
        f"\nMemory: faiss accounting {vi.memory_bytes() / 2**20:.0f} MiB (vectors {vec_mib:.0f} MiB + graph), "
        f"file {path.stat().st_size / 2**20:.0f} MiB, resident-memory growth of a fresh process loading it "
        f"{float(out[0]):.0f} MiB (load {float(out[1]):.1f}s)"
    )


def probe_load(path: str) -> None:
    """Entry point of the memory probe: resident-memory growth and time of loading one index, in a fresh process."""
    import faiss  # noqa: F401  (the library itself is not part of the index's memory)

    from segue.serving.index import VectorIndex

    r0, t0 = _rss_mb(), time.perf_counter()
    vi = VectorIndex.load(path)
    sys.stdout.write(f"{_rss_mb() - r0} {time.perf_counter() - t0} {vi.n}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="ml-100k, 100k random items, fewer requests.")
    p.add_argument("--run-dir", type=Path, help="An mf-bpr (or any vector model) run directory to use.")
    p.add_argument("--dataset", default=None, help="Dataset to train on without --run-dir (default ml-1m).")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "segue-bench-serving")
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef-search", type=int, default=128)
    p.add_argument("--requests", type=int, default=None, help="Requests per load-test row (default 4000; quick 1000).")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--latency-queries", type=int, default=500)
    p.add_argument("--n-random", type=int, default=None, help="Random items (default 1,000,000; quick 100,000).")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--random-queries", type=int, default=300)
    p.add_argument("--ef-sweep", type=int, nargs="+", default=[64, 128, 256, 512, 768, 1024])
    p.add_argument("--random-ef-construction", type=int, default=80, help="HNSW build breadth for the random set.")
    p.add_argument("--max-build-seconds", type=float, default=1800)
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="Niceness of the server and load-generator processes (e.g. -10 to approximate a dedicated machine).",
    )
    p.add_argument("--compare-libraries", action="store_true", help="Also time hnswlib against faiss (if installed).")
    p.add_argument("--compare-n", type=int, default=100_000, help="Random items for the library comparison.")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--skip-random", action="store_true")
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--probe-load", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        client_main(args)
        return
    if args.probe_load:
        probe_load(args.probe_load)
        return
    import torch

    torch.set_num_threads(1)
    args.requests = args.requests or (1000 if args.quick else 4000)
    args.n_random = args.n_random or (100_000 if args.quick else 1_000_000)
    dataset = args.dataset or ("ml-100k" if args.quick else "ml-1m")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    print(f"# segue serving benchmark ({os.cpu_count()} cores; command: python {' '.join(sys.argv)})")
    print(f"load average at start (other jobs on this machine): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    export_dir = work / f"export-{dataset}"
    if not (args.skip_model and args.skip_http):
        run_dir = args.run_dir or train_run(dataset, args.epochs, work / f"run-mf-bpr-{dataset}")
        bench_model(run_dir, export_dir, args)
        if not args.skip_http:
            bench_http(export_dir, args)
    if not args.skip_random:
        bench_random(args, work)
    if args.compare_libraries:
        bench_libraries(args, *getattr(args, "vectors_for_comparison", (None, None)))


if __name__ == "__main__":
    main()
