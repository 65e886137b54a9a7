"""Old vs new QUALE / QUASE / QUALSE kernels: ms per training step on one core, and the share of matmul peak.

A training step is what the trainer does per batch, minus the optimizer: ``model.loss`` on 256
rows, each its user, its history window and ``[positive, 4 negatives]`` (BPR), plus
``model.regularization`` of the rows the batch touches, ``zero_grad`` and ``backward``. d = 64,
long-term window l = 50, short-term window s = 5 (the config defaults); the windows are
left-padded for a third of the rows (short histories), as the first rows of every user are.
Table sizes are ml-1m's (6040 users, 3706 items) or Amazon Toys' (S3-Rec: 19412 users, 11924
items; ``--sizes``). The models are untrained: the speed does not depend on the weights.

"old" is the scoring math as it was before the kernel rewrite, kept as the reference in
``tests/test_qualse_kernels.py``; "new" is the model's own ``loss``. Both run in the same process,
interleaved round by round; the table gives the best round (the least disturbed by other
processes on the machine) and, in brackets, the median round.

"%peak" is the matrix-product work of one step (forward + backward, counted by
``torch.utils.flop_counter`` on the new step, so the same figure for both) divided by the step
time and by the single-core float32 peak, measured here with a large matmul. The count leaves out
the three quarters of the attention's block products that are computed and dropped (the
``(B, 4, d)`` products of ``_ComponentAttention`` whose off-diagonal blocks are not used): it is the
useful work only.

Usage (from the repository root; pin one core)::

    PYTHONPATH=$PWD taskset -c 1 python benchmarks/bench_quaternion_kernels.py [--rounds 9] [--steps 3]
        [--sizes ml-1m toys] [--models quale quase quase-gru qualse qualse-gru quale-perdim quase-perdim]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference kernels live in tests/

import torch  # noqa: E402

from benchmarks.timing import interleaved, matmul_flops, matmul_peak, summarise, summary_line  # noqa: E402
from segue.data.batch import PairBatch  # noqa: E402
from segue.models.base import Context, build_model  # noqa: E402
from segue.models.losses import LossSpec  # noqa: E402
from segue.models.qualse import QUALE, QUALSE, QUASE  # noqa: E402
from segue.training.trainer import TrainConfig  # noqa: E402
from tests.test_qualse_kernels import old_regularization, old_score  # noqa: E402

SIZES = {"ml-1m": (6040, 3706), "toys": (19412, 11924)}
MODELS = {
    "quale": ("quale", {}),
    "quase": ("quase", {"cell": "lstm"}),
    "quase-gru": ("quase", {"cell": "gru"}),
    "qualse": ("qualse", {"cell": "lstm"}),
    "qualse-gru": ("qualse", {"cell": "gru"}),
    "quale-perdim": ("quale", {"per_dim": True}),  # the per-dimension attention flag (not run by default)
    "quase-perdim": ("quase", {"per_dim": True}),
}
DEFAULT_MODELS = ["quale", "quase", "quase-gru", "qualse", "qualse-gru"]
DIM, BATCH, NEGATIVES = 64, 256, 4


def _batch(n_users: int, n_items: int, window: int, gen: torch.Generator) -> PairBatch:
    users = torch.randint(1, n_users + 1, (BATCH,), generator=gen)
    items = torch.randint(1, n_items + 1, (BATCH, 1 + NEGATIVES), generator=gen)
    hist = torch.randint(1, n_items + 1, (BATCH, window), generator=gen)
    pad = torch.randint(0, window + 1, (BATCH,), generator=gen) * (torch.rand(BATCH, generator=gen) < 1 / 3)
    hist[torch.arange(window)[None, :] < pad[:, None]] = 0  # a third of the rows are short histories
    return PairBatch(users, items, Context(history=hist))


def _step(model: Any, loss: Callable[[], torch.Tensor]) -> None:
    total = loss()
    model.zero_grad(set_to_none=True)
    total.backward()


def cases(sizes: str, models: list[str], gen: torch.Generator) -> list[tuple[str, Any, Callable, Callable]]:
    """(name, model, old step, new step) for the table sizes ``sizes``."""
    n_users, n_items = SIZES[sizes]
    spec: LossSpec = TrainConfig(n_negatives=NEGATIVES).loss_spec()
    out = []
    for key in models:
        name, opts = MODELS[key]
        torch.manual_seed(0)
        m = build_model(name, n_users, n_items, {"dim": DIM, **opts}).train()
        b = _batch(n_users, n_items, m.history_length(), gen)
        hist = b.context.history  # type: ignore[union-attr]

        def old(m: Any = m, b: PairBatch = b, hist: torch.Tensor = hist) -> None:
            _step(m, lambda: spec(old_score(m, b.users, b.items, hist)) + old_regularization(m, b.users, b.items))

        def new(m: Any = m, b: PairBatch = b) -> None:
            _step(m, lambda: m.loss(b, spec) + m.regularization(b.users, b.items))

        out.append((key, m, old, new))
    return out


def dropped_flops(model: Any) -> int:
    """Matrix-product FLOPs of the attention blocks that ``_ComponentAttention`` computes and drops.

    Per attention over (B, L, d): the forward ``alpha @ steps`` and the backward ``G @ steps^T`` are
    ``8 B L d`` each, and the ``alpha^T G`` half of the backward's ``d steps`` product is ``8 B L d``;
    three quarters of each are off-diagonal blocks.
    """
    c = model.config
    if c.per_dim:
        return 0
    windows = []
    if isinstance(model, (QUALE, QUALSE)):
        windows.append(c.l)
    if isinstance(model, (QUASE, QUALSE)):
        windows.append(c.s)
    return sum(3 * 8 * BATCH * w * c.dim * 3 // 4 for w in windows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    p.add_argument("--sizes", nargs="+", default=["ml-1m", "toys"], choices=sorted(SIZES))
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(0)
    peak = matmul_peak()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"torch {torch.__version__}, 1 thread, CPUs allowed: {affinity}")
    print(f"single-core float32 matmul peak (2048^3): {peak / 1e9:.1f} GFLOP/s")
    print(f"step: loss (B={BATCH}, 1 + {NEGATIVES} candidates, d={DIM}) + regularisation, zero_grad, backward")
    header = f"{'sizes':6s} {'model':10s} {'old ms/step':>17s} {'new ms/step':>17s} {'speedup':>8s}"
    print(header + f" {'GFLOP/step':>10s} {'old %peak':>9s} {'new %peak':>9s}")
    rows = []
    for sizes in args.sizes:
        for name, model, old, new in cases(sizes, args.models, gen):
            flops = matmul_flops(new) - dropped_flops(model)
            t = interleaved(old, new, args.rounds, args.steps)
            row = {"sizes": sizes, "model": name, **summarise(t, flops, peak)}
            rows.append(row)
            print(f"{sizes:6s} {name:10s} {summary_line(row)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_flops": peak, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
