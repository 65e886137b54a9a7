"""Timing helpers shared by the benchmarks: the single-core matmul peak, interleaved old/new timing, matmul FLOPs."""

from __future__ import annotations

import math
import statistics
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


def summarise(times: dict[str, list[float]], flops: int, peak: float) -> dict[str, float]:
    """Best and median ms per step of old and new, the speed-ups, and each one's share of the matmul peak."""
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "old_ms": best["old"] * 1e3,
        "new_ms": best["new"] * 1e3,
        "old_ms_median": med["old"] * 1e3,
        "new_ms_median": med["new"] * 1e3,
        "speedup": best["old"] / best["new"],
        "speedup_median": med["old"] / med["new"],
        "matmul_gflop": flops / 1e9,
        "old_peak_share": flops / best["old"] / peak,
        "new_peak_share": flops / best["new"] / peak,
    }


def summary_line(row: dict[str, float]) -> str:
    """The figures of :func:`summarise` as one aligned line (after the row's own labels)."""
    return (
        f"{row['old_ms']:7.2f} ({row['old_ms_median']:7.2f}) {row['new_ms']:7.2f} ({row['new_ms_median']:7.2f}) "
        f"{row['speedup']:7.2f}x {row['matmul_gflop']:10.3f} {100 * row['old_peak_share']:8.1f}% "
        f"{100 * row['new_peak_share']:8.1f}%"
    )


def matmul_flops(step: Callable[[], None]) -> int:
    """Matrix-product FLOPs of one call of ``step`` (torch's counter sees matmuls and convolutions only)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


__all__ = ["interleaved", "matmul_flops", "matmul_peak", "summarise", "summary_line"]
