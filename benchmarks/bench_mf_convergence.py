"""MF-BPR vs implicit's BPR: wall time to reach implicit's best dev HR@10, one core, one run.

For each dataset, under the loo-sampled protocol (the dev set is the protocol's valid EvalSet,
scored by :func:`segue.evaluation.protocols.evaluate`):

1. ``implicit.cpu.bpr.BayesianPersonalizedRanking`` with ``factors`` = segue's dim, one thread,
   its own default learning rate and regularisation unless ``--implicit-lr``/``--implicit-reg``
   say otherwise (several learning rates give several reference rows), dev HR@10 every
   ``--implicit-every`` iterations through an adapter that scores with its factors;
2. segue's MF-BPR with ``MFBPR.train_defaults`` through the generic trainer (dev every epoch,
   early stopping as configured, at most ``--segue-max-seconds``).

Both curves are (seconds, dev HR@10): training time from the start of ``fit`` with the dev
evaluations taken out (wall clock, and process CPU time as a check against other jobs sharing
the core). Printed per reference: implicit's best dev HR@10 and when it got there, when segue
first reached that value (or segue's best, if never), and the ratio segue / implicit (target <= 2).
torch's one-off import of ``torch._dynamo`` (the first optimizer a process builds, ~1 s) is paid
before the clocks start; so is ``import implicit``.

Usage::

    SEGUE_DATA_DIR=../shared/data taskset -c 0 python benchmarks/bench_mf_convergence.py \
        [--datasets ml-100k ml-1m] [--implicit-lr 0.01 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
from bench_foundation import FactorModel

import segue.evaluation.protocols as protocols
from segue.data.datasets import load_dataset
from segue.evaluation.protocols import EvalSet, get_protocol
from segue.models.base import build_model
from segue.pipeline import prepare, train_config_for
from segue.training.trainer import Trainer, seed_everything

Curve = list[tuple[float, float, float, int]]  # (wall s, cpu s, dev HR@10, iteration or epoch)


class _Clock:
    """Training time since ``start``, less the time spent in dev evaluations (wall and CPU)."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.eval_wall = 0.0
        self.eval_cpu = 0.0

    def now(self) -> tuple[float, float]:
        return (
            time.perf_counter() - self.wall0 - self.eval_wall,
            time.process_time() - self.cpu0 - self.eval_cpu,
        )

    def timed_eval(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.eval_wall += time.perf_counter() - w
                self.eval_cpu += time.process_time() - c

        return wrapper


def implicit_curve(
    split: Any, valid: EvalSet, dim: int, lr: float, reg: float, iterations: int, every: int, seed: int
) -> Curve:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    x = split.train.to_csr()
    x.data[:] = 1
    model = BayesianPersonalizedRanking(
        factors=dim, learning_rate=lr, regularization=reg, iterations=iterations, random_state=seed, num_threads=1
    )
    curve: Curve = []

    def score() -> dict[str, Any]:
        return protocols.evaluate(FactorModel(np.asarray(model.user_factors), np.asarray(model.item_factors)), valid)

    def on_iteration(iteration: int, *_: Any) -> None:
        if (iteration + 1) % every == 0 or iteration + 1 == iterations:
            wall, cpu = clock.now()
            curve.append((wall, cpu, dev()["HR@10"], iteration + 1))

    clock = _Clock()
    dev = clock.timed_eval(score)
    model.fit(x, show_progress=False, callback=on_iteration)
    return curve


def segue_curve(
    split: Any, valid: EvalSet, seed: int, max_seconds: float, overrides: dict[str, Any]
) -> tuple[Curve, dict[str, Any]]:
    cfg = train_config_for("mf-bpr", {"seed": seed, "progress": False, "max_seconds": max_seconds, **overrides})
    seed_everything(seed)
    model = build_model("mf-bpr", split.train.n_users, split.train.n_items)
    marks: list[tuple[float, float]] = []
    original = protocols.evaluate
    clock = _Clock()
    protocols.evaluate = clock.timed_eval(original)  # the trainer imports evaluate from here at each dev check
    try:
        # one mark per epoch line (the trainer also logs why it stopped)
        history = Trainer(cfg, log=lambda line: " loss " in line and marks.append(clock.now())).fit(
            model, split.train, valid
        )
    finally:
        protocols.evaluate = original
    curve = [(w, c, rec["valid"]["HR@10"], rec["epoch"]) for (w, c), rec in zip(marks, history.epochs, strict=True)]
    info = {
        "config": cfg.to_dict(),
        "epochs": len(history.epochs),
        "best_epoch_by_monitor": history.best_epoch,
        "monitor": cfg.monitor,
        "median_epoch_train_seconds": float(np.median([r["train_seconds"] for r in history.epochs])),
        "dev_eval_seconds_per_epoch": clock.eval_wall / max(1, len(history.epochs)),
    }
    return curve, info


def first_reaching(curve: Curve, value: float) -> tuple[float, float, float, int] | None:
    return next((p for p in curve if p[2] >= value - 1e-12), None)


def compare(peer: Curve, ours: Curve) -> dict[str, Any]:
    best = max(peer, key=lambda p: (p[2], -p[0]))  # the highest dev HR@10, and the earliest time it was seen
    hit = first_reaching(ours, best[2])
    ours_best = max(ours, key=lambda p: (p[2], -p[0]))
    got = hit or ours_best
    return {
        "implicit_best_hr10": best[2],
        "implicit_seconds": best[0],
        "implicit_cpu_seconds": best[1],
        "implicit_iteration": best[3],
        "segue_reached": hit is not None,
        "segue_hr10": got[2],
        "segue_seconds": got[0],
        "segue_cpu_seconds": got[1],
        "segue_epoch": got[3],
        "segue_best_hr10": ours_best[2],
        "ratio_wall": got[0] / best[0],
        "ratio_cpu": got[1] / best[1],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    ap.add_argument("--implicit-lr", nargs="+", type=float, default=[0.01, 0.05], help="0.01 is implicit's default")
    ap.add_argument("--implicit-reg", type=float, default=0.01, help="implicit's default")
    ap.add_argument("--implicit-iterations", type=int, default=200)
    ap.add_argument("--implicit-every", type=int, default=1, help="dev check every this many iterations")
    ap.add_argument("--segue-max-seconds", type=float, default=120.0)
    ap.add_argument("--segue", default="{}", help="JSON overrides of MF-BPR's train defaults (tuning on dev only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the curves and figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # pay torch's one-off torch._dynamo import now
    import implicit.cpu.bpr  # noqa: F401  (likewise implicit's import)

    dim = build_model("mf-bpr", 1, 1).config.dim
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__, "load": os.getloadavg()}}
    for name in args.datasets:
        data = load_dataset(name, progress=False)
        _, split, valid, _test = prepare(data, get_protocol("loo-sampled", seed=args.seed))
        assert valid is not None
        peers = {
            lr: implicit_curve(
                split, valid, dim, lr, args.implicit_reg, args.implicit_iterations, args.implicit_every, args.seed
            )
            for lr in args.implicit_lr
        }
        ours, info = segue_curve(split, valid, args.seed, args.segue_max_seconds, json.loads(args.segue))
        row: dict[str, Any] = {"segue": {**info, "curve": ours}, "implicit": {}}
        print(f"\n{name}: {len(split.train):,} training pairs, {len(valid)} dev cases, one thread each")
        print(
            f"  segue mf-bpr: {info['epochs']} epochs, median {info['median_epoch_train_seconds']:.3f} s/epoch "
            f"(+{info['dev_eval_seconds_per_epoch']:.3f} s dev check), best dev HR@10 {max(p[2] for p in ours):.4f}"
        )
        for lr, peer in peers.items():
            c = compare(peer, ours)
            row["implicit"][str(lr)] = {**c, "curve": peer}
            reached = (
                f"reached it at {c['segue_seconds']:.2f} s (epoch {c['segue_epoch']})"
                if c["segue_reached"]
                else f"never reached it (best {c['segue_best_hr10']:.4f} at {c['segue_seconds']:.2f} s)"
            )
            print(
                f"  implicit lr={lr:g} reg={args.implicit_reg:g}: best dev HR@10 {c['implicit_best_hr10']:.4f} at "
                f"{c['implicit_seconds']:.2f} s (iteration {c['implicit_iteration']}); segue {reached}; "
                f"ratio segue/implicit {c['ratio_wall']:.2f} wall, {c['ratio_cpu']:.2f} cpu "
                f"(target <= 2: {'met' if c['ratio_wall'] <= 2 and c['segue_reached'] else 'missed'})"
            )
        report[name] = row
    report["machine"]["load_after"] = os.getloadavg()
    print(f"\nload average before {report['machine']['load'][0]:.2f}, after {report['machine']['load_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
