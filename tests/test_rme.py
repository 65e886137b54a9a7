"""Tests of RME (spec Part R): SPPMI, the ALS block updates, the reductions to WMF, Algorithm 2, splits, Item2Vec."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from segue.data.cooccurrence import cap_lists, cooccurrence, sppmi, sppmi_matrix
from segue.data.interactions import IdMap, Interactions
from segue.data.splits_rme import movielens_split, playcount_split
from segue.errors import ConfigError, DataError
from segue.evaluation.metrics import evaluate_scores
from segue.evaluation.protocols import full_evalset
from segue.models.base import build_model, get_model_class
from segue.models.rme import (
    RME,
    RMEMatrices,
    RMESolver,
    RMEState,
    dislike_probabilities,
    n_dislike_draws,
)
from segue.training import fit

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not REAL_DATA.is_dir() and os.environ.get("SEGUE_DATA_DIR"):
    REAL_DATA = Path(os.environ["SEGUE_DATA_DIR"])

# -- small data built here ------------------------------------------------------------------


def _toy_matrices(n_users: int = 25, n_items: int = 18, seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Padded liked and disliked user x item matrices with two taste clusters."""
    rng = np.random.default_rng(seed)
    liked = np.zeros((n_users + 1, n_items + 1))
    disliked = np.zeros_like(liked)
    for u in range(1, n_users + 1):
        half = u % 2
        pool = np.arange(1, n_items + 1)
        mine = pool[(pool % 2) == half]
        other = pool[(pool % 2) != half]
        liked[u, rng.choice(mine, size=rng.integers(3, 7), replace=False)] = 1
        disliked[u, rng.choice(other, size=rng.integers(2, 4), replace=False)] = 1
    return sp.csr_matrix(liked), sp.csr_matrix(disliked)


def _toy_interactions(n_users: int = 40, n_items: int = 30, seed: int = 1) -> Interactions:
    """Ratings 1-5 with timestamps: users like their cluster's items and dislike the other cluster's."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for u in range(n_users):
        for i in rng.choice(n_items, size=14, replace=False):
            t += int(rng.integers(1, 50))
            same = (i % 2) == (u % 2)
            rating = int(rng.integers(4, 6)) if same and rng.random() < 0.85 else int(rng.integers(1, 4))
            rows.append((f"u{u}", f"i{i}", float(rating), float(t)))
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    return Interactions.from_frame(frame, timestamp="ts", weight="rating", name="toy-ratings")


def _solver(mats: RMEMatrices, k: int = 4, **kw) -> RMESolver:
    opts = {"reg": 0.5, "reg_embed": 0.3, "c0": 1.0, "c1": 10.0, "w": 1.0, "dtype": np.float64} | kw
    return RMESolver(mats, k=k, **opts)


def _full_mats(seed: int = 0) -> RMEMatrices:
    liked, disliked = _toy_matrices(seed=seed)
    return RMEMatrices(liked, sppmi_matrix(liked), sppmi_matrix(disliked), sppmi_matrix(liked.T))


def _state(mats: RMEMatrices, k: int = 4, seed: int = 3) -> RMEState:
    return RMEState.init(mats.n_rows, mats.n_cols, k, std=0.1, seed=seed, dtype=np.float64)


# -- SPPMI (Eqs. 4.2-4.3, R.12.4-5) ----------------------------------------------------------


def test_sppmi_toy_example_by_hand() -> None:
    # users {a, b} and {a, b, c}; tokens a, b, c are columns 0, 1, 2
    docs = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1]], dtype=float))
    counts = cooccurrence(docs).toarray()
    assert np.array_equal(counts, [[0, 2, 1], [2, 0, 1], [1, 1, 0]])
    assert counts.sum() == 8  # |D|
    assert counts[0].sum() == counts[1].sum() == 3  # #(a) = #(b) = 3
    x = sppmi(counts, shift=1.0).toarray()
    assert x[0, 1] == pytest.approx(math.log(16 / 9), abs=1e-12)  # ~0.575
    assert x[0, 1] == pytest.approx(0.575, abs=1e-3)
    assert x[0, 2] == pytest.approx(math.log(1 * 8 / (3 * 2)), abs=1e-12)  # log(4/3)
    assert x[1, 2] == pytest.approx(math.log(4 / 3), abs=1e-12)
    assert np.allclose(x, x.T) and np.all(np.diag(x) == 0)
    x2 = sppmi(counts, shift=2.0).toarray()
    assert x2[0, 1] == 0.0  # log 2 ~ 0.693 > 0.575
    assert sp.issparse(sppmi_matrix(docs))


def test_sppmi_is_sparse_symmetric_and_monotone_in_shift() -> None:
    liked, _ = _toy_matrices()
    nnz = []
    for s in (0.5, 1.0, 1.5, 2.0, 4.0):
        x = sppmi_matrix(liked, shift=s)
        assert isinstance(x, sp.csr_matrix) and (x.data > 0).all()
        assert abs(x - x.T).max() < 1e-12
        assert x[0].nnz == 0 and x[:, 0].nnz == 0  # padding stays empty
        nnz.append(x.nnz)
    assert nnz == sorted(nnz, reverse=True)
    with pytest.raises(ConfigError):
        sppmi(cooccurrence(liked), shift=0.0)


def test_list_caps_sample_cap_plus_one() -> None:
    docs = sp.csr_matrix(np.r_[np.ones((1, 50)), np.eye(1, 50)])
    capped = cap_lists(docs, cap=10, seed=5)
    assert np.diff(capped.indptr).tolist() == [11, 1]  # > cap -> a random cap + 1 (authors' code)
    assert (cap_lists(docs, cap=10, seed=5) != capped).nnz == 0  # seeded
    assert cap_lists(docs, cap=None).nnz == 51
    full = cooccurrence(docs)
    assert full[0].nnz == 49 and cooccurrence(docs, cap=10)[capped.indices[0]].nnz <= 10


# -- ALS: exact block minimiser, reductions (R.12.1-3) -----------------------------------------


def _torch_objective(mats: RMEMatrices, sol: RMESolver, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 4.4 written independently of the solver (dense M, COO SPPMI), differentiable."""
    M = torch.as_tensor(mats.M.toarray())
    W = sol.c0 + (sol.c1 - sol.c0) * M
    loss = 0.5 * (W * (M - t["U"] @ t["P"].T) ** 2).sum()
    loss = loss + 0.5 * sol.reg * ((t["U"] ** 2).sum() + (t["P"] ** 2).sum())
    for name, A, B, rb, cb, ti in (
        ("X", "P", "G", "b", "c", "tx"),
        ("Y", "P", "D", "d", "e", "ty"),
        ("Z", "U", "T", "f", "g", "tz"),
    ):
        mat = getattr(mats, name)
        if mat is None:
            continue
        coo = mat.tocoo()
        r, c = torch.as_tensor(coo.row).long(), torch.as_tensor(coo.col).long()
        res = torch.as_tensor(coo.data) - (t[A][r] * t[B][c]).sum(1) - t[rb][r] - t[cb][c] - t[ti]
        loss = loss + 0.5 * sol.w * (res**2).sum() + 0.5 * sol.reg_embed * (t[B] ** 2).sum()
    return loss


def _grads(mats: RMEMatrices, sol: RMESolver, s: RMEState) -> dict[str, np.ndarray]:
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in vars(s).items()}
    _torch_objective(mats, sol, t).backward()
    return {k: v.grad.numpy() for k, v in t.items()}


@pytest.mark.parametrize("intercept", [False, True])
def test_each_block_update_is_an_exact_minimiser(intercept: bool) -> None:
    mats = _full_mats()
    sol = _solver(mats, intercept=intercept)
    s = _state(mats)
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in vars(s).items()}
    assert sol.objective(s) == pytest.approx(float(_torch_objective(mats, sol, t)), rel=1e-10)
    prev = sol.objective(s)
    for _ in range(3):
        for step, block in (
            (sol.update_users, ("U",)),
            (sol.update_items, ("P",)),
            (sol.update_contexts, ("G", "D", "T")),
            (sol.update_biases, ("c", "e", "g")),
        ):
            step(s)
            obj = sol.objective(s)
            assert obj <= prev + 1e-9 * abs(prev), f"{step.__name__} increased the objective"
            prev = obj
            g = _grads(mats, sol, s)
            for name in block:  # dL/d(block) = 0 at the new block (tol 1e-4)
                assert np.abs(g[name]).max() < 1e-4, f"{name} is not a stationary point after {step.__name__}"
            if intercept and step == sol.update_biases:
                assert abs(float(g["tx"])) < 1e-6 and abs(float(g["tz"])) < 1e-6


def test_row_bias_mean_is_exact_given_column_bias() -> None:
    mats = _full_mats()
    sol = _solver(mats)
    s = _state(mats)
    sol.sweep(s)
    c_old = s.c.copy()
    b_new, _, _ = sol._bias_pair("X", s.P, s.G, s.b, c_old, 0.0)
    probe = s.copy()
    probe.b = b_new  # b updated with the old c: dL/db must vanish there (uniform w)
    assert np.abs(_grads(mats, sol, probe)["b"]).max() < 1e-8


def _reference_wmf_sweep(M: np.ndarray, U: np.ndarray, P: np.ndarray, c0: float, c1: float, lam: float) -> None:
    """Hu et al.'s ALS, one row at a time with the full confidence matrix (the slow textbook form)."""
    k = U.shape[1]
    C = c0 + (c1 - c0) * M
    for u in range(M.shape[0]):
        U[u] = np.linalg.solve(P.T @ (C[u][:, None] * P) + lam * np.eye(k), P.T @ (C[u] * M[u]))
    for p in range(M.shape[1]):
        P[p] = np.linalg.solve(U.T @ (C[:, p][:, None] * U) + lam * np.eye(k), U.T @ (C[:, p] * M[:, p]))


def test_rme_without_embeddings_is_wmf() -> None:
    liked, disliked = _toy_matrices()
    # one sweep of the vectorised solver with X = Y = Z = 0 equals the textbook WMF sweep (R.12.1)
    mats = RMEMatrices(liked)
    sol = _solver(mats, reg=0.7)
    s = _state(mats)
    U, P = s.U.copy(), s.P.copy()
    sol.sweep(s)
    _reference_wmf_sweep(liked.toarray(), U, P, 1.0, 10.0, 0.7)
    assert np.abs(s.U - U).max() < 1e-5 and np.abs(s.P - P).max() < 1e-5
    # the full model with every co-occurrence weight at zero gives the same factors from the same init
    train = _csr_to_interactions(liked)
    dis = _csr_to_interactions(disliked)
    opts = {"factors": 5, "reg": 0.3, "max_iter": 4, "dtype": "float64", "init_std": 0.1}
    rme = build_model("rme", train.n_users, train.n_items, opts | {"w": 0.0})
    wmf = build_model("wmf-als", train.n_users, train.n_items, opts)
    fit(rme, train, None, dislikes=dis)
    fit(wmf, train, None)
    assert rme.solver_.m.X is not None and rme.solver_.m.Y is not None and rme.solver_.m.Z is not None
    assert torch.allclose(rme.user_emb.weight, wmf.user_emb.weight, atol=1e-6)
    assert torch.allclose(rme.item_emb.weight, wmf.item_emb.weight, atol=1e-6)


def test_wmf_als_matches_implicit_exact_solver() -> None:
    als = pytest.importorskip("implicit.cpu.als")
    liked, _ = _toy_matrices(seed=4)
    mats = RMEMatrices(liked)
    sol = _solver(mats, k=6, reg=0.2)
    s = RMEState.init(mats.n_rows, mats.n_cols, 6, std=0.1, seed=1, dtype=np.float64)
    ref = als.AlternatingLeastSquares(
        factors=6, regularization=0.2, alpha=10.0, iterations=3, use_cg=False, dtype=np.float64, num_threads=1
    )
    ref.user_factors, ref.item_factors = s.U.copy(), s.P.copy()
    ref.fit(liked.astype(np.float32), show_progress=False)
    for _ in range(3):
        sol.sweep(s)
    assert np.abs(s.U - ref.user_factors).max() < 1e-5
    assert np.abs(s.P - ref.item_factors).max() < 1e-5


def test_variants_are_switches_of_one_model() -> None:
    terms = {
        "rme": (True, True, True),
        "u-rme": (True, False, True),
        "i-rme": (True, True, False),
        "cofactor": (True, False, False),
        "wmf-als": (False, False, False),
    }
    liked, disliked = _toy_matrices()
    for name, flags in terms.items():
        cls = get_model_class(name)
        assert issubclass(cls, RME)
        model = cls(liked.shape[0] - 1, liked.shape[1] - 1, cls.Config())
        mats = model.build_matrices(liked, disliked)
        assert (mats.X is not None, mats.Y is not None, mats.Z is not None) == flags, name


def _csr_to_interactions(m: sp.csr_matrix) -> Interactions:
    """A padded CSR as an Interactions whose internal ids equal the matrix indices."""
    coo = m.tocoo()
    df = pd.DataFrame({"user": coo.row.astype(np.int64), "item": coo.col.astype(np.int64)})
    users, items = IdMap(np.arange(1, m.shape[0]), "user"), IdMap(np.arange(1, m.shape[1]), "item")
    return Interactions(df, users, items)


# -- Algorithm 2 (R.5, R.12.6) ------------------------------------------------------------------


def test_dislike_probabilities_eq_4_9() -> None:
    observed = sp.csr_matrix(np.array([[0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=float))
    flat = dislike_probabilities(torch.zeros(2, 6), observed)
    assert flat[0, 1] == 0 and flat[0, 4] == 0 and flat[:, 0].abs().max() == 0  # observed and padding: exactly 0
    assert torch.allclose(flat[0, [2, 3, 5]], torch.full((3,), 1 / 3, dtype=torch.float64))
    assert torch.allclose(flat[1, 1:], torch.full((5,), 1 / 5, dtype=torch.float64))
    scores = torch.tensor([[0.0, 3.0, -2.0, 1.0, 500.0, 0.5], [0.0, -800.0, 2.0, 2.0, 9.0, 1.0]])
    pr = dislike_probabilities(scores, observed)
    assert torch.isfinite(pr).all() and torch.allclose(pr.sum(1), torch.ones(2, dtype=torch.float64))
    for row in range(2):
        free = [i for i in range(1, 6) if observed[row, i] == 0]
        order = sorted(free, key=lambda i: float(scores[row, i]))
        probs = [float(pr[row, i]) for i in order]
        assert probs == sorted(probs, reverse=True)  # a lower score never gets a lower probability


def test_number_of_draws_and_sampler() -> None:
    assert n_dislike_draws(np.array([10, 10, 10, 3, 0]), 0.8).tolist() == [8, 8, 8, 2, 0]
    assert n_dislike_draws(np.array([10, 7]), 0.7).tolist() == [7, 4]
    assert n_dislike_draws(np.array([10]), 0.2).tolist() == [2]
    liked, _ = _toy_matrices()
    model = RME(liked.shape[0] - 1, liked.shape[1] - 1, RME.Config(factors=4))
    s = _state(RMEMatrices(liked))
    drawn = model.draw_dislikes(s, liked, 1.0, torch.Generator().manual_seed(0))
    assert drawn.multiply(liked).nnz == 0 and drawn[:, 0].nnz == 0
    counts, got = np.diff(liked.indptr), np.diff(drawn.indptr)
    assert (got <= counts).all() and (got[counts > 0] >= 1).all()  # duplicates collapse into a set


# -- splits (R.7) -------------------------------------------------------------------------------


def test_movielens_split_protocol() -> None:
    data = _toy_interactions()
    rs = movielens_split(data, repeat=0, min_user=2, min_item=2)
    sp_ = rs.split
    trval = pd.concat([sp_.train.df, sp_.valid.df])
    assert trval["timestamp"].max() <= sp_.test.df["timestamp"].min()
    assert (trval["weight"] >= 4).all() and (sp_.test.df["weight"] >= 4).all()
    assert (rs.dislikes.df["weight"] <= 2).all()
    assert rs.dislikes.df["timestamp"].max() < sp_.test.df["timestamp"].min()
    assert abs(len(sp_.valid) - 0.125 * len(trval)) <= 0.125 * len(trval) * 0.2 + 2  # cold valid rows go to train
    assert set(sp_.valid.df["item"]) <= set(sp_.train.df["item"])
    assert set(sp_.test.df["user"]) <= set(trval["user"]) and set(sp_.test.df["item"]) <= set(trval["item"])
    assert sp_.train.user_map == rs.dislikes.user_map and sp_.train.item_map == sp_.test.item_map
    other = movielens_split(data, repeat=1, min_user=2, min_item=2)
    assert other.split.test.df[["user", "item"]].equals(sp_.test.df[["user", "item"]])  # same test set
    assert not other.split.valid.df[["user", "item"]].equals(sp_.valid.df[["user", "item"]])
    with pytest.raises(DataError):
        movielens_split(Interactions.from_frame(pd.DataFrame({"user": [1], "item": [1]})))
    per_user = movielens_split(data, min_user=2, min_item=2, per_user=True).split
    trval_u = pd.concat([per_user.train.df, per_user.valid.df]).groupby("user")["timestamp"].max()
    test_u = per_user.test.df.groupby("user")["timestamp"].min()
    assert (trval_u.reindex(test_u.index) <= test_u).all() and test_u.size > sp_.test.df["user"].nunique()


def test_playcount_split_protocol() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": rng.integers(0, 40, 800), "item": rng.integers(0, 25, 800)})
    frame = frame.drop_duplicates().assign(plays=lambda f: rng.integers(1, 100, len(f)))
    data = Interactions.from_frame(frame, weight="plays", name="toy-plays")
    rs = playcount_split(data, repeat=2)
    n = sum(rs.split.describe().values())
    assert rs.dislikes is None and abs(len(rs.split.train) / n - 0.7) < 0.05
    assert abs(len(rs.split.test) / n - 0.2) < 0.05
    assert set(rs.split.valid.df["item"]) <= set(rs.split.train.df["item"])


# -- fitting end to end (small, fast) ------------------------------------------------------------


def test_fit_variants_with_early_stopping_and_algorithm_2() -> None:
    torch.manual_seed(0)
    data = _toy_interactions()
    rs = movielens_split(data, min_user=2, min_item=2)
    sp_ = rs.split
    valid = full_evalset(sp_, "valid")
    n_u, n_i = sp_.train.n_users, sp_.train.n_items
    opts = {"factors": 6, "reg": 1.0, "max_iter": 6, "item_cap": None, "user_cap": None}
    explicit = build_model("rme", n_u, n_i, opts)
    h = fit(explicit, sp_.train, valid, dislikes=rs.dislikes)
    assert h.monitor == "NDCG@100" and 1 <= h.best_epoch <= 6 and explicit.em_kept_ is None
    assert explicit.solver_.m.Y is not None and explicit.solver_.m.Y.nnz > 0
    inferred = build_model("rme", n_u, n_i, opts | {"em_iter": 2, "tau": 0.5})
    h2 = fit(inferred, sp_.train, valid)
    stages = {e["stage"] for e in h2.epochs}
    assert "em0-wmf" in stages and "em1" in stages and inferred.em_kept_ in (1, 2)
    with pytest.raises(ConfigError):
        fit(build_model("rme", n_u, n_i, opts | {"dislikes": "explicit"}), sp_.train, valid)
    separate = build_model("rme", n_u, n_i, opts | {"separate": True})
    h3 = fit(separate, sp_.train, valid, dislikes=rs.dislikes)
    assert any(e["stage"] == "als-items" for e in h3.epochs)
    ids, _ = separate.recommend(np.array([1, 2]), 3, exclude=sp_.train.to_csr())
    assert ids.shape == (2, 3)
    with pytest.raises(ConfigError):
        build_model("cofactor", n_u, n_i, {"reg": 0.0})


def test_item2vec_scores_are_summed_cosines() -> None:
    pytest.importorskip("gensim")
    data = _toy_interactions()
    rs = movielens_split(data, min_user=2, min_item=2)
    sp_ = rs.split
    model = build_model("item2vec", sp_.train.n_users, sp_.train.n_items, {"dim": 8, "epochs": 3})
    h = fit(model, sp_.train, full_evalset(sp_, "valid"))
    assert 1 <= h.best_epoch <= 3
    e = model.item_emb.weight.detach().numpy()
    x = sp_.train.to_csr()
    u = int(np.flatnonzero(np.diff(x.indptr))[0])
    hist = x.indices[x.indptr[u] : x.indptr[u + 1]]
    expected = np.array([sum(float(e[i] @ e[j]) for j in hist) for i in range(1, sp_.train.n_items + 1)])
    got = model.score_all(torch.tensor([u]))[0, 1:].numpy()
    assert np.allclose(got, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(e[np.abs(e).sum(1) > 0], axis=1), 1.0, atol=1e-5)


# -- metrics (R.8, R.12.7): the Cofactor definitions -----------------------------------------------


def test_cofactor_metric_definitions() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    one = torch.tensor([[True, False, False, False, False, False]])
    m = evaluate_scores(scores, one, ks=(5,), metrics=("Recall", "NDCG", "MAP"), recall_denominator="min_k")
    assert m == {"Recall@5": 1.0, "NDCG@5": 1.0, "MAP@5": 1.0}
    two = torch.tensor([[True, False, True, False, False, False]])
    m = evaluate_scores(scores, two, ks=(5,), metrics=("Recall", "NDCG", "MAP"), recall_denominator="min_k")
    assert m["Recall@5"] == pytest.approx(1.0)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))
    assert m["MAP@5"] == pytest.approx((1 + 2 / 3) / 2)
    # Recall@k divides by min(k, |T_u|): 6 positives, the top 5 all hits -> 1
    six = torch.ones(1, 6, dtype=torch.bool)
    assert evaluate_scores(scores, six, ks=(5,), metrics=("Recall",), recall_denominator="min_k")["Recall@5"] == 1.0


# -- real data (skipped without ../shared/data) ---------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA / "ml-100k").is_dir(), reason=f"real datasets not found at {REAL_DATA}")
def test_wmf_als_reaches_implicit_ndcg_on_ml100k() -> None:
    pytest.importorskip("implicit")
    from segue.data.datasets import load_dataset
    from segue.evaluation.protocols import evaluate

    rs = movielens_split(load_dataset("ml-100k", REAL_DATA, download=False), repeat=0)
    sp_ = rs.split
    valid, test = full_evalset(sp_, "valid"), full_evalset(sp_, "test")
    ours = build_model("wmf-als", sp_.train.n_users, sp_.train.n_items, {"factors": 40, "reg": 1.0})
    fit(ours, sp_.train, valid)
    ref = build_model(
        "wmf",
        sp_.train.n_users,
        sp_.train.n_items,
        {"factors": 40, "regularization": 1.0, "alpha": 10.0, "iterations": max(ours.best_sweep_, 1)},
    )
    fit(ref, sp_.train, valid)
    kw = {"ks": (20,), "metrics": ("NDCG",), "recall_denominator": "min_k"}
    a, b = evaluate(ours, test, **kw)["NDCG@20"], evaluate(ref, test, **kw)["NDCG@20"]
    assert abs(a - b) < 0.02 + 0.15 * max(a, b)


def test_algorithm_2_never_draws_training_or_validation_positives() -> None:
    """[CODE-HINT] thanhdtran/RME ``_make_prediction``: train and validation items are masked in the E-step."""
    from segue.training.recipes import valid_positives

    torch.manual_seed(0)
    data = _toy_interactions()
    rs = movielens_split(data, min_user=2, min_item=2)
    sp_ = rs.split
    valid = full_evalset(sp_, "valid")
    n_u, n_i = sp_.train.n_users, sp_.train.n_items
    vpos = valid_positives(valid, n_u, n_i)
    assert vpos.nnz > 0
    opts = {"factors": 4, "reg": 1.0, "max_iter": 3, "item_cap": None, "user_cap": None, "em_iter": 1, "tau": 3.0}
    model = build_model("rme", n_u, n_i, opts)
    fit(model, sp_.train, valid)  # segue.training.fit passes the dev positives as the mask
    drawn = model.dislikes_.tocsr()
    assert drawn.nnz > 0
    liked = sp_.train.to_csr()
    assert drawn.multiply(vpos).nnz == 0
    assert drawn.multiply(liked).nnz == 0
    # without the mask the same E-step (tau 3: most unobserved items drawn) does draw validation positives
    state = model.init_state()
    state.U[:], state.P[:] = 0.0, 0.0  # uniform over the unobserved items
    gen = torch.Generator().manual_seed(0)
    unmasked = model.draw_dislikes(state, liked, 3.0, gen)
    assert unmasked.multiply(vpos).nnz > 0
    masked = model.draw_dislikes(state, liked, 3.0, torch.Generator().manual_seed(0), vpos)
    assert masked.multiply(vpos).nnz == 0 and masked.nnz > 0


def test_lambda_scan_widens_past_the_grid_edge_until_interior() -> None:
    """issue 16: lambda = 10 (the edge) was chosen everywhere; the spec's scan goes on until the optimum is interior."""
    from segue.reproduce.runner import coordinate_scan, load_spec

    by = {m.label: m for m in load_spec("rme-table-4.2").models}
    reg = by["rme"].scan[0]
    assert reg.key == "options.reg" and reg.start == max(reg.values) == 10.0 and reg.patience == 2
    seen: list[float] = []

    def peak_at(p: float):
        def score(point: dict) -> tuple[float]:
            v = point["options"]["reg"]
            seen.append(v)
            return (-abs(math.log10(v) - math.log10(p)),)

        return score

    point, summary = coordinate_scan([reg], {}, peak_at(100.0))
    assert point["options"]["reg"] == 100.0
    assert {50.0, 100.0, 500.0} <= set(seen) and 1000.0 not in seen
    assert summary == [{"key": "options.reg", "chosen": 100.0, "scanned": [1.0, 5.0, 10.0, 50.0, 100.0, 500.0],
                        "interior": True}]  # fmt: skip
    seen.clear()
    point, summary = coordinate_scan([reg], {}, peak_at(1.0))
    assert point["options"]["reg"] == 1.0 and max(seen) == max(reg.values)  # interior already: no widening
    assert summary[0]["interior"] is True
