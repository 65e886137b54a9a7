"""Directories segue writes (run directories, exports): marked, replaced only when segue wrote them, swapped atomically.

Each such directory holds a marker file, ``.segue`` (JSON ``{"kind": "run" | "export"}``). ``--overwrite``
replaces a directory only if it is empty or carries the marker of the same kind (directories written
before the marker existed are recognised by their ``config.json`` / ``metadata.json``), and never one
that is or contains the command's own source. The new content is written into a hidden sibling, the
old directory is renamed aside, the new one renamed in, and only then is the old one deleted: a crash
at any point leaves the old or the new directory whole, and :func:`clean_leftovers` removes the hidden
siblings of an interrupted write on the next one (but not ``.NAME.resume``, the epoch checkpoint of an
interrupted training run, which ``segue train --resume`` continues from).

:func:`check_writable` runs before any work: the directory that will receive the target must be
creatable and writable, and its disk must have room for an estimate of what will be written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from segue.errors import RunDirError

MARKER = ".segue"
#: suffix of the hidden sibling ``.NAME.resume`` that holds a training run's epoch checkpoint
RESUME_SUFFIX = ".resume"


def resume_dir(out: str | Path) -> Path:
    """Where the epoch checkpoint of the run directory ``out`` is kept: the hidden sibling ``.NAME.resume``."""
    out = Path(out)
    return out.parent / f".{out.name}{RESUME_SUFFIX}"


#: room kept free beyond an estimate of what a command writes
SPACE_MARGIN = 16 * 2**20
#: how a directory of each kind was recognised before the marker existed
_LEGACY = {"run": ("config.json", "format"), "export": ("metadata.json", "retrieval")}


def _kind_of(path: Path) -> str | None:
    marker = path / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text()).get("kind")
        except (json.JSONDecodeError, OSError, AttributeError):
            return None
        return kind if isinstance(kind, str) else None
    for kind, (name, key) in _LEGACY.items():
        try:
            data = json.loads((path / name).read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and key in data:
            return kind
    return None


def check_target(target: Path, kind: str, *, overwrite: bool, sources: Sequence[Path] = ()) -> None:
    """Raise unless ``target`` may receive a new ``kind`` directory (one sentence naming why not)."""
    target = Path(target)
    here = target.resolve()
    for src in sources:
        src = Path(src).resolve()
        if src == here or here in src.parents:
            raise RunDirError(f"{target} holds {src}, the source of this command; choose another output directory.")
    if not target.exists():
        return
    if not target.is_dir():
        raise RunDirError(f"{target} exists and is not a directory; choose another output directory.")
    if not any(target.iterdir()):
        return
    if not overwrite:
        raise RunDirError(f"{target} already exists and is not empty; choose another or pass --overwrite.")
    found = _kind_of(target)
    if found != kind:
        what = "a segue directory" if found is None else f"a segue {found} directory"
        raise RunDirError(f"{target} is not a segue {kind} directory ({what} is not replaced); refusing to delete it.")


def new_sibling(target: Path) -> Path:
    """A hidden temporary directory beside ``target`` to write the new content into."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))


def swap_in(tmp: Path, target: Path, kind: str) -> None:
    """Mark ``tmp`` as a ``kind`` directory and put it in place of ``target`` (old one renamed aside, then deleted)."""
    tmp, target = Path(tmp), Path(target)
    (tmp / MARKER).write_text(json.dumps({"kind": kind}))
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:  # put the old directory back
            os.replace(old / target.name, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(target: Path) -> None:
    """Remove the hidden siblings that an interrupted write of ``target`` left behind.

    An ``.old-`` sibling whose ``target`` is missing is the previous directory of a swap cut short
    between its two renames: it is moved back instead of deleted.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    for p in target.parent.glob(f".{target.name}.*"):
        if not p.is_dir() or p.name == f".{target.name}{RESUME_SUFFIX}":
            continue
        kept = p / target.name
        if p.name.startswith(f".{target.name}.old-") and kept.is_dir() and not target.exists():
            os.replace(kept, target)
        ours = p.name.startswith((f".{target.name}.new-", f".{target.name}.old-"))
        # earlier versions wrote into ".NAME.<random>": remove those only when they hold segue files
        if ours or _kind_of(p) is not None or not any(p.iterdir()):
            shutil.rmtree(p, ignore_errors=True)


def check_writable(target: Path, need_bytes: int = 0, what: str = "run directory") -> None:
    """Raise (one sentence) unless ``target``'s parent exists or can be created, is writable, and its disk has
    more than ``need_bytes`` (plus a margin) free. Creates nothing: a temporary file is made and removed in
    the nearest existing ancestor."""
    target = Path(target)
    probe = target.absolute().parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"Cannot write the {what} {target}: {probe} is a file, not a directory.")
    try:
        fd, name = tempfile.mkstemp(prefix=".segue-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        why = "it is read-only" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else (e.strerror or str(e))
        raise RunDirError(f"Cannot write the {what} {target}: {probe} is not writable ({why}).") from e
    if need_bytes <= 0:
        return
    try:
        free = shutil.disk_usage(probe).free
    except OSError:  # no figure to check against; the write itself will say
        return
    need = need_bytes + SPACE_MARGIN
    if free < need:
        raise RunDirError(
            f"Cannot write the {what} {target}: {probe} has {_size(free)} free but it needs about {_size(need)}; "
            "free some space or choose another location."
        )


def write_failed(target: Path, e: BaseException, what: str = "run directory") -> str:
    """One sentence for an ``OSError`` (or safetensors error) raised while writing ``target``."""
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC or "StorageFull" in str(e) or "No space left" in str(e):
        why = "the disk is full"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied"
    else:
        lines = str(e).strip().splitlines()
        why = getattr(e, "strerror", None) or (lines[0] if lines else type(e).__name__)
    return f"Could not write the {what} {target} ({why})"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


__all__ = [
    "MARKER",
    "RESUME_SUFFIX",
    "check_target",
    "check_writable",
    "clean_leftovers",
    "new_sibling",
    "resume_dir",
    "swap_in",
    "write_failed",
]
