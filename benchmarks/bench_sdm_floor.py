"""Where an SDM (3 hops) training step spends its time, and how far a fused kernel could take it.

The issue-14 target was SDM with 3 hops 3x faster than at eb0d703. ``bench_training.py`` measures
the whole epoch (1.44x on 2026-11-29); this script explains the rest. For one training step at
ml-1m sizes (batch 256, one negative, d = 64, s = 5, fused Adam), pinned to one core, it prints:

1. the step as segue trains it (the hand-written ``_SDMHops`` kernel);
2. the same step with the hop kernel replaced by ``torch.compile`` of the same math (inductor fuses
   the element-wise passes into vectorised C++ loops): what a fused kernel buys inside a real step;
3. the matrix-product floor: the step's matmul FLOPs (``FlopCounterMode``) at the measured
   single-core matmul peak. No kernel can go below it without changing the model;
4. the ms per step the 3x target needs, from ``--before-rows-per-s`` (eb0d703's epoch rows/s
   measured by bench_training.py in the same session).

Usage (from the repository root)::

    PYTHONPATH=$PWD taskset -c 1 python benchmarks/bench_sdm_floor.py [--steps 30] [--rounds 3]
        [--before-rows-per-s 29075]

``torch.compile`` needs a C++ compiler and takes 10-20 s to compile the first time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import segue.models.sdmr as sdmr  # noqa: E402
from benchmarks.timing import matmul_flops, matmul_peak  # noqa: E402
from segue.models.base import Context  # noqa: E402
from segue.training.optim import make_optimizer  # noqa: E402

N_USERS, N_ITEMS, DIM, S, BATCH, HOPS = 6040, 3706, 64, 5, 256, 3


def hops_graph(q1: torch.Tensor, p_out: torch.Tensor, ck: torch.Tensor, dk: torch.Tensor, mask: torch.Tensor,
               wc: torch.Tensor, bc: torch.Tensor, *gates: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """``_SDMHops.forward``'s math in plain torch ops (Eqs. 5.9-5.19), for torch.compile to fuse."""
    r = torch.tanh(p_out[:, :, None, :] + dk[:, None, :, :]).square()
    q, e, attention = q1, q1, []
    for hop in range(1, 2 + len(gates) // 2):
        if hop > 1:
            g = torch.sigmoid(F.linear(q, gates[2 * hop - 4], gates[2 * hop - 3]))
            q = (1 - g) * e + g * q
        z = torch.tanh(F.linear(q, wc, bc)[:, :, None, :] + ck[:, None, :, :]).square().sum(-1)
        a = sdmr.masked_softmin(z, mask)
        attention.append(a.detach())
        e = (a[..., None] * r).sum(2)
    return (e, *attention)


class _Compiled:
    """Stands in for ``_SDMHops`` (same ``apply`` signature) with the compiled graph."""

    fn: Any = None

    @classmethod
    def apply(cls, keep: bool, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return cls.fn(*args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before-rows-per-s", type=float, default=29075.0, help="eb0d703's SDM epoch rows/s")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(1, N_USERS + 1, (BATCH,), generator=gen)
    items = torch.randint(1, N_ITEMS + 1, (BATCH, 2), generator=gen)
    ctx = Context(history=torch.randint(1, N_ITEMS + 1, (BATCH, S), generator=gen))
    custom = sdmr._SDMHops
    _Compiled.fn = torch.compile(hops_graph, dynamic=False)

    def stepper() -> Any:
        torch.manual_seed(0)
        m = sdmr.SDM(N_USERS, N_ITEMS, sdmr.SDM.Config(dim=DIM, hops=HOPS, s=S)).train()
        opt = make_optimizer("adam", m, 1e-3, 0.0)

        def step() -> None:
            o = m.distance(users, items, ctx)
            loss = F.softplus(o[:, 0] - o[:, 1]).mean() + m.regularization(users, items)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    best: dict[str, float] = {}
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for label, kernel in (("custom kernel (as trained)", custom), ("torch.compile kernel", _Compiled)):
            sdmr._SDMHops = kernel
            step = stepper()
            for _ in range(3):
                step()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[label] = min(best.get(label, float("inf")), (time.perf_counter() - t) / args.steps * 1e3)
    sdmr._SDMHops = custom
    flops = matmul_flops(stepper())
    peak = matmul_peak(reps=10)
    floor = flops / peak * 1e3
    target = BATCH / (3 * args.before_rows_per_s) * 1e3
    print(
        f"torch {torch.__version__}, one thread; matmul peak {peak / 1e9:.1f} GFLOP/s; {time.perf_counter() - t0:.0f} s"
    )
    print(f"SDM H={HOPS}, batch {BATCH}, d={DIM}, s={S}: ms per training step (best of {args.rounds} rounds)")
    for label, ms in best.items():
        print(f"  {label:28} {ms:6.2f} ms   {BATCH / ms * 1e3:9,.0f} rows/s")
    print(f"  {'matmul floor (100% of peak)':28} {floor:6.2f} ms   ({flops / 1e6:.0f} MFLOP per step)")
    print(f"  {'3x target from before':28} {target:6.2f} ms   ({args.before_rows_per_s:,.0f} rows/s x 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
