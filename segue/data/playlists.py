"""Playlist data: user -> playlist -> song tables, loaders, MASR preprocessing (spec M.9) and statistics.

A playlist table is an :class:`~segue.data.interactions.Interactions` with a ``playlist`` group
column: each row is one (owner user, playlist, song) membership. Playlists without an owner
(radio stations, challenge playlists) get the playlist itself as owner (``user`` = playlist id),
so the owner-free variants MDR_ps / MASS_ps and the playlist->song baselines run on them.

Loaders
-------
* :func:`load_playlist_json`: a JSON list of playlists (or ``{"playlists": [...]}``, the Spotify
  Million Playlist Dataset slice layout), each with an owner (``owner`` / ``user`` / ``username``;
  AOTM-2011's ``{"user": {"name": ...}}`` too) and tracks (``tracks`` / ``songs`` / ``playlist`` /
  ``items``; a track is a scalar id, a dict with ``track_uri`` / ``track_id`` / ``id``, or an
  AOTM-2011 ``[[artist, title], msd_id]`` pair).
* :func:`load_playlist_table`: a flat CSV / TSV / Parquet of (user, playlist, track).
* Registered datasets: ``30music`` (30Music listening sessions as playlists, section 9 of the
  shared data README), ``yes-big`` (Yes.com radio playlists, no owners) and ``polimi-2018`` (5,000
  Spotify MPD playlists of the Polimi 2018 challenge, no owners).

Preprocessing (:func:`preprocess_playlists`, spec M.9): duplicate songs inside a playlist are
removed, playlists shorter than ``min_songs`` (5) or longer than ``max_songs`` are dropped, users
with more than ``max_playlists_per_user`` playlists are dropped. Songs are **not** k-core filtered
([AMBIG] M.9 default).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segue.data.interactions import Interactions
from segue.data.io import DatasetSpec, _require, resolve_data_dir
from segue.errors import DataError

MUSIC30_FILES = tuple(f"30music-200ks-test/30music-200ks_test.{i}.txt" for i in range(5))
YES_FILE = "yes-big/train.txt"
POLIMI_FILE = "polimi-recsys-2018/train_sequential.csv"

_OWNER_KEYS = ("owner", "user", "username", "user_id", "owner_id")
_TRACK_KEYS = ("tracks", "songs", "playlist", "items")
_PID_KEYS = ("pid", "mix_id", "playlist_id", "id")
_TRACK_ID_KEYS = ("track_uri", "track_id", "song_id", "id", "uri")


def _build(frame: pd.DataFrame, name: str, timestamp: str | None = None) -> Interactions:
    return Interactions.from_frame(
        frame, user="user", item="item", timestamp=timestamp, groups={"playlist": "playlist"}, name=name
    )


def _track_id(t: Any) -> Any:
    if isinstance(t, dict):
        for k in _TRACK_ID_KEYS:
            if t.get(k) is not None:
                return t[k]
        return None
    if isinstance(t, (list, tuple)):
        # AOTM-2011: [[artist, title], msd_id or null]
        if len(t) == 2 and isinstance(t[0], (list, tuple)):
            return t[1] if t[1] is not None else " - ".join(map(str, t[0]))
        return " - ".join(map(str, t))
    return t


def _owner(pl: dict[str, Any]) -> Any:
    for k in _OWNER_KEYS:
        v = pl.get(k)
        if isinstance(v, dict):
            v = v.get("name", v.get("id"))
        if v is not None:
            return v
    return None


def playlists_from_json(obj: Any, name: str = "playlists") -> Interactions:
    """Interactions from parsed playlist JSON (see the module docstring for the accepted layouts)."""
    if isinstance(obj, dict):
        obj = obj.get("playlists", obj.get("data"))
    if not isinstance(obj, list):
        raise DataError(f"{name}: expected a JSON list of playlists or an object with a 'playlists' list.")
    rows: list[tuple[Any, Any, Any]] = []
    for i, pl in enumerate(obj):
        if not isinstance(pl, dict):
            raise DataError(f"{name}: playlist {i} is a {type(pl).__name__}, not a JSON object.")
        pid = next((pl[k] for k in _PID_KEYS if pl.get(k) is not None), i)
        tracks = next((pl[k] for k in _TRACK_KEYS if isinstance(pl.get(k), list)), None)
        if tracks is None:
            raise DataError(f"{name}: playlist {pid!r} has no track list (keys {', '.join(_TRACK_KEYS)}).")
        owner = _owner(pl)
        owner = f"playlist:{pid}" if owner is None else owner
        for t in tracks:
            tid = _track_id(t)
            if tid is not None:
                rows.append((str(owner), str(pid), str(tid)))
    if not rows:
        raise DataError(f"{name}: the playlists hold no tracks.")
    return _build(pd.DataFrame(rows, columns=["user", "playlist", "item"]), name)


def load_playlist_json(path: str | Path, name: str | None = None) -> Interactions:
    """Read a playlist JSON file (plain or ``.gz``), e.g. AOTM-2011 or an MPD slice."""
    path = Path(path)
    try:
        text = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        obj = json.loads(text.decode("utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read playlist JSON {path}: {e}.") from e
    return playlists_from_json(obj, name or path.stem)


def load_playlist_table(
    path: str | Path,
    *,
    user: str | None = "user",
    playlist: str = "playlist",
    track: str = "track",
    sep: str | None = None,
    name: str | None = None,
) -> Interactions:
    """Read a flat (user, playlist, track) CSV / TSV / Parquet; ``user=None`` makes each playlist its own owner."""
    path = Path(path)
    try:
        if ".parquet" in path.suffixes or path.suffix == ".pq":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=sep if sep else None, engine="python" if sep is None else "c")
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read playlist table {path}: {e}.") from e
    cols = [c for c in (user, playlist, track) if c is not None]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the table has {', '.join(map(str, frame.columns))}."
        )
    out = pd.DataFrame(
        {
            "user": frame[user].astype(str) if user else "playlist:" + frame[playlist].astype(str),
            "playlist": frame[playlist].astype(str),
            "item": frame[track].astype(str),
        }
    )
    return _build(out, name or path.stem)


# -- registered datasets ------------------------------------------------------------------------


def load_30music(data_dir: str | Path | None = None, download: bool = False, progress: bool = False) -> Interactions:
    """30Music test slices: each (user, SessionId) listening session is one playlist of that user."""
    d = resolve_data_dir(data_dir)
    parts = []
    for rel in MUSIC30_FILES:
        p = _require("30music", rel, d, "the 30music-200ks test slices")
        parts.append(pd.read_csv(p, sep="\t", compression="infer"))
    df = pd.concat(parts, ignore_index=True)
    need = {"UserId", "SessionId", "ItemId", "Time"}
    if not need <= set(df.columns):
        raise DataError(f"30music: expected columns {sorted(need)}, got {list(df.columns)}.")
    df = df.sort_values(["SessionId", "Time"], kind="stable")
    frame = pd.DataFrame(
        {"user": df["UserId"].to_numpy(), "playlist": df["SessionId"].to_numpy(), "item": df["ItemId"].to_numpy()}
    )
    frame["timestamp"] = df["Time"].to_numpy(np.float64)
    return _build(frame, "30music", timestamp="timestamp")


def load_yes_big(data_dir: str | Path | None = None, download: bool = False, progress: bool = False) -> Interactions:
    """Yes.com radio playlists (yes_big train): one playlist per line from line 3, no owners."""
    p = _require("yes-big", YES_FILE, resolve_data_dir(data_dir), "the yes_big train.txt")
    opener = gzip.open if p.name.endswith(".gz") else open
    rows: list[tuple[int, int]] = []
    with opener(p, "rt") as f:
        for no, line in enumerate(f):
            if no < 2 or not line.strip():
                continue
            pid = no - 2
            rows.extend((pid, int(s)) for s in line.split())
    frame = pd.DataFrame(rows, columns=["playlist", "item"])
    frame["user"] = "playlist:" + frame["playlist"].astype(str)
    return _build(frame, "yes-big")


def load_polimi2018(data_dir: str | Path | None = None, download: bool = False, progress: bool = False) -> Interactions:
    """Polimi RecSys 2018 (Spotify MPD subset): the 5,000 sequential target playlists, no owners."""
    p = _require("polimi-2018", POLIMI_FILE, resolve_data_dir(data_dir), "train_sequential.csv")
    df = pd.read_csv(p, compression="infer")
    if not {"playlist_id", "track_id"} <= set(df.columns):
        raise DataError(f"polimi-2018: expected columns playlist_id, track_id, got {list(df.columns)}.")
    frame = pd.DataFrame({"playlist": df["playlist_id"].to_numpy(), "item": df["track_id"].to_numpy()})
    frame["user"] = "playlist:" + frame["playlist"].astype(str)
    return _build(frame, "polimi-2018")


_LASTFM = "Last.fm API terms (non-commercial); the source repository has no licence file. Tests and benchmarks only."
SPECS = (
    DatasetSpec(
        "30music",
        "30Music listening sessions (test slices of 30music-200ks): 4,620 users, 9,519 sessions as playlists.",
        MUSIC30_FILES,
        _LASTFM,
        "https://github.com/x775/skips-recommender",
        load_30music,
        "playlist-holdout",
    ),
    DatasetSpec(
        "yes-big",
        "Yes.com radio playlists (yes_big train, Chen et al. KDD'12): 18,139 playlists, 9,775 songs, no owners.",
        (YES_FILE,),
        "Crawled from Yes.com and Last.fm; research use only (see the dataset README).",
        "https://github.com/wangyingchu/docg_platform",
        load_yes_big,
        "playlist-holdout",
    ),
    DatasetSpec(
        "polimi-2018",
        "Polimi RecSys 2018 challenge (Spotify MPD subset): 5,000 playlists, 13,536 tracks, no owners.",
        (POLIMI_FILE,),
        "Derived from the Spotify MPD: non-commercial research use only, no redistribution.",
        "https://github.com/APPiccio/recsys-polimi-2018",
        load_polimi2018,
        "playlist-holdout",
    ),
)


# -- preprocessing and statistics ----------------------------------------------------------------


def preprocess_playlists(
    data: Interactions,
    *,
    min_songs: int = 5,
    max_songs: int | None = 65,
    max_playlists_per_user: int | None = None,
    seed: int = 0,
) -> Interactions:
    """Spec M.9: dedupe songs per playlist, keep playlists with ``min_songs``..``max_songs`` songs, cap users.

    [AMBIG] M.9: only playlists are filtered (no song k-core); ``max_songs`` defaults to the
    30Music table maximum + 2 = 65. Users with more than ``max_playlists_per_user`` playlists
    are dropped whole. Song order is shuffled with ``seed`` (M.9 step 4; only sequential
    baselines would read it). Ids are compacted.
    """
    if "playlist" not in data.df.columns:
        raise DataError(f"{data.name} has no playlist column; load it with a playlist loader.")
    df = data.df.drop_duplicates(["playlist", "item"])
    size = df.groupby("playlist")["item"].transform("size")
    keep = size >= min_songs
    if max_songs is not None:
        keep &= size <= max_songs
    df = df[keep]
    if max_playlists_per_user is not None:
        per_user = df.groupby("user")["playlist"].transform("nunique")
        df = df[per_user <= max_playlists_per_user]
    rng = np.random.default_rng(seed)
    df = df.iloc[np.lexsort((rng.random(len(df)), df["playlist"].to_numpy()))]
    if len(df) == 0:
        raise DataError(f"{data.name}: no playlist has {min_songs}..{max_songs} songs.")
    return data.with_frame(df).compact()


def playlist_stats(data: Interactions, train: Interactions | None = None) -> dict[str, Any]:
    """Table 4.3 statistics; song-per-playlist average and max are over ``train`` when given (as the paper)."""
    df = data.df
    n_u, n_p, n_s = int(df["user"].nunique()), int(df["playlist"].nunique()), int(df["item"].nunique())
    sizes = (train.df if train is not None else df).groupby("playlist").size()
    return {
        "users": n_u,
        "playlists": n_p,
        "songs": n_s,
        "interactions": len(df),
        "playlists_per_user": n_p / max(1, n_u),
        "avg_songs_per_playlist": float(sizes.mean()),
        "max_songs_per_playlist": int(sizes.max()),
        "density": len(df) / max(1, n_p * n_s),
    }


PAPER_TABLE_4_3 = {
    "30Music (paper)": {
        "users": 12336,
        "playlists": 32140,
        "songs": 276142,
        "interactions": 666788,
        "playlists_per_user": 2.6,
        "avg_songs_per_playlist": 18.75,
        "max_songs_per_playlist": 63,
        "density": 0.00008,
    },
    "AOTM (paper)": {
        "users": 15835,
        "playlists": 99903,
        "songs": 504283,
        "interactions": 1966795,
        "playlists_per_user": 6.3,
        "avg_songs_per_playlist": 17.69,
        "max_songs_per_playlist": 58,
        "density": 0.00004,
    },
}


def stats_markdown(stats: dict[str, dict[str, Any]]) -> str:
    """Table 4.3 layout: one column per dataset."""
    names = list(stats)
    lines = ["| Statistic | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label: str, f: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(f(stats[n]) for n in names) + " |")

    row("# of users", lambda s: f"{s['users']:,}")
    row("# of playlists", lambda s: f"{s['playlists']:,}")
    row("# of songs", lambda s: f"{s['songs']:,}")
    row("# of interactions", lambda s: f"{s['interactions']:,}")
    row("avg. # of playlists per user", lambda s: f"{s['playlists_per_user']:.1f}")
    row(
        "avg. & max # of songs per playlist",
        lambda s: f"{s['avg_songs_per_playlist']:.2f} & {s['max_songs_per_playlist']}",
    )
    row("Density", lambda s: f"{100 * s['density']:.3f}%")
    return "\n".join(lines)


__all__ = [
    "PAPER_TABLE_4_3",
    "load_30music",
    "load_playlist_json",
    "load_playlist_table",
    "load_polimi2018",
    "load_yes_big",
    "playlist_stats",
    "playlists_from_json",
    "preprocess_playlists",
    "stats_markdown",
]
