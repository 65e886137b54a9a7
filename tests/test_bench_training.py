"""benchmarks/bench_training.py's measurement on a tiny synthetic table (one small model, a few seconds)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from segue.data.interactions import Interactions
from segue.models.base import get_model_class
from tests.conftest import make_frame

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_training", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_rows_per_second_and_peak_share() -> None:
    bench = _bench()
    threads = torch.get_num_threads()
    try:
        train = Interactions.from_frame(make_frame(n_users=40, n_items=60, per_user=10), timestamp="ts", name="toy")
        options = {**bench.default_train_options(get_model_class("gmf")), "batch_size": 64}
        result = bench.measure("gmf", train, train_options=options)  # its output layer is a matmul the counter sees
        peak = bench.matmul_peak(n=512, reps=3)
    finally:
        torch.set_num_threads(threads)
    assert result["stage"] == "plain"
    assert result["rows"] == len(train)
    assert math.isfinite(result["rows_per_s"]) and result["rows_per_s"] > 0
    assert result["flops_per_row"] > 0
    share = result["flops_per_s"] / peak
    assert 0 < share <= 1


def test_subsample_keeps_whole_users_and_is_seeded() -> None:
    bench = _bench()
    data = Interactions.from_frame(make_frame(n_users=40, n_items=60, per_user=10), timestamp="ts", name="toy")
    a, b = bench.subsample(data, 95, seed=3), bench.subsample(data, 95, seed=3)
    assert bench.table_digest(a) == bench.table_digest(b)
    assert len(a) == 100  # whole users of 10 rows until at least 95 rows
    assert set(a.user_counts()[1:]) == {10}
