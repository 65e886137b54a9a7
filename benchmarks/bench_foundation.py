"""Foundation benchmarks: MF-BPR vs implicit's BPR, full-ranking evaluation, negative sampling.

Prints figures and ratios for one machine, one run, same data:

1. MF-BPR trained to convergence (early stopping on dev NDCG@10) on ml-100k and ml-1m under the
   SDMR leave-one-out protocol (100 sampled negatives), beside ``implicit``'s CPU BPR trained on the
   same training matrix with the same dimension (iterations chosen on the same dev set): test
   HR@10 / NDCG@10 and wall time.
2. Full-ranking evaluation of every ml-1m user over every item (train items masked): seconds and
   peak memory.
3. Negative sampling throughput (uniform, 4 per positive, over the ml-1m training pairs).

Usage::

    SEGUE_DATA_DIR=../shared/data python benchmarks/bench_foundation.py [--datasets ml-100k ml-1m] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
from torch import Tensor

from segue.data.datasets import load_dataset
from segue.data.sampling import NegativeSampler
from segue.evaluation.protocols import evaluate, full_evalset, get_protocol
from segue.models.base import Context, Recommender
from segue.pipeline import prepare, run
from segue.training.trainer import TrainConfig


class FactorModel(Recommender):
    """Adapter: fixed user/item factor matrices (from a peer library) behind segue's interface."""

    name = "factors-adapter"
    measure = "dot"
    trainable = False

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__(users.shape[0] - 1, items.shape[0] - 1)
        self.register_buffer("u", torch.as_tensor(np.ascontiguousarray(users), dtype=torch.float32))
        self.register_buffer("v", torch.as_tensor(np.ascontiguousarray(items), dtype=torch.float32))

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return torch.einsum("bd,bcd->bc", self.u[users], self.v[items])

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        s = self.u[users] @ self.v.T
        s[:, 0] = float("-inf")
        return s


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux) and return the current RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def bench_bpr(name: str, dim: int, log: list[str], iterations: int = 200) -> dict[str, Any]:
    data = load_dataset(name, progress=False)
    proto = get_protocol("loo-sampled", seed=0)
    _, split, valid, test = prepare(data, proto)
    cfg = TrainConfig(progress=False)
    t0 = time.perf_counter()
    ours = run(
        "mf-bpr",
        data,
        protocol=proto,
        model_options={"dim": dim},
        train_config=cfg,
        log=None,
        prepared=(split, valid, test),
    )
    ours_s = time.perf_counter() - t0
    row: dict[str, Any] = {
        "dataset": name,
        "segue": {
            **ours.metrics,
            "seconds": ours_s,
            "epochs": len(ours.history.epochs),
            "best_epoch": ours.history.best_epoch,
        },
    }
    try:
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        row["implicit"] = None
        log.append(f"{name}: implicit is not installed; skipped the peer")
        return row
    x = split.train.to_csr()
    x.data[:] = 1
    # implicit has no early stopping: evaluate on dev every 10 iterations (callback), keep the best
    best: dict[str, Any] = {"dev": -1.0}
    eval_seconds = 0.0

    def on_epoch(iteration: int, *_: Any) -> None:
        nonlocal eval_seconds
        if (iteration + 1) % 10:
            return
        t = time.perf_counter()
        adapter = FactorModel(np.asarray(model.user_factors), np.asarray(model.item_factors))
        dev = evaluate(adapter, valid)["NDCG@10"]
        if dev > best["dev"]:
            best.update(dev=dev, iterations=iteration + 1, test=evaluate(adapter, test))
        eval_seconds += time.perf_counter() - t

    model = BayesianPersonalizedRanking(
        factors=dim, learning_rate=0.05, regularization=0.01, iterations=iterations, random_state=0
    )
    t0 = time.perf_counter()
    model.fit(x, show_progress=False, callback=on_epoch)
    # the dev checks stand in for early stopping; their cost is not implicit's training time
    peer_s = time.perf_counter() - t0 - eval_seconds
    row["implicit"] = {**best["test"], "seconds": peer_s, "iterations": best["iterations"], "of": iterations}
    return row


def bench_full_ranking(log: list[str]) -> dict[str, Any]:
    data = load_dataset("ml-1m", progress=False)
    proto = get_protocol("loo-full", seed=0)
    _, split, _, _ = prepare(data, proto)
    es = full_evalset(split, "test")
    rng = np.random.default_rng(0)
    model = FactorModel(
        rng.normal(size=(data.n_users + 1, 64)).astype(np.float32),
        rng.normal(size=(data.n_items + 1, 64)).astype(np.float32),
    )
    evaluate(model, es.subset(np.arange(256)))  # warm-up
    base = reset_peak_rss()
    t0 = time.perf_counter()
    metrics = evaluate(model, es, ks=(10,), metrics=("HR", "NDCG", "MRR", "AUC"), batch_size=2048)
    seconds = time.perf_counter() - t0
    return {
        "users": len(es),
        "items": data.n_items,
        "seconds": seconds,
        "peak_extra_rss_mb": _status_mb("VmHWM") - base,
        "process_peak_rss_mb": peak_rss_mb(),
        "metrics_random_model": metrics,
    }


def bench_sampling() -> dict[str, Any]:
    data = load_dataset("ml-1m", progress=False)
    seen = data.to_csr()
    sampler = NegativeSampler(seen, seed=0)
    users = data.users
    sampler.sample(users[:1000], 4)
    t0 = time.perf_counter()
    negs = sampler.sample(users, 4)
    s = time.perf_counter() - t0
    return {"pairs": len(users), "negatives": int(negs.size), "seconds": s, "negatives_per_second": negs.size / s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--skip-bpr", action="store_true")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("SEGUE_THREADS", "2")))
    log: list[str] = []
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    }
    if not args.skip_bpr:
        report["bpr"] = [bench_bpr(d, args.dim, log) for d in args.datasets]
        print("\n1. MF-BPR to convergence, leave-one-out + 100 negatives (test)")
        print(f"{'dataset':10} {'library':9} {'HR@10':>7} {'NDCG@10':>8} {'seconds':>8}")
        for row in report["bpr"]:
            for lib in ("segue", "implicit"):
                r = row.get(lib)
                if r:
                    print(f"{row['dataset']:10} {lib:9} {r['HR@10']:7.4f} {r['NDCG@10']:8.4f} {r['seconds']:8.1f}")
            if row.get("implicit"):
                s, p = row["segue"], row["implicit"]
                print(
                    f"{'':10} ratio segue/implicit: HR {s['HR@10'] / p['HR@10']:.3f}, NDCG {s['NDCG@10'] / p['NDCG@10']:.3f}, "
                    f"time {s['seconds'] / p['seconds']:.2f}"
                )
    fr = report["full_ranking"] = bench_full_ranking(log)
    print(
        f"\n2. Full ranking, ml-1m: {fr['users']} users x {fr['items']} items in {fr['seconds']:.3f} s "
        f"(target 2 s: {'met' if fr['seconds'] < 2 else 'missed'}); peak memory above the loaded data "
        f"{fr['peak_extra_rss_mb']:.0f} MB, "
        f"process peak RSS {fr['process_peak_rss_mb']:.0f} MB"
    )
    ns = report["sampling"] = bench_sampling()
    print(
        f"\n3. Negative sampling, ml-1m: {ns['negatives']:,} uniform negatives for {ns['pairs']:,} pairs in "
        f"{ns['seconds']:.3f} s = {ns['negatives_per_second'] / 1e6:.1f} M/s"
    )
    for line in log:
        print("note:", line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
