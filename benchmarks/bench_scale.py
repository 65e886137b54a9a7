"""The cost curve at Million-Playlist size: training and evaluation with 1 and 2 processes (issue 18, item 5).

For each size (rows of synthetic MPD-shaped playlists, segue/data/synthetic.py, cached as Parquet) and each
process count, one fresh run per (model, N) in N spawned processes (torch.distributed, gloo on CPU; N = 1 is
one spawned process without a process group, the plain single-process path):

1. load the Parquet file and split it leave-last-out (playlist = user; the last track of each playlist is the
   test case), every rank on its own, as ``torchrun`` ranks do;
2. train MF-BPR (its defaults: dense Adagrad 0.2, batch 4096, 4 negatives, dim 64), the same with the lazy
   ``sparse-adagrad`` (``mf-bpr-sparse``: sparse gradients, reduced across ranks as sparse tensors) and SDM
   (dim 32, 2 hops, window 5, Adam) for ``--steps`` steps of one epoch. The first batch of an epoch carries the
   epoch's up-front work (its permutation and all its negatives): timed apart as the epoch's set-up. rows/s per
   process = rows of the timed steps over all ranks / N / their seconds; epoch time = set-up + training rows /
   (N x rows/s per process);
3. evaluate the test cases: sampled (100 fixed negatives, at most ``--eval-users`` cases) and full ranking
   against every track (at most ``--full-users`` cases), split across the ranks; reported as seconds per
   million users;
4. peak memory: the largest ``ru_maxrss`` of the ranks (each holds the whole data set: only the rows of an
   epoch are split, the tables are replicated).

It prints a table (and ``--json``), the scaling efficiency of N processes against 1 (rows/s per process at N
over rows/s at 1: 1.0 is perfect scaling), fits the growth exponents of epoch time, step time, set-up and
memory against rows (least squares on log-log over the one-process points), and extrapolates to 1B rows
(docs/scale.md does the arithmetic for N GPUs).
``--plot docs/scale.png`` draws the curve.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [--sizes 1e6,1e7] [--fit-sizes 3e5,3e6] [--nproc 1,2]
        [--steps 30] [--models mf-bpr,mf-bpr-sparse,sdm] [--sdm-sizes 1e6] [--cache /tmp/segue-scale]
        [--json out.json] [--plot docs/scale.png]

The machine these numbers come from has 2 cores shared with other work: 2-process figures there measure
contention as much as scaling (docs/scale.md says how to read them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = {
    "mf-bpr": ("mf-bpr", {"dim": 64}, {}),
    # the same model with the lazy (row-wise) optimizer: sparse gradients, and a sparse all-reduce across ranks
    "mf-bpr-sparse": ("mf-bpr", {"dim": 64}, {"optimizer": "sparse-adagrad"}),
    "sdm": ("sdm", {"dim": 32, "hops": 2, "s": 5}, {"batch_size": 1024, "lr": 1e-3, "optimizer": "adam"}),
}
#: SDM's full ranking runs its memory hops against every track (about 2 minutes per 1,000 users at 30k
#: tracks on this machine): it is evaluated on the sampled protocol only
FULL_RANKING = {"mf-bpr": True, "mf-bpr-sparse": True, "sdm": False}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def job(p: dict[str, Any]) -> dict[str, Any]:
    """One rank: load, split, train under the cap, evaluate; rank 0 returns the figures (maxima over ranks)."""
    import torch

    from segue.data.splits import leave_one_out
    from segue.data.synthetic import load_playlists
    from segue.evaluation.protocols import evaluate, full_evalset, sampled_evalset
    from segue.models.base import build_model
    from segue.training.batches import batches_for
    from segue.training.distributed import world
    from segue.training.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    w = world()
    n = 1 if w is None else w.size
    t0 = time.perf_counter()
    data = load_playlists(p["path"])
    split = leave_one_out(data, dev=False, short="drop")
    load_s = time.perf_counter() - t0
    name, opts, train_opts = MODELS[p["model"]]
    model = build_model(name, split.train.n_users, split.train.n_items, opts)
    base = dict(model.train_defaults)
    base.update(train_opts)
    base.update({"epochs": 1, "patience": None, "progress": False, "threads": 1, "seed": 0})
    cfg = TrainConfig.from_dict(base)
    marks: dict[str, Any] = {}

    def make(rng: np.random.Generator) -> Any:
        """The model's batch builder, its epoch cut after ``steps`` batches and timed: the first batch carries
        the epoch's up-front work (a permutation and every negative of the epoch), the rest are steps."""
        model.prepare(split.train)
        b = batches_for(model, split.train, cfg, rng)
        epoch = b.epoch

        def timed(rng: np.random.Generator) -> Any:
            t = time.perf_counter()
            it = epoch(rng)
            first = next(it)
            marks["setup_s"], marks["t_first"] = time.perf_counter() - t, time.perf_counter()
            marks["batch"] = b.batch_size
            yield first
            for i, batch in enumerate(it, start=1):
                if i >= p["steps"]:
                    break
                yield batch
            marks["steps_s"] = time.perf_counter() - marks["t_first"]

        b.epoch = timed
        return b

    hist = Trainer(cfg, log=None).run(model, make, None)
    steps = hist.steps
    rows_done = steps * marks["batch"] * n
    train_s = marks["steps_s"]
    # evaluation: the first cases of each set (the same on every rank), split across the ranks
    test_users = min(p["eval_users"], split.test.n_users)
    sampled = sampled_evalset(split, "test", n_negatives=100, seed=0)
    sampled = sampled.subset(np.arange(min(len(sampled), test_users)))
    full = full_evalset(split, "test")
    full = full.subset(np.arange(min(len(full), p["full_users"] if FULL_RANKING[p["model"]] else 0)))
    s = model.history_length() if "history" in model.needs else 0
    if s:
        sampled, full = sampled.with_history(split.train, s), full.with_history(split.train, s)
    t1 = time.perf_counter()
    m_sampled = evaluate(model, sampled, batch_size=1024)
    sampled_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    m_full = evaluate(model, full, batch_size=64) if len(full) else {"NDCG@10": float("nan")}
    full_s = time.perf_counter() - t1
    out = {
        "model": p["model"],
        "rows": len(data),
        "train_rows": len(split.train),
        "users": split.train.n_users,
        "items": split.train.n_items,
        "nproc": n,
        "load_split_s": load_s,
        "setup_s": marks["setup_s"],
        "train_s": train_s,
        "rows_done": rows_done,
        "steps": steps,
        "rows_per_s_per_proc": rows_done / n / train_s,
        "sampled_cases": len(sampled),
        "sampled_s_per_M_users": sampled_s / len(sampled) * 1e6,
        "full_cases": len(full),
        "full_s_per_M_users": full_s / len(full) * 1e6 if len(full) else float("nan"),
        "HR@10_sampled": m_sampled["HR@10"],
        "NDCG@10_full": m_full["NDCG@10"],
        "params_mb": sum(t.numel() * t.element_size() for t in model.parameters()) / 2**20,
        "peak_mb": _peak_mb(),
    }
    if w is not None:  # the worst rank's memory and times
        import torch.distributed as dist

        outs: list[Any] = [None] * n
        dist.all_gather_object(outs, out)
        out["peak_mb"] = max(o["peak_mb"] for o in outs)
        out["setup_s"] = max(o["setup_s"] for o in outs)
    return out


def run_one(path: Path, model: str, nproc: int, args: argparse.Namespace) -> dict[str, Any]:
    from segue.training.distributed import launch

    payload = {
        "path": str(path),
        "model": model,
        "steps": args.steps,
        "eval_users": args.eval_users,
        "full_users": args.full_users,
    }
    t0 = time.perf_counter()
    out = launch(nproc, job, payload, device="cpu")
    out["wall_s"] = time.perf_counter() - t0
    return out


def _num(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:,.0f}"


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def extrapolate(results: list[dict[str, Any]], model: str, rows_target: float = 1e9) -> dict[str, Any]:
    """Paper arithmetic from the measured one-process figures of ``model`` at its largest size (docs/scale.md)."""
    one = [r for r in results if r["model"] == model and r["nproc"] == 1]
    if not one:
        return {}
    big = max(one, key=lambda r: r["rows"])
    scale = rows_target / big["rows"]
    # users and items grow like playlists (linear) and catalogue (rows ** 0.8, the generator's MPD scaling)
    users = big["users"] * scale
    items = big["items"] * scale**0.8
    dim = 64
    table_gb = (users + items) * dim * 4 * (1 + 1) / 1e9  # weights + Adagrad's sum of squares
    steps = rows_target / 4096
    allreduce_gb = (users + items) * dim * 4 / 1e9  # dense gradients of both tables, every step
    # set-up (negatives) is linear in rows; a step's cost at 1B is not measured: this is the optimistic reading
    epoch_h_1 = (big["setup_s"] * scale + rows_target / big["rows_per_s_per_proc"]) / 3600
    return {
        "rows": rows_target,
        "users": users,
        "items": items,
        "tables_gb_with_adagrad": table_gb,
        "dense_allreduce_gb_per_step": allreduce_gb,
        "steps_per_epoch": steps,
        "epoch_hours_one_process_cpu": epoch_h_1,
        "from": {"rows": big["rows"], "rows_per_s": big["rows_per_s_per_proc"]},
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for model in sorted({r["model"] for r in results}):
        for n in sorted({r["nproc"] for r in results}):
            pts = sorted((r["rows"], r) for r in results if r["model"] == model and r["nproc"] == n)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            lab = f"{model}, {n} proc"
            ax[0].plot(xs, [p[1]["epoch_s"] for p in pts], "o-", label=lab)
            ax[1].plot(xs, [p[1]["peak_mb"] for p in pts], "o-", label=lab)
            ax[2].plot(xs, [p[1]["sampled_s_per_M_users"] for p in pts], "o-", label=lab)
    titles = ["epoch time (s: set-up + rows / rows/s)", "peak memory per process (MB)", "sampled eval (s per 1M users)"]
    for a, t in zip(ax, titles, strict=True):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("rows")
        a.set_title(t, fontsize=10)
        a.grid(alpha=0.3, which="both")
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--nproc", default="1,2")
    ap.add_argument("--models", default="mf-bpr,mf-bpr-sparse,sdm")
    ap.add_argument("--sdm-sizes", default="1e6", help="sizes at which SDM runs too (it is the slower model)")
    ap.add_argument("--fit-sizes", default="3e5,3e6", help="extra sizes for the growth fit: mf-bpr, 1 process only")
    ap.add_argument("--steps", type=int, default=30, help="training steps timed per run (after the epoch's set-up)")
    ap.add_argument("--eval-users", type=int, default=100_000)
    ap.add_argument("--full-users", type=int, default=2_000)
    ap.add_argument("--cache", default="/tmp/segue-scale")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from segue.data.synthetic import SyntheticSpec, measured_exponents, write_playlists

    print(f"measured Zipf exponents of track popularity: {measured_exponents()}", flush=True)
    main_sizes = [int(float(s)) for s in args.sizes.split(",")]
    fit_sizes = {int(float(s)) for s in args.fit_sizes.split(",") if s} - set(main_sizes)
    sizes = sorted(set(main_sizes) | fit_sizes)
    sdm_sizes = {int(float(s)) for s in args.sdm_sizes.split(",") if s}
    procs = [int(x) for x in args.nproc.split(",")]
    results = []
    for size in sizes:
        path = Path(args.cache) / f"playlists-{size}.parquet"
        if not path.exists():
            t0 = time.perf_counter()
            info = write_playlists(path, SyntheticSpec(rows=size, seed=0))
            print(f"generated {info['rows']:,} rows in {time.perf_counter() - t0:.1f}s -> {path}", flush=True)
        for model in args.models.split(","):
            if model == "sdm" and size not in sdm_sizes:
                continue
            for n in procs:
                if size in fit_sizes and (model == "sdm" or n != 1):
                    continue
                r = run_one(path, model, n, args)
                r["epoch_s"] = r["setup_s"] + r["train_rows"] / (r["rows_per_s_per_proc"] * n)
                results.append(r)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    # scaling efficiency: rows/s per process at N over rows/s at 1
    for r in results:
        base = next(
            (b for b in results if b["model"] == r["model"] and b["rows"] == r["rows"] and b["nproc"] == 1), None
        )
        r["efficiency"] = None if base is None else r["rows_per_s_per_proc"] / base["rows_per_s_per_proc"]
    growth = {}
    for model in ("mf-bpr", "mf-bpr-sparse"):
        one = sorted((r for r in results if r["model"] == model and r["nproc"] == 1), key=lambda r: r["rows"])
        xs = [r["rows"] for r in one]
        growth[model] = {
            "epoch_time_vs_rows": fit_exponent(xs, [r["epoch_s"] for r in one]),
            "step_time_vs_rows": fit_exponent(xs, [1 / r["rows_per_s_per_proc"] for r in one]),
            "setup_time_vs_rows": fit_exponent(xs, [r["setup_s"] for r in one]),
            "peak_memory_vs_rows": fit_exponent(xs, [r["peak_mb"] for r in one]),
        }
    extra = {m: extrapolate(results, m) for m in ("mf-bpr", "mf-bpr-sparse")}
    print()
    head = "| model | rows | users | items | N | rows/s/proc | efficiency | epoch set-up s | epoch s (est.) | "
    head += "peak MB/proc | sampled eval s/1M users | full eval s/1M users | load+split s |"
    print(head)
    print("|" + "---|" * 13)
    for r in results:
        eff = "" if r["efficiency"] is None or r["nproc"] == 1 else f"{r['efficiency']:.2f}"
        print(
            f"| {r['model']} | {r['rows']:,} | {r['users']:,} | {r['items']:,} | {r['nproc']} | "
            f"{r['rows_per_s_per_proc']:,.0f} | {eff} | {r['setup_s']:.1f} | {r['epoch_s']:,.0f} | {r['peak_mb']:,.0f} | "
            f"{r['sampled_s_per_M_users']:,.0f} | {_num(r['full_s_per_M_users'])} | {r['load_split_s']:.1f} |"
        )
    print(f"\ngrowth exponents (one process, log-log least squares): {json.dumps(growth)}")
    print(f"extrapolation: {json.dumps(extra, default=float)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "growth": growth, "extrapolation": extra}, indent=2))
    if args.plot:
        plot(results, Path(args.plot))
        print(f"plot -> {args.plot}")


if __name__ == "__main__":
    main()
