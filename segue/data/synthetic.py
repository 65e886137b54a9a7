"""Synthetic playlists and listening logs at Million-Playlist size, streamed to Parquet in chunks.

Nothing here holds a whole data set: rows are generated a chunk at a time (``chunk_rows``) from seeded
streams and written as one Parquet row group per chunk (``pyarrow.parquet.ParquetWriter``), so memory
follows the chunk and the catalogue (one float64 CDF and one permutation per track), not the rows.

The shape follows the Spotify Million Playlist Dataset (MPD; its published statistics, :data:`MPD`):

* **playlist length**: log-normal with median 49 and sigma 0.8 (mean about 67, the MPD's 66.35 tracks per
  playlist), clipped to the MPD's 5..250 tracks; a track occurs at most once in a playlist (draws that repeat
  one are dropped, so lengths come out about 8% shorter than drawn, and a few under 5);
* **track popularity**: Zipf, ``P(rank r) ~ r ** -zipf`` over the catalogue, with the exponent measured by
  maximum likelihood on the real playlist data of the data directory (:func:`measured_exponents`: 0.65 on the
  MPD-derived Polimi 2018 playlists, 0.62 on Yes.com's yes_big; :data:`ZIPF` is the former);
* **catalogue**: ``n_tracks`` (default: the MPD's 2.26M tracks scaled by ``(rows / 66.3M) ** 0.8``);
* **coherence**: each playlist has one of ``n_clusters`` tastes; a share ``coherence`` of its tracks is drawn
  from that taste's tracks (every ``n_clusters``-th popularity rank, Zipf within it), the rest from the whole
  catalogue, so a model has something to learn and the marginal popularity stays Zipf with the same exponent.

Listening logs (:func:`listening_chunks`) are (user, track, ts) events: events per user log-normal
(median 120, sigma 1.0), repeats allowed, the same popularity and tastes, timestamps within a year with
exponential gaps (mean 3 minutes) in a user's history.

Every chunk ``i`` draws from ``SeedSequence(seed, spawn_key=(kind, i))``: the output is a function of the seed
and the options (``chunk_rows`` included).
"""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segue.errors import ConfigError, DataError

#: Published statistics of the Spotify Million Playlist Dataset (its README and stats.txt).
MPD = {"playlists": 1_000_000, "rows": 66_346_428, "tracks": 2_262_292, "min_len": 5, "max_len": 250, "mean_len": 66.35}
#: Zipf exponent of track popularity measured on polimi-recsys-2018/train_sequential.csv (MPD-derived) by
#: :func:`zipf_exponent`; :func:`measured_exponents` recomputes it.
ZIPF = 0.65


def zipf_exponent(counts: np.ndarray) -> float:
    """Maximum-likelihood Zipf exponent ``s`` of ``P(rank r) ~ r ** -s`` from per-item occurrence counts.

    Items are ranked by count; the log-likelihood of the occurrences, ``-s sum log r - N log sum_r r ** -s``,
    is maximised over ``s`` in [0.01, 4] (bounded scalar search).
    """
    from scipy.optimize import minimize_scalar

    c = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    c = c[c > 0]
    if len(c) < 2:
        raise DataError("A Zipf exponent needs the counts of at least two items.")
    log_r = np.log(np.arange(1, len(c) + 1))
    n, s_log = c.sum(), float((c * log_r).sum())

    def nll(s: float) -> float:
        return s * s_log + n * float(np.log(np.exp(-s * log_r).sum()))

    return float(minimize_scalar(nll, bounds=(0.01, 4.0), method="bounded").x)


def measured_exponents(data_dir: str | Path | None = None) -> dict[str, float]:
    """The Zipf exponent of track popularity in each real playlist set found in ``data_dir``."""
    from segue.data.datasets import resolve_data_dir

    root = resolve_data_dir(data_dir)
    out: dict[str, float] = {}
    polimi = root / "polimi-recsys-2018" / "train_sequential.csv.gz"
    if polimi.exists():
        out["polimi-recsys-2018"] = zipf_exponent(pd.read_csv(polimi)["track_id"].value_counts().to_numpy())
    yes = root / "yes-big" / "train.txt.gz"
    if yes.exists():
        with gzip.open(yes, "rt") as f:
            lines = f.read().splitlines()[2:]  # line 1: song ids, line 2: counts, then one playlist a line
        songs = np.fromiter((int(t) for line in lines for t in line.split()), dtype=np.int64)
        out["yes-big"] = zipf_exponent(np.bincount(songs))
    if not out:
        raise DataError(f"No real playlist data (polimi-recsys-2018, yes-big) in {root} to measure a Zipf exponent on.")
    return out


@dataclass
class SyntheticSpec:
    """What to generate (module docstring)."""

    rows: int = 1_000_000
    seed: int = 0
    zipf: float = ZIPF
    n_tracks: int | None = None  # None: MPD's catalogue scaled to ``rows``
    n_clusters: int = 64
    coherence: float = 0.7
    len_median: float = 49.0
    len_sigma: float = 0.8
    min_len: int = MPD["min_len"]
    max_len: int = MPD["max_len"]
    events_median: float = 120.0  # listening logs: events per user
    events_sigma: float = 1.0
    chunk_rows: int = 2_000_000

    def __post_init__(self) -> None:
        checks = [
            (self.rows >= 1, "rows must be >= 1"),
            (self.zipf > 0, "zipf must be > 0"),
            (self.n_tracks is None or self.n_tracks >= self.max_len, "n_tracks must be >= max_len"),
            (self.n_clusters >= 1, "n_clusters must be >= 1"),
            (0 <= self.coherence <= 1, "coherence must be in [0, 1]"),
            (1 <= self.min_len <= self.max_len, "min_len must be in 1..max_len"),
            (self.len_median > 0 and self.len_sigma >= 0, "len_median must be > 0 and len_sigma >= 0"),
            (self.chunk_rows >= self.max_len, "chunk_rows must be >= max_len"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"Invalid synthetic data option: {msg}.")

    @property
    def tracks(self) -> int:
        n = self.n_tracks or max(1000, round(MPD["tracks"] * (self.rows / MPD["rows"]) ** 0.8))
        return self.n_clusters * math.ceil(n / self.n_clusters)  # every taste the same number of tracks


class _Catalogue:
    """Zipf CDFs over the whole catalogue and within a taste, and the rank -> track id permutation."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self.n = spec.tracks
        self.per = self.n // spec.n_clusters
        self.cdf = _zipf_cdf(self.n, spec.zipf)
        self.cdf_taste = _zipf_cdf(self.per, spec.zipf)
        self.ids = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0,))).permutation(self.n) + 1

    def draw(self, rng: np.random.Generator, tastes: np.ndarray) -> np.ndarray:
        """One track id per entry of ``tastes`` (the taste of the row's playlist or user)."""
        m = len(tastes)
        coherent = rng.random(m) < self.spec.coherence
        rank = np.searchsorted(self.cdf, rng.random(m), side="right")
        within = np.searchsorted(self.cdf_taste, rng.random(m), side="right")
        rank = np.where(coherent, within * self.spec.n_clusters + tastes, rank)
        return self.ids[np.minimum(rank, self.n - 1)].astype(np.int64)


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return np.cumsum(w / w.sum())


def _lengths(rng: np.random.Generator, spec: SyntheticSpec, n: int, median: float, sigma: float, lo: int, hi: int):
    return np.clip(np.round(rng.lognormal(math.log(median), sigma, n)), lo, hi).astype(np.int64)


def playlist_chunks(spec: SyntheticSpec) -> Iterator[pd.DataFrame]:
    """Chunks of about ``chunk_rows`` rows (whole playlists): columns playlist, track, pos (in the playlist)."""
    cat = _Catalogue(spec)
    done, first, i = 0, 1, 0
    per_chunk = max(1, int(spec.chunk_rows / (spec.len_median * math.exp(spec.len_sigma**2 / 2))))
    while done < spec.rows:
        i += 1
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(1, i)))
        lens = _lengths(rng, spec, per_chunk, spec.len_median, spec.len_sigma, spec.min_len, spec.max_len)
        keep = np.cumsum(lens) <= min(spec.chunk_rows, spec.rows - done)
        lens = lens[keep] if keep.any() else lens[:1]
        n = len(lens)
        local = np.repeat(np.arange(n), lens)
        tastes = rng.integers(0, spec.n_clusters, n)
        tracks = cat.draw(rng, tastes[local])
        # a track at most once per playlist, in drawn order
        _, first_at = np.unique(local * (cat.n + 1) + tracks, return_index=True)
        first_at.sort()
        local, tracks = local[first_at], tracks[first_at]
        starts = np.searchsorted(local, np.arange(n))
        pos = np.arange(len(local)) - starts[local]
        yield pd.DataFrame({"playlist": (local + first).astype(np.int64), "track": tracks, "pos": pos.astype(np.int32)})
        done += len(local)
        first += n


def listening_chunks(spec: SyntheticSpec) -> Iterator[pd.DataFrame]:
    """Chunks of listening events (whole users): columns user, track, ts (Unix seconds, increasing per user)."""
    cat = _Catalogue(spec)
    done, first, i = 0, 1, 0
    per_chunk = max(1, int(spec.chunk_rows / (spec.events_median * math.exp(spec.events_sigma**2 / 2))))
    t0 = 1_640_995_200  # 2022-01-01
    while done < spec.rows:
        i += 1
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2, i)))
        lens = _lengths(rng, spec, per_chunk, spec.events_median, spec.events_sigma, 1, 100 * int(spec.events_median))
        keep = np.cumsum(lens) <= min(spec.chunk_rows, spec.rows - done)
        lens = lens[keep] if keep.any() else np.minimum(lens[:1], spec.rows - done)
        n = len(lens)
        local = np.repeat(np.arange(n), lens)
        tracks = cat.draw(rng, rng.integers(0, spec.n_clusters, n)[local])
        gaps = rng.exponential(180.0, len(local))
        start = rng.integers(0, 365 * 86400, n)
        ends = np.cumsum(gaps)
        begin = np.concatenate([[0.0], ends[np.cumsum(lens)[:-1] - 1]]) if n else np.zeros(0)
        ts = t0 + start[local] + (ends - begin[local]).astype(np.int64)
        yield pd.DataFrame({"user": (local + first).astype(np.int64), "track": tracks, "ts": ts.astype(np.int64)})
        done += int(lens.sum())
        first += n


def write_parquet(path: str | Path, chunks: Iterator[pd.DataFrame]) -> dict[str, Any]:
    """Stream ``chunks`` into one Parquet file (one row group per chunk); returns rows, chunks, seconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    t0 = time.perf_counter()
    rows = n = 0
    writer = None
    try:
        for chunk in chunks:
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            rows += len(chunk)
            n += 1
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    return {"path": str(path), "rows": rows, "chunks": n, "seconds": time.perf_counter() - t0}


def write_playlists(path: str | Path, spec: SyntheticSpec) -> dict[str, Any]:
    """Generate MPD-like playlists into ``path`` (Parquet); returns the summary and the options."""
    return write_parquet(path, playlist_chunks(spec)) | {"tracks": spec.tracks, "spec": asdict(spec)}


def write_listening_log(path: str | Path, spec: SyntheticSpec) -> dict[str, Any]:
    """Generate a listening log into ``path`` (Parquet); returns the summary and the options."""
    return write_parquet(path, listening_chunks(spec)) | {"tracks": spec.tracks, "spec": asdict(spec)}


def load_playlists(path: str | Path, name: str = "synthetic-playlists") -> Any:
    """A written playlist file as :class:`~segue.data.interactions.Interactions` (user = playlist, item = track;
    ``pos`` is the timestamp, so the order within a playlist is kept by the temporal protocols)."""
    from segue.data.interactions import Interactions

    frame = pd.read_parquet(path, columns=["playlist", "track", "pos"])
    return Interactions.from_frame(frame, user="playlist", item="track", timestamp="pos", name=name)


__all__ = [
    "MPD",
    "ZIPF",
    "SyntheticSpec",
    "listening_chunks",
    "load_playlists",
    "measured_exponents",
    "playlist_chunks",
    "write_listening_log",
    "write_parquet",
    "write_playlists",
    "zipf_exponent",
]
