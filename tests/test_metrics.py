"""Tests of segue.evaluation.metrics: hand-worked values, ties, masks, scikit-learn agreement, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

from segue.errors import ConfigError, DataError
from segue.evaluation import metrics as M
from segue.evaluation.metrics import compute_metrics, evaluate_scores, mean_metrics, rank_positives

ALL = ("HR", "HIT", "NDCG", "Recall", "Precision", "MAP", "MRR", "AUC")


def _one_hot(rows: int, cols: int, hot: list[list[int]]) -> torch.Tensor:
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for r, cs in enumerate(hot):
        mask[r, cs] = True
    return mask


def _per_row(scores, positive, valid=None, **kw):
    ranks, n_pos, n_neg = rank_positives(scores, positive, valid)
    return compute_metrics(ranks, n_pos, n_neg, **kw)


# ---------------------------------------------------------------------------------------------
# hand-worked cases
# ---------------------------------------------------------------------------------------------


def test_single_positive_at_rank_1_3_11():
    # 12 candidates scored 12, 11, ..., 1 (column c has score 12 - c, so it has rank c + 1);
    # the positive is column 0, 2 or 10, i.e. rank 1, 3 or 11.
    scores = (12 - torch.arange(12, dtype=torch.float32)).repeat(3, 1)
    positive = _one_hot(3, 12, [[0], [2], [10]])
    ranks, n_pos, n_neg = rank_positives(scores, positive)
    assert ranks.shape == (3, 1)
    assert ranks[:, 0].tolist() == [1.0, 3.0, 11.0]
    assert n_pos.tolist() == [1, 1, 1]
    assert n_neg.tolist() == [11, 11, 11]
    per_row = compute_metrics(ranks, n_pos, n_neg, ks=(10,), metrics=("HR", "NDCG", "MRR"))
    assert list(per_row) == ["HR@10", "NDCG@10", "MRR"]
    assert per_row["HR@10"].tolist() == [1.0, 1.0, 0.0]
    torch.testing.assert_close(per_row["NDCG@10"], torch.tensor([1 / math.log2(2), 1 / math.log2(4), 0.0]))
    torch.testing.assert_close(per_row["MRR"], torch.tensor([1.0, 1 / 3, 1 / 11]))
    means = mean_metrics(per_row)
    assert all(isinstance(v, float) for v in means.values())
    assert means["HR@10"] == pytest.approx(2 / 3)
    assert means["NDCG@10"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_constant_scores_give_worst_rank():
    # A constant model: the single positive is tied with all C - 1 negatives, so it ranks C.
    C = 7
    scores = torch.zeros(2, C)
    positive = _one_hot(2, C, [[0], [4]])
    ranks, _, _ = rank_positives(scores, positive)
    assert ranks[:, 0].tolist() == [C, C]
    per_row = compute_metrics(ranks, *rank_positives(scores, positive)[1:], ks=(C - 1, C), metrics=("HR",))
    assert per_row[f"HR@{C - 1}"].tolist() == [0.0, 0.0]
    assert per_row[f"HR@{C}"].tolist() == [1.0, 1.0]


def test_ties_between_positives_get_consecutive_ranks():
    # scores: col0 = 5 (neg), col1 = 3 (pos), col2 = 3 (pos), col3 = 1 (neg), col4 = 3 (neg)
    # The negative at 3 goes above both tied positives (pessimistic) -> ranks 3 and 4.
    scores = torch.tensor([[5.0, 3.0, 3.0, 1.0, 3.0]])
    positive = _one_hot(1, 5, [[1, 2]])
    ranks, n_pos, n_neg = rank_positives(scores, positive)
    assert ranks.tolist() == [[3.0, 4.0]]
    assert n_pos.tolist() == [2] and n_neg.tolist() == [3]
    # Three positives tied with each other and nothing else: ranks 1, 2, 3.
    ranks, _, _ = rank_positives(torch.tensor([[2.0, 2.0, 0.0, 2.0]]), _one_hot(1, 4, [[0, 1, 3]]))
    assert ranks.tolist() == [[1.0, 2.0, 3.0]]
    # A constant row with 2 positives among 6 candidates: ranks 5 and 6 (the worst two).
    ranks, _, _ = rank_positives(torch.ones(1, 6), _one_hot(1, 6, [[0, 3]]))
    assert ranks.tolist() == [[5.0, 6.0]]


def test_map_mrr_precision_multi_positive_hand_computed():
    # 8 candidates, scores 8..1 so column c has rank c + 1; positives at columns 1, 3, 6
    # -> ranks 2, 4, 7; n_pos = 3, n_neg = 5.
    scores = (8 - torch.arange(8, dtype=torch.float32))[None, :]
    positive = _one_hot(1, 8, [[1, 3, 6]])
    per_row = _per_row(scores, positive, ks=(3, 5, 8), metrics=(*ALL, "MRR@1", "MRR@2"))
    # MRR = 1 / 2; MRR@1 = 0 (first positive at rank 2 > 1); MRR@2 = 1/2.
    assert per_row["MRR"].item() == pytest.approx(0.5)
    assert per_row["MRR@1"].item() == 0.0
    assert per_row["MRR@2"].item() == pytest.approx(0.5)
    # MAP@5: hits at ranks 2 (j=1) and 4 (j=2): (1/2 + 2/4) / min(3, 5) = 1 / 3.
    assert per_row["MAP@5"].item() == pytest.approx(1 / 3)
    # MAP@3: one hit at rank 2: (1/2) / min(3, 3) = 1/6.
    assert per_row["MAP@3"].item() == pytest.approx(1 / 6)
    # MAP@8: (1/2 + 2/4 + 3/7) / 3 = (1 + 3/7) / 3 = 10/21 (the full average precision).
    assert per_row["MAP@8"].item() == pytest.approx(10 / 21)
    # Precision@5 = 2/5, HIT@5 = 2/3, HR@5 = 1.
    assert per_row["Precision@5"].item() == pytest.approx(2 / 5)
    assert per_row["HIT@5"].item() == pytest.approx(2 / 3)
    assert per_row["HR@5"].item() == 1.0
    # NDCG@5: DCG = 1/log2(3) + 1/log2(5); IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4).
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 0.5
    assert per_row["NDCG@5"].item() == pytest.approx(dcg / idcg, rel=1e-6)
    # AUC: negatives above each positive = r_(j) - j = 1, 2, 4 -> 7 of 3 * 5 = 15 pairs wrong.
    assert per_row["AUC"].item() == pytest.approx(1 - 7 / 15)


def test_auc_small_example_and_no_negative_convention():
    # Row 0: scores [0.9(pos), 0.8(neg), 0.7(pos), 0.1(neg)] -> ranks 1, 3; pairs: (0.9 beats
    # both), (0.7 beats 0.1 only) -> 3 of 4 correct -> AUC 0.75.
    # Row 1: every candidate is a positive -> n_neg = 0 -> AUC 1 by convention.
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    positive = torch.tensor([[True, False, True, False], [True, True, True, True]])
    ranks, n_pos, n_neg = rank_positives(scores, positive)
    assert n_neg.tolist() == [2, 0]
    auc = compute_metrics(ranks, n_pos, n_neg, metrics=("AUC",))["AUC"]
    torch.testing.assert_close(auc, torch.tensor([0.75, 1.0]))
    # Ties count as wrong (pessimistic), not as half: a constant row has AUC 0.
    ranks, n_pos, n_neg = rank_positives(torch.zeros(1, 5), _one_hot(1, 5, [[2]]))
    assert compute_metrics(ranks, n_pos, n_neg, metrics=("AUC",))["AUC"].item() == 0.0


def test_recall_both_denominators():
    # 10 candidates, column c has rank c + 1; 4 positives at columns 0, 1, 2, 8 -> ranks 1, 2, 3, 9.
    scores = (10 - torch.arange(10, dtype=torch.float32))[None, :]
    positive = _one_hot(1, 10, [[0, 1, 2, 8]])
    n_pos_recall = _per_row(scores, positive, ks=(2, 5), metrics=("Recall",))
    min_k_recall = _per_row(scores, positive, ks=(2, 5), metrics=("Recall",), recall_denominator="min_k")
    # k = 2: 2 hits; / n_pos = 2/4, / min(4, 2) = 1.
    assert n_pos_recall["Recall@2"].item() == pytest.approx(0.5)
    assert min_k_recall["Recall@2"].item() == pytest.approx(1.0)
    # k = 5: 3 hits; / n_pos = 3/4, / min(4, 5) = 3/4.
    assert n_pos_recall["Recall@5"].item() == pytest.approx(0.75)
    assert min_k_recall["Recall@5"].item() == pytest.approx(0.75)


def test_invalid_candidates_are_ignored():
    # Row: scores [9, 8, 7, 6, 5], positive at column 3 (score 6). Columns 0 and 2 are invalid
    # (e.g. training items): the positive ranks 2 (only column 1 is above it) and n_neg = 2.
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0]])
    positive = _one_hot(1, 5, [[3]])
    valid = torch.tensor([[False, True, False, True, True]])
    ranks, n_pos, n_neg = rank_positives(scores, positive, valid)
    assert ranks.tolist() == [[2.0]] and n_pos.tolist() == [1] and n_neg.tolist() == [2]
    # Same result when the caller has also set the invalid scores to -inf, or to NaN.
    for fill in (-math.inf, math.nan, 100.0):
        masked = scores.masked_fill(~valid, fill)
        assert rank_positives(masked, positive, valid)[0].tolist() == [[2.0]]
    # Ties with invalid candidates do not count either: a constant row with 2 valid candidates.
    ranks, _, n_neg = rank_positives(torch.zeros(1, 5), positive, valid)
    assert ranks.tolist() == [[3.0]] and n_neg.tolist() == [2]
    # A positive scored -inf is still ranked among the valid candidates only (last of 3).
    ranks, _, _ = rank_positives(
        scores.masked_fill(positive, -math.inf).masked_fill(~valid, -math.inf), positive, valid
    )
    assert ranks.tolist() == [[3.0]]
    auc = _per_row(scores, positive, valid, metrics=("AUC",))["AUC"]
    assert auc.item() == pytest.approx(0.5)  # above 5, below 8


def test_padding_and_shapes_with_unequal_positive_counts():
    scores = torch.tensor([[0.5, 0.4, 0.3, 0.2], [0.1, 0.9, 0.8, 0.7]])
    positive = torch.tensor([[False, True, False, False], [True, True, True, False]])
    ranks, n_pos, n_neg = rank_positives(scores, positive)
    assert ranks.shape == (2, 3) and ranks.dtype == torch.float32
    assert ranks[0].tolist() == [2.0, math.inf, math.inf]
    assert ranks[1].tolist() == [1.0, 2.0, 4.0]
    assert n_pos.tolist() == [1, 3] and n_neg.tolist() == [3, 1]
    per_row = compute_metrics(ranks, n_pos, n_neg, ks=(4,), metrics=ALL)
    for key, values in per_row.items():
        assert values.shape == (2,), key
        assert torch.isfinite(values).all(), key


def test_metric_names_and_keys():
    scores = torch.tensor([[0.3, 0.2, 0.1]])
    positive = _one_hot(1, 3, [[1]])
    per_row = _per_row(scores, positive, ks=(1, 2), metrics=("hr", "ndcg", "recall", "precision", "map", "hit", "mrr"))
    assert list(per_row) == [
        "HR@1",
        "HR@2",
        "NDCG@1",
        "NDCG@2",
        "Recall@1",
        "Recall@2",
        "Precision@1",
        "Precision@2",
        "MAP@1",
        "MAP@2",
        "HIT@1",
        "HIT@2",
        "MRR",
    ]
    assert list(_per_row(scores, positive, ks=5, metrics=("NDCG@3", "AUC"))) == ["NDCG@3", "AUC"]
    out = evaluate_scores(scores, positive, ks=(2,), metrics=("HR", "NDCG", "MRR"))
    assert out == pytest.approx({"HR@2": 1.0, "NDCG@2": 1 / math.log2(3), "MRR": 0.5})


# ---------------------------------------------------------------------------------------------
# agreement with scikit-learn and naive loops on tie-free random data
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def random_case():
    gen = torch.Generator().manual_seed(1234)
    B, C = 40, 30
    scores = torch.rand(B, C, generator=gen, dtype=torch.float64)
    n_pos = torch.randint(1, 8, (B,), generator=gen)
    positive = torch.zeros(B, C, dtype=torch.bool)
    for b in range(B):
        positive[b, torch.randperm(C, generator=gen)[: int(n_pos[b])]] = True
    assert len(set(scores.flatten().tolist())) == B * C  # no ties
    return scores, positive


@pytest.mark.parametrize("k", [1, 3, 5, 10, 30])
def test_ndcg_matches_sklearn(random_case, k):
    scores, positive = random_case
    ndcg = _per_row(scores, positive, ks=(k,), metrics=("NDCG",))[f"NDCG@{k}"]
    for b in range(scores.shape[0]):
        expected = ndcg_score(positive[b : b + 1].numpy().astype(float), scores[b : b + 1].numpy(), k=k)
        assert ndcg[b].item() == pytest.approx(expected, abs=1e-6), b


@pytest.mark.parametrize("threshold", [10**9, 0], ids=["direct", "histogram"])
def test_auc_and_average_precision_match_sklearn(random_case, monkeypatch, threshold):
    monkeypatch.setattr(M, "_HISTOGRAM_MIN_POSITIVES", threshold)
    scores, positive = random_case
    C = scores.shape[1]
    per_row = _per_row(scores, positive, ks=(C,), metrics=("AUC", "MAP"))
    for b in range(scores.shape[0]):
        y, s = positive[b].numpy(), scores[b].numpy()
        assert per_row["AUC"][b].item() == pytest.approx(roc_auc_score(y, s), abs=1e-6), b
        assert per_row[f"MAP@{C}"][b].item() == pytest.approx(average_precision_score(y, s), abs=1e-6), b


@pytest.mark.parametrize("k", [1, 4, 10])
def test_precision_recall_map_match_naive_loop(random_case, k):
    scores, positive = random_case
    per_row = _per_row(scores, positive, ks=(k,), metrics=("Precision", "Recall", "HR", "MAP", "MRR"))
    per_row_min_k = _per_row(scores, positive, ks=(k,), metrics=("Recall",), recall_denominator="min_k")
    for b in range(scores.shape[0]):
        order = np.argsort(-scores[b].numpy())
        rel = positive[b].numpy()[order]
        n_pos = int(rel.sum())
        hits = int(rel[:k].sum())
        precisions = [rel[: i + 1].sum() / (i + 1) for i in range(k) if rel[i]]
        first = int(np.argmax(rel)) + 1
        assert per_row[f"Precision@{k}"][b].item() == pytest.approx(hits / k)
        assert per_row[f"Recall@{k}"][b].item() == pytest.approx(hits / n_pos)
        assert per_row_min_k[f"Recall@{k}"][b].item() == pytest.approx(hits / min(n_pos, k))
        assert per_row[f"HR@{k}"][b].item() == float(hits > 0)
        assert per_row[f"MAP@{k}"][b].item() == pytest.approx(sum(precisions) / min(n_pos, k))
        assert per_row["MRR"][b].item() == pytest.approx(1 / first)


@pytest.mark.parametrize("seed", [7, 8, 9])
@pytest.mark.parametrize("invalid_fill", [None, math.nan, math.inf])
def test_ranks_match_naive_definition_with_ties_and_masks(monkeypatch, seed, invalid_fill):
    # Scores in {-inf, 0, 1, 2, +inf} make ties frequent; compare both counting paths against
    # the definition written out literally. Invalid scores are left as drawn, or overwritten
    # with NaN or +inf: either way they must not matter.
    gen = torch.Generator().manual_seed(seed)
    B, C = 25, 20
    levels = torch.tensor([-math.inf, 0.0, 1.0, 2.0, math.inf])
    scores = levels[torch.randint(0, 5, (B, C), generator=gen)]
    valid = torch.rand(B, C, generator=gen) > 0.25
    positive = (torch.rand(B, C, generator=gen) < 0.3) & valid
    positive[torch.arange(B), valid.float().argmax(1)] = True  # at least one valid positive per row
    expected = []
    for b in range(B):
        s, pos, val = scores[b].tolist(), positive[b].tolist(), valid[b].tolist()
        row = []
        for p in range(C):
            if not pos[p]:
                continue
            above = sum(1 for c in range(C) if val[c] and s[c] > s[p])
            tied_neg = sum(1 for c in range(C) if val[c] and not pos[c] and s[c] == s[p])
            tied_pos_before = sum(1 for q in range(p) if pos[q] and s[q] == s[p])
            row.append(1 + above + tied_neg + tied_pos_before)
        expected.append(sorted(row))
    if invalid_fill is not None:
        scores = scores.masked_fill(~valid, invalid_fill)
    for threshold in (10**9, 0):  # direct comparison only, then histogram only
        monkeypatch.setattr(M, "_HISTOGRAM_MIN_POSITIVES", threshold)
        ranks, n_pos, n_neg = rank_positives(scores, positive, valid)
        for b in range(B):
            assert ranks[b, : int(n_pos[b])].tolist() == expected[b], (threshold, b)
            assert bool(torch.isinf(ranks[b, int(n_pos[b]) :]).all())
            assert int(n_neg[b]) == int(valid[b].sum()) - len(expected[b])


def test_chunking_does_not_change_results(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (17, 11), generator=gen).float()
    positive = torch.rand(17, 11, generator=gen) < 0.3
    positive[:, 0] = True
    full = rank_positives(scores, positive)
    monkeypatch.setattr(M, "_CHUNK_ELEMENTS_CPU", 1)  # one row per chunk
    for threshold in (10**9, 0):
        monkeypatch.setattr(M, "_HISTOGRAM_MIN_POSITIVES", threshold)
        for got, want in zip(rank_positives(scores, positive), full, strict=True):
            assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_nan_scores_raise():
    scores = torch.tensor([[0.1, math.nan, 0.3]])
    with pytest.raises(DataError, match="NaN"):
        rank_positives(scores, _one_hot(1, 3, [[0]]))


def test_row_without_positive_raises_and_names_it():
    positive = _one_hot(3, 4, [[0], [], [2]])
    with pytest.raises(DataError, match="row 1 has no positive"):
        rank_positives(torch.rand(3, 4), positive)


def test_shape_mismatch_raises():
    with pytest.raises(DataError, match="shape"):
        rank_positives(torch.rand(2, 4), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(DataError, match="shape"):
        rank_positives(torch.rand(2, 4), torch.ones(2, 4, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(DataError, match="2-D"):
        rank_positives(torch.rand(4), torch.ones(4, dtype=torch.bool))


def test_positive_marked_invalid_raises():
    valid = torch.tensor([[True, False, True]])
    with pytest.raises(DataError, match="row 0"):
        rank_positives(torch.rand(1, 3), _one_hot(1, 3, [[1]]), valid)


def test_bad_metric_options_raise():
    ranks, n_pos, n_neg = rank_positives(torch.rand(2, 5), _one_hot(2, 5, [[0], [1]]))
    with pytest.raises(ConfigError, match=r"unknown metric 'F1'.*HR, HIT, NDCG"):
        compute_metrics(ranks, n_pos, n_neg, metrics=("HR", "F1"))
    for bad_k in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="positive integer"):
            compute_metrics(ranks, n_pos, n_neg, ks=(bad_k,))
    with pytest.raises(ConfigError, match="positive integer"):
        compute_metrics(ranks, n_pos, n_neg, metrics=("NDCG@x",))
    with pytest.raises(ConfigError, match="AUC takes no cut-off"):
        compute_metrics(ranks, n_pos, n_neg, metrics=("AUC@5",))
    with pytest.raises(ConfigError, match="recall_denominator"):
        compute_metrics(ranks, n_pos, n_neg, metrics=("Recall",), recall_denominator="k")
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate_scores(torch.rand(2, 5), _one_hot(2, 5, [[0], [1]]), metrics=("nope",))


# ---------------------------------------------------------------------------------------------
# size
# ---------------------------------------------------------------------------------------------


def test_movielens_sized_batch_runs():
    # ML-1M leave-one-out shape: 6040 users x 3707 items, one held-out positive per user.
    B, C = 6040, 3707
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(B, C, generator=gen)
    positive = torch.zeros(B, C, dtype=torch.bool)
    positive[torch.arange(B), torch.randint(0, C, (B,), generator=gen)] = True
    ranks, n_pos, n_neg = rank_positives(scores, positive)
    assert ranks.shape == (B, 1) and bool((n_pos == 1).all()) and bool((n_neg == C - 1).all())
    assert bool((ranks >= 1).all()) and bool((ranks <= C).all())
    out = mean_metrics(compute_metrics(ranks, n_pos, n_neg, ks=(10,), metrics=("HR", "NDCG", "AUC")))
    # A random model: HR@10 ~ 10 / 3707 and AUC ~ 0.5.
    assert out["HR@10"] < 0.02
    assert out["AUC"] == pytest.approx(0.5, abs=0.02)


def test_authors_tie_rule_on_a_hand_case() -> None:
    """thanhdtran/SDMR evaluator: the test item goes last among the candidates, ranked by np.argsort(-scores)."""
    import numpy as np

    from segue.evaluation.protocols import authors_tie_ranks

    pos = np.array([0.5, 0.9, 0.9, 0.3])
    neg = np.array(
        [
            [0.9, 0.1, 0.2],  # no tie: one negative above -> rank 2
            [0.95, 0.9, 0.1],  # one tie; 4 candidates, numpy's small-array sort keeps the positive last -> 3
            [0.9, 0.9, 0.9],  # all tied -> last of 4
            [0.9, 0.3, 0.0],  # the tied negative is padding (dropped) -> rank 2 of 3 candidates
        ]
    )
    valid = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=bool)
    assert authors_tie_ranks(pos, neg, valid).tolist() == [2, 3, 4, 3]
    valid[3, 1] = False
    assert authors_tie_ranks(pos, neg, valid)[3] == 2
    # large tied lists: the rank is wherever numpy's argsort puts the last index, between the
    # optimistic and the pessimistic rank (numpy's default sort is not stable there)
    rng = np.random.default_rng(0)
    big_neg = np.r_[rng.random(50), np.full(50, 0.5)][None, :]
    r = int(authors_tie_ranks(np.array([0.5]), big_neg)[0])
    above = int((big_neg > 0.5).sum())
    assert above + 1 <= r <= above + 51
    assert r == int(np.flatnonzero(np.argsort(-np.r_[big_neg[0], 0.5]) == 100)[0]) + 1
