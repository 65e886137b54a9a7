"""The random ranking: a reference row whose evaluation is the expected metrics of chance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from segue.errors import ConfigError
from segue.evaluation.protocols import EvalSet, evaluate
from segue.models.base import build_model


def test_random_ranking_gets_the_expected_metrics_of_chance() -> None:
    """1 positive among 101 candidates: E[HR@10] = 10 / 101, E[NDCG@10] = sum_{r<=10} 1 / log2(r + 1) / 101."""
    n_cases, n_items = 2000, 500
    rng = np.random.default_rng(0)
    cand = np.stack([rng.choice(np.arange(1, n_items + 1), 101, replace=False) for _ in range(n_cases)])
    targets = sp.csr_matrix((np.ones(n_cases), (np.arange(n_cases), cand[:, 0])), shape=(n_cases, n_items + 1))
    es = EvalSet(users=np.arange(1, n_cases + 1), targets=targets, candidates=cand, n_pos=np.ones(n_cases, int))
    model = build_model("random", n_cases, n_items, {"draws": 50})
    got = evaluate(model, es, ks=(10,), metrics=("HR", "NDCG", "MRR"))
    hr, ndcg = 10 / 101, sum(1 / math.log2(r + 1) for r in range(1, 11)) / 101
    mrr = sum(1 / r for r in range(1, 102)) / 101
    # the standard error of the mean over 2000 cases x 50 draws: about 0.0009 for HR@10
    assert got["HR@10"] == pytest.approx(hr, abs=0.004) and got["NDCG@10"] == pytest.approx(ndcg, abs=0.003)
    assert got["MRR"] == pytest.approx(mrr, abs=0.003) and model.draw == 0
    one = evaluate(build_model("random", n_cases, n_items, {"draws": 1}), es, ks=(10,))
    assert one["HR@10"] != got["HR@10"]  # one draw is one ranking, not the average
    # deterministic: the same seed gives the same scores, score and score_all agree
    users = torch.tensor([3, 7])
    items = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert torch.equal(model.score(users, items), model.score_all(users)[torch.arange(2)[:, None], items])
    with pytest.raises(ConfigError, match="draws >= 1"):
        build_model("random", 5, 5, {"draws": 0})
