"""CoSeRNN benchmark: training throughput and the end-to-end latency of the session-start recommend query.

Prints Markdown tables:

1. **Training throughput** on the synthetic generator (:func:`segue.data.sessions.synthetic_log`):
   sessions per second through forward + backward + Adam, for the small configuration of the
   results table (LSTM 64, FC 64, batch 16) and the paper's sizes (LSTM 400, FC 200, batch 256).
2. **Recommend latency**: a trained model behind :class:`segue.serving.cosernn.SessionService`,
   random (user, context) requests: the model step (one LSTM step from the cached state), the
   index search and the whole call, p50 / p95 in milliseconds, for the HNSW and the exact index;
   then ``POST /recommend`` over HTTP (uvicorn serving the app from a thread of this process, one
   keep-alive ``http.client`` connection: parsing, validation, the query, JSON, loopback TCP),
   and the index search alone over a 100,000-track catalogue of random unit
   vectors (the paper's catalogue has millions of tracks; ours has 1,000).

Usage::

    python benchmarks/bench_cosernn.py            # 300 users, 3 epochs each, 2,000 requests
    python benchmarks/bench_cosernn.py --quick    # 100 users, 1 epoch, 300 requests

One thread (``torch.set_num_threads(1)``, faiss 1 thread). Numbers depend on the machine and on
what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from segue.data.sessions import TRAIN, build_sessions, synthetic_log, temporal_split
from segue.models.cosernn import CoSeRNNConfig, Word2VecConfig, build_cosernn, session_inputs, train_track_embeddings
from segue.serving.index import VectorIndex, set_threads
from segue.training.cosernn import fit_cosernn


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else f"{v:,.0f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _pct(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--catalogue", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.epochs, args.requests, args.catalogue = 100, 1, 300, 20_000
    torch.set_num_threads(1)
    set_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread")

    t0 = time.perf_counter()
    log = synthetic_log(n_users=args.users, seed=0)
    data = build_sessions(log, name="synthetic")
    labels = temporal_split(data)
    vectors = train_track_embeddings(
        [data.tracks[i] for i in np.flatnonzero(labels == TRAIN)], data.n_tracks_vocab, Word2VecConfig()
    )
    inputs = session_inputs(data, vectors)
    prep = time.perf_counter() - t0
    print(
        f"\nsynthetic: {data.n_users} users, {len(data)} sessions, {data.n_tracks_vocab} tracks (prep {prep:.1f} s)\n"
    )

    rows = []
    models = {}
    for label, kw in (
        ("small (LSTM 64, FC 64, batch 16)", {"hidden": 64, "width": 64, "batch_size": 16, "lr": 0.005}),
        ("paper sizes (LSTM 400, FC 200, batch 256)", {"hidden": 400, "width": 200, "batch_size": 256, "lr": 0.0005}),
    ):
        torch.manual_seed(0)
        net = build_cosernn(inputs, CoSeRNNConfig(**kw, epochs=args.epochs, patience=args.epochs))
        hist = fit_cosernn(net, inputs, labels)
        n_params = sum(p.numel() for p in net.parameters())
        per_epoch = float(np.mean([e["seconds"] for e in hist.epochs]))
        rows.append([label, n_params, len(hist.epochs), per_epoch, hist.train_sessions_per_second])
        models[label] = net
    print("Training throughput (forward + backward + Adam; validation excluded from sessions/s):\n")
    print(_table(["configuration", "parameters", "epochs", "s / epoch", "sessions / s"], rows))

    from segue.serving.cosernn import SessionService

    rng = np.random.default_rng(0)
    users = rng.integers(1, data.n_users + 1, args.requests)
    raw = data.user_map.to_raw(users)
    hours, dows = rng.integers(0, 24, args.requests), rng.integers(0, 7, args.requests)
    devices = rng.choice(np.asarray(data.device_vocab[1:]), args.requests)
    lat_rows = []
    for label, net in models.items():
        for kind in ("hnsw", "exact"):
            service = SessionService(net, inputs, kind=kind)
            service.recommend(raw[0], 8, 1, None, k=10)  # warm-up
            step, search, total = [], [], []
            for i in range(args.requests):
                t = time.perf_counter()
                rec = service.recommend(raw[i], int(hours[i]), int(dows[i]), str(devices[i]), k=10)
                total.append(time.perf_counter() - t)
                step.append(rec.model_seconds)
                search.append(rec.search_seconds)
            lat_rows.append([label, kind, *_pct(step), *_pct(search), *_pct(total)])
    print(f"\nRecommend latency in-process, {args.requests} requests, k = 10, {data.n_tracks_vocab} tracks (ms):\n")
    print(
        _table(
            ["model", "index", "step p50", "step p95", "search p50", "search p95", "total p50", "total p95"], lat_rows
        )
    )

    import http.client
    import json
    import socket
    import threading

    import uvicorn

    from segue.serving.cosernn import create_session_app

    small = next(iter(models.values()))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_session_app(SessionService(small, inputs, kind="hnsw")),
            host="127.0.0.1",
            port=port,
            log_level="error",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    n_http = min(args.requests, 1000)
    times = []
    for i in range(n_http + 20):
        body = {
            "user": str(raw[i % len(raw)]),
            "context": {
                "hour": int(hours[i % len(raw)]),
                "dow": int(dows[i % len(raw)]),
                "device": str(devices[i % len(raw)]),
            },
            "k": 10,
        }
        t = time.perf_counter()
        conn.request("POST", "/recommend", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if i >= 20:  # warm-up requests are not timed
            times.append(time.perf_counter() - t)
        assert resp.status == 200, payload
    conn.close()
    server.should_exit = True
    thread.join(timeout=5)
    p50, p95 = _pct(times)
    print(
        f"\nPOST /recommend over HTTP (uvicorn in a thread of this process, one keep-alive client, small model, "
        f"HNSW, k = 10), {n_http} requests: p50 {p50:.3f} ms, p95 {p95:.3f} ms"
    )

    cat = rng.standard_normal((args.catalogue, 40)).astype(np.float32)
    cat /= np.linalg.norm(cat, axis=1, keepdims=True)
    t = time.perf_counter()
    big = VectorIndex.build(cat, "dot", "hnsw", dot_strategy="ip")
    build_s = time.perf_counter() - t
    exact = VectorIndex.build(cat, "dot", "exact")
    queries = rng.standard_normal((500, 40)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = []
    for name, idx in (("hnsw", big), ("exact", exact)):
        times = []
        for q in queries:
            t = time.perf_counter()
            idx.search(q[None, :], 10)
            times.append(time.perf_counter() - t)
        rows.append([name, *_pct(times)])
    recall = big.recall(queries, 10)
    print(
        f"\nIndex search alone over {args.catalogue:,} random unit tracks (HNSW build {build_s:.1f} s, "
        f"recall@10 vs exact {recall:.3f}), 500 queries (ms):\n"
    )
    print(_table(["index", "p50", "p95"], rows))


if __name__ == "__main__":
    main()
