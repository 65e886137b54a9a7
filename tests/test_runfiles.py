"""Damaged files of a run and an export give one sentence naming the file; unwritable targets fail before work.

The damage catalogue and the fault scenarios live in benchmarks/bench_reliability.py (which writes the
table in docs/reliability.md); here every case is one test.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import shutil
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

from segue.errors import RunDirError, SegueError, WriteError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_reliability.py"


def _bench() -> Any:
    if "bench_reliability" in sys.modules:
        return sys.modules["bench_reliability"]
    spec = importlib.util.spec_from_file_location("bench_reliability", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_reliability"] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()
CASES = bench.catalogue()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return bench.build(tmp_path_factory.mktemp("pristine"))


def test_the_pristine_directories_load_and_answer(pristine: dict[str, Path]) -> None:
    for kind, path in pristine.items():
        bench.use(kind, path)  # raises on any failure
    assert (pristine["seqrun"] / "recent.npz").exists() and (pristine["export"] / "user_vectors.npy").exists()


@pytest.mark.parametrize("damage", CASES, ids=[d.name for d in CASES])
def test_damaged_file_gives_one_sentence_naming_it(damage: Any, pristine: dict[str, Path], tmp_path: Path) -> None:
    outcome = bench.try_damage(damage, pristine, tmp_path)
    assert outcome.clean, f"{outcome.result}: {outcome.message}"
    assert outcome.result == ("warned" if damage.optional else "error")


def test_every_file_of_a_run_and_an_export_is_damaged_somewhere(pristine: dict[str, Path]) -> None:
    covered = {(d.target, d.file) for d in CASES}
    not_read = {".segue", "curves.png"}  # the marker is read by --overwrite only; the plot never
    for kind, path in pristine.items():
        files = {p.name for p in path.iterdir()} - not_read
        assert files <= {f for t, f in covered if t == kind}, kind


def test_bad_interaction_files_give_one_line(tmp_path: Path) -> None:
    outcomes = bench.bad_csv_inputs(tmp_path)
    assert all(o.clean for o in outcomes), [o for o in outcomes if not o.clean]
    msgs = {o.case: o.message for o in outcomes}
    assert "too large for a 64-bit integer" in msgs["u.data: id too large for int64"]
    assert "'nan', not an integer" in msgs["u.data: nan id"]


def test_a_corrupt_optional_file_does_not_break_evaluate_or_export(pristine: dict[str, Path], tmp_path: Path) -> None:
    from segue.files import RunFileWarning
    from segue.serving.export import export_run
    from segue.training.checkpoint import load_run

    run = tmp_path / "run"
    shutil.copytree(pristine["run"], run)
    (run / "metrics.json").write_text("{not json")
    (run / "history.json").write_text("[1, 2]")
    with pytest.warns(RunFileWarning, match="metrics.json is not valid JSON"):
        r = load_run(run)
    assert r.metrics is None and r.history is None
    with pytest.warns(RunFileWarning):
        export_run(run, tmp_path / "exp", index="exact")
    assert (tmp_path / "exp" / "metadata.json").exists()


def test_cli_names_the_damaged_file_with_exit_2(pristine: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from segue.cli import app

    run = tmp_path / "run"
    shutil.copytree(pristine["run"], run)
    (run / "config.json").write_text("[]")
    r = CliRunner().invoke(app, ["evaluate", str(run)])
    assert isinstance(r.exception, RunDirError) and "config.json must hold a JSON object, not array" in str(r.exception)


# -- writability ------------------------------------------------------------------------------------
@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import segue.pipeline

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started before the out directory was checked")

    monkeypatch.setattr(segue.pipeline, "fit", fail)


def test_out_under_a_file_fails_before_training(tmp_path: Path, no_training: None) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RunDirError, match=r"file\.txt is a file, not a directory\.$"):
        bench.train_run(tmp_path / "file.txt" / "run")


def test_read_only_out_dir_fails_before_training(
    tmp_path: Path, no_training: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import segue.dirs

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through chmod: deny the probe instead

        def denied(*args: Any, **kwargs: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(segue.dirs.tempfile, "mkstemp", denied)
    else:
        ro.chmod(0o500)
    try:
        with pytest.raises(RunDirError, match=r"ro is not writable \(it is read-only\)\.$"):
            bench.train_run(ro / "sub" / "run")
    finally:
        ro.chmod(0o700)
    assert not (ro / "sub").exists()  # nothing created


def test_full_disk_fails_before_training(tmp_path: Path, no_training: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import segue.dirs

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(segue.dirs.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(RunDirError, match="has 5 KB free but it needs about"):
        bench.train_run(tmp_path / "run")


def test_cli_train_checks_the_out_dir_before_loading_data(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from segue.cli import app

    (tmp_path / "file.txt").write_text("x")
    args = ["train", "mf-bpr", "ml-100k", "--data-dir", str(tmp_path / "no-data"), "--out"]
    r = CliRunner().invoke(app, [*args, str(tmp_path / "file.txt" / "run")])
    assert isinstance(r.exception, RunDirError) and "is a file, not a directory" in str(r.exception)
    assert not (tmp_path / "no-data").exists()  # the dataset was never looked for


def test_disk_full_while_saving_keeps_the_trained_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import safetensors.torch

    from segue.training.checkpoint import load_run

    real = safetensors.torch.save_file
    out = tmp_path / "disk" / "run"

    def save_file(state: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if Path(path).is_relative_to(out.parent):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(state, path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))
    (tmp_path / "systmp").mkdir()
    with pytest.raises(WriteError) as err:
        bench.train_run(out)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"Could not write the run directory {out} (the disk is full)")
    kept = Path(msg.split("saved to ")[1].split(" instead")[0])
    assert kept.is_relative_to(tmp_path / "systmp") and load_run(kept).config["train"]["epochs"] == 1
    assert list(out.parent.iterdir()) == []  # no half-written directory, no checkpoint left where the run goes


def test_disk_full_while_saving_and_nowhere_else_says_where_the_checkpoint_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segue.pipeline

    def full(*args: Any, **kwargs: Any) -> Any:
        raise WriteError("Could not write the run directory X (the disk is full).")

    monkeypatch.setattr(segue.pipeline, "save_run", full)
    with pytest.raises(
        WriteError, match=r"could not be saved elsewhere either .*; the epoch checkpoint in .*\.run\.resume"
    ):
        bench.train_run(tmp_path / "run")
    assert json.loads((tmp_path / ".run.resume" / "checkpoint.json").read_text())["epoch"] == 1


def test_export_on_a_full_disk_leaves_nothing(
    pristine: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segue.serving.export as export

    def enospc(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.np, "save", enospc)
    with pytest.raises(WriteError, match=r"^Could not write the export directory .* \(the disk is full\)\.$"):
        export.export_run(pristine["run"], tmp_path / "exp", index="exact")
    assert list(tmp_path.iterdir()) == []


def test_write_faults_all_survive(tmp_path: Path) -> None:
    outcomes = bench.write_faults(tmp_path)
    assert len(outcomes) == 6 and all(o.clean for o in outcomes), [o for o in outcomes if not o.clean]


def test_a_path_outside_the_export_is_refused_not_followed(pristine: dict[str, Path], tmp_path: Path) -> None:
    """A metadata.json pointing outside its directory is refused, not followed."""
    from segue.serving.export import ServingModel

    exp = tmp_path / "exp"
    shutil.copytree(pristine["export"], exp)
    meta = json.loads((exp / "metadata.json").read_text())
    shutil.copyfile(exp / "seen.npz", tmp_path / "outside.npz")
    meta["files"]["seen"] = str(tmp_path / "outside.npz")
    (exp / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SegueError, match="which is not a relative path inside"):
        ServingModel.load(exp)
