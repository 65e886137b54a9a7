"""The synthetic MPD-like generator (segue/data/synthetic.py): seeded, shaped as asked, streamed in chunks."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from segue.data.synthetic import (
    ZIPF,
    SyntheticSpec,
    listening_chunks,
    load_playlists,
    measured_exponents,
    write_listening_log,
    write_playlists,
    zipf_exponent,
)
from segue.errors import ConfigError
from tests.conftest import real_data_dir


def test_the_zipf_fit_recovers_a_known_exponent() -> None:
    rng = np.random.default_rng(0)
    p = np.arange(1, 5001, dtype=float) ** -0.8
    draws = rng.choice(5000, 100_000, p=p / p.sum())
    assert zipf_exponent(np.bincount(draws)) == pytest.approx(0.8, abs=0.03)


def test_the_default_exponent_is_the_measured_one() -> None:
    measured = measured_exponents(real_data_dir())
    print(f"measured Zipf exponents of track popularity: {measured}")
    assert measured["polimi-recsys-2018"] == pytest.approx(ZIPF, abs=0.005)
    assert 0.4 < measured["yes-big"] < 0.9


def test_playlists_are_seeded_shaped_and_streamed(tmp_path: Path) -> None:
    spec = SyntheticSpec(rows=300_000, seed=7, chunk_rows=20_000)
    tracemalloc.start()
    summary = write_playlists(tmp_path / "a.parquet", spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    write_playlists(tmp_path / "b.parquet", spec)
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)  # deterministic for a seed
    assert not a.equals(
        pd.read_parquet(write_playlists(tmp_path / "c.parquet", SyntheticSpec(300_000, seed=8))["path"])
    )
    # about the rows asked, whole playlists, in chunks (one row group each)
    assert 0.98 * spec.rows <= summary["rows"] <= spec.rows + spec.max_len
    assert pq.ParquetFile(tmp_path / "a.parquet").num_row_groups == summary["chunks"] >= 15
    # memory follows the chunk, not the rows: the whole table in int64 would be 7.2 MB
    assert peak < 0.5 * summary["rows"] * 3 * 8
    # MPD-like lengths (median 49 drawn, a few repeats dropped), no repeated track in a playlist
    lengths = a.groupby("playlist").size()
    assert 40 <= lengths.median() <= 52 and lengths.max() <= 250 and lengths.quantile(0.01) >= 5
    assert not a.duplicated(["playlist", "track"]).any()
    assert (a.groupby("playlist")["pos"].diff().dropna() == 1).all()
    # popularity: Zipf with roughly the asked exponent (dropping in-playlist repeats flattens the head a little)
    assert zipf_exponent(a["track"].value_counts().to_numpy()) == pytest.approx(spec.zipf, abs=0.1)
    data = load_playlists(tmp_path / "a.parquet")
    assert len(data) == summary["rows"] and data.n_users == a["playlist"].nunique()


def test_listening_logs_have_increasing_times(tmp_path: Path) -> None:
    spec = SyntheticSpec(rows=50_000, seed=1, chunk_rows=10_000)
    summary = write_listening_log(tmp_path / "log.parquet", spec)
    log = pd.read_parquet(tmp_path / "log.parquet")
    assert len(log) == summary["rows"] == 50_000
    assert (log.groupby("user")["ts"].diff().dropna() >= 0).all()
    assert log.duplicated(["user", "track"]).any()  # repeats are listening, not an error
    first = next(listening_chunks(spec))
    pd.testing.assert_frame_equal(first, log.iloc[: len(first)].reset_index(drop=True))


def test_bad_options_are_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"^Invalid synthetic data option: coherence must be in \[0, 1\]\.$"):
        SyntheticSpec(coherence=2)
