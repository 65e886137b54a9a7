"""The basket task (SDMR spec A.1.2 / A.6): group contexts, the basket protocol, training on baskets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from segue.data.interactions import Interactions
from segue.data.preprocess import dedup, filter_groups
from segue.data.sequences import group_members, group_windows, row_contexts
from segue.errors import ConfigError, DataError
from segue.evaluation.protocols import evaluate, get_protocol, tie_diagnostic
from segue.models.base import Context, Recommender
from segue.pipeline import prepare, run
from segue.training.trainer import TrainConfig, Trainer


def _baskets(n_users: int = 12, per_user: int = 4, size: int = 7, seed: int = 0) -> Interactions:
    """Each user buys baskets from one of three item blocks; time increases within and across baskets."""
    rng = np.random.default_rng(seed)
    rows, t, b = [], 0, 0
    for u in range(n_users):
        block = np.arange(60) + 60 * (u % 3)
        for _ in range(per_user):
            b += 1
            for it in rng.choice(block, size=size, replace=False):
                t += 1
                rows.append((f"u{u}", int(it), t, f"b{b}"))
    df = pd.DataFrame(rows, columns=["user", "item", "ts", "order"])
    return Interactions.from_frame(df, timestamp="ts", groups={"basket": "order"}, name="baskets")


def _tiny() -> Interactions:
    df = pd.DataFrame(
        {
            "user": ["a", "a", "a", "a", "b", "b"],
            "item": [1, 2, 3, 4, 2, 5],
            "ts": [1, 2, 3, 4, 5, 6],
            "order": ["o1", "o1", "o1", "o2", "o3", "o3"],
        }
    )
    return Interactions.from_frame(df, timestamp="ts", groups={"basket": "order"}, name="tiny")


def test_group_windows_are_the_rest_of_the_basket_left_padded() -> None:
    d = _tiny()
    w = group_windows(d, "basket", 3)
    raw = {i: int(r) for i, r in enumerate(d.item_map.to_raw(np.arange(1, d.n_items + 1)), start=1)}
    got = [[raw.get(int(x), 0) for x in row] for row in w]
    assert got == [[0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 0, 0], [0, 0, 5], [0, 0, 2]]
    # a window shorter than the rest keeps the latest members
    assert [[raw.get(int(x), 0) for x in row] for row in group_windows(d, "basket", 1)][:3] == [[3], [3], [2]]


def test_group_members_and_unknown_groups() -> None:
    d = _tiny()
    m = group_members(d, "basket", np.array([1, 3, 99]), 4)
    assert (m[0] != 0).sum() == 3 and (m[1] != 0).sum() == 2 and (m[2] == 0).all()
    with pytest.raises(DataError, match=">= 0"):
        group_members(d, "basket", np.array([-1]), 2)
    with pytest.raises(DataError, match="no 'playlist' grouping"):
        group_windows(d, "playlist", 2)
    with pytest.raises(DataError, match="Unknown context"):
        row_contexts(d, 2, "cart")


def test_filter_groups_bounds() -> None:
    d = _tiny()
    assert len(filter_groups(d, "basket", 2, 3)) == 5
    with pytest.raises(DataError, match="no basket has"):
        filter_groups(d, "basket", 10)
    with pytest.raises(DataError, match="bounds"):
        filter_groups(d, "basket", 3, 2)


def test_train_config_rejects_unknown_context() -> None:
    with pytest.raises(ConfigError, match="context"):
        TrainConfig(context="cart")


def test_basket_protocol_holds_out_one_item_per_basket_with_its_basket_as_context() -> None:
    d = _baskets()
    _, split, _, test = prepare(d, get_protocol("basket-holdout"))
    n_baskets = len(d.group_maps["basket"])
    assert len(split.test) == len(split.valid) == n_baskets
    assert len(test) + test.meta["dropped_unseen_targets"] == n_baskets
    assert test.meta["context"] == "basket" and test.candidates.shape[1] == 101
    tr = split.train.df
    for case in range(0, len(test), 7):
        user, target = int(test.users[case]), int(test.candidates[case, 0])
        members = test.context.group[case]
        members = set(members[members != 0].tolist())
        # the context is exactly the training items of the case's basket, and the target is not among them
        baskets = tr[(tr["user"] == user) & tr["item"].isin(members)]["basket"].unique()
        assert any(set(tr[tr["basket"] == b]["item"]) == members for b in baskets)
        assert target not in members
        # negatives are items the user never touched, in any part
        seen = set()
        for part in (split.train, split.valid, split.test):
            seen |= set(part.df[part.df["user"] == user]["item"])
        assert not seen & set(test.candidates[case, 1:].tolist())
    h = test.with_history(split.train, 2).context.history
    assert h.shape == (len(test), 2) and torch.equal(h, test.context.group[:, -2:])


def test_basket_protocol_dedups_per_basket_not_per_user() -> None:
    df = pd.DataFrame({"user": ["a"] * 4, "item": [1, 2, 1, 3], "ts": [1, 2, 3, 4], "order": ["o1", "o1", "o2", "o2"]})
    d = Interactions.from_frame(df, timestamp="ts", groups={"basket": "order"})
    proto = get_protocol("basket-holdout")
    assert proto.dedup_on == ("basket", "item")
    assert len(dedup(d, on=proto.dedup_on)) == 4  # a re-purchase in another basket is kept
    assert len(dedup(d)) == 3


class _Overlap(Recommender):
    """Scores a candidate by whether it shares the block of the items in its context (no parameters)."""

    name = "test-overlap"
    needs = frozenset({"history"})
    trainable = False

    def history_length(self) -> int:
        return 4

    def score(self, users: torch.Tensor, items: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        assert context is not None and context.history is not None
        h = context.history
        return ((items[:, :, None] == h[:, None, :]) & (h[:, None, :] != 0)).any(-1).float()


def test_tie_diagnostic_counts_ties_and_optimistic_ranks() -> None:
    d = _baskets()
    _, split, _, test = prepare(d, get_protocol("basket-holdout"))
    model = _Overlap(split.train.n_users, split.train.n_items)
    es = test.with_history(split.train, 4)
    t = tie_diagnostic(model, es)
    # every candidate scores 0 (the target is never in its own basket's context): all tie
    assert t["tied_share"] == 1.0 and t["HR@10_optimistic"] == 1.0
    assert 0.0 <= t["HR@10_authors"] <= t["HR@10_optimistic"]
    assert evaluate(model, es)["HR@10"] == 0.0
    with pytest.raises(DataError, match="one positive"):
        tie_diagnostic(model, es.__class__(es.users, es.targets, None, None, None, None, {}))


class _Spy(Recommender):
    """A one-parameter model that records the (user, positive, context) rows the trainer feeds it."""

    name = "test-spy"
    needs = frozenset({"history"})

    def __init__(self, n_users: int, n_items: int, config: object = None) -> None:
        super().__init__(n_users, n_items, config)
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, int, tuple[int, ...]]] = []

    def history_length(self) -> int:
        return 8

    def score(self, users: torch.Tensor, items: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        if self.training:
            assert context is not None and context.history is not None
            for u, i, h in zip(users.tolist(), items[:, 0].tolist(), context.history.tolist(), strict=True):
                self.seen.append((u, i, tuple(h)))
        return self.w * items.float()


def test_trainer_feeds_each_basket_row_the_rest_of_its_basket() -> None:
    d = _baskets(n_users=4, per_user=2)
    _, split, _, _ = prepare(d, get_protocol("basket-holdout", n_negatives=10))
    spy = _Spy(split.train.n_users, split.train.n_items)
    Trainer(TrainConfig(epochs=1, batch_size=16, progress=False, context="basket")).fit(spy, split.train)
    df = split.train.df
    assert len(spy.seen) == len(df)
    for u, i, h in spy.seen:
        rests = [  # the user may have bought item i in several baskets
            df[(df["basket"] == b) & (df["item"] != i)].sort_values("timestamp")["item"].tolist()
            for b in df[(df["user"] == u) & (df["item"] == i)]["basket"]
        ]
        assert [x for x in h if x] in rests


def test_sdm_and_sdmr_run_the_basket_protocol_end_to_end() -> None:
    d = _baskets(n_users=6, per_user=3)
    cfg = TrainConfig(epochs=2, batch_size=64, n_negatives=4, progress=False, threads=1, monitor="HR@10")
    res = run(
        "sdmr",
        d,
        protocol=get_protocol("basket-holdout", n_negatives=20),
        model_options={"s": 6},
        train_config=cfg,
        log=None,
    )
    assert len(res.history.epochs) == 2 and res.test.meta["context"] == "basket"
    assert res.test.context.history.shape[1] == 6
    assert all(0 <= v <= 1 for v in res.metrics.values())
