"""MDR / MASS / MASR / APR (spec Part M): reduction tests M.15, attention mask, adversarial step, protocol, loaders."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segue.data.batch import PairBatch
from segue.data.interactions import Interactions
from segue.data.playlists import (
    load_playlist_json,
    load_playlist_table,
    playlist_stats,
    playlists_from_json,
    preprocess_playlists,
    stats_markdown,
)
from segue.data.splits import group_holdout
from segue.errors import ConfigError, DataError
from segue.evaluation.metrics import compute_metrics, rank_positives
from segue.evaluation.playlist import member_matrix, owner_evalset, playlist_evalset, playlist_owners
from segue.evaluation.protocols import evaluate
from segue.models.base import Context, get_model_class
from segue.models.losses import LossSpec
from segue.models.playlist import MASR, MASS, MDR, perturbable, sq_mahalanobis
from segue.models.playlist_baselines import FISM
from segue.training import fit
from segue.training.adversarial import Adversary, adversarial_noise, normalize_grad
from segue.training.playlist import fit_playlist
from segue.training.playlist import playlist_config as PlaylistTrainConfig

pairwise_bpr = LossSpec("bpr", reduction="sum")  # Eq. 4.30 as the playlist models train it


def apr_noise(m: torch.nn.Module, names: list[str], prev: dict, p: torch.Tensor, s: torch.Tensor, ctx: Context,
              cfg: object) -> dict[str, torch.Tensor]:  # fmt: skip
    adv = Adversary(names, cfg.adv_eps, cfg.adv_weight, cfg.adv_norm, "std", True, dict(prev))  # type: ignore[attr-defined]
    return adv.noise(m, PairBatch(p, s, ctx), pairwise_bpr)


def perturbed_bpr(m: torch.nn.Module, noise: dict[str, torch.Tensor], p: torch.Tensor, s: torch.Tensor,
                  ctx: Context) -> torch.Tensor:  # fmt: skip
    params = dict(m.named_parameters())
    batch = PairBatch(p, s, ctx)
    return Adversary(list(noise)).loss_at(m, {n: params[n] + d for n, d in noise.items()}, batch, pairwise_bpr)


torch.set_num_threads(1)
REAL = Path(os.environ.get("SEGUE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def toy_playlists(
    n_users: int = 12, per_user: int = 2, n_songs: int = 60, size: int = 8, seed: int = 0
) -> Interactions:
    """Owners with two playlists each, songs drawn from one of three taste clusters."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        cluster = u % 3
        pool = np.arange(n_songs // 3) + cluster * (n_songs // 3)
        for k in range(per_user):
            for s in rng.choice(pool, size=size, replace=False):
                rows.append((f"u{u}", f"p{u}-{k}", f"s{s}"))
    return Interactions.from_frame(
        pd.DataFrame(rows, columns=["user", "playlist", "item"]), groups={"playlist": "playlist"}, name="toy"
    )


@pytest.fixture(scope="module")
def toy() -> Interactions:
    return toy_playlists()


def _mdr(d: int = 4, n_u: int = 5, n_p: int = 6, n_s: int = 9, **kw: object) -> MDR:
    torch.manual_seed(0)
    return MDR(n_u, n_s, MDR.Config(dim=d, n_playlists=n_p, **kw))


def _mass(d: int = 4, n_u: int = 5, n_p: int = 6, n_s: int = 9, **kw: object) -> MASS:
    torch.manual_seed(0)
    return MASS(n_u, n_s, MASS.Config(dim=d, n_playlists=n_p, **kw))


# -- M.15 (1) identity metric -------------------------------------------------------------------
def test_identity_metric_is_squared_euclidean_and_diag_and_full_forms_agree() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    torch.testing.assert_close(sq_mahalanobis(x, y, torch.ones(7)), ((x - y) ** 2).sum(-1))
    b = torch.randn(7, generator=g)
    a = torch.diag(b)
    torch.testing.assert_close(sq_mahalanobis(x, y, b), ((x - y) @ a.T).square().sum(-1))
    full = torch.randn(7, 7, generator=g)
    m = full.T @ full
    lhs = torch.sqrt(torch.einsum("bi,ij,bj->b", x - y, m, x - y))
    torch.testing.assert_close(lhs, ((x - y) @ full.T).norm(dim=-1), rtol=1e-4, atol=1e-5)


# -- M.15 (2, 3) MDR ------------------------------------------------------------------------------
def test_mdr_with_unit_metric_is_cml_like() -> None:
    m = _mdr()
    m.set_owners(torch.tensor([0, 1, 2, 3, 4, 5, 1]))
    with torch.no_grad():
        m.B1.fill_(1), m.B2.fill_(1), m.theta.zero_()
    p, s = torch.tensor([1, 6]), torch.tensor([[1, 2, 3], [4, 5, 6]])
    u = m.user_emb(m.owner[p])[:, None]
    pe = m.playlist_emb(p)[:, None]
    se = m.song_emb(s)
    expected = ((u - se) ** 2).sum(-1) + ((pe - se) ** 2).sum(-1)
    torch.testing.assert_close(m.distance(p, s), expected)
    with torch.no_grad():
        m.playlist_emb.weight[1:6] = m.user_emb.weight[m.owner[1:6]]
    torch.testing.assert_close(m.distance(p[:1], s[:1]), 2 * ((u[:1] - se[:1]) ** 2).sum(-1))


def test_mdr_ablation_modes_and_product_of_softmaxes() -> None:
    full, us, ps = _mdr(mode="ups"), _mdr(mode="us"), _mdr(mode="ps")
    p, s = torch.tensor([1, 2]), torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        full.B2.zero_()
    torch.testing.assert_close(full.score(p, s), us.score(p, s))
    full = _mdr(mode="ups")
    with torch.no_grad():
        full.B1.zero_()
    torch.testing.assert_close(full.score(p, s), ps.score(p, s))
    # ranking by y_MDR equals ranking by P(s|u) P(s|p) (Eq. 4.18) over a pool, with theta split in two
    m = _mdr()
    with torch.no_grad():
        m.theta.normal_()
    pool = torch.arange(1, 10)[None]
    su = m.song_emb(pool)
    du = m._term(m.user_emb(m.owner[p[:1]])[:, None], su, m.B1) + m.theta[pool] / 2
    dp = m._term(m.playlist_emb(p[:1])[:, None], su, m.B2) + m.theta[pool] / 2
    prod = torch.softmax(-du, -1) * torch.softmax(-dp, -1)
    assert torch.equal(prod.argsort(descending=True), m.score(p[:1], pool).argsort(descending=True))


def test_mdr_full_metric_with_identity_equals_diag_ones() -> None:
    diag, full = _mdr(), _mdr(metric="full")
    with torch.no_grad():
        diag.B1.fill_(1), diag.B2.fill_(1)
        full.B1.copy_(torch.eye(4)), full.B2.copy_(torch.eye(4))
        full.load_state_dict({**full.state_dict(), "B1": torch.eye(4), "B2": torch.eye(4)})
    p, s = torch.tensor([1]), torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(diag.score(p, s), full.score(p, s))


# -- M.15 (4-8) MASS ------------------------------------------------------------------------------
def test_mass_single_member_is_that_members_distance() -> None:
    m = _mass()
    with torch.no_grad():
        m.bias.normal_()
    p, s, mem = torch.tensor([1, 2]), torch.tensor([[3, 4], [5, 6]]), torch.tensor([[7, 0, 0], [2, 0, 0]])
    ctx = Context(group=mem)
    alpha = m.attention_weights(p, s, mem)
    torch.testing.assert_close(alpha[..., 0], torch.ones(2, 2))
    assert torch.all(alpha[..., 1:] == 0)
    q = torch.relu(m.W1(m._cat(m.user_emb(m.owner[p]), m.song_emb(s))))
    expected = ((m.B3 * (q - m.song_emb(mem[:, :1]))) ** 2).sum(-1) + m.bias[s]
    torch.testing.assert_close(m.score(p, s, ctx), -expected)


def test_mass_uniform_attention_when_b4_is_zero() -> None:
    m = _mass()
    with torch.no_grad():
        m.B4.zero_()
    p, s, mem = torch.tensor([1]), torch.tensor([[3, 4]]), torch.tensor([[5, 6, 7, 0, 0]])
    alpha = m.attention_weights(p, s, mem)
    torch.testing.assert_close(alpha, torch.tensor([[[1 / 3] * 3 + [0, 0]] * 2]))
    q = torch.relu(m.W1(m._cat(m.user_emb(m.owner[p]), m.song_emb(s))))
    dm = ((m.B3 * (q[:, :, None] - m.song_emb(mem[:, :3])[:, None])) ** 2).sum(-1).mean(-1)
    torch.testing.assert_close(m.distance(p, s, Context(group=mem)), dm + m.bias[s])


@pytest.mark.parametrize("attention", ["mem-metric", "nonmem-metric", "mem-dot", "nonmem-dot"])
def test_mass_attention_mask_pad_and_permutation_invariance(attention: str) -> None:
    m = _mass(attention=attention)
    p, s = torch.tensor([1, 2]), torch.tensor([[3, 4, 8], [5, 6, 1]])
    mem = torch.tensor([[7, 2, 9], [2, 1, 0]])
    alpha = m.attention_weights(p, s, mem)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 3))
    assert torch.all(alpha[1, :, 2] == 0)
    y = m.score(p, s, Context(group=mem))
    padded = torch.cat([mem, torch.zeros(2, 4, dtype=torch.long)], 1)
    torch.testing.assert_close(m.score(p, s, Context(group=padded)), y, atol=1e-6, rtol=1e-6)
    perm = torch.tensor([[9, 7, 2], [0, 1, 2]])
    torch.testing.assert_close(m.score(p, s, Context(group=perm)), y, atol=1e-6, rtol=1e-6)


def test_mass_without_members_is_the_bias_and_needs_context() -> None:
    m = _mass()
    with torch.no_grad():
        m.bias.normal_()
    p, s = torch.tensor([1]), torch.tensor([[3, 4]])
    torch.testing.assert_close(m.distance(p, s, Context(group=torch.zeros(1, 3, dtype=torch.long))), m.bias[s])
    with pytest.raises(DataError, match=r"context\.group"):
        m.score(p, s)


def test_mass_item_item_reduction() -> None:
    m = _mass()
    with torch.no_grad():
        m.W1.weight.copy_(torch.cat([torch.zeros(4, 4), torch.eye(4)], 1))
        m.W1.bias.zero_()
        m.song_emb.weight.abs_()
    p, s, mem = torch.tensor([1]), torch.tensor([[3, 4]]), torch.tensor([[5, 6]])
    alpha = m.attention_weights(p, s, mem)
    d_t = ((m.B3 * (m.song_emb(s)[:, :, None] - m.song_emb(mem)[:, None])) ** 2).sum(-1)
    torch.testing.assert_close(m.distance(p, s, Context(group=mem)), (alpha * d_t).sum(-1) + m.bias[s])


def test_tied_memory_is_nonmem_metric() -> None:
    mem_m, tied = _mass(attention="mem-metric"), _mass(attention="nonmem-metric")
    with torch.no_grad():
        for name in ("user_emb", "song_emb", "W1", "W2"):
            getattr(tied, name).load_state_dict(getattr(mem_m, name).state_dict())
        mem_m.user_att.weight.copy_(mem_m.user_emb.weight)
        mem_m.song_att.weight.copy_(mem_m.song_emb.weight)
    p, s, mem = torch.tensor([1, 3]), torch.tensor([[3, 4], [1, 2]]), torch.tensor([[5, 6, 0], [7, 8, 9]])
    torch.testing.assert_close(mem_m.score(p, s, Context(group=mem)), tied.score(p, s, Context(group=mem)))
    assert not hasattr(tied, "user_att")


def test_mass_dropout_path_matches_expansion_in_eval() -> None:
    m = _mass(dropout=0.5)
    m.eval()
    p, s, mem = torch.tensor([1]), torch.tensor([[3, 4]]), torch.tensor([[5, 6, 0]])
    y = m.score(p, s, Context(group=mem))
    m.train()
    with torch.no_grad():
        m.drop.p = 0.0
    torch.testing.assert_close(m.score(p, s, Context(group=mem)), y, atol=1e-5, rtol=1e-5)


# -- M.15 (9) MASR --------------------------------------------------------------------------------
def test_masr_limits_and_no_trainable_parameters() -> None:
    mdr, mass = _mdr(), _mass()
    p, s, ctx = torch.tensor([1, 2]), torch.tensor([[1, 2], [3, 4]]), Context(group=torch.tensor([[5, 6], [7, 0]]))
    one, zero, half = MASR.from_parts(mdr, mass, 1.0), MASR.from_parts(mdr, mass, 0.0), MASR.from_parts(mdr, mass)
    torch.testing.assert_close(one.score(p, s, ctx), mdr.score(p, s, ctx))
    torch.testing.assert_close(zero.score(p, s, ctx), mass.score(p, s, ctx))
    torch.testing.assert_close(half.score(p, s, ctx), 0.5 * (mdr.score(p, s, ctx) + mass.score(p, s, ctx)))
    assert sum(q.numel() for q in half.parameters() if q.requires_grad) == 0
    assert all(q.requires_grad for q in mdr.parameters())  # the originals stay trainable
    with pytest.raises(ConfigError, match="no trainable"):
        fit(half, toy_playlists())


def test_registry_builds_every_playlist_model() -> None:
    for name in ("mdr", "mass", "masr", "amdr", "amass", "amasr", "fism"):
        m = get_model_class(name)(3, 5, get_model_class(name).Config(dim=4))
        y = m.score(torch.tensor([1]), torch.tensor([[1, 2]]), Context(group=torch.tensor([[3, 0]])))
        assert y.shape == (1, 2)


# -- M.15 (10) BPR ---------------------------------------------------------------------------------
def test_bpr_values_and_one_step_reduces_the_gap() -> None:
    assert math.isclose(pairwise_bpr(torch.zeros(1, 2)).item(), math.log(2), rel_tol=1e-6)
    gaps = torch.linspace(-3, 3, 7)
    losses = [pairwise_bpr(torch.tensor([[g.item(), 0.0]])).item() for g in gaps]
    assert all(a > b for a, b in itertools.pairwise(losses))
    assert math.isclose(LossSpec("bpr", neg_reduce="max", reduction="sum")(torch.tensor([[0.0, 1.0, -1.0, 2.0]])).item(), -math.log(1 / (1 + math.e**2)),
                        rel_tol=1e-5)  # fmt: skip
    assert torch.isclose(LossSpec("bpr", reduction="sum")(torch.zeros(2, 5)), torch.tensor(8 * math.log(2)))
    m = _mdr()
    p, s = torch.tensor([1, 2]), torch.tensor([[1, 2], [3, 4]])
    gap0 = (m.distance(p, s)[:, 0] - m.distance(p, s)[:, 1]).sum()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    pairwise_bpr(m.score(p, s)).backward()
    opt.step()
    assert (m.distance(p, s)[:, 0] - m.distance(p, s)[:, 1]).sum() < gap0


# -- M.15 (11) APR -----------------------------------------------------------------------------------
def _batch() -> tuple[torch.Tensor, torch.Tensor, Context]:
    return (
        torch.tensor([1, 2, 3]),
        torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 1]]),
        Context(group=torch.tensor([[4, 5], [1, 0], [2, 3]])),
    )


def test_apr_zero_noise_is_plain_bpr() -> None:
    m = _mass()
    p, s, ctx = _batch()
    cfg = PlaylistTrainConfig(eps=0.0)
    noise = apr_noise(m, perturbable(m), {}, p, s, ctx, cfg)
    assert all(torch.count_nonzero(d) == 0 for d in noise.values())
    bpr = pairwise_bpr(m.score(p, s, ctx))
    total = bpr + 1.0 * perturbed_bpr(m, noise, p, s, ctx)
    torch.testing.assert_close(total, 2 * bpr)


def test_apr_noise_rows_have_flexible_magnitude_and_no_grad() -> None:
    m = _mdr()
    p, s, ctx = _batch()
    cfg = PlaylistTrainConfig(eps=0.5)
    noise = apr_noise(m, perturbable(m), {}, p, s, ctx, cfg)
    assert set(noise) == {"user_emb.weight", "playlist_emb.weight", "song_emb.weight", "theta", "B1", "B2"}
    params = dict(m.named_parameters())
    for name in ("song_emb.weight", "user_emb.weight"):
        d = noise[name]
        norms = d.norm(dim=1)
        touched = norms > 0
        torch.testing.assert_close(
            norms[touched], torch.full_like(norms[touched], 0.5 * params[name].detach().std().item())
        )
        assert not d.requires_grad
    used = torch.unique(s)
    assert torch.count_nonzero(noise["song_emb.weight"].norm(dim=1)) <= len(used)
    b = noise["B1"]
    torch.testing.assert_close(b.abs(), torch.full_like(b, 0.5 * params["B1"].detach().std().item()))


def test_apr_normalize_and_adversarial_direction_increases_loss() -> None:
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(normalize_grad(g), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    torch.testing.assert_close(normalize_grad(g, "tensor"), g / 5)
    torch.testing.assert_close(normalize_grad(torch.tensor([-2.0, 0.0, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))
    m = _mass()
    p, s, ctx = _batch()
    base = pairwise_bpr(m.score(p, s, ctx)).item()
    noise = apr_noise(m, perturbable(m), {}, p, s, ctx, PlaylistTrainConfig(eps=0.01))
    assert perturbed_bpr(m, noise, p, s, ctx).item() >= base - 1e-6
    assert "W1.bias" not in noise and "W1.weight" in noise and "B4" in noise
    assert adversarial_noise({"x": torch.zeros(2, 2)}, {"x": torch.ones(2, 2)}, 1.0)["x"].abs().sum() == 0


def test_apr_training_leaves_evaluation_clean(toy: Interactions) -> None:
    split = group_holdout(toy, seed=0)
    dev = playlist_evalset(split, "valid", n_negatives=10, seed=1)
    m = MDR(toy.n_users, toy.n_items, MDR.Config(dim=8, n_playlists=len(toy.group_maps["playlist"])))
    fit_playlist(m, split.train, dev, PlaylistTrainConfig(epochs=2, apr_epochs=2, batch_size=16), apr=True, log=None)
    p, s, ctx = _batch()
    y1 = m.score(p, s, ctx)
    assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in vars(m).values())
    torch.testing.assert_close(m.score(p, s, ctx), y1)


# -- M.15 (12, 13) metrics and protocol ----------------------------------------------------------
def test_metrics_at_ranks_1_10_11() -> None:
    scores = torch.zeros(3, 12)
    for row, rank in enumerate((1, 10, 11)):
        scores[row] = torch.arange(12, 0, -1).float()
        scores[row, 0] = 12.5 - rank  # the positive sits at `rank`
    positive = torch.zeros(3, 12, dtype=torch.bool)
    positive[:, 0] = True
    ranks, n_pos, n_neg = rank_positives(scores, positive)
    out = compute_metrics(ranks, n_pos, n_neg, ks=(10,))
    torch.testing.assert_close(out["HR@10"], torch.tensor([1.0, 1.0, 0.0]), check_dtype=False)
    torch.testing.assert_close(out["NDCG@10"], torch.tensor([1.0, 1 / math.log2(11), 0.0]), check_dtype=False,
                               atol=1e-4, rtol=1e-4)  # fmt: skip


def test_protocol_holdout_negatives_and_member_lists(toy: Interactions) -> None:
    split = group_holdout(toy, seed=0)
    for part in (split.test, split.valid):
        assert part.df.groupby("playlist").size().eq(1).all() and part.df["playlist"].nunique() == 24
    ev = playlist_evalset(split, "test", n_negatives=20, seed=3)
    all_rows = toy.df
    for r, p in enumerate(ev.users):
        songs = set(all_rows.loc[all_rows["playlist"] == p, "item"])
        negs = ev.candidates[r, 1:]
        assert len(set(negs.tolist())) == 20 and not songs & set(negs.tolist())
        assert ev.candidates[r, 0] in songs
        mem = set(ev.context.group[r].tolist()) - {0}
        assert ev.candidates[r, 0] not in mem
        assert mem == set(split.train.df.loc[split.train.df["playlist"] == p, "item"])
    assert set(np.unique(ev.candidates[:, 1:])) <= set(split.train.df["item"])
    again = playlist_evalset(split, "test", n_negatives=20, seed=3)
    assert np.array_equal(again.candidates, ev.candidates)
    owners = playlist_owners(split.train)
    assert np.array_equal(owner_evalset(ev, owners).users, owners[ev.users])


def test_training_excludes_target_from_members_and_learns(toy: Interactions) -> None:
    split = group_holdout(toy, seed=0)
    dev = playlist_evalset(split, "valid", n_negatives=10, seed=1)
    n_p = len(toy.group_maps["playlist"])
    m = MASS(toy.n_users, toy.n_items, MASS.Config(dim=8, n_playlists=n_p))
    before = evaluate(m.eval(), dev)["HR@10"]
    seen: list[torch.Tensor] = []
    orig = m.score

    def spy(users: torch.Tensor, items: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        if m.training:
            assert context is not None and not (context.group == items[:, :1]).any()
            seen.append(items)
        return orig(users, items, context)

    m.score = spy  # type: ignore[method-assign]
    h = fit_playlist(m, split.train, dev, PlaylistTrainConfig(epochs=4, batch_size=16, lr=0.01), log=None)
    assert seen and seen[0].shape[1] == 5
    assert h.best_value is not None and h.best_value >= before
    f = FISM(toy.n_users, toy.n_items, FISM.Config(dim=8, n_playlists=n_p))
    fit_playlist(f, split.train, dev, PlaylistTrainConfig(epochs=1, batch_size=16), log=None)


def test_member_matrix_and_config_errors(toy: Interactions) -> None:
    mm = member_matrix(toy, len(toy.group_maps["playlist"]))
    assert mm.shape == (25, 8) and (mm[0] == 0).all()
    with pytest.raises(ConfigError, match="neg_reduce"):
        PlaylistTrainConfig(neg_reduce="mean")
    with pytest.raises(ConfigError, match="mode"):
        MDR(3, 3, MDR.Config(mode="xx"))


# -- loaders and preprocessing -------------------------------------------------------------------
def test_json_loaders_aotm_and_mpd_layouts(tmp_path: Path) -> None:
    aotm = [
        {"mix_id": 1, "user": {"name": "ann"}, "playlist": [[["a", "x"], "TR1"], [["b", "y"], None]]},
        {"mix_id": 2, "user": {"name": "ann"}, "playlist": [[["a", "x"], "TR1"]]},
    ]
    path = tmp_path / "aotm.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(aotm, f)
    d = load_playlist_json(path)
    assert d.n_users == 1 and len(d.group_maps["playlist"]) == 2 and set(d.item_map.raw) == {"TR1", "b - y"}
    mpd = {"playlists": [{"pid": 7, "tracks": [{"track_uri": "s:1"}, {"track_uri": "s:2"}]}]}
    d2 = playlists_from_json(mpd)
    assert d2.n_users == 1 and d2.user_map.raw[0] == "playlist:7" and d2.n_items == 2
    with pytest.raises(DataError, match="no track list"):
        playlists_from_json([{"pid": 1}])


def test_table_loader_preprocess_and_stats(tmp_path: Path) -> None:
    rows = [("u1", "p1", f"t{i}") for i in range(6)] + [("u1", "p1", "t0")] + [("u2", "p2", "t1"), ("u2", "p2", "t2")]
    path = tmp_path / "pl.csv"
    pd.DataFrame(rows, columns=["user", "playlist", "track"]).to_csv(path, index=False)
    d = load_playlist_table(path)
    assert len(d) == 9
    p = preprocess_playlists(d, min_songs=5)
    assert len(p) == 6 and p.n_users == 1 and len(p.group_maps["playlist"]) == 1
    st = playlist_stats(p)
    assert st["playlists"] == 1 and st["max_songs_per_playlist"] == 6
    assert "# of playlists" in stats_markdown({"x": st})
    assert load_playlist_table(path, user=None).n_users == 2
    with pytest.raises(DataError, match="missing column"):
        load_playlist_table(path, track="song")


@pytest.mark.realdata
@pytest.mark.skipif(not (REAL / "30music-200ks-test").is_dir(), reason="real datasets not available")
def test_real_playlist_datasets_load() -> None:
    from segue.data.datasets import load_dataset

    d = load_dataset("30music", REAL)
    assert d.n_users == 4620 and d.n_items == 57684 and len(d.group_maps["playlist"]) == 9519
    y = load_dataset("yes-big", REAL)
    assert len(y.group_maps["playlist"]) == 18139 and y.n_items == 9765
    pm = load_dataset("polimi-2018", REAL)
    assert len(pm) == 115553 and pm.n_items == 13536


def test_masr_family_trains_against_the_hardest_negative_by_default() -> None:
    """[CODE-HINT] thanhdtran/MASR ``_get_neg_pred``: MDR / MASS / MASR (and APR) default to ``max``; FISM keeps ``each``."""
    from segue.models.playlist import AMASR, AMASS, AMDR, MASR, MASS, MDR
    from segue.models.playlist_baselines import FISM
    from segue.training.playlist import playlist_config

    for cls in (MDR, MASS, MASR, AMDR, AMASS, AMASR):
        assert cls.train_defaults["neg_reduce"] == "max", cls.name
        assert playlist_config(cls).neg_reduce == "max"
    assert playlist_config().neg_reduce == "max"
    assert FISM.train_defaults["neg_reduce"] == "each"
    assert playlist_config(FISM).neg_reduce == "each"
    assert playlist_config(MDR, neg_reduce="each").loss_spec().neg_reduce == "each"  # the text's reading
