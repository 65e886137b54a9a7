"""``resume``: a run killed after any epoch continues from its checkpoint and ends bit for bit where an
uninterrupted run with the same seed ends (CPU); what cannot resume says so in one sentence."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import segue.training.resume as resume
from segue.errors import ConfigError, RunDirError
from segue.pipeline import resume_dir
from segue.training.resume import EpochCheckpoint

from .test_runfiles import bench


class Killed(BaseException):
    """A kill: not an Exception, so no handler of segue's catches it."""


def _kill_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    real = EpochCheckpoint._save

    def save(self: EpochCheckpoint, e: int, *args: Any, **kwargs: Any) -> None:
        real(self, e, *args, **kwargs)
        if e == epoch:
            raise Killed

    monkeypatch.setattr(EpochCheckpoint, "_save", save)


def _same(a: Any, b: Any) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.metrics == b.metrics and a.valid_metrics == b.valid_metrics
    strip = ("seconds", "train_seconds")
    ea = [{k: v for k, v in e.items() if k not in strip} for e in a.history.epochs]
    eb = [{k: v for k, v in e.items() if k not in strip} for e in b.history.epochs]
    assert ea == eb and a.history.best_epoch == b.history.best_epoch and a.history.steps == b.history.steps


@pytest.mark.parametrize("model", ["mf-bpr", "sasrec"])  # pair batches; sequence batches with dropout
def test_resume_after_a_kill_equals_an_uninterrupted_run(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = bench.train_run(tmp_path / "ref", model, epochs=4)
    with monkeypatch.context() as m:
        _kill_after(m, 2)
        with pytest.raises(Killed):
            bench.train_run(tmp_path / "run", model, epochs=4)
    assert not (tmp_path / "run").exists()
    assert json.loads((resume_dir(tmp_path / "run") / "checkpoint.json").read_text())["epoch"] == 2
    res = bench.train_run(tmp_path / "run", model, epochs=4, resume=True)
    _same(ref, res)
    assert not resume_dir(tmp_path / "run").exists()  # the checkpoint goes once the run is written


def test_a_kill_while_a_checkpoint_is_written_resumes_from_the_previous_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = bench.train_run(tmp_path / "ref", epochs=4)
    real = os.replace

    def replace(a: Any, b: Any) -> None:
        if str(b).endswith("checkpoint.json") and '"epoch": 3' in Path(a).read_text():
            raise Killed  # epoch 3's tensors are on disk, its checkpoint.json is not
        real(a, b)

    with monkeypatch.context() as m:
        m.setattr(resume.os, "replace", replace)
        with pytest.raises(Killed):
            bench.train_run(tmp_path / "run", epochs=4)
    ckpt = resume_dir(tmp_path / "run")
    assert json.loads((ckpt / "checkpoint.json").read_text())["epoch"] == 2
    assert (ckpt / "epoch-0002.safetensors").exists()  # the previous pair is whole
    _same(ref, bench.train_run(tmp_path / "run", epochs=4, resume=True))


def test_resume_after_early_stopping_ends_where_the_run_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after its last epoch (here: stopped by patience) resumes straight to the end."""
    from segue.training.trainer import TrainConfig

    def run(out: Path, **kw: Any) -> Any:
        from segue.evaluation.protocols import get_protocol
        from segue.pipeline import run as run_

        cfg = TrainConfig(epochs=30, batch_size=32, progress=False, patience=1, lr=0.05)
        proto = get_protocol("loo-sampled", seed=0, n_negatives=20)
        return run_("mf-bpr", bench.toy_data(), protocol=proto, train_config=cfg, out=out, log=None, **kw)

    ref = run(tmp_path / "ref")
    assert ref.history.stopped_by == "patience"
    last = ref.history.epochs[-1]["epoch"]
    with monkeypatch.context() as m:
        _kill_after(m, last)
        with pytest.raises(Killed):
            run(tmp_path / "run")
    res = run(tmp_path / "run", resume=True)
    _same(ref, res)
    assert res.history.stopped_by == "patience"


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        _kill_after(m, 1)
        with pytest.raises(Killed):
            bench.train_run(tmp_path / "run", epochs=3)
    with pytest.raises(ConfigError, match=r"was written by a different run \(its model, model_options"):
        bench.train_run(tmp_path / "run", "cml", epochs=3, resume=True)


def test_a_damaged_checkpoint_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        _kill_after(m, 1)
        with pytest.raises(Killed):
            bench.train_run(tmp_path / "run", epochs=3)
    ckpt = resume_dir(tmp_path / "run")
    (ckpt / "epoch-0001.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunDirError, match=r"checkpoint in .* is damaged .*; run without --resume\.$"):
        bench.train_run(tmp_path / "run", epochs=3, resume=True)
    (ckpt / "checkpoint.json").write_text("[]")
    with pytest.raises(RunDirError, match=r"checkpoint\.json must hold a JSON object"):
        bench.train_run(tmp_path / "run", epochs=3, resume=True)


def test_resume_without_a_checkpoint_starts_afresh_and_a_fresh_run_discards_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segue.pipeline

    lines: list[str] = []
    ref = bench.train_run(tmp_path / "ref", epochs=2)
    monkeypatch.setattr(segue.pipeline, "_logger", lambda log: lines.append)
    _same(ref, bench.train_run(tmp_path / "a", epochs=2, resume=True))
    assert any("no epoch checkpoint" in x for x in lines)
    with monkeypatch.context() as m:
        _kill_after(m, 1)
        with pytest.raises(Killed):
            bench.train_run(tmp_path / "b", epochs=2)
    _same(ref, bench.train_run(tmp_path / "b", epochs=2))
    assert any("discarding the epoch checkpoint" in x for x in lines)


@pytest.mark.parametrize(("model", "why"), [("pop", "is fitted in closed form"), ("neumf", "trains in stages")])
def test_models_that_cannot_resume_say_so(model: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{model} cannot resume: it {why}.*; run it again without --resume\\.$"):
        bench.train_run(tmp_path / "run", model, resume=True)


def test_a_checkpoint_that_cannot_be_written_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import segue.pipeline

    lines: list[str] = []
    monkeypatch.setattr(segue.pipeline, "_logger", lambda log: lines.append)

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EpochCheckpoint, "_save", full)
    res = bench.train_run(tmp_path / "run", epochs=2)
    assert len(res.history.epochs) == 2 and (tmp_path / "run" / "weights.safetensors").exists()
    assert sum("cannot write the epoch checkpoint" in x for x in lines) == 1


def test_resume_continues_the_per_step_lr_decay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segue.evaluation.protocols import get_protocol
    from segue.pipeline import run
    from segue.training.trainer import TrainConfig

    def train(out: Path, **kwargs: Any) -> Any:
        cfg = TrainConfig(epochs=3, batch_size=32, progress=False, patience=None, lr_decay=0.05)
        proto = get_protocol("loo-sampled", seed=0, n_negatives=20)
        return run("mf-bpr", bench.toy_data(), protocol=proto, train_config=cfg, out=out, log=None, **kwargs)

    ref = train(tmp_path / "ref")
    with monkeypatch.context() as m:
        _kill_after(m, 1)
        with pytest.raises(Killed):
            train(tmp_path / "run")
    _same(ref, train(tmp_path / "run", resume=True))  # not the schedule restarted at step 0
