"""Listening logs -> sessions -> per-session features, the temporal split, and a synthetic generator.

This is the data layer of CoSeRNN (spec Part A, ``shared/specs/seed-003-coserrn-and-ch3-spec.md``).

Listening logs
--------------
A *listening log* is a pandas DataFrame with one row per play and these canonical columns
(only the first three are required):

==============  ==============================================================================
column          meaning
==============  ==============================================================================
``user``        raw user id
``track``       raw track id
``timestamp``   play start, seconds since 1970 (UTC)
``session``     a session id given by the dataset (used only with ``use_session_ids=True``)
``skipped``     bool, the play was skipped (A.2: "take a dataset-provided skip flag")
``duration``    seconds actually played; when present the inactivity gap is measured from the
                end of the previous play (A.2 [AMBIG] default)
``device``      categorical context of the session (A.2 ``Y_t``)
``source``      categorical stream source (A.2 ``z_t``)
``utc_offset``  hours to add to UTC to get the user's local time (hour / day context)
``country``     static user attribute (carried, not used by the model)
``age``         static user attribute: bucketed into the optional initial-state features
``artist``      raw artist id (carried)
==============  ==============================================================================

Loaders: :func:`load_lastfm1k` (Last.fm-1K ``userid-timestamp-artid-artname-traid-traname.tsv``
plus the optional ``userid-profile.tsv``), :func:`load_session_rec` (the session-rec format
``UserId SessionId ItemId Time ArtistId`` with a header, e.g. ``30music-200ks-test``),
:func:`load_log` (any CSV / TSV / Parquet with a column mapping) and :func:`log_from_interactions`
(any :class:`~segue.data.interactions.Interactions` with timestamps, e.g. ml-100k's ratings).
Every malformed input raises :class:`~segue.errors.DataError` with a one-line message.

Sessions and features (A.2)
---------------------------
:func:`build_sessions` cuts each user's plays (time order, file order breaking ties) into
sessions at every inactivity gap ``>= gap`` seconds (20 minutes by default; start-to-start, or
end-to-start when ``duration`` exists), keeps the first ``max_tracks`` (10) tracks of each session,
and computes per session: the number of tracks **before** truncation (``N_t``), the time since the
end of the previous session (``Delta_t``, 0 for the first), the local hour (0..23) and day of week
(0 = Monday) of the session start, the device and the stream source (the most frequent among the kept
tracks, ties to the first), and the skip flags. Where the log has no skip signal every track counts
as played (A.2: ``s^- = 0``, the Table-4 "played only" variant); :attr:`SessionData.has_skips` says
which. The result, :class:`SessionData`, stores sessions ordered by (user, start) in flat arrays
with CSR-like per-user offsets.

Temporal split (A.7)
--------------------
:func:`temporal_split` labels each session train (0), validation (1) or test (2) by its start time:
test = the last ``test_days`` days, validation = the ``valid_days`` days before, train = earlier
(14 and 5 in the paper). ``anchor="global"`` puts the windows at the end of the whole log (the
paper's setup); ``anchor="user"`` at the end of each user's own log, for data whose users are
active in different periods. :func:`last_sessions_split` is the count-based fallback for very
thin logs: each user's last ``test_frac`` of sessions (at least one) is test and the
``valid_frac`` before it validation. A split only chooses which positions are targets: the
model always reads a user's whole history before a session.

Synthetic sessions (A.14)
-------------------------
:func:`synthetic_log` generates a seeded listening log with planted structure; its docstring
documents the generative process. Every result computed on it is synthetic.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from segue.data.interactions import IdMap, Interactions
from segue.errors import ConfigError, DataError

REQUIRED = ("user", "track", "timestamp")
OPTIONAL = ("session", "skipped", "duration", "device", "source", "utc_offset", "country", "age", "artist")
CANONICAL = REQUIRED + OPTIONAL
DEFAULT_GAP = 20 * 60.0
DEFAULT_MAX_TRACKS = 10

#: Time-of-day buckets of A.2 (with the [AMBIG] default evening = 5pm-9pm), by local hour.
TOD_BUCKETS = ("night", "early morning", "morning", "afternoon", "evening", "late evening")
_HOUR_TO_TOD = np.array(
    [5, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5], dtype=np.int64
)  # 0h -> late evening (9pm-1am), 1-5h night, 6-8h early morning, 9-11h morning, 12-16h afternoon, 17-20h evening
AGE_BUCKETS = (0, 18, 25, 35, 45, 55, 200)

TRAIN, VALID, TEST = 0, 1, 2


def tod_bucket(hour: np.ndarray | int) -> np.ndarray:
    """Time-of-day bucket index (into :data:`TOD_BUCKETS`) of local hours 0..23."""
    return _HOUR_TO_TOD[np.asarray(hour, dtype=np.int64)]


# --------------------------------------------------------------------------------------------
# listening logs
# --------------------------------------------------------------------------------------------


def validate_log(frame: pd.DataFrame, name: str = "listening log") -> pd.DataFrame:
    """Check a log with canonical column names and return a clean copy (typed, sorted by user and time).

    Raises :class:`DataError` on a missing required column, an empty table, missing ids, a
    non-numeric or non-finite timestamp, a bad skip flag or a negative duration.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}.")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}.")
    if len(frame) == 0:
        raise DataError(f"{name} is empty.")
    out = frame[[c for c in CANONICAL if c in frame.columns]].copy()
    for c in ("user", "track"):
        if out[c].isna().any():
            row = int(np.flatnonzero(out[c].isna().to_numpy())[0])
            raise DataError(f"{name}: the {c} id of row {row} is missing.")
    ts = pd.to_numeric(out["timestamp"], errors="coerce")
    bad = ts.isna() | ~np.isfinite(ts.fillna(0).to_numpy(np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{name}: the timestamp of row {row} is {frame['timestamp'].iloc[row]!r}, not a number.")
    out["timestamp"] = ts.to_numpy(np.float64)
    if "skipped" in out.columns:
        out["skipped"] = _to_bool(out["skipped"], name)
    if "duration" in out.columns:
        d = pd.to_numeric(out["duration"], errors="coerce")
        if d.isna().any() or (d < 0).any():
            row = int(np.flatnonzero((d.isna() | (d < 0)).to_numpy())[0])
            raise DataError(f"{name}: the duration of row {row} is {frame['duration'].iloc[row]!r}, not a number >= 0.")
        out["duration"] = d.to_numpy(np.float64)
    if "utc_offset" in out.columns:
        o = pd.to_numeric(out["utc_offset"], errors="coerce").fillna(0.0)
        if (o.abs() > 14).any():
            raise DataError(f"{name}: utc_offset must be in hours within -14..14.")
        out["utc_offset"] = o.to_numpy(np.float64)
    for c in ("device", "source"):
        if c in out.columns:
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)


def _to_bool(col: pd.Series, name: str) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy(bool)
    text = col.astype(str).str.strip().str.lower()
    truth = {"1": True, "true": True, "t": True, "yes": True, "0": False, "false": False, "f": False, "no": False}
    mapped = text.map(truth)
    if mapped.isna().any():
        row = int(np.flatnonzero(mapped.isna().to_numpy())[0])
        raise DataError(f"{name}: the skipped flag of row {row} is {col.iloc[row]!r}, not a boolean.")
    return mapped.to_numpy(bool)


def load_log(
    path: str | Path,
    columns: Mapping[str, str],
    fmt: Literal["csv", "tsv", "parquet"] | None = None,
    time_format: Literal["unix", "unix_ms", "iso"] = "unix",
    name: str | None = None,
) -> pd.DataFrame:
    """Any CSV / TSV / Parquet listening log with a header; ``columns`` maps canonical names to file columns.

    Example: ``load_log("plays.csv", {"user": "uid", "track": "song", "timestamp": "ts"})``.
    ``time_format`` says how the timestamp column is written (Unix seconds, milliseconds or
    ISO-8601 text).
    """
    path = Path(path)
    label = name or path.name
    unknown = sorted(set(columns) - set(CANONICAL))
    if unknown:
        raise ConfigError(f"{label}: unknown canonical column(s) {', '.join(unknown)}; known: {', '.join(CANONICAL)}.")
    if not path.is_file():
        raise DataError(f"Listening log {path} not found.")
    low = path.name.lower().removesuffix(".gz")
    fmt = fmt or ("parquet" if low.endswith((".parquet", ".pq")) else "csv" if low.endswith(".csv") else "tsv")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="," if fmt == "csv" else "\t", compression="infer")
    except Exception as e:  # pandas / pyarrow raise many kinds
        raise DataError(f"Cannot parse {label} as {fmt}: {' '.join(str(e).split())[:160]}.") from e
    missing = [src for src in columns.values() if src not in frame.columns]
    if missing:
        raise DataError(
            f"{label}: missing column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}."
        )
    out = pd.DataFrame({canon: frame[src].to_numpy() for canon, src in columns.items()})
    if "timestamp" in out.columns:
        out["timestamp"] = _parse_time(out["timestamp"], time_format, label)
    return validate_log(out, label)


def _parse_time(col: pd.Series, time_format: str, label: str) -> np.ndarray:
    if time_format == "iso":
        t = pd.to_datetime(col, utc=True, errors="coerce")
        if t.isna().any():
            row = int(np.flatnonzero(t.isna().to_numpy())[0])
            raise DataError(f"{label}: the timestamp of row {row} is {col.iloc[row]!r}, not an ISO-8601 time.")
        return (t - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    if time_format not in ("unix", "unix_ms"):
        raise ConfigError(f"{label}: time_format must be unix, unix_ms or iso, got {time_format!r}.")
    t = pd.to_numeric(col, errors="coerce")
    if t.isna().any():
        row = int(np.flatnonzero(t.isna().to_numpy())[0])
        raise DataError(f"{label}: the timestamp of row {row} is {col.iloc[row]!r}, not a number.")
    t = t.to_numpy(np.float64)
    return t / 1000.0 if time_format == "unix_ms" else t


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"Listening log {path} not found.")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                return f.read()
        return path.read_text(encoding="utf-8", errors="replace")
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read {path}: {e}.") from e


def load_lastfm1k(path: str | Path, profile: str | Path | None = None) -> pd.DataFrame:
    """Last.fm-1K ``userid \\t timestamp \\t artid \\t artname \\t traid \\t traname`` (no header, ISO times).

    A play without a MusicBrainz track id gets the track key ``artist name || track name``. The
    optional ``userid-profile.tsv`` (``#id gender age country registered``, with a header) adds
    ``country`` and ``age``. Last.fm-1K has no skips, devices or sources.
    """
    path = Path(path)
    rows = []
    for no, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 6:
            raise DataError(f"{path.name}: line {no} has {len(parts)} tab-separated fields, expected 6.")
        user, ts, artid, artname, traid, traname = parts
        if not user or not ts:
            raise DataError(f"{path.name}: line {no} has an empty user id or timestamp.")
        track = traid or f"{artname}||{traname}"
        if track == "||":
            raise DataError(f"{path.name}: line {no} has neither a track id nor a track name.")
        rows.append((user, track, ts, artid or artname))
    if not rows:
        raise DataError(f"{path.name} has no rows.")
    frame = pd.DataFrame(rows, columns=["user", "track", "timestamp", "artist"])
    frame["timestamp"] = _parse_time(frame["timestamp"], "iso", path.name)
    if profile is not None:
        prof = _read_lastfm_profile(Path(profile))
        frame = frame.merge(prof, on="user", how="left")
    return validate_log(frame, path.name)


def _read_lastfm_profile(path: Path) -> pd.DataFrame:
    rows = []
    for no, line in enumerate(_read_text(path).splitlines(), 1):
        if no == 1 and line.startswith("#"):
            continue
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            raise DataError(f"{path.name}: line {no} has {len(parts)} fields, expected id, gender, age, country.")
        age = pd.to_numeric(parts[2], errors="coerce") if parts[2] else np.nan
        rows.append((parts[0], float(age) if age == age else np.nan, parts[3] or None))
    return pd.DataFrame(rows, columns=["user", "age", "country"])


def load_session_rec(path: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """The session-rec format: ``UserId \\t SessionId \\t ItemId \\t Time \\t ArtistId`` with a header.

    Several files (e.g. the five ``30music-200ks_test.*`` slices) are concatenated. ``Time`` is
    Unix seconds; ``SessionId`` becomes the ``session`` column (used only when asked).
    """
    paths = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
    need = ["UserId", "SessionId", "ItemId", "Time"]
    parts = []
    for p in paths:
        if not p.is_file():
            raise DataError(f"Listening log {p} not found.")
        try:
            df = pd.read_csv(p, sep="\t", compression="infer")
        except Exception as e:
            raise DataError(f"Cannot parse {p.name} as the session-rec TSV: {' '.join(str(e).split())[:160]}.") from e
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise DataError(f"{p.name}: missing column(s) {', '.join(missing)}; expected {', '.join(need)} (ArtistId).")
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    frame = pd.DataFrame(
        {"user": df["UserId"].to_numpy(), "track": df["ItemId"].to_numpy(), "timestamp": df["Time"].to_numpy()}
    )
    frame["session"] = df["SessionId"].to_numpy()
    if "ArtistId" in df.columns:
        frame["artist"] = df["ArtistId"].to_numpy()
    return validate_log(frame, paths[0].name)


def log_from_interactions(data: Interactions, context: Sequence[str] = ()) -> pd.DataFrame:
    """A listening log from an interaction table with timestamps (raw ids; named context columns kept).

    A ``session`` grouping (e.g. from :func:`segue.data.files.load_file` on a listening log) becomes
    the log's ``session`` column, which :func:`build_sessions` reads with ``use_session_ids=True``.
    """
    if not data.has_time:
        raise DataError(f"{data.name} has no timestamps, so it cannot be cut into sessions.")
    frame = pd.DataFrame(
        {
            "user": data.user_map.to_raw(data.users),
            "track": data.item_map.to_raw(data.items),
            "timestamp": data.df["timestamp"].to_numpy(np.float64),
        }
    )
    if "session" in data.group_maps:
        frame["session"] = data.group_maps["session"].to_raw(data.df["session"].to_numpy())
    for c in context:
        if c not in data.df.columns:
            raise DataError(f"{data.name} has no column {c!r}.")
        frame[c] = data.df[c].to_numpy()
    return validate_log(frame, data.name)


# --------------------------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------------------------


@dataclass
class SessionData:
    """Sessions ordered by (user, start), in flat arrays; users ``1..n_users``, tracks ``1..n_tracks``.

    ``offsets[u - 1]:offsets[u]`` are the rows of user ``u``. ``tracks`` and ``skipped`` hold the
    first ``max_tracks`` plays of each session (0 / False padded). ``device`` and ``source`` are
    codes into ``device_vocab`` / ``source_vocab`` (code 0 = unknown / none). ``delta`` is the time
    (s) since the end of the user's previous session, 0 for the first.
    """

    user: np.ndarray
    start: np.ndarray
    end: np.ndarray
    n_tracks: np.ndarray
    tracks: np.ndarray
    skipped: np.ndarray
    hour: np.ndarray
    dow: np.ndarray
    device: np.ndarray
    source: np.ndarray
    delta: np.ndarray
    offsets: np.ndarray
    user_map: IdMap
    track_map: IdMap
    device_vocab: tuple[str, ...] = ("unknown",)
    source_vocab: tuple[str, ...] = ("none",)
    has_skips: bool = False
    user_features: np.ndarray | None = None
    gap: float = DEFAULT_GAP
    name: str = "sessions"
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tracks_vocab(self) -> int:
        return len(self.track_map)

    @property
    def max_tracks(self) -> int:
        return self.tracks.shape[1]

    @property
    def position(self) -> np.ndarray:
        """Index of each session within its user's sequence (0-based)."""
        return np.arange(len(self)) - self.offsets[self.user - 1]

    @property
    def sessions_per_user(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def played(self) -> np.ndarray:
        """(S, L) bool: kept tracks that were played (not skipped)."""
        return (self.tracks > 0) & ~self.skipped

    def context_key(self, use_device: bool = True) -> np.ndarray:
        """The "identical context" of A.8: (time-of-day bucket, device) as one integer per session."""
        tod = tod_bucket(self.hour)
        return tod * len(self.device_vocab) + (self.device if use_device else 0)

    def subset_users(self, keep: np.ndarray) -> SessionData:
        """Only the users whose internal id is in ``keep`` (bool mask over 1..n or id array), re-numbered."""
        keep = np.asarray(keep)
        ids = np.flatnonzero(keep) + 1 if keep.dtype == bool else np.unique(keep.astype(np.int64))
        if len(ids) == 0:
            raise DataError(f"{self.name}: no user is left after filtering.")
        rows = np.concatenate([np.arange(self.offsets[u - 1], self.offsets[u]) for u in ids])
        counts = self.offsets[ids] - self.offsets[ids - 1]
        new_user = np.repeat(np.arange(1, len(ids) + 1), counts)
        feats = None if self.user_features is None else self.user_features[np.concatenate([[0], ids])]
        return replace(
            self,
            user=new_user,
            start=self.start[rows],
            end=self.end[rows],
            n_tracks=self.n_tracks[rows],
            tracks=self.tracks[rows],
            skipped=self.skipped[rows],
            hour=self.hour[rows],
            dow=self.dow[rows],
            device=self.device[rows],
            source=self.source[rows],
            delta=self.delta[rows],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            user_map=IdMap(self.user_map.to_raw(ids), kind="user"),
            user_features=feats,
            meta=dict(self.meta),
        )

    def filter_users(self, min_sessions: int) -> SessionData:
        """Users with at least ``min_sessions`` sessions."""
        if min_sessions < 1:
            raise ConfigError(f"min_sessions must be >= 1, got {min_sessions}.")
        return self.subset_users(np.diff(self.offsets) >= min_sessions)

    def describe(self) -> dict[str, Any]:
        per_user = self.sessions_per_user
        return {
            "name": self.name,
            "users": self.n_users,
            "sessions": len(self),
            "tracks": len(np.unique(self.tracks[self.tracks > 0])),
            "plays_kept": int((self.tracks > 0).sum()),
            "plays_total": int(self.n_tracks.sum()),
            "sessions_per_user_median": float(np.median(per_user)),
            "sessions_per_user_mean": float(per_user.mean()),
            "skip_signal": self.has_skips,
            "skip_rate": float(self.skipped[self.tracks > 0].mean()) if self.has_skips else 0.0,
            "gap_seconds": self.gap,
            "time_min": pd.to_datetime(self.start.min(), unit="s").isoformat(),
            "time_max": pd.to_datetime(self.end.max(), unit="s").isoformat(),
        }


def sessionize(log: pd.DataFrame, gap: float = DEFAULT_GAP, use_session_ids: bool = False) -> np.ndarray:
    """Per-row session number (0, 1, ... over the whole validated log, sorted by user and time).

    A new session starts at a user's first play and whenever the inactivity gap is ``>= gap``
    seconds: start-to-start, or from the end of the previous play (start + ``duration``) when
    the log has durations. With ``use_session_ids`` the dataset's ``session`` column decides.
    """
    if gap <= 0:
        raise ConfigError(f"gap must be > 0 seconds, got {gap}.")
    users = log["user"].astype(str).to_numpy()
    t = log["timestamp"].to_numpy(np.float64)
    new_user = np.ones(len(log), dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    if use_session_ids:
        if "session" not in log.columns:
            raise DataError("use_session_ids=True but the log has no session column.")
        sid = log["session"].astype(str).to_numpy()
        new = new_user.copy()
        new[1:] |= sid[1:] != sid[:-1]
    else:
        prev_end = t.copy()
        if "duration" in log.columns:
            prev_end = t + log["duration"].to_numpy(np.float64)
        g = np.empty(len(log))
        g[0] = np.inf
        g[1:] = t[1:] - prev_end[:-1]
        new = new_user | (g >= gap)
    return np.cumsum(new) - 1


def build_sessions(
    log: pd.DataFrame,
    gap: float = DEFAULT_GAP,
    max_tracks: int = DEFAULT_MAX_TRACKS,
    use_session_ids: bool = False,
    name: str = "sessions",
) -> SessionData:
    """Cut a listening log into sessions and compute the A.2 features (see the module docstring)."""
    if max_tracks < 1:
        raise ConfigError(f"max_tracks must be >= 1, got {max_tracks}.")
    log = validate_log(log, name)
    sid = sessionize(log, gap, use_session_ids)
    n_sess = int(sid[-1]) + 1
    codes, user_map = pd.factorize(log["user"].astype(str), sort=False)
    user_raw = pd.unique(log["user"])
    user_map = IdMap(np.asarray(user_raw), kind="user")
    uid = codes.astype(np.int64) + 1
    tcodes, tuniq = pd.factorize(log["track"], sort=False)
    track_map = IdMap(np.asarray(tuniq), kind="track")
    tid = tcodes.astype(np.int64) + 1
    first = np.r_[0, np.flatnonzero(np.diff(sid)) + 1]
    last = np.r_[first[1:] - 1, len(sid) - 1]
    rank = np.arange(len(sid)) - first[sid]
    keep = rank < max_tracks
    tracks = np.zeros((n_sess, max_tracks), dtype=np.int64)
    tracks[sid[keep], rank[keep]] = tid[keep]
    has_skips = "skipped" in log.columns
    skipped = np.zeros((n_sess, max_tracks), dtype=bool)
    if has_skips:
        skipped[sid[keep], rank[keep]] = log["skipped"].to_numpy(bool)[keep]
    t = log["timestamp"].to_numpy(np.float64)
    end_t = t + (log["duration"].to_numpy(np.float64) if "duration" in log.columns else 0.0)
    start = t[first]
    end = np.maximum.reduceat(end_t, first)
    local = start + (log["utc_offset"].to_numpy(np.float64)[first] * 3600.0 if "utc_offset" in log.columns else 0.0)
    stamp = pd.to_datetime(local, unit="s")
    hour = stamp.hour.to_numpy(np.int64)
    dow = stamp.day_of_week.to_numpy(np.int64)
    user = uid[first]
    n_users = len(user_map)
    offsets = np.searchsorted(user, np.arange(1, n_users + 2)).astype(np.int64)
    delta = np.zeros(n_sess)
    same = np.r_[False, user[1:] == user[:-1]]
    delta[1:] = np.where(same[1:], np.maximum(start[1:] - end[:-1], 0.0), 0.0)
    device, device_vocab = _session_category(log, "device", sid, first, keep, n_sess, mode=False, none="unknown")
    source, source_vocab = _session_category(log, "source", sid, first, keep, n_sess, mode=True, none="none")
    feats = None
    if "age" in log.columns:
        age = pd.to_numeric(log["age"], errors="coerce").to_numpy(np.float64)[first]
        per_user = pd.Series(age).groupby(user).first().reindex(np.arange(1, n_users + 1)).to_numpy()
        bucket = np.where(np.isnan(per_user), 0, np.digitize(np.nan_to_num(per_user), AGE_BUCKETS[1:-1]) + 1)
        feats = np.zeros((n_users + 1, len(AGE_BUCKETS)), dtype=np.float32)
        feats[np.arange(1, n_users + 1), bucket] = 1.0
    return SessionData(
        user=user,
        start=start,
        end=end,
        n_tracks=(last - first + 1).astype(np.int64),
        tracks=tracks,
        skipped=skipped,
        hour=hour,
        dow=dow,
        device=device,
        source=source,
        delta=delta,
        offsets=offsets,
        user_map=user_map,
        track_map=track_map,
        device_vocab=device_vocab,
        source_vocab=source_vocab,
        has_skips=has_skips,
        user_features=feats,
        gap=float(gap),
        name=name,
        meta={"use_session_ids": use_session_ids, "max_tracks": max_tracks},
    )


def _session_category(
    log: pd.DataFrame, col: str, sid: np.ndarray, first: np.ndarray, keep: np.ndarray, n: int, mode: bool, none: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-session code of a categorical column: the first play's value, or (``mode``) the most frequent kept one."""
    if col not in log.columns:
        return np.zeros(n, dtype=np.int64), (none,)
    vals = log[col].astype(object).where(log[col].notna(), None).to_numpy()
    known = pd.Series([v for v in vals if v is not None], dtype=object).astype(str)
    vocab = (none, *sorted(known.unique().tolist()))
    index = {v: i for i, v in enumerate(vocab)}
    code = np.array([0 if v is None else index[str(v)] for v in vals], dtype=np.int64)
    if not mode:
        return code[first], vocab
    out = np.zeros(n, dtype=np.int64)
    df = pd.DataFrame({"s": sid[keep], "c": code[keep], "r": np.arange(len(sid))[keep]})
    df = df[df["c"] > 0]
    if len(df):
        agg = df.groupby(["s", "c"], sort=False).agg(cnt=("r", "size"), first=("r", "min")).reset_index()
        agg = agg.sort_values(["s", "cnt", "first"], ascending=[True, False, True], kind="stable")
        top = agg.drop_duplicates("s")
        out[top["s"].to_numpy()] = top["c"].to_numpy()
    return out, vocab


# --------------------------------------------------------------------------------------------
# temporal split (A.7)
# --------------------------------------------------------------------------------------------


def temporal_split(
    data: SessionData,
    test_days: float = 14.0,
    valid_days: float = 5.0,
    anchor: Literal["global", "user"] = "global",
    end: float | None = None,
) -> np.ndarray:
    """Per-session labels 0 = train, 1 = validation, 2 = test by session start (A.7).

    Test = sessions starting in the last ``test_days`` days before the anchor, validation = the
    ``valid_days`` days before that. ``anchor="global"``: the end of the log (or ``end``, Unix
    seconds); ``anchor="user"``: each user's last session start.
    """
    if test_days <= 0 or valid_days < 0:
        raise ConfigError(f"test_days must be > 0 and valid_days >= 0, got {test_days} and {valid_days}.")
    if anchor == "global":
        stop = np.full(len(data), float(data.start.max()) if end is None else float(end))
    elif anchor == "user":
        last = data.start[data.offsets[1:] - 1]
        stop = last[data.user - 1]
    else:
        raise ConfigError(f"anchor must be 'global' or 'user', got {anchor!r}.")
    # the window is inclusive of the anchor day: [stop - test_days, stop]
    test_from = stop - test_days * 86400.0
    valid_from = test_from - valid_days * 86400.0
    labels = np.full(len(data), TRAIN, dtype=np.int64)
    labels[data.start >= valid_from] = VALID
    labels[data.start >= test_from] = TEST
    return labels


def last_sessions_split(data: SessionData, test_frac: float = 0.2, valid_frac: float = 0.1) -> np.ndarray:
    """Per-user, count-based split: the last ``test_frac`` of each user's sessions (>= 1) test, the ``valid_frac`` before validation (>= 1 when the user has 3+ sessions)."""
    if not (0 < test_frac < 1 and 0 <= valid_frac < 1 and test_frac + valid_frac < 1):
        raise ConfigError(f"test_frac and valid_frac must be fractions summing below 1, got {test_frac}, {valid_frac}.")
    n = data.sessions_per_user[data.user - 1]
    pos = data.position
    n_test = np.maximum(1, np.floor(n * test_frac)).astype(np.int64)
    n_valid = np.where(n >= 3, np.maximum(1 if valid_frac > 0 else 0, np.floor(n * valid_frac)), 0).astype(np.int64)
    labels = np.full(len(data), TRAIN, dtype=np.int64)
    labels[pos >= n - n_test - n_valid] = VALID
    labels[pos >= n - n_test] = TEST
    return labels


# --------------------------------------------------------------------------------------------
# synthetic sessions (A.14)
# --------------------------------------------------------------------------------------------

DEVICES = ("mobile", "desktop", "speaker")
SOURCES = ("user_playlist", "radio", "charts", "search")


def synthetic_log(
    n_users: int = 300,
    n_tracks: int = 1000,
    n_clusters: int = 12,
    sessions_per_user: tuple[int, int] = (25, 60),
    days: float = 60.0,
    tracks_per_session: tuple[int, int] = (6, 14),
    p_global: float = 0.35,
    p_context: float = 0.25,
    p_sticky: float = 0.35,
    p_noise: float = 0.15,
    skip_noise: float = 0.8,
    skip_base: float = 0.08,
    start: float = 1_554_076_800.0,  # 2019-04-01 00:00 UTC, the paper's first day
    seed: int = 0,
) -> pd.DataFrame:
    """A seeded listening log with planted structure, for scale runs and ordering tests (synthetic!).

    Generative process (every draw from one ``numpy`` generator seeded with ``seed``):

    1. **Taste clusters.** Tracks are split into ``n_clusters`` equal clusters; inside a cluster
       track popularity is Zipf-like (weight ``1 / rank``).
    2. **Users.** Each user has 3 home clusters ``h0, h1, h2`` and a long-term taste over them
       that **drifts** linearly over the user's sessions from ``(0.6, 0.3, 0.1)`` to
       ``(0.1, 0.3, 0.6)`` (recency drift).
    3. **Context-dependent offsets.** A user's context rule: on the desktop ``h2``, otherwise
       ``h0`` in the daytime buckets (early morning, morning, afternoon) and ``h1`` in the
       evening ones (evening, late evening, night). On top, a **global** context map sends every
       (time-of-day bucket, device) pair to one cluster shared by all users.
    4. **Sessions.** ``sessions_per_user`` (uniform in the range) start at random times over
       ``days`` days, at an hour drawn from the user's two habitual hours (+- 2 h) or uniformly
       (30%), on a device (mobile 70%, desktop 20%, speaker 10%, re-weighted per user). The
       session's cluster is, in this order: with ``p_global`` the global context cluster, with
       ``p_context`` the user's context rule, with ``p_sticky`` the previous session's cluster,
       else a draw from the drifting long-term taste. Sessions that land within 20 minutes of
       each other merge when sessionised.
    5. **Tracks.** ``tracks_per_session`` plays, 3-4 minutes apart, from the session's cluster
       by popularity; with ``p_noise`` a play comes from a random other cluster instead.
    6. **Skips.** Off-cluster plays are skipped with ``skip_noise``, on-cluster plays with
       ``skip_base``: skips are the off-taste tracks.

    Columns: user, track, timestamp, skipped, device, source (uniform over 4 sources, so it
    carries no signal).
    """
    if n_users < 1 or n_tracks < n_clusters or n_clusters < 3:
        raise ConfigError("synthetic_log needs n_users >= 1, n_clusters >= 3 and n_tracks >= n_clusters.")
    lo, hi = sessions_per_user
    if lo < 1 or hi < lo or days * 24 < hi:
        raise ConfigError(f"sessions_per_user must be 1 <= lo <= hi <= hours in the window, got {sessions_per_user}.")
    rng = np.random.default_rng(seed)
    per = n_tracks // n_clusters
    cluster_tracks = [np.arange(c * per, (c + 1) * per) for c in range(n_clusters)]
    zipf = 1.0 / np.arange(1, per + 1)
    zipf /= zipf.sum()
    n_ctx = len(TOD_BUCKETS) * len(DEVICES)
    rows: list[tuple[Any, ...]] = []
    global_map = rng.integers(0, n_clusters, n_ctx)
    for u in range(n_users):
        home = rng.choice(n_clusters, 3, replace=False)
        hours = rng.integers(0, 24, 2)
        dev_p = np.array([0.7, 0.2, 0.1]) * rng.uniform(0.5, 1.5, 3)
        dev_p /= dev_p.sum()
        n_s = int(rng.integers(lo, hi + 1))
        slots = np.sort(rng.choice(int(days * 24), n_s, replace=False)).astype(np.float64)
        prev = int(rng.choice(home))
        for s_i, slot in enumerate(slots):
            day = np.floor(slot / 24.0)
            if rng.random() < 0.3:
                hour = int(rng.integers(0, 24))
            else:
                hour = int((hours[rng.integers(0, 2)] + rng.integers(-2, 3)) % 24)
            t0 = start + day * 86400.0 + hour * 3600.0 + rng.uniform(0, 1800)
            dev = int(rng.choice(len(DEVICES), p=dev_p))
            tod = int(tod_bucket(hour))
            frac = s_i / max(1, n_s - 1)
            taste = (1 - frac) * np.array([0.6, 0.3, 0.1]) + frac * np.array([0.1, 0.3, 0.6])
            r = rng.random()
            if r < p_global:
                c = int(global_map[tod * len(DEVICES) + dev])
            elif r < p_global + p_context:
                c = int(home[2] if DEVICES[dev] == "desktop" else home[0] if tod in (1, 2, 3) else home[1])
            elif rng.random() < p_sticky:
                c = prev
            else:
                c = int(home[rng.choice(3, p=taste)])
            prev = c
            n_t = int(rng.integers(tracks_per_session[0], tracks_per_session[1] + 1))
            t = t0
            src = SOURCES[int(rng.integers(0, len(SOURCES)))]
            for _ in range(n_t):
                noise = rng.random() < p_noise
                cc = int(rng.integers(0, n_clusters)) if noise else c
                noise = noise and cc != c
                track = int(cluster_tracks[cc][rng.choice(per, p=zipf)])
                skip = rng.random() < (skip_noise if noise else skip_base)
                rows.append((f"u{u}", f"t{track}", t, skip, DEVICES[dev], src))
                t += rng.uniform(180, 240)
    frame = pd.DataFrame(rows, columns=["user", "track", "timestamp", "skipped", "device", "source"])
    return frame


__all__ = [
    "CANONICAL",
    "DEFAULT_GAP",
    "SOURCES",
    "TEST",
    "TOD_BUCKETS",
    "TRAIN",
    "VALID",
    "SessionData",
    "build_sessions",
    "last_sessions_split",
    "load_lastfm1k",
    "load_log",
    "load_session_rec",
    "log_from_interactions",
    "sessionize",
    "synthetic_log",
    "temporal_split",
    "tod_bucket",
    "validate_log",
]
