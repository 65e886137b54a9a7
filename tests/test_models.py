"""Model interface, baselines, MF-BPR/WMF, the trainer, protocols and run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from segue.data import Interactions, leave_one_out
from segue.errors import ConfigError, DataError, RunDirError
from segue.evaluation.protocols import EvalSet, evaluate, full_evalset, get_protocol, sampled_evalset
from segue.models.base import Recommender, build_model, get_model_class, list_models
from segue.pipeline import load_config_file, prepare, run
from segue.training import fit
from segue.training.checkpoint import load_run
from segue.training.trainer import TrainConfig

FAST = TrainConfig(epochs=3, batch_size=64, lr=0.01, progress=False)


def test_registry_lists_builtin_models() -> None:
    assert {"pop", "itemknn", "mf-bpr", "wmf"} <= set(list_models())
    with pytest.raises(ConfigError, match="Unknown model 'nope'"):
        get_model_class("nope")
    with pytest.raises(ConfigError, match="Unknown option"):
        build_model("mf-bpr", 3, 3, {"dimension": 8})


def test_popularity_scores_counts(data: Interactions) -> None:
    m = build_model("pop", data.n_users, data.n_items)
    m.fit(data)
    counts = torch.as_tensor(data.item_counts(), dtype=torch.float32)
    s = m.score(torch.tensor([1, 2]), torch.tensor([[1, 2, 3], [3, 2, 1]]))
    assert torch.equal(s[0], counts[[1, 2, 3]]) and torch.equal(s[1], counts[[3, 2, 1]])
    full = m.score_all(torch.tensor([1]))
    assert full.shape == (1, data.n_items + 1) and torch.isinf(full[0, 0])


def test_itemknn_matches_dense_cosine(data: Interactions) -> None:
    m = build_model("itemknn", data.n_users, data.n_items, {"k": data.n_items})
    m.fit(data)
    x = (data.to_csr().toarray() > 0).astype(np.float64)
    norms = np.sqrt(x.sum(0))
    sim = (x.T @ x) / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(sim, 0)
    expected = x[1:4] @ sim
    got = m.score_all(torch.tensor([1, 2, 3])).numpy()
    np.testing.assert_allclose(got[:, 1:], expected[:, 1:], rtol=1e-5, atol=1e-6)


def test_itemknn_keeps_top_k_neighbours(data: Interactions) -> None:
    m = build_model("itemknn", data.n_users, data.n_items, {"k": 3})
    m.fit(data)
    per_target = np.bincount(m.sim_cols.numpy(), minlength=data.n_items + 1)
    assert per_target.max() <= 3


def test_mf_bpr_score_is_a_dot_product_and_score_all_agrees(data: Interactions) -> None:
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 8})
    users = torch.tensor([1, 5])
    items = torch.tensor([[1, 2, 3], [4, 5, 6]])
    s = m.score(users, items)
    manual = (m.user_emb.weight[users][:, None, :] * m.item_emb.weight[items]).sum(-1)
    torch.testing.assert_close(s, manual)
    full = m.score_all(users)
    torch.testing.assert_close(full.gather(1, items), s)
    q, v = m.query_vectors(users), m.item_vectors()
    torch.testing.assert_close(q @ v[1:].T, full[:, 1:])


def test_recommend_excludes_seen_and_checks_k(data: Interactions) -> None:
    m = build_model("pop", data.n_users, data.n_items)
    m.fit(data)
    seen = data.to_csr()
    ids, scores = m.recommend(np.array([1, 2]), 5, exclude=seen)
    assert ids.shape == (2, 5)
    for row, u in zip(ids.numpy(), [1, 2], strict=True):
        assert not set(row) & set(seen[u].indices)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    with pytest.raises(ConfigError, match="larger than the catalogue"):
        m.recommend(np.array([1]), data.n_items + 1)
    with pytest.raises(ConfigError, match="positive integer"):
        m.recommend(np.array([1]), 0)
    with pytest.raises(DataError, match="must lie in"):
        m.recommend(np.array([data.n_users + 1]), 3)


def test_nan_scores_are_refused(data: Interactions) -> None:
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 4})
    with torch.no_grad():
        m.item_emb.weight[3] = float("nan")
    with pytest.raises(DataError, match="NaN scores"):
        m.recommend(np.array([1]), 3)


# -- trainer ---------------------------------------------------------------------------------------


def test_mf_bpr_learns_the_planted_clusters(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    valid = sampled_evalset(split, "valid", n_negatives=20, seed=1)
    test = sampled_evalset(split, "test", n_negatives=20, seed=0)
    torch.manual_seed(0)
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 16, "reg": 1e-4})
    before = evaluate(m, test, metrics=("AUC",))["AUC"]
    hist = fit(
        m, split.train, valid, TrainConfig(epochs=30, batch_size=64, lr=0.02, progress=False, patience=30), log=None
    )
    after = evaluate(m, test, metrics=("AUC",))["AUC"]
    assert hist.epochs[-1]["loss"] < hist.epochs[0]["loss"]
    # Users only consume their own half of the catalogue. Knowing the halves alone gives an AUC of
    # about 1 - 0.5 * (own-half negatives) / 20 ~ 0.81 here; a random model gets ~0.5.
    assert after > 0.75 and after > before + 0.2


def test_training_is_reproducible_by_seed(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    weights = []
    for _ in range(2):
        m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 8})
        torch.manual_seed(123)  # different global state must not matter: the trainer seeds itself
        m2 = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 8})
        m2.load_state_dict(m.state_dict())
        fit(m2, split.train, None, FAST, log=None)
        weights.append(m2.item_emb.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def test_early_stopping_restores_the_best_epoch(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    valid = sampled_evalset(split, "valid", n_negatives=20, seed=1)
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 8})
    lines: list[str] = []
    cfg = TrainConfig(epochs=40, batch_size=64, lr=0.05, patience=2, progress=False)
    hist = fit(m, split.train, valid, cfg, log=lines.append)
    assert len(lines) == len(hist.epochs) + 1 and "dev NDCG@10" in lines[0]
    assert lines[-1].startswith("mf-bpr: stopped by") and f"kept epoch {hist.best_epoch}" in lines[-1]
    assert hist.best_value == max(e["valid"]["NDCG@10"] for e in hist.epochs)
    assert evaluate(m, valid)["NDCG@10"] == pytest.approx(hist.best_value)
    if hist.stopped_early:
        assert len(hist.epochs) - hist.best_epoch == cfg.patience


def test_trainer_rejects_mismatched_data_and_bad_options(data: Interactions) -> None:
    m = build_model("mf-bpr", data.n_users + 1, data.n_items, {"dim": 4})
    with pytest.raises(DataError, match="built for"):
        fit(m, data, None, FAST, log=None)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) .* for the trainer"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="Unknown loss"):
        TrainConfig(loss="mse")


def test_wmf_through_implicit_ranks_held_out_items(data: Interactions) -> None:
    pytest.importorskip("implicit")
    split = leave_one_out(data, seed=0)
    test = sampled_evalset(split, "test", n_negatives=20, seed=0)
    m = build_model("wmf", data.n_users, data.n_items, {"factors": 2, "iterations": 10})  # the planted rank
    m.fit(split.train)
    assert evaluate(m, test, metrics=("AUC",))["AUC"] > 0.75  # see the cluster argument above


# -- protocols ---------------------------------------------------------------------------------------


def test_sampled_evalset_invariants(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    es = sampled_evalset(split, "test", n_negatives=15, seed=0)
    known = (split.train.to_csr() + split.valid.to_csr() + split.test.to_csr()).toarray() > 0
    test_items = dict(zip(split.test.users, split.test.items, strict=True))
    for u, row, npos in zip(es.users, es.candidates, es.n_pos, strict=True):
        assert npos == 1 and row[0] == test_items[u]
        assert not known[u, row[1:]].any() and len(set(row[1:])) == 15
    # no test item in train
    assert not (set(zip(split.train.users, split.train.items, strict=True)) & set(test_items.items()))
    again = sampled_evalset(split, "test", n_negatives=15, seed=0)
    assert np.array_equal(es.candidates, again.candidates)


def test_full_evalset_masks_train_and_dev_items(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    es = full_evalset(split, "test")
    seen = (split.train.to_csr() + split.valid.to_csr()).toarray() > 0
    for i, u in enumerate(es.users):
        assert set(es.exclude[i].indices) == set(np.flatnonzero(seen[u]))
        assert not set(es.targets[i].indices) & set(es.exclude[i].indices)


def test_full_and_sampled_agree_for_a_perfect_model(data: Interactions) -> None:
    """A model that scores exactly the test item highest gets HR = NDCG = 1 under both protocols."""
    split = leave_one_out(data, seed=0)
    target = dict(zip(split.test.users.tolist(), split.test.items.tolist(), strict=True))

    class Oracle(Recommender):
        name = "oracle-test"

        def score(self, users, items, context=None):  # type: ignore[no-untyped-def]
            t = torch.tensor([target[int(u)] for u in users])
            return (items == t[:, None]).float()

    m = Oracle(data.n_users, data.n_items)
    for es in (sampled_evalset(split, "test", n_negatives=10), full_evalset(split, "test")):
        r = evaluate(m, es, ks=(1, 10), metrics=("HR", "NDCG", "MRR", "AUC"))
        assert r["HR@1"] == r["NDCG@10"] == r["MRR"] == r["AUC"] == 1.0


def test_constant_model_gets_the_pessimistic_rank(data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 2})
    with torch.no_grad():
        m.user_emb.weight.zero_()
    r = evaluate(m, sampled_evalset(split, "test", n_negatives=10), metrics=("HR", "MRR"))
    assert r["HR@10"] == 0.0 and r["MRR"] == pytest.approx(1 / 11)


def test_evalset_save_load_round_trip(tmp_path: Path, data: Interactions) -> None:
    split = leave_one_out(data, seed=0)
    for es in (
        sampled_evalset(split, "test", n_negatives=5).with_history(split.train, 3),
        full_evalset(split, "valid"),
    ):
        es.save(tmp_path / "e.npz")
        back = EvalSet.load(tmp_path / "e.npz")
        assert np.array_equal(back.users, es.users) and (back.targets != es.targets).nnz == 0
        assert back.meta == es.meta and back.kind == es.kind
        if es.context is not None:
            assert torch.equal(back.context.history, es.context.history)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="unreadable"):
        EvalSet.load(tmp_path / "bad.npz")


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="Unknown protocol"):
        get_protocol("loo-everything")


# -- pipeline and run directories ---------------------------------------------------------------------


def test_run_directory_round_trip(tmp_path: Path, data: Interactions) -> None:
    res = run(
        "mf-bpr",
        data,
        model_options={"dim": 8},
        train_config=FAST,
        out=tmp_path / "run",
        log=None,
        protocol=get_protocol("loo-sampled", n_negatives=10),
    )
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {
        "config.json",
        "id_maps.parquet",
        "weights.safetensors",
        "seen.npz",
        "test.npz",
        "valid.npz",
        "history.json",
        "metrics.json",
        "curves.png",
    } <= files
    loaded = load_run(tmp_path / "run")
    assert loaded.user_map == data.user_map and loaded.config["model_options"]["dim"] == 8
    users = np.arange(1, data.n_users + 1)
    a_ids, a_sc = res.model.recommend(users, 5, exclude=loaded.seen)
    b_ids, b_sc = loaded.model.recommend(users, 5, exclude=loaded.seen)
    assert torch.equal(a_ids, b_ids) and torch.allclose(a_sc, b_sc)
    assert evaluate(loaded.model, loaded.evalset("test")) == pytest.approx(res.metrics)
    # no temporary directories left behind
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_closed_form_models_round_trip(tmp_path: Path, data: Interactions) -> None:
    for name in ("pop", "itemknn"):
        res = run(name, data, out=tmp_path / name, log=None, protocol=get_protocol("loo-sampled", n_negatives=10))
        loaded = load_run(tmp_path / name)
        assert evaluate(loaded.model, loaded.evalset("test")) == pytest.approx(res.metrics)


def test_damaged_run_directories_are_named(tmp_path: Path, data: Interactions) -> None:
    run("pop", data, out=tmp_path / "r", log=None, protocol=get_protocol("loo-sampled", n_negatives=10))
    with pytest.raises(RunDirError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunDirError, match="already exists"):
        run("pop", data, out=tmp_path / "r", log=None, protocol=get_protocol("loo-sampled", n_negatives=10))
    (tmp_path / "r" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunDirError, match="corrupt"):
        load_run(tmp_path / "r")
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["n_items"] += 1
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunDirError, match="inconsistent"):
        load_run(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text("{")
    with pytest.raises(RunDirError, match="not valid JSON"):
        load_run(tmp_path / "r")
    (tmp_path / "r" / "seen.npz").unlink()
    with pytest.raises(RunDirError, match=r"missing seen\.npz"):
        load_run(tmp_path / "r")


def test_mismatched_weights_are_named(tmp_path: Path, data: Interactions) -> None:
    run(
        "mf-bpr",
        data,
        model_options={"dim": 8},
        train_config=FAST,
        out=tmp_path / "r",
        log=None,
        protocol=get_protocol("loo-sampled", n_negatives=10),
    )
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["model_options"]["dim"] = 16
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunDirError, match="do not match model 'mf-bpr'"):
        load_run(tmp_path / "r")


def test_shared_split_gives_identical_candidates(data: Interactions) -> None:
    proto = get_protocol("loo-sampled", n_negatives=10)
    _, split, valid, test = prepare(data, proto)
    a = run("pop", data, protocol=proto, prepared=(split, valid, test), log=None)
    b = run("itemknn", data, protocol=proto, prepared=(split, valid, test), log=None)
    assert a.test is b.test or np.array_equal(a.test.candidates, b.test.candidates)


def test_toml_config(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[model]\ndim = 16\n[train]\nepochs = 2\nlr = 0.01\n")
    model, train = load_config_file(f)
    assert model == {"dim": 16} and TrainConfig.from_dict(train).epochs == 2
    f.write_text("[modle]\ndim = 1\n")
    with pytest.raises(ConfigError, match="unknown table"):
        load_config_file(f)
    f.write_text("dim = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "none.toml")


def test_user_with_too_few_interactions_for_the_protocol() -> None:
    df = pd.DataFrame({"user": [1, 1, 1, 2], "item": [1, 2, 3, 1], "t": [1, 2, 3, 4]})
    with pytest.raises(DataError, match="user 2 has 1 interaction"):
        run("pop", Interactions.from_frame(df, timestamp="t"), log=None)


def test_exclude_matrix_shape_is_checked(data: Interactions) -> None:
    m = build_model("pop", data.n_users, data.n_items)
    m.fit(data)
    ids, _ = m.recommend(np.array([1]), 3, exclude=sp.csr_matrix(data.shape))
    assert ids.shape == (1, 3)


def test_run_accepts_a_model_built_for_the_split(data: Interactions) -> None:
    proto = get_protocol("loo-sampled", n_negatives=10)
    _, split, valid, test = prepare(data, proto)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False)
    mf = build_model("mf-bpr", split.train.n_users, split.train.n_items, {"dim": 4})
    res = run(mf, data, protocol=proto, train_config=cfg, prepared=(split, valid, test), log=None)
    assert res.model is mf and len(res.history.epochs) == 1
    assert res.metrics == evaluate(mf, test)
    with pytest.raises(ConfigError, match="model_options apply only to a model given by name"):
        run(mf, data, protocol=proto, model_options={"dim": 8}, prepared=(split, valid, test), log=None)
