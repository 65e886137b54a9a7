"""Shared fixtures: small interaction tables built by the tests themselves, and the real-data location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segue.data.interactions import Interactions

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.exists() and os.environ.get("SEGUE_DATA_DIR"):
    SHARED_DATA = Path(os.environ["SEGUE_DATA_DIR"])

torch.set_num_threads(2)


def real_data_dir() -> Path:
    if not (SHARED_DATA / "ml-100k").exists():
        pytest.skip("real datasets (../shared/data) are not available")
    return SHARED_DATA


def make_frame(n_users: int = 30, n_items: int = 40, per_user: int = 8, seed: int = 0) -> pd.DataFrame:
    """Users with clustered tastes (two halves of the catalogue), distinct items, increasing timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 1_000_000
    for u in range(n_users):
        half = u % 2
        pool = np.arange(n_items // 2) + half * (n_items // 2)
        items = rng.choice(pool, size=per_user, replace=False)
        for it in items:
            t += int(rng.integers(1, 100))
            rows.append((f"u{u}", 100 + int(it), float(rng.integers(1, 6)), t))
    return pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture
def data(frame: pd.DataFrame) -> Interactions:
    return Interactions.from_frame(frame, timestamp="ts", weight="rating", name="toy")
