"""DCUE, its id ablation, WMF + regression, the tagging head and the A.6 metrics (content spec A.9)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from segue.data import Interactions
from segue.errors import ConfigError, DataError
from segue.models.base import build_model
from segue.models.dcue import AudioTower, UserTower, hinge_loss, segment_average
from segue.training import fit
from segue.training.audio import (
    AudioTrainConfig,
    _NegativeDrawer,
    crops,
    fit_tagger,
    mean_tag_auc,
    per_user_auc,
)

torch.set_num_threads(1)


def _data(n_users: int = 6, n_items: int = 12, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 5)))
        for u in range(n_users)
        for i in range(n_items)
        if rng.random() < 0.4
    ]
    rows += [(f"u{u}", f"i{u}", 1.0) for u in range(n_users)]
    rows += [(f"u{i % n_users}", f"i{i}", 1.0) for i in range(n_items)]  # every item is seen
    df = pd.DataFrame(rows, columns=["user", "item", "plays"]).drop_duplicates(["user", "item"])
    return Interactions.from_frame(df, weight="plays")


def test_audio_tower_shapes_time_lengths_and_parameters() -> None:
    tower = AudioTower()
    lengths: list[int] = []
    y = tower(torch.randn(3, 128, 130), lengths)
    assert y.shape == (3, 256)
    assert lengths == [32, 8, 2, 1, 1]
    assert sum(p.numel() for p in tower.parameters()) == 722_304


def test_user_tower_shape_and_parameters() -> None:
    u = UserTower(50)
    assert u(torch.tensor([0, 3, 49])).shape == (3, 256)
    assert sum(p.numel() for p in u.parameters()) == 300 * 50 + 167_356


def test_cosine_score_range_and_scale_invariance() -> None:
    m = build_model("dcue", 4, 5, {"dim": 16})
    with torch.no_grad():
        m.item_vecs[1:] = torch.randn(5, 16)
    s = m.score(torch.tensor([1, 2]), torch.tensor([[1, 2, 3], [3, 4, 5]]))
    assert s.abs().max() <= 1 + 1e-6
    with torch.no_grad():
        m.item_vecs.mul_(7.5)
    torch.testing.assert_close(m.score(torch.tensor([1, 2]), torch.tensor([[1, 2, 3], [3, 4, 5]])), s)
    with torch.no_grad():
        m.item_vecs[1] = m.user_vectors(torch.tensor([2]))[0] * 3
    assert m.score(torch.tensor([2]), torch.tensor([[1]])).item() == pytest.approx(1.0, abs=1e-6)
    full = m.score_all(torch.tensor([1, 2]))
    torch.testing.assert_close(full[:, 1:4], m.score(torch.tensor([1, 2]), torch.tensor([[1, 2, 3], [1, 2, 3]])))


def test_hinge_loss_on_hand_worked_cosines() -> None:
    pos = torch.tensor([0.5, 0.9], requires_grad=True)
    neg = torch.tensor([[0.4, 0.1, 0.6], [0.0, 0.1, 0.2]], requires_grad=True)
    # row 0: max(0, .2 - .5 + .4) = .1, 0, .3 -> .4 ; row 1: all satisfied -> 0
    loss = hinge_loss(pos, neg, 0.2, "sum")
    assert loss.item() == pytest.approx(0.4, abs=1e-6)
    assert hinge_loss(pos, neg, 0.2, "mean").item() == pytest.approx(0.2, abs=1e-6)
    loss.backward()
    assert neg.grad is not None and pos.grad is not None
    assert neg.grad.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]  # a satisfied negative gets no gradient
    assert pos.grad.tolist() == [-2.0, 0.0]
    assert hinge_loss(torch.tensor([1.0]), torch.tensor([[-1.0]] * 1), 0.2).item() == 0.0
    with pytest.raises(ConfigError):
        hinge_loss(pos, neg, 0.2, "max")


def test_positive_and_negatives_share_the_audio_tower() -> None:
    torch.manual_seed(0)
    m = build_model("dcue", 3, 8, {"dim": 16, "n_negatives": 4})
    calls: list[int] = []
    m.audio_tower.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    users = torch.tensor([1, 2])
    pos, neg = torch.rand(2, 128, 130), torch.rand(2, 4, 128, 130)
    loss = m.batch_loss(users, pos, neg)
    assert calls == [2 + 2 * 4]  # one batch through one module
    perm = m.batch_loss(users, pos, neg[:, torch.tensor([3, 1, 0, 2])])
    assert perm.item() == pytest.approx(loss.item(), rel=1e-5)
    m.zero_grad()
    m.batch_loss(users, pos, neg).backward()
    assert m.audio_tower.convs[0].weight.grad is not None
    shared = m.batch_loss(users, pos, torch.rand(4, 128, 130), torch.ones(2, 4))
    assert shared.ndim == 0


def test_negative_drawer_excludes_the_users_songs() -> None:
    users = np.array([1, 1, 1, 2, 2])
    items = np.array([1, 2, 3, 3, 4])
    d = _NegativeDrawer(users, items, np.random.default_rng(0))
    draws = d.draw(1, 500)
    assert len(draws) == 500 and set(draws.tolist()) == {4}
    draws = d.draw(2, 3000)
    assert set(draws.tolist()) <= {1, 2}
    counts = np.bincount(draws, minlength=3)[1:]
    from scipy.stats import chisquare

    assert chisquare(counts).pvalue > 0.001
    with pytest.raises(DataError):
        _NegativeDrawer(np.array([1, 1]), np.array([1, 2]), np.random.default_rng(0)).draw(1, 2)


def test_inference_averages_segments_and_tiles_short_clips() -> None:
    torch.manual_seed(0)
    tower = AudioTower(dim=16).eval()
    clip = torch.rand(1, 128, 300)  # 2 full segments
    got = segment_average(tower, clip)
    with torch.no_grad():
        want = (tower(clip[:, :, :130]) + tower(clip[:, :, 130:260])) / 2
    torch.testing.assert_close(got, want)
    short = torch.rand(1, 128, 50)
    with torch.no_grad():
        want = tower(short.repeat(1, 1, 3)[:, :, :130])
    torch.testing.assert_close(segment_average(tower, short), want)
    c = crops(np.random.rand(3, 128, 50).astype(np.float16), np.array([1, 3]), np.random.default_rng(0))
    assert c.shape == (2, 128, 130) and c.dtype == torch.float32


def test_per_user_auc_matches_sklearn_and_skips_single_class_users() -> None:
    rng = np.random.default_rng(0)
    s = rng.random((30, 5)).round(1)  # ties included
    y = rng.random((30, 5)) < 0.3
    y[:, 4] = False  # single class
    mean, skipped, per = per_user_auc(s, y)
    want = [roc_auc_score(y[:, u], s[:, u]) for u in range(4)]
    np.testing.assert_allclose(per[:4], want)
    assert skipped == 1 and np.isnan(per[4]) and mean == pytest.approx(np.mean(want))
    assert per_user_auc(y.astype(float), y)[0] == 1.0
    assert per_user_auc(np.zeros_like(s), y)[0] == 0.5
    with pytest.raises(DataError):
        per_user_auc(s[:, :2], y)


def test_mean_tag_auc_ignores_tags_without_positives_and_is_permutation_invariant() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((40, 6)) < 0.3).astype(float)
    y[:, 2] = 0
    p = rng.random((40, 6))
    m = mean_tag_auc(y, p)
    keep = [t for t in range(6) if t != 2]
    assert m == pytest.approx(np.mean([roc_auc_score(y[:, t], p[:, t]) for t in keep]))
    perm = rng.permutation(6)
    assert mean_tag_auc(y[:, perm], p[:, perm]) == pytest.approx(m)


def test_dcue_fits_on_tiny_data_and_scores_unseen_clips() -> None:
    data = _data()
    mels = np.random.default_rng(0).random((data.n_items, 128, 260)).astype(np.float16)
    for shared in (False, True):
        m = build_model("dcue", data.n_users, data.n_items, {"dim": 8, "n_negatives": 3, "shared_negatives": shared})
        seen = []
        hist = fit(
            m,
            data,
            mels=mels,
            config=AudioTrainConfig(steps=4, batch_size=2, eval_every=2),
            valid_fn=lambda mod, seen=seen: seen.append(1) or 0.5,
        )
        assert m.fitted and len(hist.epochs) == 2 and len(seen) == 2
        assert float(m.audio_tower.norm[1]) > 0
        ids, _ = m.recommend(np.array([1, 2]), 3)
        assert ids.shape == (2, 3)
        new = m.encode_items(np.random.rand(2, 128, 130).astype(np.float32))
        assert new.shape == (2, 8)
    with pytest.raises(DataError, match="mels must have shape"):
        fit(m, data, mels=mels[:3])
    with pytest.raises(DataError, match="needs the clips"):
        fit(m, data)


def test_item_id_ablation_and_wmf_regression_fit() -> None:
    data = _data()
    m = build_model("dcue-id", data.n_users, data.n_items, {"dim": 8, "n_negatives": 3})
    fit(m, data, config=AudioTrainConfig(steps=3, batch_size=2))
    assert m.item_forward(torch.tensor([1, 2])).shape == (2, 8)
    assert torch.isfinite(m.score_all(torch.tensor([1]))[:, 1:]).all()
    mels = np.random.default_rng(0).random((data.n_items, 128, 130)).astype(np.float16)
    r = build_model("wmf-regression", data.n_users, data.n_items, {"factors": 4, "dim": 8, "iterations": 2})
    fit(r, data, mels=mels, config=AudioTrainConfig(steps=3, batch_size=4, lr=0.01))
    assert r.item_vecs.shape == (data.n_items + 1, 4) and r.fitted
    assert r.score(torch.tensor([1]), torch.tensor([[1, 2]])).shape == (1, 2)
    with pytest.raises(ConfigError):
        build_model("dcue", 3, 3, {"reduction": "max"})


def test_tagging_head_learns_a_separable_tag() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 6)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0], 1).astype(np.float32)
    net = fit_tagger(x[:60], y[:60], x[60:], y[60:], max_epochs=15)
    with torch.no_grad():
        p = torch.sigmoid(net(torch.as_tensor(x[60:]))).numpy()
    assert mean_tag_auc(y[60:], p) > 0.8


def test_wmf_tagging_features_never_see_test_clips(monkeypatch) -> None:
    """segue/reproduce/dcue_table.py: no test clip's interaction reaches the WMF fit of the tagging row."""
    import numpy as np
    import pandas as pd

    from segue.data.interactions import IdMap, Interactions
    from segue.models.base import get_model_class
    from segue.reproduce.dcue_table import wmf_tagging_features

    rng = np.random.default_rng(0)
    n_users, n_items = 12, 9
    df = pd.DataFrame({"user": rng.integers(1, n_users + 1, 200), "item": rng.integers(1, n_items + 1, 200)})
    df["weight"] = 1.0
    df = df.drop_duplicates(["user", "item"])
    full = Interactions(
        df,
        IdMap(np.array([f"u{i}" for i in range(n_users)]), "user"),
        IdMap(np.array([f"c{i}" for i in range(n_items)]), "item"),
        name="toy",
    )
    part = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])  # clips 7..9 (internal ids) are test clips
    assert np.isin(full.items, [7, 8, 9]).any()
    WMF = get_model_class("wmf")
    seen: list[np.ndarray] = []
    real_fit = WMF.fit

    def spy(self, train, *args, **kwargs):
        seen.append(train.items.copy())
        return real_fit(self, train, *args, **kwargs)

    monkeypatch.setattr(WMF, "fit", spy)
    feats = wmf_tagging_features(full, part, {"factors": 3, "iterations": 2, "seed": 0})
    assert len(seen) == 1 and len(seen[0]) > 0
    assert not np.isin(seen[0], [7, 8, 9]).any()  # no test clip's interaction
    assert set(np.unique(seen[0])) <= {1, 2, 3, 4, 5, 6}
    assert feats.shape == (n_items, 3)
    assert np.all(feats[part == 2] == 0) and np.abs(feats[part != 2]).sum() > 0


# -- the hooks of segue/reproduce/specs/dcue-tables.toml that need no corpus ------------------------------------


def _row(label: str = "dcue-id", options: dict | None = None, train: dict | None = None, caps: dict | None = None):
    from types import SimpleNamespace

    return SimpleNamespace(model=SimpleNamespace(label=label, model=""), options=options or {}, train=train or {},
                           caps=caps or {}, seed=3)  # fmt: skip


def test_heldout_pair_auc_counts_only_the_clips_the_user_never_played() -> None:
    from segue.reproduce.dcue_table import heldout_pair_auc

    scores = np.array([[0.9, 0.1], [0.5, 0.8], [0.2, 0.3], [0.5, 0.0], [9.0, 9.0]])  # (clips, users)
    played = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [0, 0]])
    rows = np.arange(4)  # the last clip is not a training clip: never a negative
    # user 1's held-out clip 2 (0.5) against the clips it never played, 3 (0.2) and 4 (0.5, a tie): (1 + 0.5) / 2
    assert heldout_pair_auc(scores, played, rows, np.array([1]), np.array([2])) == pytest.approx(0.75)
    # user 2's held-out clip 3 (0.3) against 1 (0.1) and 4 (0.0), clip 2 (0.8) is played; both pairs averaged
    got = heldout_pair_auc(scores, played, rows, np.array([1, 2]), np.array([2, 3]))
    assert got == pytest.approx((0.75 + 1.0) / 2)


def test_warm_holdout_takes_one_training_pair_from_every_user_with_two() -> None:
    from segue.reproduce.dcue_table import _warm_holdout

    data = _data(n_users=8, n_items=10)
    rest, users, items = _warm_holdout(data, seed=0)
    counts = np.bincount(data.users, minlength=data.n_users + 1)
    assert sorted(users.tolist()) == [u for u in range(1, data.n_users + 1) if counts[u] >= 2]
    assert len(rest) + len(users) == len(data) and rest.n_items == data.n_items
    kept = set(zip(rest.users.tolist(), rest.items.tolist(), strict=True))
    assert not kept & set(zip(users.tolist(), items.tolist(), strict=True))


def test_audio_config_takes_the_row_options_then_the_caps_and_refuses_unknown_options() -> None:
    from segue.reproduce.dcue_table import audio_config
    from segue.training.audio import triplet_config

    caps = {"steps": 7, "eval_every": 3, "patience": 2, "max_seconds": 5.0, "users": 100}
    cfg = audio_config(_row(train={"lr": 0.01, "steps": 99}, caps=caps), triplet_config())
    assert (cfg.steps, cfg.eval_every, cfg.patience, cfg.max_seconds) == (7, 3, 2, 5.0)
    assert (cfg.lr, cfg.seed, cfg.batch_size, cfg.optimizer) == (0.01, 3, 256, "sgd")  # the base's batch of triples
    with pytest.raises(ConfigError, match="unknown train option"):
        audio_config(_row(train={"epochs": 3}))


def test_id_row_chooses_its_steps_on_held_out_pairs_then_refits_on_every_pair() -> None:
    from segue.reproduce.dcue_table import AUC_W, WARM_DEV, id_row

    data = _data(n_users=8, n_items=16)
    truth = (data.to_csr().T.toarray()[1:, 1:] > 0).astype(np.float32)
    prepared = {"full": data, "train": data, "truth_train": truth, "rows_of": {0: np.arange(data.n_items)}}
    row = _row(options={"dim": 8, "n_negatives": 4, "shared_negatives": True, "reduction": "mean"},
               train={"optimizer": "adam", "lr": 0.01, "batch_size": 8},
               caps={"steps": 60, "eval_every": 10, "patience": 2})  # fmt: skip
    out = id_row(prepared, row)
    assert out["refit_steps"] == out["history"].best_epoch and 10 <= out["refit_steps"] <= 60
    assert 0.0 <= out["dev"][WARM_DEV] <= 1.0 and 0.0 <= out["test"][AUC_W] <= 1.0
    assert out["heldout_pairs"] == 8 and out["users_skipped"] == {"W": 0}


def test_dcue_tables_markdown_keeps_the_honest_labels_and_skips_absent_sub_tables() -> None:
    from segue.reproduce.dcue_table import AUC_C, AUC_W, EXP1, EXP3, TAG_AUC, markdown

    rows = [
        {"model": "pop-oracle", "dataset": "dsc7-listeners", "metrics": {AUC_C: 0.7}, "users_skipped": {"C": 2}},
        {"model": "wmf", "dataset": "dsc7-listeners", "metrics": {AUC_W: 0.99, TAG_AUC: 0.5},
         "paper": {AUC_W: 0.9302}, "options": {"iterations": 15}},
        {"model": "dcue", "dataset": "dsc7-listeners", "metrics": {AUC_W: 0.8, AUC_C: 0.68, TAG_AUC: 0.8},
         "stopped_by": "patience", "best_epoch": 2000, "epochs_run": 3000},
        {"model": "tripletrec", "dataset": "dsc7-topics", "metrics": {EXP1: 0.9, EXP3: 0.7},
         "chance": {EXP1: 0.6, EXP3: 0.22}, "paper": {EXP1: 0.5753, EXP3: 0.8742}},
    ]  # fmt: skip
    md = markdown({"rows": rows})
    assert "| Popularity (oracle: the test clips' own counts) | 0.7000 | – | 2 |" in md
    assert "WMF (a test clip has no WMF vector: chance by construction) | 0.5000 |" in md
    warm, cold = md.split("protocol C")[0], md.split("protocol C")[1].split("Table 2")[0]
    assert "| WMF | 0.9900 | 0.9302 |" in warm and "| WMF |" not in cold  # WMF cannot score a cold clip
    assert "patience, step 2000 kept of 3000" in md and "ALS, 15 iterations" in md
    assert "| Triplet | 0.9000 | 0.6000 | 0.5753 | 0.7000 | 0.2200 | 0.8742 |" in md
    assert "Twonet" not in md and "## Data" not in md  # no row, no data facts: nothing invented
