"""--overwrite replaces only directories segue wrote, never the command's source, and a swap cut short loses nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from segue.data import Interactions
from segue.dirs import MARKER, check_target, clean_leftovers, new_sibling, swap_in
from segue.errors import RunDirError
from segue.pipeline import run
from segue.training.trainer import TrainConfig

FAST = TrainConfig(epochs=1, batch_size=64, progress=False)


def _run(data: Interactions, out: Path, overwrite: bool = False) -> Path:
    res = run("pop", data, protocol="loo-full", train_config=FAST, out=out, overwrite=overwrite, log=None)
    assert res.run_dir is not None
    return res.run_dir


def test_overwrite_replaces_a_run_directory_and_marks_it(data: Interactions, tmp_path: Path) -> None:
    out = _run(data, tmp_path / "r")
    assert json.loads((out / MARKER).read_text()) == {"kind": "run"}
    (out / "stale.txt").write_text("from the old run")
    _run(data, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no hidden leftovers


def test_overwrite_refuses_a_directory_segue_did_not_write(data: Interactions, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(RunDirError, match=r"is not a segue run directory .* refusing to delete it"):
        _run(data, home, overwrite=True)
    assert (home / "thesis.tex").read_text() == "years of work"
    export = tmp_path / "exp"
    export.mkdir()
    (export / MARKER).write_text(json.dumps({"kind": "export"}))
    (export / "x").write_text("1")
    with pytest.raises(RunDirError, match="a segue export directory is not replaced"):
        check_target(export, "run", overwrite=True)


def test_the_source_of_a_command_is_never_the_target(tmp_path: Path) -> None:
    src = tmp_path / "proj" / "runs" / "mf"
    src.mkdir(parents=True)
    for target in (tmp_path / "proj", src):
        with pytest.raises(RunDirError, match=r"holds .* the source of this command"):
            check_target(target, "export", overwrite=True, sources=[src])


def test_a_swap_cut_short_leaves_the_old_directory_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r"
    target.mkdir()
    (target / "config.json").write_text(json.dumps({"format": 1}))
    tmp = new_sibling(target)
    (tmp / "config.json").write_text(json.dumps({"format": 2}))
    real = os.replace
    calls = {"n": 0}

    def crash_on_second(a: str | Path, b: str | Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the new directory's rename fails after the old one was moved aside
            raise OSError("disk gone")
        real(a, b)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(OSError, match="disk gone"):
        swap_in(tmp, target, "run")
    monkeypatch.setattr(os, "replace", real)
    assert json.loads((target / "config.json").read_text()) == {"format": 1}


def test_leftovers_of_an_interrupted_write_are_cleaned_or_restored(tmp_path: Path) -> None:
    target = tmp_path / "r"
    (tmp_path / ".r.new-abc").mkdir()
    old = tmp_path / ".r.old-def" / "r"
    old.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({"format": 1}))
    (tmp_path / ".r.notes").mkdir()  # not segue's: left alone
    (tmp_path / ".r.notes" / "mine.txt").write_text("keep")
    clean_leftovers(target)  # the swap died between its two renames: the old directory comes back
    assert (target / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.notes", "r"]


def test_export_never_replaces_its_own_source(data: Interactions, tmp_path: Path) -> None:
    from segue.serving.export import ExportError, export_run

    src = _run(data, tmp_path / "proj" / "runs" / "mf")
    with pytest.raises(ExportError, match="the source of this command"):
        export_run(src, tmp_path / "proj", overwrite=True)
    assert (src / "weights.safetensors").exists()
    out = export_run(src, tmp_path / "exp")
    assert json.loads((out / MARKER).read_text()) == {"kind": "export"}
    export_run(src, out, overwrite=True)  # an export replaces an export
    other = _run(data, tmp_path / "other")  # a run directory is not an export: not replaced by one
    with pytest.raises(ExportError, match="is not a segue export directory"):
        export_run(src, other, overwrite=True)
    assert (other / "weights.safetensors").exists()


@pytest.mark.parametrize("kind", ["run", "export"])
def test_a_kill_at_every_write_stage_leaves_the_old_or_new_directory_whole(kind: str, tmp_path: Path) -> None:
    """``--overwrite`` copied as it is on disk just before each rename or delete (a kill there): the next
    write's clean-up finds the old or the new directory, loadable, and no leftovers."""
    from .test_runfiles import bench

    outcomes = bench.kill_at_every_stage(kind, tmp_path)
    assert len(outcomes) >= 4  # before and after each of the swap's renames and the old one's deletion
    assert all(o.clean for o in outcomes), [o for o in outcomes if not o.clean]
    found = {o.message.split(" the ")[-1].split(" ")[0] for o in outcomes}
    assert found == {"old", "new"}  # stages before the swap find the old directory, those after it the new
