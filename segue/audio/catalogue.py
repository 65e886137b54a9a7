"""A catalogue of tracks and their 30-s clips, built from any folder of audio files.

:func:`index_folder` walks a folder, reads each file's header with ``soundfile`` (duration,
sample rate; nothing is decoded) and returns a track table with columns

``track`` (relative path, the track id), ``path`` (relative to the folder), ``title``,
``source``, ``album``, ``composer``, ``bpm``, ``tags`` (``|``-joined), ``seconds``,
``samplerate``, ``channels``.

Metadata rules, in order: the DSC-7 rules of spec C.5 (below) when the folder is a DSC-7 data
directory (it has ``manifest.json``); otherwise ``source`` is the first folder under the root,
``album`` the file's parent folder, ``composer``/``bpm`` empty; a ``album.json`` beside the
files (the warzone2100 layout: ``tracks: [{filename, title, author, bpm}]``) fills title,
composer and bpm wherever it exists. Tags: ``source:<s>``, ``album:<a>``, ``composer:<c>`` and
``mood:<w>`` for every mood word of :data:`MOOD_WORDS` in the title or path.

:func:`clips_table` turns tracks into items: non-overlapping 30-s clips (a track shorter than
one clip gives none), at most ``clips_per_track`` per track spread evenly over the track.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segue.audio.corpus import AUDIO_EXTS
from segue.errors import DataError

#: Words that carry a mood or a game situation in the soundtrack titles (wesnoth, singularity, ufoai).
MOOD_WORDS = (
    "battle", "sad", "victory", "love", "defeat", "win", "lose", "suspense", "frantic", "theme",
    "war", "epic", "menu", "credits", "intro", "mission", "fight", "journey", "space", "dark",
)  # fmt: skip

TRACK_COLUMNS = (
    "track",
    "path",
    "title",
    "source",
    "album",
    "composer",
    "bpm",
    "tags",
    "seconds",
    "samplerate",
    "channels",
)


def _words(text: str) -> list[str]:
    parts = re.split(r"[^A-Za-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", text))
    return [w.lower() for w in parts if w]


def _album_json(folder: Path, cache: dict[Path, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    if folder not in cache:
        entries: dict[str, dict[str, Any]] = {}
        f = folder / "album.json"
        if f.is_file():
            try:
                data = json.loads(f.read_text())
                for t in data.get("tracks", []):
                    entries[str(t.get("filename"))] = {**t, "album_title": data.get("title")}
            except (ValueError, AttributeError):
                entries = {}
        cache[folder] = entries
    return cache[folder]


def _dsc7_meta(source: str, rel: Path, title: str) -> dict[str, Any]:
    """Source-specific labels of spec C.5.5 (album, composer, mood folders)."""
    meta: dict[str, Any] = {"source": source}
    if source == "warzone2100":
        meta["album"] = rel.parent.name.replace("_soundtrack", "")
    elif source == "ufoai":
        m = re.match(r"(Crystan|David|Marine|Psymong|van|Alex|karlmacklin|TheThings)", rel.stem)
        meta["composer"] = m.group(1).lower() if m else ""
    elif source == "singularity":
        meta["album"] = rel.parent.name if rel.parent.name in ("win", "lose") else "music"
    else:
        meta["album"] = source
    return meta


def index_folder(folder: str | Path) -> pd.DataFrame:
    """The track table of every audio file under ``folder`` (see the module docstring).

    Raises :class:`DataError` if the folder does not exist or holds no readable audio file;
    unreadable files are skipped (they are counted in ``df.attrs["skipped"]``).
    """
    import soundfile as sf

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"Audio folder {root} does not exist.")
    manifest = root / "manifest.json"
    dsc7: dict[str, str] = {}
    if manifest.is_file():
        try:
            dsc7 = {f["path"]: f["source"] for f in json.loads(manifest.read_text())["files"]}
        except (ValueError, KeyError) as e:
            raise DataError(f"The manifest {manifest} is malformed ({e}).") from None
        paths = [root / p for p in dsc7]
    else:
        paths = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file() and not p.is_symlink()
        )
    albums: dict[Path, dict[str, dict[str, Any]]] = {}
    rows, skipped = [], 0
    for p in paths:
        rel = p.relative_to(root)
        try:
            info = sf.info(str(p))
        except Exception:
            skipped += 1
            continue
        title = p.stem
        row: dict[str, Any] = {
            "source": rel.parts[0] if len(rel.parts) > 1 else root.name,
            "album": rel.parent.name or root.name,
        }
        row["composer"], row["bpm"] = "", np.nan
        if str(rel) in dsc7:
            row.update(_dsc7_meta(dsc7[str(rel)], rel, title))
        entry = _album_json(p.parent, albums).get(p.name)
        if entry:
            title = str(entry.get("title") or title)
            row["composer"] = str(entry.get("author") or row["composer"])
            row["bpm"] = float(entry["bpm"]) if entry.get("bpm") is not None else np.nan
        words = set(_words(title)) | set(_words(str(rel.parent)))
        tags = [f"source:{row['source']}", f"album:{row['source']}/{row['album']}"]
        if row["composer"]:
            tags.append(f"composer:{row['composer']}")
        tags += [f"mood:{w}" for w in MOOD_WORDS if w in words]
        rows.append(
            {
                "track": str(rel),
                "path": str(rel),
                "title": title,
                **row,
                "tags": "|".join(tags),
                "seconds": float(info.duration),
                "samplerate": int(info.samplerate),
                "channels": int(info.channels),
            }
        )
    if not rows:
        raise DataError(f"No readable audio file ({', '.join(AUDIO_EXTS)}) under {root}.")
    df = pd.DataFrame(rows, columns=list(TRACK_COLUMNS))
    df.attrs["skipped"] = skipped
    df.attrs["root"] = str(root)
    return df


def clips_table(tracks: pd.DataFrame, clip_seconds: float = 30.0, clips_per_track: int | None = None) -> pd.DataFrame:
    """Items = non-overlapping clips: the track columns plus ``item`` (``track#k``), ``clip`` and ``start``.

    A track of duration T holds floor(T / clip_seconds) clips; with ``clips_per_track`` at most
    that many, evenly spread over the track (first and last included).
    """
    if clip_seconds <= 0:
        raise DataError(f"clip_seconds must be positive, got {clip_seconds}.")
    out = []
    for row in tracks.to_dict("records"):
        n = int(row["seconds"] // clip_seconds)
        if n == 0:
            continue
        ks = np.arange(n)
        if clips_per_track is not None and n > clips_per_track:
            ks = np.unique(np.round(np.linspace(0, n - 1, clips_per_track)).astype(int))
        for k in ks:
            out.append({**row, "item": f"{row['track']}#{int(k)}", "clip": int(k), "start": float(k * clip_seconds)})
    if not out:
        raise DataError(f"No track is at least {clip_seconds:g} s long, so there are no clips.")
    return pd.DataFrame(out).reset_index(drop=True)


def tag_matrix(items: pd.DataFrame, min_count: int = 10) -> tuple[np.ndarray, list[str]]:
    """Binary (n_items, n_tags) matrix of the ``tags`` column, keeping tags on >= ``min_count`` items."""
    lists = [t.split("|") if isinstance(t, str) and t else [] for t in items["tags"]]
    counts: dict[str, int] = {}
    for ts in lists:
        for t in set(ts):
            counts[t] = counts.get(t, 0) + 1
    names = sorted(t for t, c in counts.items() if c >= min_count)
    col = {t: j for j, t in enumerate(names)}
    y = np.zeros((len(lists), len(names)), dtype=np.float32)
    for i, ts in enumerate(lists):
        for t in ts:
            if t in col:
                y[i, col[t]] = 1
    return y, names
