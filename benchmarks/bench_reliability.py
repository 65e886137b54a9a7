"""Reliability: bad inputs and injected faults, each tried for real and counted (issue 15).

Sections (each a function returning table rows, so more can be added, e.g. a ``load()`` section):

* :func:`bad_inputs` -- every file of a run directory and of an export damaged in every way that applies
  (truncated, garbage, empty, wrong shape, wrong dtype, ids out of range, wrong JSON type, absolute or
  ``..`` paths, NaN), then loaded and used (evaluate, recommend); plus malformed interaction files.
  *Clean* means one :class:`~segue.errors.SegueError` sentence naming the file, or, for an optional
  file, a warning naming it and a run that still works; anything else (another exception, a traceback,
  a multi-line message, damage accepted silently) is not clean.
* :func:`faults` -- a kill at every write stage of a run and of an export (the directory on disk is
  snapshotted just before each rename or delete, as if the process died there, then the next write
  cleans up), a read-only out directory, an out directory under a file, a full disk found by the pre-check,
  a disk that fills while the run or the export is written, a kill after an epoch and during an epoch
  checkpoint's write (then ``resume``). *Survived* means the error was one sentence and nothing was
  lost: the old or the new directory is whole, the trained model is on disk, a resumed run equals an
  uninterrupted one bit for bit.

Usage::

    python benchmarks/bench_reliability.py            # print the tables
    python benchmarks/bench_reliability.py --write    # also replace the sections in docs/reliability.md

Everything runs on tiny synthetic data built here (a few seconds of training); no dataset is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DOC = ROOT / "docs" / "reliability.md"
COMMAND = "python benchmarks/bench_reliability.py --write"


# -- the directories that get damaged ------------------------------------------------------------
def toy_data(n_users: int = 30, n_items: int = 40, per_user: int = 8, seed: int = 0) -> Any:
    """Users with clustered tastes (as the tests' make_frame), as an Interactions table."""
    import pandas as pd

    from segue.data import Interactions

    rng = np.random.default_rng(seed)
    rows, t = [], 1_000_000
    for u in range(n_users):
        pool = np.arange(n_items // 2) + (u % 2) * (n_items // 2)
        for it in rng.choice(pool, size=per_user, replace=False):
            t += int(rng.integers(1, 100))
            rows.append((f"u{u}", 100 + int(it), float(rng.integers(1, 6)), t))
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    return Interactions.from_frame(frame, timestamp="ts", weight="rating", name="toy")


def train_run(out: Path, model: str = "mf-bpr", epochs: int = 1, **kwargs: Any) -> Any:
    from segue.evaluation.protocols import get_protocol
    from segue.pipeline import run
    from segue.training.trainer import TrainConfig

    cfg = TrainConfig(epochs=epochs, batch_size=32, progress=False, patience=None)
    proto = get_protocol("loo-sampled", seed=0, n_negatives=20)  # candidate lists, as the sampled protocols have
    return run(model, toy_data(), protocol=proto, train_config=cfg, out=out, log=None, **kwargs)


def build(root: Path) -> dict[str, Path]:
    """Pristine directories: an MF run and its export (user vectors + index), a sequential (SASRec) run
    with ``recent.npz`` and its export (the model answers queries: weights + config)."""
    from segue.serving.export import export_run

    root.mkdir(parents=True, exist_ok=True)
    dirs = {"run": root / "run", "seqrun": root / "seqrun"}
    train_run(dirs["run"])
    train_run(dirs["seqrun"], "sasrec")
    dirs["export"] = export_run(dirs["run"], root / "export", index="exact")
    dirs["seqexport"] = export_run(dirs["seqrun"], root / "seqexport", index="exact")
    return dirs


# -- damage -----------------------------------------------------------------------------------------
def _truncate(p: Path) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)))


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _npz(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays[key] = fn(arrays[key])
        with open(p, "wb") as f:  # keep the name: np.savez would append .npz
            np.savez(f, **arrays)

    return apply


def _npy(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        arr = fn(np.load(p, allow_pickle=False))
        with open(p, "wb") as f:
            np.save(f, arr)

    return apply


def _json(fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))

    return apply


def _weights(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        from safetensors.torch import load_file, save_file

        save_file(fn(load_file(str(p))), str(p))

    return apply


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: {**d, key: value}


def _set_file(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: {**d, "files": {**d["files"], key: value}}


def _first_tensor(fn: Callable[[Any], Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def apply(state: dict[str, Any]) -> dict[str, Any]:
        k = sorted(state)[0]
        return {**state, k: fn(state[k])}

    return apply


def _nan(t: Any) -> Any:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _parquet_drop_row(p: Path) -> None:
    import pandas as pd

    pd.read_parquet(p).iloc[1:].to_parquet(p, index=False)


@dataclass(frozen=True)
class Damage:
    """One kind of damage to one file of one directory."""

    target: str  # run | seqrun | export | seqexport
    file: str
    kind: str
    apply: Callable[[Path], None]
    optional: bool = False  # an optional file: a warning and a working directory is the clean outcome

    @property
    def name(self) -> str:
        return f"{self.target}/{self.file}: {self.kind}"


BYTES = (("truncated", _truncate), ("garbage", _garbage), ("empty", _empty))


def _catalogue() -> list[Damage]:
    import torch

    out: list[Damage] = []

    def add(target: str, file: str, cases: list[tuple[str, Callable[[Path], None]]], optional: bool = False) -> None:
        out.extend(Damage(target, file, kind, fn, optional) for kind, fn in [*BYTES, *cases])

    big = 10**6
    seen_cases = [
        ("item ids out of range", _npz("indices", lambda a: a + big)),
        ("negative item id", _npz("indices", lambda a: np.where(np.arange(len(a)) == 0, -3, a))),
        ("wrong shape", _npz("shape", lambda a: a + 5)),
        ("wrong dtype", _npz("indices", lambda a: a.astype(np.float64))),
        ("row offsets decreasing", _npz("indptr", lambda a: a[::-1].copy())),
        ("array missing", lambda p: np.savez(open(p, "wb"), shape=np.asarray([1, 1]))),  # noqa: SIM115
    ]
    for target in ("run", "seqrun"):
        add(
            target,
            "config.json",
            [
                ("JSON list", _json(lambda d: [d])),
                ("n_users a string", _json(_set("n_users", "30"))),
                ("n_items wrong", _json(lambda d: {**d, "n_items": d["n_items"] + 1})),
                ("unknown model", _json(_set("model", "no-such-model"))),
                ("model options a list", _json(_set("model_options", [1]))),
                ("bad model option", _json(lambda d: {**d, "model_options": {**d["model_options"], "dim": -4}})),
                ("protocol a list", _json(_set("protocol", [1]))),
            ],
        )
        add(target, "id_maps.parquet", [("a row missing", _parquet_drop_row)])
        add(
            target,
            "weights.safetensors",
            [
                ("wrong dtype", _weights(_first_tensor(lambda t: t.double()))),
                ("wrong shape", _weights(_first_tensor(lambda t: torch.zeros(3, 3)))),
                ("NaN", _weights(_first_tensor(_nan))),
                ("tensor missing", _weights(lambda s: dict(sorted(s.items())[1:]))),
            ],
        )
        add(target, "seen.npz", seen_cases)
        for part in ("valid.npz", "test.npz"):
            add(
                target,
                part,
                [
                    ("user ids out of range", _npz("users", lambda a: a + big)),
                    ("candidate ids out of range", _npz("candidates", lambda a: a + big)),
                    ("wrong dtype", _npz("candidates", lambda a: a.astype(np.float32))),
                    ("meta a JSON list", _npz("meta", lambda a: np.asarray("[1, 2]"))),
                ],
            )
        add(
            target,
            "metrics.json",
            [("JSON list", _json(lambda d: [d])), ("test metrics a list", _json(_set("test", [1, 2])))],
            optional=True,
        )
        add(
            target,
            "history.json",
            [("JSON list", _json(lambda d: [d])), ("epochs an object", _json(_set("epochs", {"a": 1})))],
            optional=True,
        )
    for target in ("seqrun", "seqexport"):  # the export carries the run's recent items for user queries
        add(
            target,
            "recent.npz",
            [
                ("item ids out of range", _npz("items", lambda a: a + big)),
                ("wrong shape", _npz("items", lambda a: a[1:])),
                ("wrong dtype", _npz("items", lambda a: a.astype(np.float32))),
            ],
        )
    for target in ("export", "seqexport"):
        add(
            target,
            "metadata.json",
            [
                ("JSON list", _json(lambda d: [d])),
                ("absolute path", _json(_set_file("seen", "/etc/passwd"))),
                ("path with ..", _json(_set_file("seen", "../run/seen.npz"))),
                ("files a list", _json(_set("files", ["seen.npz"]))),
                ("n_users a string", _json(_set("n_users", "30"))),
                ("unknown retrieval", _json(_set("retrieval", "magic"))),
                ("wrong format", _json(_set("format", 99))),
            ],
        )
        add(target, "seen.npz", seen_cases)
        add(target, "id_maps.parquet", [("a row missing", _parquet_drop_row)])
        add(target, "config.json", [("JSON list", _json(lambda d: [d])), ("other model", _json(_set("model", "pop")))])
        add(
            target,
            "item_vectors.npy",
            [("wrong shape", _npy(lambda a: a[1:])), ("wrong dtype", _npy(lambda a: a.astype(np.float64)))],
        )
        add(target, "index.faiss", [])
        add(target, "index.json", [("JSON list", _json(lambda d: [d])), ("wrong size", _json(_set("n", 3)))])
    add(
        "export",
        "user_vectors.npy",
        [
            ("wrong shape", _npy(lambda a: a[1:])),
            ("wrong dtype", _npy(lambda a: a.astype(np.float64))),
            ("NaN", _npy(lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a).astype(np.float32))),
            ("object array (pickle)", lambda p: np.save(open(p, "wb"), np.asarray([{}], dtype=object))),  # noqa: SIM115
        ],
    )
    add(
        "seqexport",
        "weights.safetensors",
        [("wrong dtype", _weights(_first_tensor(lambda t: t.double()))), ("NaN", _weights(_first_tensor(_nan)))],
    )
    return out


CATALOGUE: list[Damage] = []


def catalogue() -> list[Damage]:
    if not CATALOGUE:
        CATALOGUE.extend(_catalogue())
    return CATALOGUE


def use(kind: str, path: Path) -> None:
    """Load a directory and use it as the commands do (evaluate and recommend; serve answers)."""
    import torch

    if kind in ("run", "seqrun"):
        from segue.evaluation.protocols import evaluate
        from segue.training.checkpoint import load_run

        r = load_run(path)
        for part in ("valid", "test"):
            evaluate(r.model, r.evalset(part), ks=(10,), metrics=("HR", "NDCG"))
        ctx = None
        if r.recent is not None:
            from segue.data.batch import Context

            ctx = Context(history=torch.as_tensor(r.recent[[1, 2]][:, -r.model.history_length() :]))
        r.model.recommend(np.asarray([1, 2]), 5, ctx, exclude=r.seen)
        _ = ((r.metrics or {}).get("test") or {}).get("HR@10"), len((r.history or {}).get("epochs", []))
    else:
        from segue.serving.export import ServingModel

        sm = ServingModel.load(path)
        users = sm.user_map.to_raw(np.arange(1, sm.n_users + 1)).tolist()
        sm.recommend_many(users, 5)  # every user: out-of-range seen ids would surface here
        sm.recommend_items(sm.item_map.to_raw(np.asarray([1, 2])).tolist(), 5)


@dataclass
class Outcome:
    case: str
    clean: bool
    result: str  # "error", "warned", "accepted", "crash"
    message: str


def try_damage(d: Damage, pristine: dict[str, Path], work: Path) -> Outcome:
    """Damage a copy of the pristine directory, use it, and judge what came back."""
    from segue.errors import SegueError
    from segue.files import RunFileWarning

    target = work / d.target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(pristine[d.target], target)
    d.apply(target / d.file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            use(d.target, target)
        except SegueError as e:
            msg = str(e)
            ok = "\n" not in msg and d.file in msg and not d.optional
            return Outcome(d.name, ok, "error", msg)
        except Exception as e:  # what must never happen: another exception type reaching the user
            return Outcome(d.name, False, "crash", f"{type(e).__name__}: {e}")
    warned = [str(w.message) for w in caught if issubclass(w.category, RunFileWarning)]
    if d.optional and any(d.file in w for w in warned):
        return Outcome(d.name, True, "warned", warned[0])
    return Outcome(d.name, False, "accepted", "no error")


def bad_csv_inputs(work: Path) -> list[Outcome]:
    """Malformed interaction files (the ml-100k u.data format): one sentence naming the line, no traceback."""
    from segue.data.datasets import load_ml100k
    from segue.errors import SegueError

    cases = {
        "id too large for int64": "1\t99999999999999999999999\t3\t100\n2\t5\t4\t101\n",
        "nan id": "1\t4\t3\t100\nnan\t5\t4\t101\n",
        "empty field": "1\t4\t3\t100\n2\t\t4\t101\n",
        "text id": "1\t4\t3\t100\nabc\t5\t4\t101\n",
        "too few fields": "1\t4\t3\t100\n2\t5\n",
        "empty file": "",
        "binary garbage": bytes(range(256)).decode("latin-1"),
    }
    out = []
    for name, text in cases.items():
        d = work / "csv" / name.replace(" ", "-") / "ml-100k"
        d.mkdir(parents=True, exist_ok=True)
        (d / "u.data").write_text(text, encoding="latin-1")
        try:
            load_ml100k(d.parent, download=False, progress=False)
            out.append(Outcome(f"u.data: {name}", False, "accepted", "no error"))
        except SegueError as e:
            msg = str(e)
            out.append(Outcome(f"u.data: {name}", "\n" not in msg and "u.data" in msg, "error", msg))
        except Exception as e:
            out.append(Outcome(f"u.data: {name}", False, "crash", f"{type(e).__name__}: {e}"))
    return out


def bad_inputs(root: Path | None = None) -> list[Outcome]:
    """Every damage in :func:`catalogue` plus the malformed interaction files, tried for real."""
    with _workdir(root) as work:
        pristine = build(work / "pristine")
        outcomes = [try_damage(d, pristine, work / "damaged") for d in catalogue()]
        return outcomes + bad_csv_inputs(work)


# -- faults -------------------------------------------------------------------------------------------
def _snapshot_each_stage(write: Callable[[], Any], parent: Path, snaps: Path) -> list[Path]:
    """Run ``write`` and copy ``parent`` just before every rename and delete it makes (a kill there)."""
    import segue.dirs as dirs

    real_replace, real_rmtree = os.replace, shutil.rmtree
    taken: list[Path] = []

    def snap() -> None:
        dest = snaps / f"stage-{len(taken)}"
        shutil.copytree(parent, dest, symlinks=True)
        taken.append(dest)

    def replace(a: Any, b: Any) -> None:
        snap()
        real_replace(a, b)

    def rmtree(p: Any, *args: Any, **kwargs: Any) -> None:
        if Path(p).parent == parent:
            snap()
        real_rmtree(p, *args, **kwargs)

    dirs.os.replace, dirs.shutil.rmtree = replace, rmtree  # type: ignore[assignment]
    try:
        write()
    finally:
        dirs.os.replace, dirs.shutil.rmtree = real_replace, real_rmtree  # type: ignore[assignment]
    snap()  # and after the last step
    return taken


def kill_at_every_stage(kind: str, work: Path) -> list[Outcome]:
    """Replace a run (or export) with ``--overwrite``; at every stage, the next write finds the old or new whole."""
    from segue.dirs import clean_leftovers
    from segue.serving.export import ServingModel, export_run
    from segue.training.checkpoint import load_run

    parent = work / f"kill-{kind}" / "proj"
    parent.mkdir(parents=True)
    target = parent / "r"
    if kind == "run":
        train_run(target)
        old = json.loads((target / "config.json").read_text())["fit_seconds"]
        snaps = _snapshot_each_stage(lambda: train_run(target, overwrite=True), parent, work / f"kill-{kind}" / "s")
        new = json.loads((target / "config.json").read_text())["fit_seconds"]
    else:
        src = work / f"kill-{kind}" / "src"
        train_run(src)
        export_run(src, target, index="exact")
        stamp = target / "metadata.json"  # mark the old export, to tell it from the new one
        stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "export_seconds": -1.0}))
        old = -1.0
        snaps = _snapshot_each_stage(
            lambda: export_run(src, target, index="exact", overwrite=True), parent, work / f"kill-{kind}" / "s"
        )
    out = []
    for i, snap in enumerate(snaps):
        t = snap / "r"
        try:
            clean_leftovers(t)
            leftovers = sorted(p.name for p in snap.iterdir() if p.name != "r" and not p.name.endswith(".resume"))
            if kind == "run":
                load_run(t)
                got = json.loads((t / "config.json").read_text())["fit_seconds"]
                ok = got in (old, new)
            else:
                ServingModel.load(t)
                got = json.loads((t / "metadata.json").read_text())["export_seconds"]
                ok = got == old or got >= 0  # the old export or the new one, whole (it loaded)
            ok = ok and not leftovers
            which = f"the next write finds the {'old' if got == old else 'new'} {kind}, whole"
            out.append(Outcome(f"{kind} overwrite, killed at stage {i}", ok, "survived" if ok else "lost", which))
        except Exception as e:
            out.append(Outcome(f"{kind} overwrite, killed at stage {i}", False, "lost", f"{type(e).__name__}: {e}"))
    return out


def _one_sentence(run: Callable[[], Any], must: str) -> tuple[bool, str]:
    from segue.errors import SegueError

    try:
        run()
    except SegueError as e:
        return ("\n" not in str(e) and must in str(e)), str(e)
    except Exception as e:
        return False, f"{type(e).__name__}: {e}"
    return False, "no error"


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    real = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, real)


def _enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def write_faults(work: Path) -> list[Outcome]:
    """Read-only or full disks, found before work starts or while writing; the trained model is kept."""
    import safetensors.torch

    import segue.dirs as dirs
    import segue.pipeline as pipeline
    import segue.serving.export as export
    from segue.serving.export import export_run
    from segue.training.checkpoint import load_run

    out: list[Outcome] = []
    calls = {"fit": 0}
    real_fit = pipeline.fit

    def counting_fit(*a: Any, **k: Any) -> Any:
        calls["fit"] += 1
        return real_fit(*a, **k)

    def before_work(name: str, run: Callable[[], Any], must: str) -> None:
        calls["fit"] = 0
        with _patched(pipeline, "fit", counting_fit):
            ok, msg = _one_sentence(run, must)
        ok = ok and calls["fit"] == 0
        out.append(Outcome(name, ok, "survived" if ok else "lost", msg))

    w = work / "write"
    (w / "file.txt").parent.mkdir(parents=True, exist_ok=True)
    (w / "file.txt").write_text("not a directory")
    before_work("train, --out under a file", lambda: train_run(w / "file.txt" / "run"), "is a file")
    ro = w / "readonly"
    ro.mkdir()
    if os.geteuid() != 0:  # chmod binds only non-root users
        ro.chmod(0o500)
        before_work("train, read-only out dir", lambda: train_run(ro / "run"), "not writable")
        ro.chmod(0o700)
    else:

        def denied(*a: Any, **k: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        with _patched(dirs.tempfile, "mkstemp", denied):
            before_work("train, read-only out dir (simulated: root)", lambda: train_run(ro / "run"), "not writable")

    def tiny_disk(path: Any) -> Any:
        return shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)  # type: ignore[attr-defined]

    src = w / "src"
    train_run(src)
    with _patched(dirs.shutil, "disk_usage", tiny_disk):
        before_work("train, full disk (pre-check)", lambda: train_run(w / "full" / "run"), "free but it needs")
        ok, msg = _one_sentence(lambda: export_run(src, w / "exp-full", index="exact"), "free but it needs")
        ok = ok and not (w / "exp-full").exists()
        out.append(Outcome("export, full disk (pre-check)", ok, "survived" if ok else "lost", msg))

    # the disk fills while the run directory is written: the run goes to a temporary directory instead
    real_save = safetensors.torch.save_file
    full_under = w / "fills"

    def save_file(state: Any, path: str, *a: Any, **k: Any) -> Any:
        if Path(path).is_relative_to(full_under):
            _enospc()
        return real_save(state, path, *a, **k)

    rescue_tmp = w / "systmp"
    rescue_tmp.mkdir()
    with _patched(safetensors.torch, "save_file", save_file), _patched(tempfile, "tempdir", str(rescue_tmp)):
        ok, msg = _one_sentence(lambda: train_run(full_under / "run", epochs=2), "saved to")
    kept = sorted(rescue_tmp.glob("segue-run-*/run"))
    ok = ok and "disk is full" in msg and len(kept) == 1
    if ok:
        load_run(kept[0])
    if full_under.exists():  # nothing half-written left where the run should have gone
        ok = ok and not list(full_under.iterdir())
    out.append(Outcome("train, disk fills while writing the run", ok, "survived" if ok else "lost", msg))

    # the same during export: one sentence, no partial export, the run untouched
    with _patched(export.np, "save", _enospc):
        ok, msg = _one_sentence(lambda: export_run(src, w / "exp-fills", index="exact"), "disk is full")
    ok = ok and not (w / "exp-fills").exists() and not list(w.glob(".exp-fills*"))
    load_run(src)
    out.append(Outcome("export, disk fills while writing", ok, "survived" if ok else "lost", msg))
    return out


def resume_faults(work: Path) -> list[Outcome]:
    """A kill after an epoch, and one in the middle of an epoch checkpoint's write, then ``resume``."""
    import torch

    import segue.training.resume as resume
    from segue.training.resume import EpochCheckpoint

    out = []
    for model in ("mf-bpr", "sasrec"):
        ref = train_run(work / "resume" / f"{model}-ref", model, epochs=4)

        class Killed(BaseException):
            pass

        real = EpochCheckpoint._save
        real_replace = os.replace

        def after_epoch_2(self: Any, epoch: int, *a: Any, real: Any = real, **k: Any) -> None:
            real(self, epoch, *a, **k)
            if epoch == 2:
                raise Killed

        def during_epoch_3(a: Any, b: Any, real_replace: Any = real_replace) -> None:
            if str(b).endswith("checkpoint.json") and 'epoch": 3' in Path(a).read_text():
                raise Killed  # the tensors of epoch 3 are written, its checkpoint.json is not
            real_replace(a, b)

        for name, patch in (
            ("killed after epoch 2", (EpochCheckpoint, "_save", after_epoch_2)),
            ("killed while writing epoch 3's checkpoint", (resume.os, "replace", during_epoch_3)),
        ):
            target = work / "resume" / f"{model}-{name.replace(' ', '-')}"
            try:
                with _patched(*patch):
                    train_run(target, model, epochs=4)
                out.append(Outcome(f"{model} {name}, resumed", False, "lost", "the kill did not happen"))
                continue
            except Killed:
                pass
            res = train_run(target, model, epochs=4, resume=True)
            a, b = ref.model.state_dict(), res.model.state_dict()
            same = all(torch.equal(a[k], b[k]) for k in a) and ref.metrics == res.metrics
            losses = [e["loss"] for e in ref.history.epochs] == [e["loss"] for e in res.history.epochs]
            ok = same and losses
            out.append(
                Outcome(f"{model} {name}, resumed", ok, "survived" if ok else "lost", "bitwise equal" if ok else "")
            )
    return out


def faults(root: Path | None = None) -> list[Outcome]:
    """Kills at every write stage, read-only and full disks, kills during training (then resume)."""
    with _workdir(root) as work:
        return (
            kill_at_every_stage("run", work)
            + kill_at_every_stage("export", work)
            + write_faults(work)
            + resume_faults(work)
        )


# -- report -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _workdir(root: Path | None) -> Iterator[Path]:
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="segue-reliability-") as d:
        yield Path(d)


def table(title: str, outcomes: list[Outcome], good: str, *, group: bool = False) -> str:
    """A Markdown summary: the count, per group (the text before ``:``) when asked, then every case."""
    n_ok = sum(o.clean for o in outcomes)
    lines = [f"**{title}: {n_ok} of {len(outcomes)} {good}.**", ""]
    if group:
        groups: dict[str, list[Outcome]] = {}
        for o in outcomes:
            groups.setdefault(o.case.split(":")[0], []).append(o)
        lines += ["| file | tried | clean |", "|---|---|---|"]
        lines += [f"| {g} | {len(os_)} | {sum(o.clean for o in os_)} |" for g, os_ in groups.items()]
        lines += ["", "<details><summary>every case and its message</summary>", ""]
    lines += ["| case | outcome | message |", "|---|---|---|"]
    for o in outcomes:
        mark = "ok" if o.clean else "**NOT OK**"
        msg = re.sub(r"\S*segue-reliability-[^/\s]+/", "", o.message)  # the temporary directory
        msg = msg.replace("|", "\\|").replace("\n", " ")[:180]
        lines.append(f"| {o.case} | {mark} ({o.result}) | {msg} |")
    if group:
        lines += ["", "</details>"]
    return "\n".join(lines)


def write_doc(sections: dict[str, str]) -> None:
    """Replace (or add) the ``## NAME`` sections of docs/reliability.md, keeping the others."""
    text = DOC.read_text() if DOC.exists() else "# Reliability\n\nProduced by `" + COMMAND + "`.\n"
    for name, body in sections.items():
        block = f"## {name}\n\n{body}\n"
        start = text.find(f"## {name}\n")
        if start < 0:
            text = text.rstrip("\n") + "\n\n" + block
            continue
        end = text.find("\n## ", start + 1)
        text = text[:start] + block + ("" if end < 0 else text[end + 1 :])
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="Replace the sections in docs/reliability.md.")
    ap.add_argument(
        "--load", action=argparse.BooleanOptionalAction, default=True, help="Also run the server load section."
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    bad = bad_inputs()
    t1 = time.perf_counter()
    fl = faults()
    t2 = time.perf_counter()
    sections = {
        "Bad input": "Each file of a run directory (MF and SASRec) and of an export (user vectors + index, and a "
        "model answering queries) damaged in each way that applies, then loaded and used (evaluate, "
        "recommend for every user); and malformed interaction files. Clean: one sentence naming the file "
        "(an optional file: a warning naming it, and the run still works).\n\n"
        f"Command: `{COMMAND}` ({t1 - t0:.0f} s).\n\n" + table("Bad inputs", bad, "clean errors", group=True),
        "Faults": "Faults injected while segue writes: a kill at every rename or delete of an overwrite (the "
        "directory is copied as it was at that instant; the next write cleans up), read-only and full disks, "
        "a disk that fills mid-write, kills during training followed by resume. Survived: one sentence, and "
        "nothing lost (old or new directory whole; the trained model on disk; resume bitwise equal to an "
        "uninterrupted run on CPU).\n\n"
        f"Command: `{COMMAND}` ({t2 - t1:.0f} s).\n\n" + table("Faults", fl, "survived with nothing lost"),
    }
    if args.load:  # p50 / p99 at 1, 8 and 32 clients, with and without an expensive one (benchmarks/...load.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_reliability_load import load_section

        sections["Load"] = load_section()
    for body in sections.values():
        print(body, end="\n\n")
    if args.write:
        write_doc(sections)
    return 0 if all(o.clean for o in bad + fl) else 1


if __name__ == "__main__":
    sys.exit(main())
