"""SASRec, AGRU / ALSTM, FPMC and AASVD (spec B.10): shapes, masking, determinism, bad input, learning."""

from __future__ import annotations

import pytest
import torch

from segue.data.interactions import Interactions
from segue.errors import ConfigError, DataError
from segue.evaluation.protocols import evaluate
from segue.evaluation.sequential import attach_history, sequential_protocol
from segue.models.base import Context, build_model
from segue.pipeline import prepare
from segue.training import fit
from segue.training.trainer import TrainConfig
from tests.conftest import make_frame

N_USERS, N_ITEMS = 6, 25
OPTS = {
    "sasrec": {"dim": 8, "max_len": 10, "dropout": 0.2},
    "agru": {"dim": 8, "s": 5},
    "alstm": {"dim": 8, "s": 5},
    "fpmc": {"dim": 8, "s": 1, "init_std": 0.3},
    "aasvd": {"dim": 8, "l": 10, "init_std": 0.3},
}


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Tiny Adam moments become denormal floats, which are ~100x slower on x86: flush them while testing."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def _model(name: str, **extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, N_USERS, N_ITEMS, {**OPTS[name], **extra}).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor, Context]:
    g = torch.Generator().manual_seed(3)
    users = torch.tensor([1, 2, 3, 6])
    items = torch.randint(1, N_ITEMS + 1, (4, 7), generator=g)
    hist = torch.randint(1, N_ITEMS + 1, (4, 10), generator=g)
    hist[0, :8] = 0
    hist[1, :] = 0
    return users, items, Context(history=hist)


@pytest.mark.parametrize("name", list(OPTS))
def test_shapes_and_determinism(name: str) -> None:
    users, items, ctx = _inputs()
    a, b = _model(name), _model(name)
    s = a.score(users, items, ctx)
    assert s.shape == (4, 7) and torch.isfinite(s).all()
    assert torch.equal(s, b.score(users, items, ctx))
    assert a.history_length() == {"sasrec": 10, "agru": 5, "alstm": 5, "fpmc": 1, "aasvd": 10}[name]


@pytest.mark.parametrize("name", list(OPTS))
def test_left_padding_changes_nothing(name: str) -> None:
    users, items, ctx = _inputs()
    m = _model(name)
    s = m.score(users, items, ctx)
    # row 0 has 2 real items: a window of 2 or 10 gives the same scores
    short = m.score(users[:1], items[:1], Context(history=ctx.history[:1, -2:]))
    assert torch.allclose(s[:1], short, atol=1e-5)
    wider = torch.cat([torch.zeros(4, 3, dtype=torch.long), ctx.history], 1)
    assert torch.allclose(s, m.score(users, items, Context(history=wider)), atol=1e-5)


def test_sasrec_is_causal_and_masks_padding() -> None:
    users, items, ctx = _inputs()
    m = _model("sasrec")
    h = ctx.history
    out = m.encode(h)
    changed = h.clone()
    changed[:, -1] = (changed[:, -1] % N_ITEMS) + 1
    out2 = m.encode(changed)
    assert torch.allclose(out[:, :-1], out2[:, :-1], atol=1e-6)  # earlier positions never see later items
    assert not torch.allclose(out[2, -1], out2[2, -1])
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # padded positions are zero
    assert torch.isfinite(m.score(users, items, ctx)).all()  # an all-padding row is not NaN
    # dropout only in training
    m.train()
    assert not torch.allclose(m.score(users, items, ctx), m.score(users, items, ctx))


def test_short_term_models_read_only_their_window() -> None:
    users, items, ctx = _inputs()
    for name, w in (("agru", 5), ("fpmc", 1)):
        m = _model(name)
        h = ctx.history.clone()
        h[:, :-w] = (h[:, :-w] % N_ITEMS) + 1
        assert torch.allclose(m.score(users, items, ctx)[2:], m.score(users, items, Context(history=h))[2:])


def test_attention_variants_and_fpmc_terms() -> None:
    users, items, ctx = _inputs()
    prod = _model("alstm", attention="prod")
    assert torch.isfinite(prod.score(users, items, ctx)).all()
    m = _model("fpmc")
    s = m.score(users, items, ctx)
    mf = torch.einsum("bd,bcd->bc", m.user_ui(users), m.item_iu(items))
    assert torch.allclose(s[1], mf[1])  # no previous item: the MF term only
    prev = ctx.history[2, -1]
    assert torch.allclose(s[2], mf[2] + m.item_il(items[2]) @ m.item_li.weight[prev], atol=1e-6)


@pytest.mark.parametrize(
    ("name", "opts", "match"),
    [
        ("sasrec", {"dim": 10, "n_heads": 3}, "divisible"),
        ("sasrec", {"dropout": 1.0}, "dropout"),
        ("agru", {"attention": "dot"}, "attention"),
        ("fpmc", {"s": 0}, "s >= 1"),
        ("aasvd", {"l": 0}, "l >= 1"),
    ],
)
def test_bad_config(name: str, opts: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _model(name, **opts)


@pytest.mark.parametrize("name", list(OPTS))
def test_bad_inputs(name: str) -> None:
    users, items, ctx = _inputs()
    m = _model(name)
    with pytest.raises(DataError, match=r"needs context\.history"):
        m.score(users, items)
    with pytest.raises(DataError, match="item ids"):
        m.score(users, items + 50, ctx)
    with pytest.raises(DataError, match="history for B=4"):
        m.score(users, items, Context(history=ctx.history[:1]))


@pytest.mark.parametrize(("name", "loss"), [("fpmc", "bpr"), ("aasvd", "bpr"), ("sasrec", "bce")])
def test_learns_clustered_tastes(name: str, loss: str) -> None:
    data = Interactions.from_frame(make_frame(30, 60, 12), timestamp="ts", name="toy")
    _, split, _valid, test = prepare(data, sequential_protocol(per_user=True, n_negatives=30))
    torch.manual_seed(0)
    opts = {**OPTS[name], "dim": 16} | ({"init_std": 0.1} if name != "sasrec" else {"max_len": 5, "n_blocks": 1})
    m = build_model(name, data.n_users, data.n_items, opts)
    test_h = attach_history(test, [split.train, split.valid], m.history_length())
    before = evaluate(m, test_h, ks=(10,), metrics=("NDCG",))["NDCG@10"]
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.02, loss=loss, n_negatives=4, progress=False)
    fit(m, split.train, None, cfg, log=None)
    after = evaluate(m, test_h, ks=(10,), metrics=("NDCG",))["NDCG@10"]
    assert after > before + 0.05
