"""Timing helpers shared by the benchmarks: the single-core matmul peak, interleaved old/new timing, matmul FLOPs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Best float32 FLOP/s of an n x n x n matmul on the current torch thread setting."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def interleaved(old: Callable[[], None], new: Callable[[], None], rounds: int, steps: int) -> dict[str, list[float]]:
    """Per-step seconds of ``old`` and ``new``, interleaved round by round (so both meet the same load)."""
    for fn in (old, new, old, new):  # warm-up
        fn()
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(rounds):
        for name, fn in (("old", old), ("new", new)):
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def matmul_flops(step: Callable[[], None]) -> int:
    """Matrix-product FLOPs of one call of ``step`` (torch's counter sees matmuls and convolutions only)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


__all__ = ["interleaved", "matmul_flops", "matmul_peak"]
