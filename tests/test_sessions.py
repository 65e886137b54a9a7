"""Listening logs, sessionisation, per-session features, the temporal split and the synthetic generator (spec A.2, A.7, A.14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segue.data.interactions import Interactions
from segue.data.sessions import (
    TEST,
    TRAIN,
    VALID,
    build_sessions,
    last_sessions_split,
    load_lastfm1k,
    load_log,
    load_session_rec,
    log_from_interactions,
    sessionize,
    synthetic_log,
    temporal_split,
    tod_bucket,
    validate_log,
)
from segue.errors import ConfigError, DataError

T0 = 1_556_000_000.0  # 2019-04-23 06:13:20 UTC, a Tuesday


def _log(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "track", "timestamp"])


# -- loaders ------------------------------------------------------------------------------------


def test_lastfm1k_tsv_and_profile(tmp_path: Path) -> None:
    log = tmp_path / "userid-timestamp-artid-artname-traid-traname.tsv"
    log.write_text(
        "user_000001\t2009-05-04T23:08:57Z\ta1\tArtist\tt1\tSong\n"
        "user_000001\t2009-05-04T13:54:10Z\ta1\tArtist\t\tNo Id Song\n"
        "user_000002\t2009-05-04T10:00:00Z\ta2\tOther\tt2\tX\n"
    )
    prof = tmp_path / "userid-profile.tsv"
    prof.write_text(
        "#id\tgender\tage\tcountry\tregistered\nuser_000001\tf\t23\tJapan\tAug 13, 2006\nuser_000002\tm\t\tPeru\t\n"
    )
    frame = load_lastfm1k(log, prof)
    assert list(frame["user"]) == ["user_000001", "user_000001", "user_000002"]
    assert frame["track"].iloc[0] == "Artist||No Id Song"  # sorted by time, the earlier play first
    assert frame["timestamp"].iloc[1] == pd.Timestamp("2009-05-04T23:08:57Z").timestamp()
    assert frame["age"].iloc[0] == 23 and np.isnan(frame["age"].iloc[2])
    data = build_sessions(frame)
    assert data.user_features is not None and data.user_features.shape == (3, 7)
    assert data.user_features[1].sum() == 1 and data.user_features[2, 0] == 1  # unknown age -> bucket 0


def test_lastfm1k_malformed_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.tsv"
    p.write_text("u1\t2009-05-04T23:08:57Z\ta1\tArtist\tt1\n")
    with pytest.raises(DataError, match="line 1 has 5"):
        load_lastfm1k(p)
    p.write_text("u1\tyesterday\ta1\tArtist\tt1\tSong\n")
    with pytest.raises(DataError, match="not an ISO-8601"):
        load_lastfm1k(p)
    p.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_lastfm1k(p)
    with pytest.raises(DataError, match="not found"):
        load_lastfm1k(tmp_path / "missing.tsv")


def test_session_rec_format(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("UserId\tSessionId\tItemId\tTime\tArtistId\n1\t10\t100\t1000\t7\n1\t10\t101\t1100\t7\n")
    b.write_text("UserId\tSessionId\tItemId\tTime\tArtistId\n2\t20\t100\t5000\t7\n")
    frame = load_session_rec([a, b])
    assert len(frame) == 3 and set(frame.columns) >= {"user", "track", "timestamp", "session", "artist"}
    b.write_text("UserId\tItemId\tTime\n2\t100\t5000\n")
    with pytest.raises(DataError, match="missing column"):
        load_session_rec(b)


def test_load_log_csv_parquet_and_errors(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "uid": ["a", "a", "b"],
            "song": [1, 2, 1],
            "ts": [1000, 2000, 3000],
            "skip": ["1", "false", "0"],
            "dev": ["m", None, "d"],
        }
    )
    cols = {"user": "uid", "track": "song", "timestamp": "ts", "skipped": "skip", "device": "dev"}
    df.to_csv(tmp_path / "log.csv", index=False)
    frame = load_log(tmp_path / "log.csv", cols)
    assert frame["skipped"].tolist() == [True, False, False]
    df.to_parquet(tmp_path / "log.parquet")
    assert load_log(tmp_path / "log.parquet", cols).equals(frame)
    ms = df.assign(ts=df["ts"] * 1000)
    ms.to_csv(tmp_path / "ms.csv", index=False)
    assert load_log(tmp_path / "ms.csv", cols, time_format="unix_ms")["timestamp"].tolist() == [1000.0, 2000.0, 3000.0]
    with pytest.raises(ConfigError, match="unknown canonical"):
        load_log(tmp_path / "log.csv", {**cols, "mood": "x"})
    with pytest.raises(DataError, match="missing column"):
        load_log(tmp_path / "log.csv", {**cols, "source": "src"})
    df.assign(skip=["maybe", "1", "0"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="skipped flag of row 0"):
        load_log(tmp_path / "bad.csv", cols)
    df.assign(ts=["x", 1, 2]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="timestamp of row 0"):
        load_log(tmp_path / "bad.csv", cols)
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="Cannot parse"):
        load_log(tmp_path / "broken.parquet", cols)


def test_validate_log_errors() -> None:
    with pytest.raises(DataError, match="missing column"):
        validate_log(pd.DataFrame({"user": [1], "track": [1]}))
    with pytest.raises(DataError, match="empty"):
        validate_log(pd.DataFrame({"user": [], "track": [], "timestamp": []}))
    with pytest.raises(DataError, match="track id of row 1"):
        validate_log(_log([(1, 1, 0.0), (1, None, 1.0)]))
    with pytest.raises(DataError, match="duration of row 0"):
        validate_log(_log([(1, 1, 0.0)]).assign(duration=[-3.0]))
    with pytest.raises(DataError, match="DataFrame"):
        validate_log([1, 2])  # type: ignore[arg-type]


def test_log_from_interactions() -> None:
    frame = pd.DataFrame({"u": [1, 1, 2], "i": [5, 6, 5], "t": [10.0, 20.0, 30.0]})
    log = log_from_interactions(Interactions.from_frame(frame, user="u", item="i", timestamp="t"))
    assert log["track"].tolist() == [5, 6, 5]
    with pytest.raises(DataError, match="no timestamps"):
        log_from_interactions(Interactions.from_frame(frame, user="u", item="i"))


# -- sessions and features -----------------------------------------------------------------------


def test_twenty_minute_gap_boundary() -> None:
    """A.15.2: a 19:59 gap continues the session, a 20:00 gap starts a new one."""
    log = validate_log(_log([("u", 1, T0), ("u", 2, T0 + 1199), ("u", 3, T0 + 1199 + 1200), ("v", 1, T0 + 5)]))
    assert sessionize(log).tolist() == [0, 0, 1, 2]
    assert sessionize(log, gap=3000).tolist() == [0, 0, 0, 1]
    # with durations the gap is measured from the end of the previous play
    dur = log.assign(duration=[0.0, 100.0, 0.0, 0.0])
    assert sessionize(dur).tolist() == [0, 0, 0, 1]
    sid = log.assign(session=["a", "a", "a", "b"])
    assert sessionize(sid, use_session_ids=True).tolist() == [0, 0, 0, 1]
    with pytest.raises(ConfigError):
        sessionize(log, gap=0)
    with pytest.raises(DataError, match="no session column"):
        sessionize(log, use_session_ids=True)


def test_features_truncation_counts_delta_context() -> None:
    rows = [("u", f"t{i}", T0 + 60 * i) for i in range(13)]  # one session of 13 plays
    rows += [("u", "t0", T0 + 86400 + 3600 * 5)]  # next day, 5 hours later
    frame = _log(rows)
    frame["source"] = ["radio"] * 4 + ["charts"] * 4 + ["radio", "charts"] + ["radio"] * 3 + ["charts"]
    frame["device"] = ["mobile"] * 13 + ["desktop"]
    frame["utc_offset"] = 2.0
    data = build_sessions(frame)
    assert len(data) == 2 and data.max_tracks == 10
    assert data.n_tracks.tolist() == [13, 1]  # counted before the 10-track truncation
    assert (data.tracks[0] > 0).sum() == 10 and (data.tracks[1] > 0).sum() == 1
    assert data.delta[0] == 0 and data.delta[1] == pytest.approx(86400 + 5 * 3600 - 12 * 60)
    local = pd.Timestamp(T0 + 7200, unit="s")
    assert data.hour[0] == local.hour and data.dow[0] == local.day_of_week
    # source: the most frequent among the kept 10 (radio 5, charts 5: tie -> the first track's)
    assert data.source_vocab[data.source[0]] == "radio"
    assert data.device_vocab[data.device[1]] == "desktop"
    assert not data.has_skips and data.played[data.tracks > 0].all()
    assert data.describe()["plays_total"] == 14


def test_tod_buckets() -> None:
    assert tod_bucket(np.arange(24)).tolist() == [
        5,
        0,
        0,
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
        3,
        3,
        3,
        3,
        3,
        4,
        4,
        4,
        4,
        5,
        5,
        5,
    ]


def test_subset_and_filter_users() -> None:
    rows = [("a", 1, T0 + 3600 * i) for i in range(5)] + [("b", 2, T0 + 3600 * i) for i in range(2)]
    data = build_sessions(_log(rows))
    kept = data.filter_users(3)
    assert kept.n_users == 1 and len(kept) == 5 and kept.user_map.to_raw([1]).tolist() == ["a"]
    assert kept.offsets.tolist() == [0, 5]
    with pytest.raises(DataError, match="no user"):
        data.filter_users(10)


# -- splits ---------------------------------------------------------------------------------------


def test_temporal_split_windows() -> None:
    rows = [("a", 1, T0 + 86400 * d) for d in range(30)] + [("b", 1, T0 + 86400 * d + 60) for d in range(10)]
    data = build_sessions(_log(rows))
    lab = temporal_split(data, test_days=14, valid_days=5)
    a = lab[data.user == 1]
    assert (a[-15:] == TEST).all() and (a[-20:-15] == VALID).all() and (a[:-20] == TRAIN).all()
    assert (lab[data.user == 2] == TRAIN).all()  # b's activity ends before the global windows
    per_user = temporal_split(data, test_days=2, valid_days=1, anchor="user")
    assert per_user[data.user == 2].tolist()[-4:] == [VALID, TEST, TEST, TEST]
    with pytest.raises(ConfigError):
        temporal_split(data, test_days=0)
    with pytest.raises(ConfigError):
        temporal_split(data, anchor="week")  # type: ignore[arg-type]


def test_last_sessions_split_gives_every_user_a_test_session() -> None:
    rows = [(u, 1, T0 + 3600 * i) for u, n in (("a", 10), ("b", 2), ("c", 1)) for i in range(n)]
    data = build_sessions(_log(rows))
    lab = last_sessions_split(data, 0.2, 0.1)
    for u in range(1, 4):
        part = lab[data.user == u]
        assert part[-1] == TEST and (np.diff(part) >= 0).all()  # train < valid < test in time
    assert lab[data.user == 1].tolist() == [0] * 7 + [1] + [2] * 2
    with pytest.raises(ConfigError):
        last_sessions_split(data, 0.8, 0.5)


# -- synthetic generator -------------------------------------------------------------------------


def test_synthetic_log_is_seeded_and_structured() -> None:
    a = synthetic_log(n_users=8, n_tracks=120, sessions_per_user=(5, 8), seed=3)
    b = synthetic_log(n_users=8, n_tracks=120, sessions_per_user=(5, 8), seed=3)
    c = synthetic_log(n_users=8, n_tracks=120, sessions_per_user=(5, 8), seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert set(a.columns) == {"user", "track", "timestamp", "skipped", "device", "source"}
    data = build_sessions(a)
    assert data.has_skips and 0.02 < data.describe()["skip_rate"] < 0.5
    assert len(data.device_vocab) > 1 and data.n_users == 8
    with pytest.raises(ConfigError):
        synthetic_log(n_users=0)
