"""CML, GMF/MLP/NeuMF, PRME(_s), TransRec and Caser: formulas, shapes, pre-training and the ml-1m order check."""

from __future__ import annotations

import pytest
import torch

from segue.data import Interactions
from segue.errors import ConfigError, DataError
from segue.evaluation.protocols import get_protocol
from segue.models.base import Context, build_model
from segue.models.metric_baselines import GMF, MLP, NeuMF
from segue.pipeline import prepare, run
from segue.training.trainer import TrainConfig

FAST = TrainConfig(epochs=1, batch_size=64, n_negatives=4, progress=False, lr=0.01)
USERS = torch.tensor([1, 2, 3])
ITEMS = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 1, 2, 3]])
HIST = Context(history=torch.tensor([[0, 0, 0, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]]))


@pytest.mark.parametrize(
    "name,opts",
    [
        ("cml", {"dim": 8}),
        ("gmf", {"factors": 4}),
        ("mlp", {"factors": 4, "layers": 2}),
        ("neumf", {"factors": 4, "layers": 2}),
        ("prme", {"dim": 8}),
        ("prme-s", {"dim": 8, "s": 5}),
        ("transrec", {"dim": 8}),
        ("caser", {"dim": 8, "s": 5}),
    ],
)
def test_shapes_and_score_all_agree(name: str, opts: dict) -> None:
    torch.manual_seed(0)
    m = build_model(name, 4, 9, opts)
    m.eval()
    s = m.score(USERS, ITEMS, HIST)
    assert s.shape == (3, 4) and torch.isfinite(s).all()
    full = m.score_all(USERS, HIST)
    assert full.shape == (3, 10) and torch.isinf(full[:, 0]).all()
    torch.testing.assert_close(full[:, 1:5], m.score(USERS, torch.arange(1, 5).expand(3, -1), HIST))


def test_cml_is_minus_squared_distance_inside_unit_ball() -> None:
    m = build_model("cml", 4, 9, {"dim": 3, "init_std": 5.0})
    s = m.score(USERS, ITEMS)
    u, v = m.user_emb.weight[USERS], m.item_emb.weight[ITEMS]
    assert (m.user_emb.weight[USERS].norm(dim=1) <= 1 + 1e-5).all()
    torch.testing.assert_close(s, -(u[:, None] - v).square().sum(-1))


def test_prme_formula_and_prme_s_mean_over_window() -> None:
    torch.manual_seed(1)
    m = build_model("prme-s", 4, 9, {"dim": 3, "alpha": 0.3, "s": 5})
    s = m.score(USERS, ITEMS, HIST)
    u, x, sq = m.user_pref.weight, m.item_pref.weight, m.item_seq.weight
    b, c = 0, 2
    j = ITEMS[b, c]
    pref = (u[1] - x[j]).square().sum()
    seq = torch.stack([(sq[k] - sq[j]).square().sum() for k in (4, 5)]).mean()
    torch.testing.assert_close(s[b, c], -(0.3 * pref + 0.7 * seq))
    # no context at all: preference term only
    j = ITEMS[2, 0]
    torch.testing.assert_close(s[2, 0], -(u[3] - x[j]).square().sum())
    one = build_model("prme", 4, 9, {"dim": 3, "alpha": 0.3})
    one.load_state_dict(m.state_dict())
    s1 = one.score(USERS, ITEMS, HIST)
    j = ITEMS[0, 1]
    exp = 0.3 * (u[1] - x[j]).square().sum() + 0.7 * (sq[5] - sq[j]).square().sum()
    torch.testing.assert_close(s1[0, 1], -exp)


def test_transrec_translation_formula() -> None:
    torch.manual_seed(2)
    m = build_model("transrec", 4, 9, {"dim": 3})
    with torch.no_grad():
        m.t.normal_()
        m.user_t.weight.normal_()
        m.bias.weight.normal_()
    s = m.score(USERS, ITEMS, HIST)
    g, tu, beta = m.item_emb.weight, m.user_t.weight, m.bias.weight[:, 0]
    j = ITEMS[1, 3]
    torch.testing.assert_close(s[1, 3], beta[j] - (g[5] + m.t + tu[2] - g[j]).norm(), rtol=1e-5, atol=1e-5)
    j = ITEMS[2, 1]  # no previous item: gamma_k = 0
    torch.testing.assert_close(s[2, 1], beta[j] - (m.t + tu[3] - g[j]).norm(), rtol=1e-5, atol=1e-5)


def test_neumf_with_pretrained_parts_is_their_alpha_mix() -> None:
    torch.manual_seed(3)
    gmf = GMF(4, 9, GMF.Config(factors=4))
    mlp = MLP(4, 9, MLP.Config(factors=4, layers=2))
    for m in (gmf, mlp):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
    neumf = NeuMF(4, 9, NeuMF.Config(factors=4, layers=2, alpha=0.5))
    neumf.load_parts(gmf, mlp)
    torch.testing.assert_close(neumf.score(USERS, ITEMS), 0.5 * gmf.score(USERS, ITEMS) + 0.5 * mlp.score(USERS, ITEMS))
    with pytest.raises(ConfigError, match="do not match"):
        NeuMF(4, 9, NeuMF.Config(factors=8, layers=2)).load_parts(gmf, mlp)


def test_sequential_models_need_history() -> None:
    for name in ("prme", "transrec", "caser"):
        with pytest.raises(DataError, match=r"needs context\.history"):
            build_model(name, 4, 9).score(USERS, ITEMS)


def test_all_baselines_train_end_to_end(data: Interactions) -> None:
    proto = get_protocol("loo-sampled", n_negatives=10)
    _, split, valid, test = prepare(data, proto)
    for name, loss in (("cml", "bpr"), ("neumf", "bce"), ("prme-s", "bpr"), ("transrec", "bpr"), ("caser", "bce")):
        cfg = TrainConfig(epochs=1, batch_size=64, n_negatives=4, loss=loss, progress=False)
        r = run(name, data, protocol=proto, train_config=cfg, prepared=(split, valid, test), log=None)
        assert 0 <= r.metrics["HR@10"] <= 1


def test_reproduce_markdown_hook_shows_ties_beside_the_authors_rule() -> None:
    from segue.reproduce.sdmr_table import markdown

    row = {
        "model": "sdmr",
        "dataset": "ml-100k",
        "metrics": {"HR@10": 0.70, "NDCG@10": 0.40},
        "ties": {"tied_share": 0.164, "HR@10_authors": 0.72, "NDCG@10_authors": 0.45},
    }
    md = markdown({"rows": [row, {**row, "model": "pop", "dataset_checks": {"split": {"train": 9}}}]})
    assert "| ml-100k | sdmr | 16.4% | 0.7000 | 0.720 | 0.4000 | 0.450 |" in md
    assert "- ml-100k: split {'train': 9}" in md
