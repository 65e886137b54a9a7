"""Per-step cost of the trainer's optimizers: torch's default Adam (the old trainer) vs segue's names.

One training step of the generic trainer (score, loss + regularisation, backward, optimizer
step) on real batches of a dataset's training rows (uniform negatives, the models' batch
sizes), on one thread; the optimizer step alone and the whole step, in CPU milliseconds (the
least of several rounds, which other jobs on the core disturb least). ``old`` is
``torch.optim.Adam(params, lr, weight_decay)`` as the trainer built it before ``segue.training.optim``.

Usage::

    SEGUE_DATA_DIR=../shared/data taskset -c 0 python benchmarks/bench_optim_steps.py [--dataset ml-1m]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

from segue.data.datasets import load_dataset
from segue.data.sequences import row_contexts
from segue.evaluation.protocols import get_protocol
from segue.models.base import Context, build_model
from segue.pipeline import prepare
from segue.training.losses import get_loss
from segue.training.optim import make_optimizer

# model name -> (batch size, negatives): MF-BPR's train defaults, batch 256 for the others
MODELS = {"mf-bpr": (4096, 4), "sdm": (256, 4), "cmn": (256, 4), "qualse": (256, 4)}


def bench_model(name: str, split: Any, optimizer: str, rounds: int, steps: int) -> dict[str, float]:
    train = split.train
    torch.manual_seed(0)
    model = build_model(name, train.n_users, train.n_items)
    batch = MODELS[name]
    if hasattr(model, "set_neighbourhood"):
        model.set_neighbourhood(train)
    s = model.history_length() if "history" in model.needs else 0
    windows = torch.as_tensor(row_contexts(train, s)) if s else None
    if optimizer == "old":
        make_optimizer("adam", model, 1e-3, 0.0)  # leaves the tables dense
        opt: torch.optim.Optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    else:
        opt = make_optimizer(optimizer, model, 1e-3, 0.0)
    loss_fn = get_loss("bpr")
    rng = np.random.default_rng(0)
    users_t, items_t = torch.as_tensor(train.users), torch.as_tensor(train.items)

    def step() -> tuple[float, float]:
        idx = torch.as_tensor(rng.integers(0, len(train), batch[0]))
        negs = torch.as_tensor(rng.integers(1, train.n_items + 1, (batch[0], batch[1])))
        u, cand = users_t[idx], torch.cat([items_t[idx, None], negs], dim=1)
        ctx = Context(history=windows[idx]) if windows is not None else None
        t0 = time.thread_time()
        scores = model.score(u, cand, ctx)
        loss = loss_fn(scores[:, :1], scores[:, 1:], 1.0) + model.regularization(u, cand)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.thread_time()
        opt.step()
        t2 = time.thread_time()
        return t2 - t0, t2 - t1

    for _ in range(3):
        step()
    best_step, best_opt = float("inf"), float("inf")
    for _ in range(rounds):
        times = [step() for _ in range(steps)]
        best_step = min(best_step, 1e3 * sum(t[0] for t in times) / steps)
        best_opt = min(best_opt, 1e3 * sum(t[1] for t in times) / steps)
    return {"step_ms": best_step, "optimizer_ms": best_opt, "batch": batch[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--optimizers", nargs="+", default=["old", "adam", "sparse-adam", "adagrad", "sparse-adagrad"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, progress=False)
    _, split, _, _ = prepare(data, get_protocol("loo-sampled", seed=0, short="train"))
    print(f"{args.dataset}: {split.train.n_users} users, {split.train.n_items} items; CPU ms per step, one thread")
    print(f"{'model':8} {'batch':>5} " + " ".join(f"{o:>22}" for o in args.optimizers))
    for name in args.models:
        res = {o: bench_model(name, split, o, args.rounds, args.steps) for o in args.optimizers}
        cells = [f"{r['step_ms']:8.2f} (opt {r['optimizer_ms']:6.2f})" for r in res.values()]
        print(f"{name:8} {res[args.optimizers[0]]['batch']:5d} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
