"""Old vs new SDM / SDMR / CMN scoring kernels: ms per training step on one core, and the share of matmul peak.

A training step is what the trainer does per batch, minus the optimizer: score 256 users
against ``[positive, n negatives]`` (C = 1 + n), BPR loss plus the model's regularisation
(``--no-regularization`` drops that term, whose code is unchanged), ``zero_grad`` and
``backward``. Sizes are ml-1m's (6040 users, 3706 items), d = 64, a
history window of s = 5 (some rows left-padded), CMN with up to 50 neighbours per item.
The models are untrained: the speed does not depend on the weights.

"old" is the scoring math as it was before the kernel rewrite, kept as the reference in
``tests/test_sdm_kernels.py``; "new" is the model's own ``score``. Both run in the same
process, interleaved round by round; the table gives the best round (the least disturbed by
other processes on the machine) and, in brackets, the median round.

"%peak" is the matrix-product work of one step (forward + backward, counted by
``torch.utils.flop_counter`` on the new step, so the same figure for both) divided by the
step time and by the single-core float32 peak, measured here with a large matmul. CMN's
sampled products (``torch.sparse.sampled_addmm``) and the embedding-bag reads are not counted.

Usage (from the repository root; pin one core)::

    PYTHONPATH=$PWD taskset -c 1 python benchmarks/bench_kernels.py [--rounds 9] [--steps 3]
        [--negatives 1 4] [--no-regularization] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference kernels live in tests/

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.timing import interleaved, matmul_flops, matmul_peak, summarise, summary_line  # noqa: E402
from segue.models.base import Context, Recommender  # noqa: E402
from segue.models.cmn import CMN  # noqa: E402
from segue.models.sdmr import SDM, SDMR  # noqa: E402
from tests.test_sdm_kernels import old_cmn_score, old_sdm_features, old_sdmr_distance  # noqa: E402

N_USERS, N_ITEMS, DIM, S, BATCH, NEIGHBOURS = 6040, 3706, 64, 5, 256, 50


def _batch(c: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    users = torch.randint(1, N_USERS + 1, (BATCH,), generator=gen)
    items = torch.randint(1, N_ITEMS + 1, (BATCH, c), generator=gen)
    hist = torch.randint(1, N_ITEMS + 1, (BATCH, S), generator=gen)
    pad = torch.randint(0, S + 1, (BATCH,), generator=gen) * (torch.rand(BATCH, generator=gen) < 0.2)
    hist[torch.arange(S)[None, :] < pad[:, None]] = 0  # a fifth of the rows are short histories
    return users, items, hist


def _cmn(gen: torch.Generator) -> CMN:
    m = CMN(N_USERS, N_ITEMS, CMN.Config(dim=DIM, hops=2, max_neighbours=NEIGHBOURS))
    nb = torch.randint(1, N_USERS + 1, (N_ITEMS + 1, NEIGHBOURS), generator=gen)
    size = torch.randint(1, NEIGHBOURS + 1, (N_ITEMS + 1, 1), generator=gen)
    nb[torch.arange(NEIGHBOURS)[None, :] >= size] = 0  # 1..50 neighbours per item, 0-padded
    nb[0] = 0
    m.neighbours = nb
    m.has_neighbourhood = True
    return m


REGULARIZATION = True  # --no-regularization: time the scoring kernels' forward + backward alone


def _step(model: Recommender, score: Callable[[], torch.Tensor], users: torch.Tensor, items: torch.Tensor) -> None:
    s = score()
    loss = -F.logsigmoid(s[:, :1] - s[:, 1:]).mean()
    if REGULARIZATION:
        loss = loss + model.regularization(users, items)
    model.zero_grad(set_to_none=True)
    loss.backward()


def cases(c: int, gen: torch.Generator) -> list[tuple[str, Recommender, Callable[[], None], Callable[[], None]]]:
    """(name, model, old step, new step) for one candidate count ``c``."""
    users, items, hist = _batch(c, gen)
    ctx = Context(history=hist)
    out = []
    for hops in (1, 3):
        sdm = SDM(N_USERS, N_ITEMS, SDM.Config(dim=DIM, hops=hops, s=S)).train()
        out.append(
            (
                f"sdm H={hops}",
                sdm,
                lambda m=sdm: _step(m, lambda: -old_sdm_features(m, users, items, hist)[0], users, items),
                lambda m=sdm: _step(m, lambda: m.score(users, items, ctx), users, items),
            )
        )
    sdmr = SDMR(N_USERS, N_ITEMS, SDMR.Config(sdp_dim=DIM, sdm_dim=DIM, hops=3, s=S))
    sdmr.sdp.requires_grad_(False)  # as SDMR.fit does: frozen parts, only the fusion learns
    sdmr.sdm.requires_grad_(False)
    sdmr.train()
    out.append(
        (
            "sdmr H=3",
            sdmr,
            lambda: _step(sdmr, lambda: -old_sdmr_distance(sdmr, users, items, hist), users, items),
            lambda: _step(sdmr, lambda: sdmr.score(users, items, ctx), users, items),
        )
    )
    cmn = _cmn(gen).train()
    out.append(
        (
            "cmn H=2",
            cmn,
            lambda: _step(cmn, lambda: old_cmn_score(cmn, users, items), users, items),
            lambda: _step(cmn, lambda: cmn.score(users, items), users, items),
        )
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    p.add_argument("--negatives", type=int, nargs="+", default=[1, 4])
    p.add_argument("--json", default=None)
    p.add_argument(
        "--no-regularization",
        action="store_true",
        help="leave the model's regularisation term (unchanged code, the same cost old and new) out of the step",
    )
    args = p.parse_args()
    global REGULARIZATION
    REGULARIZATION = not args.no_regularization
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    peak = matmul_peak()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"torch {torch.__version__}, 1 thread, CPUs allowed: {affinity}")
    print(f"single-core float32 matmul peak (2048^3): {peak / 1e9:.1f} GFLOP/s")
    print(f"step: score + BPR loss{' + regularisation' if REGULARIZATION else ''}, zero_grad, backward")
    header = f"{'model':10s} {'C':>2s} {'old ms/step':>17s} {'new ms/step':>17s} {'speedup':>8s}"
    print(header + f" {'GFLOP/step':>10s} {'old %peak':>9s} {'new %peak':>9s}")
    rows = []
    for n_neg in args.negatives:
        c = 1 + n_neg
        for name, _, old, new in cases(c, gen):
            flops = matmul_flops(new)
            t = interleaved(old, new, args.rounds, args.steps)
            row = {"model": name, "C": c, **summarise(t, flops, peak)}
            rows.append(row)
            print(f"{name:10s} {c:2d} {summary_line(row)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_flops": peak, "regularization": REGULARIZATION, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
