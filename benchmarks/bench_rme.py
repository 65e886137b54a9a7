"""Seconds per ALS sweep and peak memory: segue's WMF (``wmf-als``) vs ``implicit``, and RME.

    OPENBLAS_NUM_THREADS=1 SEGUE_DATA_DIR=../shared/data python benchmarks/bench_rme.py [--factors 40]

For each dataset (ml-100k with the RME temporal split, Last.fm-2K with the random split, both
repeat 0 training parts) this prints, with every library on one thread:

* WMF by segue's vectorised ALS and by ``implicit``'s ALS on the same binary matrix, the same
  objective (``alpha = c1 = 10``, ``regularization = lambda``), the same initial factors and
  the same number of factors: ``implicit`` exact (``use_cg=False``, the same solution as
  segue) and with its default conjugate-gradient solver (3 CG steps, approximate);
* RME (co-liked X, co-disliked Y, user Z; explicit dislikes on ml-100k, one Algorithm-2
  draw with tau = 0.2 on Last.fm-2K) and its time per block (users, items, contexts, biases);
* the same sweeps on a random 25%, 50% and 100% of the items (all users kept), to show how
  the sweep time grows with the number of items.

Each measurement runs in a fresh subprocess. "setup MiB" is the resident memory the model's
matrices take (M, X, Y, Z, their transposes and dense copies of the dense patterns; for
``implicit`` its float32 copy of M), and "peak MiB" the growth of the peak resident memory
(VmHWM, reset before the sweeps where the kernel allows) over that: the working memory of the
sweeps beyond what stays resident after one warm-up sweep (library code, allocator pools).
Seconds are the median over ``--sweeps`` sweeps after that warm-up (``implicit`` times its
own iterations). The machine is
shared, so absolute seconds move with its load (printed); compare within one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import numpy as np


def _status(key: str) -> int:
    """A VmRSS / VmHWM value of this process in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _data(dataset: str, fraction: float, seed: int = 0) -> tuple[Any, Any]:
    """Training liked and disliked matrices (padded CSR), items subsampled to ``fraction``."""
    import scipy.sparse as sp

    from segue.data.datasets import load_dataset
    from segue.data.splits_rme import movielens_split, playcount_split

    if dataset == "ml-100k":
        rs = movielens_split(load_dataset("ml-100k", download=False, progress=False), repeat=0)
    else:
        rs = playcount_split(load_dataset("lastfm-2k", download=False, progress=False), repeat=0)
    liked = rs.split.train.to_csr()
    disliked = None if rs.dislikes is None else rs.dislikes.to_csr()
    if fraction < 1.0:
        n = liked.shape[1] - 1
        keep = np.sort(np.random.default_rng(seed).choice(np.arange(1, n + 1), round(fraction * n), replace=False))
        cols = np.r_[0, keep]
        liked = sp.csr_matrix(liked[:, cols])
        disliked = None if disliked is None else sp.csr_matrix(disliked[:, cols])
    return liked, disliked


def _child(task: dict[str, Any], out: Any) -> None:
    import threadpoolctl
    import torch

    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        out.put(_measure(task))


def _measure(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    from segue.models.rme import RME, RMEMatrices, RMESolver, RMEState

    liked, disliked = _data(task["dataset"], task["fraction"])
    liked.data[:] = 1.0
    rss_data = _status("VmRSS")
    k, reg, sweeps = task["factors"], task["reg"], task["sweeps"]
    n_rows, n_cols = liked.shape
    init = RMEState.init(n_rows, n_cols, k, std=0.01, seed=0, dtype=np.float32)
    res: dict[str, Any] = {"users": n_rows - 1, "items": n_cols - 1, "nnz": int(liked.nnz)}
    times: list[float] = []
    if task["what"].startswith("implicit"):
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(
            factors=k,
            regularization=reg,
            alpha=10.0,
            iterations=sweeps,
            use_cg=task["what"] == "implicit-cg",
            num_threads=1,
            random_state=0,
        )
        rss_data = _status("VmRSS")
        x = liked.astype(np.float32)
        res["matrices_mib"] = max(0, _status("VmRSS") - rss_data) / 1024
        warm = AlternatingLeastSquares(factors=k, regularization=reg, alpha=10.0, iterations=1, num_threads=1)
        warm.user_factors, warm.item_factors = init.U.copy(), init.P.copy()
        warm.use_cg = model.use_cg
        warm.fit(x, show_progress=False)  # warm-up: library code and allocator, like segue's
        del warm
        model.user_factors, model.item_factors = init.U.copy(), init.P.copy()
        base = _status("VmRSS")
        res["peak_reset"] = _reset_peak()
        model.fit(x, show_progress=False, callback=lambda it, secs, loss: times.append(secs))
    else:
        model = RME(n_rows - 1, n_cols - 1, RME.Config(factors=k, reg=reg))
        if disliked is None and task["what"] == "rme":  # one Algorithm-2 E-step from the initial factors
            disliked = model.draw_dislikes(init, liked, 0.2, torch.Generator().manual_seed(0))
        rss_data = _status("VmRSS")
        t0 = time.perf_counter()
        if task["what"] == "wmf-als":
            mats = RMEMatrices(liked)
        else:
            mats = model.build_matrices(liked, disliked)
            res["nnz_X"], res["nnz_Y"], res["nnz_Z"] = int(mats.X.nnz), int(mats.Y.nnz), int(mats.Z.nnz)
        solver: RMESolver = model.make_solver(mats)
        res["sppmi_seconds"] = time.perf_counter() - t0
        res["matrices_mib"] = max(0, _status("VmRSS") - rss_data) / 1024
        solver.sweep(init.copy())  # warm-up: library code, allocator
        state = init.copy()
        base = _status("VmRSS")
        res["peak_reset"] = _reset_peak()
        blocks = {"users": [], "items": [], "contexts": [], "biases": []}
        for _ in range(sweeps):
            t_start = time.perf_counter()
            for name, fn in (
                ("users", solver.update_users),
                ("items", solver.update_items),
                ("contexts", solver.update_contexts),
                ("biases", solver.update_biases),
            ):
                t0 = time.perf_counter()
                fn(state)
                blocks[name].append(time.perf_counter() - t0)
            times.append(time.perf_counter() - t_start)
        if task["what"] == "rme":
            res["block_seconds"] = {b: statistics.median(v) for b, v in blocks.items()}
    res["sweep_seconds"] = statistics.median(times)
    res["peak_mib"] = max(0, _status("VmHWM") - base) / 1024
    return res


def run(task: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="ml-100k,lastfm-2k")
    ap.add_argument("--factors", type=int, default=40)
    ap.add_argument("--reg", type=float, default=1.0)
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--fractions", default="0.25,0.5,1.0")
    ap.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    fractions = [float(f) for f in args.fractions.split(",")]
    whats = ("wmf-als", "implicit-exact", "implicit-cg", "rme")
    rows = []
    print(
        f"factors={args.factors} reg={args.reg} sweeps={args.sweeps} (median) threads=1 cores={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'dataset':10} {'share':>6} {'model':15} {'users':>6} {'n_items':>7} {'nnz(M)':>8} {'s/sweep':>8} "
        f"{'setup MiB':>9} {'peak MiB':>9}  notes"
    )
    print(header)
    print("-" * len(header))
    for ds in args.datasets.split(","):
        for frac in fractions:
            for what in whats:
                task = {"dataset": ds, "fraction": frac, "what": what, **vars(args)}
                r = run(task)
                notes = ""
                if what == "rme":
                    b = r["block_seconds"]
                    notes = (
                        f"nnz X/Y/Z {r['nnz_X']:,}/{r['nnz_Y']:,}/{r['nnz_Z']:,}; build {r['sppmi_seconds']:.2f}s; "
                        + ", ".join(f"{k} {v:.2f}s" for k, v in b.items())
                    )
                print(
                    f"{ds:10} {f'{int(frac * 100)}%':>6} {what:15} {r['users']:>6} {r['items']:>7} {r['nnz']:>8,} "
                    f"{r['sweep_seconds']:>8.3f} {r['matrices_mib']:>9.1f} {r['peak_mib']:>9.1f}  {notes}",
                    flush=True,
                )
                rows.append({"dataset": ds, "fraction": frac, "model": what, **r})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
