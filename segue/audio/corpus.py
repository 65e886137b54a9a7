"""DSC-7, the Debian Soundtrack Corpus (content spec C.3 / C.5): real music from Debian main.

Seven ``games``-section packages carry complete game soundtracks under free licences (GPL-2+,
GPL-3+, CC-BY-SA, BSD-like). :func:`fetch` downloads them with ``apt-get download`` (no root
needed), unpacks them with ``dpkg -x`` into the audio data directory, unzips the two ``.pk3``
archives (zip files) with :mod:`zipfile`, skips symlinks (drascula's per-language folders) and
writes ``manifest.json``: one entry per audio file with its package, licence, size, SHA-256,
duration and sample rate, plus the wall-clock seconds the fetch took.

The data directory is ``$SEGUE_AUDIO_DIR``, else ``~/.cache/segue/audio`` (:func:`audio_dir`);
never the repository and never the shared folder. Nothing here runs in the unit tests.

Items are 30-s clips (``clips_per_track`` caps how many per track, to save compute) and every
split is by track (:func:`split_by_track`), so clips of one track never straddle train and test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segue.errors import ConfigError, DataError

AUDIO_DIR_ENV = "SEGUE_AUDIO_DIR"
DEFAULT_AUDIO_DIR = Path("~/.cache/segue/audio")
AUDIO_EXTS = (".ogg", ".opus", ".flac", ".wav", ".mp3", ".oga")


@dataclass(frozen=True)
class SourcePackage:
    """One Debian package of the corpus: where its audio lies and its licence (spec C.3)."""

    package: str
    source: str  # short name, the "topic" / source label
    audio_glob: str  # glob under the extracted tree (or inside the pk3 when ``pk3`` is set)
    licence: str
    pk3: str | None = None  # path of a zip archive holding the audio
    size_mb: int = 0


#: The seven sources of DSC-7, smallest download first (spec C.3 table).
PACKAGES: dict[str, SourcePackage] = {
    p.source: p
    for p in (
        SourcePackage(
            "drascula-music",
            "drascula",
            "usr/share/scummvm/drascula/audio/track*.ogg",
            "Drascula-License (BSD-like)",
            size_mb=36,
        ),
        SourcePackage(
            "singularity-music",
            "singularity",
            "usr/share/games/singularity/music/**/*.ogg",
            "CC-BY-SA (Max McCracken)",
            size_mb=52,
        ),
        SourcePackage(
            "planetblupi-music-ogg", "planetblupi", "usr/share/planetblupi/music/music*.ogg", "GPL-3+", size_mb=60
        ),
        SourcePackage(
            "nexuiz-music",
            "nexuiz",
            "sound/cdtracks/*.ogg",
            "GPL-2+",
            pk3="usr/share/games/nexuiz/data/music.pk3",
            size_mb=84,
        ),
        SourcePackage(
            "warzone2100-music",
            "warzone2100",
            "usr/share/games/warzone2100/music/albums/*/*.opus",
            "original: GPL-2+; legacy/aftermath: CC-BY-SA-3.0 or GPL-2+",
            size_mb=86,
        ),
        SourcePackage(
            "wesnoth-1.16-music", "wesnoth", "usr/share/games/wesnoth/1.16/data/core/music/*.ogg", "GPL-2+", size_mb=153
        ),
        SourcePackage(
            "ufoai-music",
            "ufoai",
            "music/*.ogg",
            "GPL-2+ / CC-BY-3.0 / CC-BY-SA-3.0, by file",
            pk3="usr/share/games/ufoai/base/0music.pk3",
            size_mb=210,
        ),
    )
}


def audio_dir(path: str | Path | None = None) -> Path:
    """The audio data directory: ``path``, else ``$SEGUE_AUDIO_DIR``, else ``~/.cache/segue/audio``."""
    if path is not None and str(path) != "":
        return Path(path).expanduser()
    env = os.environ.get(AUDIO_DIR_ENV)
    return Path(env).expanduser() if env else DEFAULT_AUDIO_DIR.expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _select(sources: list[str] | None) -> list[SourcePackage]:
    if not sources:
        return list(PACKAGES.values())
    bad = [s for s in sources if s not in PACKAGES]
    if bad:
        raise ConfigError(f"Unknown DSC-7 source(s) {', '.join(bad)}; known: {', '.join(PACKAGES)}.")
    return [PACKAGES[s] for s in sources]


def _download(pkg: SourcePackage, debs: Path) -> Path:
    found = sorted(debs.glob(f"{pkg.package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise DataError("apt-get is not available: DSC-7 is fetched from Debian with apt-get download.")
    r = subprocess.run(["apt-get", "download", pkg.package], cwd=debs, capture_output=True, text=True)
    found = sorted(debs.glob(f"{pkg.package}_*.deb"))
    if r.returncode != 0 or not found:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise DataError(f"apt-get download {pkg.package} failed: {msg[-1] if msg else 'no .deb written'}.")
    return found[-1]


def _unpack(pkg: SourcePackage, deb: Path, root: Path) -> list[Path]:
    """Extract one package; returns its (real, non-symlink) audio files under ``root/<source>``."""
    dest = root / pkg.source
    marker = dest / ".unpacked"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True)
        if r.returncode != 0:
            raise DataError(f"dpkg -x {deb.name} failed: {r.stderr.strip()[:200]}.")
        if pkg.pk3:
            archive = dest / pkg.pk3
            with zipfile.ZipFile(archive) as z:
                members = [m for m in z.namelist() if m.lower().endswith(AUDIO_EXTS)]
                z.extractall(dest / "pk3", members)
            archive.unlink()  # the audio now lies unzipped beside it; keep the disk use single
        marker.write_text("ok\n")
    base = dest / "pk3" if pkg.pk3 else dest
    return sorted(p for p in base.glob(pkg.audio_glob) if p.is_file() and not p.is_symlink())


def fetch(
    data_dir: str | Path | None = None,
    sources: list[str] | None = None,
    keep_debs: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Download and unpack the DSC-7 packages; write and return ``manifest.json``.

    Already downloaded or unpacked packages are reused. ``sources`` picks a subset of
    :data:`PACKAGES` (all seven by default).
    """
    import soundfile as sf

    root = audio_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    debs = root / "debs"
    debs.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    files: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for pkg in _select(sources):
        t = time.perf_counter()
        deb = _download(pkg, debs)
        t_dl = time.perf_counter() - t
        audio = _unpack(pkg, deb, root / "sources")
        if not keep_debs:
            deb.unlink(missing_ok=True)
        copyright_file = root / "sources" / pkg.source / "usr/share/doc" / pkg.package / "copyright"
        for p in audio:
            try:
                info = sf.info(str(p))
            except Exception as e:
                log(f"skipping unreadable {p.name}: {e}")
                continue
            files.append(
                {
                    "path": str(p.relative_to(root)),
                    "source": pkg.source,
                    "package": pkg.package,
                    "deb": deb.name,
                    "licence": pkg.licence,
                    "copyright_file": str(copyright_file.relative_to(root)) if copyright_file.is_file() else None,
                    "bytes": p.stat().st_size,
                    "sha256": _sha256(p),
                    "seconds": float(info.duration),
                    "samplerate": int(info.samplerate),
                    "channels": int(info.channels),
                }
            )
        timings[pkg.source] = round(time.perf_counter() - t, 2)
        log(f"{pkg.package}: {len(audio)} files (download {t_dl:.1f} s, total {timings[pkg.source]:.1f} s)")
    manifest = {
        "corpus": "DSC-7 (Debian Soundtrack Corpus)",
        "sources": [s.source for s in _select(sources)],
        "files": files,
        "n_files": len(files),
        "hours": round(sum(f["seconds"] for f in files) / 3600, 3),
        "fetch_seconds": round(time.perf_counter() - t0, 2),
        "fetch_seconds_per_source": timings,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_manifest(data_dir: str | Path | None = None) -> dict[str, Any]:
    path = audio_dir(data_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(f"No DSC-7 manifest at {path}; run `segue audio fetch` first.")
    return json.loads(path.read_text())


def split_by_track(track_ids: np.ndarray, fractions: tuple[float, ...] = (0.7, 0.1, 0.2), seed: int = 0) -> np.ndarray:
    """A part index (0 = train, 1 = valid, 2 = test, ...) per row, drawn per *track*.

    Whole tracks are shuffled with ``seed`` and assigned greedily so that each part holds about
    its fraction of the rows (clips); every row of one track lands in the same part.
    """
    track_ids = np.asarray(track_ids)
    if len(track_ids) == 0:
        raise DataError("Cannot split an empty item table.")
    f = np.asarray(fractions, dtype=float)
    if (f <= 0).any() or abs(f.sum() - 1) > 1e-6:
        raise ConfigError(f"Split fractions must be positive and sum to 1, got {fractions}.")
    tracks, counts = np.unique(track_ids, return_counts=True)
    if len(tracks) < len(f):
        raise DataError(f"{len(tracks)} tracks cannot be split into {len(f)} parts by track.")
    order = np.random.default_rng(seed).permutation(len(tracks))
    target = f * len(track_ids)
    filled = np.zeros(len(f))
    part_of = {}
    # first give each part one track so none is empty, then fill the part furthest below its target
    for k, t in enumerate(order):
        part = k if k < len(f) else int(np.argmax(target - filled))
        part_of[tracks[t]] = part
        filled[part] += counts[t]
    return np.array([part_of[t] for t in track_ids], dtype=np.int64)
