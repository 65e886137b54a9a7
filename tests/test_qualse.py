"""QUALE / QUASE / QUALSE and their QABPR versions (spec B.3-B.6), and the B.8 protocol helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segue.data.batch import PairBatch
from segue.data.interactions import Interactions
from segue.errors import ConfigError, DataError
from segue.evaluation.protocols import evaluate
from segue.evaluation.sequential import attach_history, concat, sequential_protocol, subsample_users
from segue.models.base import Context, build_model, get_model_class
from segue.models.losses import LossSpec
from segue.models.qualse import QUALE, QUALSE, QUASE, whisker_length
from segue.pipeline import prepare
from segue.training import fit
from segue.training.adversarial import Adversary
from segue.training.trainer import TrainConfig
from tests.conftest import make_frame

N_USERS, N_ITEMS = 7, 30
NAMES = ("quale", "quase", "qualse", "aquale", "aquase", "aqualse")


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Tiny Adam moments become denormal floats, which are ~100x slower on x86: flush them while testing."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def _model(name: str, **opts: object) -> QUALE | QUASE | QUALSE:
    torch.manual_seed(0)
    base = {"dim": 8, "init_std": 0.3}
    if "qualse" in name or "quale" in name:
        base["l"] = 10
    return build_model(name, N_USERS, N_ITEMS, {**base, **opts})  # type: ignore[return-value]


def _inputs() -> tuple[torch.Tensor, torch.Tensor, Context]:
    g = torch.Generator().manual_seed(1)
    users = torch.tensor([1, 2, 3, 7])
    items = torch.randint(1, N_ITEMS + 1, (4, 6), generator=g)
    hist = torch.randint(1, N_ITEMS + 1, (4, 10), generator=g)
    hist[0, :7] = 0  # a short history
    hist[1, :] = 0  # no history at all
    return users, items, Context(history=hist)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_finite_and_deterministic(name: str) -> None:
    users, items, ctx = _inputs()
    m1, m2 = _model(name).eval(), _model(name).eval()
    s1 = m1.score(users, items, ctx)
    assert s1.shape == (4, 6) and torch.isfinite(s1).all()
    assert torch.equal(s1, m2.score(users, items, ctx))
    assert torch.equal(s1, m1.score(users, items, ctx))
    assert m1.history_length() == (5 if "quase" in name else 10)


@pytest.mark.parametrize("name", ["quale", "quase", "qualse"])
def test_left_padding_and_window(name: str) -> None:
    users, items, ctx = _inputs()
    m = _model(name).eval()
    s = m.score(users, items, ctx)
    wider = torch.cat([torch.zeros(4, 5, dtype=torch.long), ctx.history], 1)  # longer windows are truncated
    assert torch.allclose(s, m.score(users, items, Context(history=wider)), atol=1e-6)
    short = ctx.history[:, -6:]  # row 0 has 3 real items: fewer pads change nothing for it
    assert torch.allclose(s[0], m.score(users, items, Context(history=short))[0], atol=1e-6)
    # an item outside the window has no influence, one inside has
    changed = ctx.history.clone()
    changed[2, -1] = (changed[2, -1] % N_ITEMS) + 1
    assert not torch.allclose(s[2], m.score(users, items, Context(history=changed))[2])


def test_quase_reads_only_last_s_items() -> None:
    users, items, ctx = _inputs()
    m = _model("quase").eval()
    s = m.score(users, items, ctx)
    h = ctx.history.clone()
    h[:, :5] = (h[:, :5] % N_ITEMS) + 1  # items older than the last s = 5
    assert torch.allclose(s, m.score(users, items, Context(history=h)))
    assert torch.allclose(m.score(users, items, ctx), m.score(torch.tensor([4, 5, 6, 1]), items, ctx))  # no user


def test_quale_attention_ignores_pads_and_empty_history_scores_zero() -> None:
    users, items, ctx = _inputs()
    m = _model("quale").eval()
    s = m.score(users, items, ctx)
    assert torch.equal(s[1], torch.zeros(6))  # no history: u(long) = 0
    # the quaternion attention weights of padded steps are exactly 0: reference on the 3 real items
    hist = ctx.history[:1, -3:]
    assert torch.allclose(s[0], m.score(users[:1], items[:1], Context(history=hist))[0], atol=1e-6)


def test_qualse_reduces_to_quale_with_gate_one() -> None:
    users, items, ctx = _inputs()
    qualse = _model("qualse", gate_bias=True).eval()
    quale = _model("quale").eval()
    with torch.no_grad():
        quale.user_long.weight.copy_(qualse.user_long.weight)
        quale.item_long.weight.copy_(qualse.item_long.weight)
        qualse.gate_1.bias.fill_(1e4)  # gamma = 1
        qualse.w_o1.fill_(0.25)
    assert torch.allclose(qualse.score(users, items, ctx), quale.score(users, items, ctx), atol=1e-6)
    fixed = _model("qualse", fusion="fixed", fixed_c=0.0).eval()
    with torch.no_grad():
        quale.user_long.weight.copy_(fixed.user_long.weight)
        quale.item_long.weight.copy_(fixed.item_long.weight)
    assert torch.allclose(fixed.score(users, items, ctx), quale.score(users, items, ctx), atol=1e-6)


def test_gate_is_target_aware_and_reuse_flag() -> None:
    users, items, ctx = _inputs()
    m = _model("qualse").eval()
    hist = ctx.history
    ul, us = m.encode(users, hist)
    g = m.gate(users, items, ul, us)
    assert g.shape == (4, 6, 8) and ((g > 0) & (g < 1)).all()
    assert not torch.allclose(g[:, 0], g[:, 1])
    reuse = _model("qualse", gate_tables="reuse")
    assert not hasattr(reuse, "user_gate") and "user_gate" not in reuse.adv_tables()
    assert set(m.adv_tables()) == {"user_long", "user_gate", "item_long", "item_short", "item_gate"}


def test_quaternion_parameter_savings() -> None:
    m = _model("quase", dim=16)
    # QLSTM: 4 gates x (W, R) of 16 x 16 / 4 parameters each, plus 4 x 16 biases
    assert sum(p.numel() for p in m.rnn.parameters()) == 8 * 16 * 16 // 4 + 4 * 16


@pytest.mark.parametrize(
    ("name", "opts", "match"),
    [
        ("quale", {"dim": 6}, "multiple of 4"),
        ("quale", {"l": 0}, "l >= 1"),
        ("quase", {"cell": "rnn"}, "cell"),
        ("qualse", {"s": 20}, "s <= l"),
        ("qualse", {"fusion": "sum"}, "fusion"),
        ("qualse", {"gate_tables": "old"}, "gate_tables"),
        ("aqualse", {"adv_norm": "l1"}, "adv_norm"),
        ("quale", {"reg": -1.0}, "reg"),
    ],
)
def test_bad_config(name: str, opts: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _model(name, **opts)


def test_bad_inputs() -> None:
    users, items, ctx = _inputs()
    m = _model("qualse")
    with pytest.raises(DataError, match=r"needs context\.history"):
        m.score(users, items, None)
    with pytest.raises(DataError, match="history for B=4"):
        m.score(users, items, Context(history=ctx.history[:2]))
    with pytest.raises(DataError, match="item ids"):
        m.score(users, items + 100, ctx)
    with pytest.raises(DataError, match="user ids"):
        m.score(users * 0, items, ctx)
    with pytest.raises(DataError, match="history item ids"):
        m.score(users, items, Context(history=ctx.history - 5))
    with pytest.raises(DataError, match=r"\(B,\)"):
        m.score(users, items[0], ctx)


def _qabpr(m: torch.nn.Module) -> Adversary:
    o = m.adversary_options()  # type: ignore[operator]
    return Adversary(m.adversary_tables(), o["adv_eps"], o["adv_weight"], o["adv_norm"], o["adv_scale"], o["adv_warm"])  # type: ignore[operator]


class _SumScores(LossSpec):
    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.sum()


def test_adversarial_noise_rows() -> None:
    users, items, ctx = _inputs()
    batch, total = PairBatch(users, items, ctx), _SumScores()
    m = _model("aqualse", eps=0.5)
    noise = _qabpr(m).noise(m, batch, total)
    touched = torch.unique(torch.cat([items.flatten(), ctx.history.flatten()]))
    norms = noise["item_long.weight"].norm(dim=1)
    assert torch.allclose(norms[touched[touched > 0]], torch.full((len(touched[touched > 0]),), 0.5), atol=1e-5)
    untouched = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(norms[untouched], torch.zeros(int(untouched.sum())))
    glob = _model("aqualse", eps=0.5, adv_norm="global")
    gnoise = _qabpr(glob).noise(glob, batch, total)
    assert gnoise["item_short.weight"].norm().item() == pytest.approx(0.5, rel=1e-5)
    # the noise changes the scores only where it is substituted; the model itself is untouched
    params = dict(m.named_parameters())
    perturbed = _qabpr(m).loss_at(m, {n: params[n] + d for n, d in noise.items()}, batch, total)
    assert not torch.allclose(perturbed, m.score(users, items, ctx).sum())
    assert not any(p.grad is not None for p in m.parameters())


def _toy() -> Interactions:
    return Interactions.from_frame(make_frame(30, 60, 12), timestamp="ts", name="toy")


def test_qabpr_training_runs_and_restores_best() -> None:
    data = _toy()
    _, split, valid, _test = prepare(data, sequential_protocol(per_user=True, n_negatives=20))
    m = build_model("aquale", data.n_users, data.n_items, {"dim": 8, "l": 8, "adv_epochs": 2})
    valid_h = attach_history(valid, [split.train], 8)
    cfg = TrainConfig(epochs=2, batch_size=64, n_negatives=4, progress=False, monitor="NDCG@10")
    hist = fit(m, split.train, valid_h, cfg, log=None)
    assert [e["phase"] for e in hist.epochs] == ["adversarial"] * 3 and hist.epochs[0]["epoch"] == 0
    assert len(hist.stages["plain"]["epochs"]) == 2
    assert hist.best_value == pytest.approx(evaluate(m, valid_h, ks=(10,), metrics=("NDCG",))["NDCG@10"])
    assert m.fitted
    with pytest.raises(ConfigError, match="loss='bpr'"):
        fit(m, split.train, valid_h, TrainConfig(loss="hinge", progress=False), log=None, pretrained=True)


def test_plain_fit_learns_clustered_tastes() -> None:
    data = _toy()
    _, split, _valid, test = prepare(data, sequential_protocol(per_user=True, n_negatives=30))
    m = build_model("qualse", data.n_users, data.n_items, {"dim": 8, "l": 8, "init_std": 0.1})
    test_h = attach_history(test, [split.train, split.valid], 8)
    before = evaluate(m, test_h, ks=(10,), metrics=("NDCG",))["NDCG@10"]
    cfg = TrainConfig(epochs=6, batch_size=64, n_negatives=4, lr=0.02, progress=False)
    fit(m, split.train, None, cfg, log=None)
    after = evaluate(m, test_h, ks=(10,), metrics=("NDCG",))["NDCG@10"]
    assert after > before + 0.05


def test_whisker_length_and_protocol_helpers() -> None:
    frame = make_frame(20, 40, 12)
    data = Interactions.from_frame(frame, timestamp="ts", name="toy")
    assert whisker_length(data) == 12  # every user has 12 items: IQR 0
    assert whisker_length(data, minimum=20) == 20
    proto = sequential_protocol(per_user=True, n_negatives=10)
    _, split, _valid, test = prepare(data, proto)
    assert proto.ks == (1, 10, 20, 50, 100) and proto.metrics == ("HIT", "NDCG")
    assert split.describe() == {"train": 160, "valid": 40, "test": 40}  # 8 / 2 / 2 per user (by position)
    test_h = attach_history(test, [split.train, split.valid], 8)
    both = concat([split.train, split.valid]).df
    u = int(test_h.users[0])
    expected = both[both.user == u].sort_values("timestamp")["item"].to_numpy()[-8:]
    assert np.array_equal(test_h.context.history[0].numpy()[-len(expected) :], expected)
    assert test_h.candidates.shape[1] == int(test_h.n_pos.max()) + 10
    sub = subsample_users(data, 5, seed=0)
    assert sub.n_users == 5 and len(sub) == 60
    with pytest.raises(DataError, match="n_users"):
        subsample_users(data, 0)
    assert sequential_protocol().name == "temporal-sampled"


def test_registry_names() -> None:
    for name in NAMES:
        assert get_model_class(name).name == name
    assert get_model_class("aqualse").Config().adversarial
    assert not get_model_class("qualse").Config().adversarial


def test_gate_table_path_equals_gather_path() -> None:
    users, items, ctx = _inputs()
    m = _model("qualse").eval()
    ul, us = m.encode(users, ctx.history)
    small = m.gate(users, items, ul, us)  # 24 candidates < 30 items: gather then transform
    many = items.repeat(1, 2)  # 48 > 30: transform the table once, then gather
    assert torch.allclose(m.gate(users, many, ul, us)[:, :6], small, atol=1e-6)


def test_init_from_parts() -> None:
    quale, quase = _model("quale"), _model("quase")
    with torch.no_grad():
        quale.item_long.weight.add_(1.0)
        quase.item_short.weight.add_(2.0)
    m = _model("qualse")
    m.init_from(quale.state_dict(), quase.state_dict())
    assert torch.equal(m.item_long.weight, quale.item_long.weight)
    assert torch.equal(m.item_short.weight, quase.item_short.weight)
    assert torch.equal(m.rnn.R[0].r, quase.rnn.R[0].r)
    with pytest.raises(DataError, match="does not match"):
        m.init_from(_model("quale", dim=12).state_dict(), quase.state_dict())
