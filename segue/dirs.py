"""Directories segue writes (run directories, exports): marked, replaced only when segue wrote them, swapped atomically.

Each such directory holds a marker file, ``.segue`` (JSON ``{"kind": "run" | "export"}``). ``--overwrite``
replaces a directory only if it is empty or carries the marker of the same kind (directories written
before the marker existed are recognised by their ``config.json`` / ``metadata.json``), and never one
that is or contains the command's own source. The new content is written into a hidden sibling, the
old directory is renamed aside, the new one renamed in, and only then is the old one deleted: a crash
at any point leaves the old or the new directory whole, and :func:`clean_leftovers` removes the hidden
siblings of an interrupted write on the next one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from segue.errors import RunDirError

MARKER = ".segue"
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
        if not p.is_dir():
            continue
        kept = p / target.name
        if p.name.startswith(f".{target.name}.old-") and kept.is_dir() and not target.exists():
            os.replace(kept, target)
        ours = p.name.startswith((f".{target.name}.new-", f".{target.name}.old-"))
        # earlier versions wrote into ".NAME.<random>": remove those only when they hold segue files
        if ours or _kind_of(p) is not None or not any(p.iterdir()):
            shutil.rmtree(p, ignore_errors=True)


__all__ = ["MARKER", "check_target", "clean_leftovers", "new_sibling", "swap_in"]
