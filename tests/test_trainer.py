"""The one trainer's guarantees: per-step time cap, validated options, stop reasons, declarations."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from segue.data import Interactions, leave_one_out
from segue.data.batch import PairBatch
from segue.errors import ConfigError
from segue.evaluation.protocols import sampled_evalset
from segue.models.base import Recommender, build_model, register
from segue.models.losses import LossSpec
from segue.pipeline import run
from segue.training import fit
from segue.training.trainer import EarlyStopping, History, TrainConfig, Trainer

QUIET = {"progress": False}


class _Slow(Recommender):
    """A dot-product model whose every training step sleeps ``delay`` seconds."""

    name: ClassVar[str] = "slow-toy"

    @dataclass
    class Config:
        delay: float = 0.04

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        self.u = nn.Embedding(n_users + 1, 4)
        self.v = nn.Embedding(n_items + 1, 4)

    def score(self, users: Tensor, items: Tensor, context: Any = None) -> Tensor:
        return (self.u(users)[:, None, :] * self.v(items)).sum(-1)

    def loss(self, batch: PairBatch, spec: LossSpec) -> Tensor:
        time.sleep(self.config.delay)
        return super().loss(batch, spec)


def test_time_cap_overruns_by_less_than_one_step(data: Interactions) -> None:
    delay, cap = 0.04, 0.3
    m = _Slow(data.n_users, data.n_items, _Slow.Config(delay=delay))
    lines: list[str] = []
    cfg = TrainConfig(epochs=1000, batch_size=4, max_seconds=cap, **QUIET)
    h = Trainer(cfg, log=lines.append).fit(m, data)
    assert h.stopped_by == "time_cap" and h.stopped_early and h.stop_step == h.steps
    assert cap < h.train_seconds < cap + delay + 0.03  # the step that crossed the cap, and no more
    assert any(f"time cap of {cap:g} s hit at step {h.stop_step}" in line for line in lines)
    assert "stopped by the time cap" in lines[-1]


def test_time_cap_with_dev_keeps_a_state(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    valid = sampled_evalset(split, "valid", n_negatives=10, seed=1)
    m = _Slow(data.n_users, data.n_items, _Slow.Config(delay=0.02))
    h = Trainer(TrainConfig(epochs=1000, batch_size=4, max_seconds=0.2, **QUIET), log=None).fit(m, split.train, valid)
    assert h.stopped_by == "time_cap" and h.best_epoch == 1 and "valid" in h.epochs[-1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"max_seconds": 0}, "max_seconds must be > 0"),
        ({"dev_cases": 0}, "dev_cases must be >= 1"),
        ({"loss": "nope"}, "Unknown loss 'nope'"),
        ({"neg_reduce": "min"}, "neg_reduce must be"),
        ({"reduction": "median"}, "reduction must be"),
        ({"monitor": "NDCG@x"}, "cut-off of monitor metric"),
        ({"monitor": " , "}, "monitor must name at least one metric"),
        ({"adv_norm": "col"}, "adv_norm must be row or tensor"),
        ({"adv_scale": "big"}, "adv_scale must be std or unit"),
        ({"optimizer": "lbfgs"}, "optimizer must be"),
        ({"epochz": 3}, r"Unknown option\(s\) epochz for the trainer"),
        ({"epochs": "3"}, "Option epochs of the trainer .* must be int, got str"),
        ({"lr": True}, "Option lr of the trainer .* must be float, got bool"),
    ],
)
def test_every_option_is_validated_with_one_sentence(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_dict(options)
    text = str(err.value)
    assert "\n" not in text and text.endswith(".")


def test_a_model_that_declares_nothing_is_refused_at_registration() -> None:
    class _Nothing(Recommender):
        name: ClassVar[str] = "declares-nothing"

    with pytest.raises(ConfigError, match="neither a score nor a loss"):
        register(_Nothing)

    class _Kind(_Slow):
        name: ClassVar[str] = "odd-kind"
        batch_kind: ClassVar[str] = "graphs"

    with pytest.raises(ConfigError, match="batch kind 'graphs'"):
        register(_Kind)

    class _Closed(Recommender):
        name: ClassVar[str] = "closed-no-fit"
        trainable: ClassVar[bool] = False

        def score(self, users: Tensor, items: Tensor, context: Any = None) -> Tensor:
            return items.float()

    with pytest.raises(ConfigError, match="implements no fit"):
        register(_Closed)


def test_monitor_breaks_ties_with_the_next_metric(data: Interactions) -> None:
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 4})
    split = leave_one_out(data, seed=0)
    stopper = EarlyStopping(
        sampled_evalset(split, "valid", n_negatives=5, seed=1), TrainConfig(monitor="HR@10,NDCG@10")
    )
    h = History()
    assert stopper.update(m, {"HR@10": 0.5, "NDCG@10": 0.2}, 1, h)
    assert not stopper.update(m, {"HR@10": 0.5, "NDCG@10": 0.1}, 2, h)
    assert stopper.update(m, {"HR@10": 0.5, "NDCG@10": 0.3}, 3, h) and h.best_epoch == 3 and h.best_value == 0.5


def test_dev_cases_bounds_the_dev_set(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    valid = sampled_evalset(split, "valid", n_negatives=5, seed=1)
    a = EarlyStopping(valid, TrainConfig(dev_cases=7, seed=3))
    b = EarlyStopping(valid, TrainConfig(dev_cases=7, seed=3))
    assert len(a.valid) == 7 and np.array_equal(a.valid.users, b.valid.users)  # type: ignore[union-attr]
    assert len(EarlyStopping(valid, TrainConfig()).valid) == len(valid)  # type: ignore[arg-type]


def test_the_stop_reason_reaches_the_run_directory(data: Interactions, tmp_path: Path) -> None:
    lines: list[str] = []
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.01, **QUIET)
    res = run("mf-bpr", data, protocol="loo-full", train_config=cfg, out=tmp_path / "run", log=lines.append)
    saved = json.loads((res.run_dir / "history.json").read_text())  # type: ignore[operator]
    assert saved["stopped_by"] in ("epochs", "patience") and saved["steps"] > 0
    assert any(line.startswith("mf-bpr: stopped by") for line in lines)


def test_staged_parts_are_trained_then_assembled(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    m = build_model("neumf", data.n_users, data.n_items, {"factors": 4, "layers": 2})
    h = fit(m, split.train, None, TrainConfig(epochs=1, batch_size=64, loss="bce", n_negatives=2, **QUIET), log=None)
    assert set(h.stages) == {"gmf", "mlp"} and h.stages["gmf"]["steps"] > 0


def test_fit_rejects_extras_a_gradient_model_does_not_take(data: Interactions) -> None:
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 4})
    with pytest.raises(ConfigError, match="takes no extra fit arguments, got mels"):
        fit(m, data, None, TrainConfig(epochs=1, **QUIET), log=None, mels=torch.zeros(1))


def test_model_options_are_type_checked() -> None:
    with pytest.raises(ConfigError, match="Option layers of model 'neumf' must be int, got list"):
        build_model("neumf", 3, 3, {"layers": [8, 4]})
    with pytest.raises(ConfigError, match="Option reg of model 'mf-bpr' must be float, got str"):
        build_model("mf-bpr", 3, 3, {"reg": "0.1"})
    assert build_model("mf-bpr", 3, 3, {"reg": 1}).config.reg == 1  # an int is a fine float


def test_sequence_models_train_one_row_per_user_through_the_trainer(data: Interactions) -> None:
    from segue.training.batches import SequenceBatches, batches_for

    m = build_model("sasrec", data.n_users, data.n_items, {"dim": 8, "max_len": 5, "n_blocks": 1})
    cfg = TrainConfig(epochs=2, batch_size=8, loss="bce", **QUIET)
    b = batches_for(m, data, cfg, np.random.default_rng(0))
    assert isinstance(b, SequenceBatches) and b.n_rows == data.n_users and b.n_targets == data.n_users * 5
    batch = next(iter(b.epoch(np.random.default_rng(0))))
    seen = data.to_csr()
    for row in range(len(batch)):  # negatives are never the user's own items, and 0 exactly at padding
        negs = batch.negatives[row, :, 0].numpy()
        assert ((negs == 0) == (batch.targets[row].numpy() == 0)).all()
        assert seen[int(batch.users[row]), negs[negs > 0]].sum() == 0
    h = Trainer(cfg, log=None).fit(m, data)
    assert h.steps == 2 * len(b) and h.epochs[-1]["loss"] < h.epochs[0]["loss"] + 0.05


def test_model_fit_points_to_the_one_entry_point(data: Interactions) -> None:
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 4})
    with pytest.raises(ConfigError, match=r"trained by segue\.training\.fit\(model, train, valid, config\)"):
        m.fit(data)


# -- any batch builder: the sessions and clips kinds run on the same loop --------------------------


class _Regress(nn.Module):
    """``y = w x`` fitted by MSE on FieldBatch rows: a model that is not a Recommender and has no score."""

    name = "regress-toy"

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def loss(self, batch: Any, spec: Any = None) -> Tensor:
        return ((self.w * batch["x"] - batch["y"]) ** 2).mean()


class _Rows:
    n_rows = 8
    batch_size = 4

    def __len__(self) -> int:
        return 2

    def epoch(self, rng: np.random.Generator):
        from segue.data.batch import FieldBatch

        for _ in range(2):
            x = torch.as_tensor(rng.standard_normal(4), dtype=torch.float32)
            yield FieldBatch({"x": x, "y": 3.0 * x}, 4)


def test_run_takes_any_builder_and_a_dev_function() -> None:
    m = _Regress()
    seen: list[float] = []

    def dev(model: _Regress) -> dict[str, float]:
        seen.append(float(model.w))
        return {"fit": -abs(float(model.w) - 3.0)}

    cfg = TrainConfig(epochs=40, lr=0.1, optimizer="sgd", momentum=0.5, monitor="fit", patience=3, **QUIET)
    h = Trainer(cfg, log=None).run(m, lambda rng: _Rows(), dev)
    assert abs(float(m.w) - 3.0) < 0.05 and len(seen) == len(h.epochs) and h.epochs[-1]["step"] == 2 * len(h.epochs)
    assert h.best_value == pytest.approx(max(-abs(w - 3.0) for w in seen))
    with pytest.raises(ConfigError, match="monitor nope is not among the dev metrics fit"):
        Trainer(TrainConfig(epochs=1, monitor="nope", **QUIET), log=None).run(_Regress(), lambda rng: _Rows(), dev)


def test_clip_and_decay_options() -> None:
    def trained(**kw: Any) -> float:
        m = _Regress()
        Trainer(TrainConfig(epochs=3, lr=0.05, optimizer="sgd", **kw, **QUIET), log=None).run(m, lambda rng: _Rows())
        return float(m.w)

    plain, decayed, clipped = trained(), trained(lr_decay=5.0), trained(clip=1e-3)
    assert 0 < clipped < decayed < plain  # a decaying lr and a clipped gradient both move w less
    assert clipped <= 6 * 0.05 * 1e-3 + 1e-9  # 6 steps, each of at most lr * clip
    for bad, msg in [
        ({"clip": 0.0}, "clip must be > 0"),
        ({"lr_decay": -1.0}, "lr_decay must be >= 0"),
        ({"nesterov": True}, "nesterov needs momentum"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(**bad)
    with pytest.raises(ConfigError, match="sgd optimizer only"):
        Trainer(TrainConfig(epochs=1, momentum=0.9, **QUIET), log=None).run(_Regress(), lambda rng: _Rows())
