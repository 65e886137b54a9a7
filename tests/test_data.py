"""Interactions, id maps, preprocessing, splits, sampling and sequence windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from segue.data import (
    IdMap,
    Interactions,
    NegativeSampler,
    binarize,
    dedup,
    group_holdout,
    kcore,
    leave_one_out,
    random_split,
    sample_candidates,
    temporal_split,
)
from segue.data.sequences import history_windows, last_items
from segue.errors import DataError, UnknownIdError

# -- Interactions and IdMap ---------------------------------------------------------------


def test_ids_are_contiguous_from_one_and_round_trip(data: Interactions, frame: pd.DataFrame) -> None:
    assert data.users.min() == 1 and data.users.max() == data.n_users == frame["user"].nunique()
    assert data.items.min() == 1 and data.items.max() == data.n_items == frame["item"].nunique()
    assert list(data.user_map.to_raw(data.users)) == list(frame["user"])
    assert list(data.item_map.to_raw(data.items)) == list(frame["item"])
    assert data.shape == (data.n_users + 1, data.n_items + 1)


def test_idmap_compares_raw_ids_as_strings_and_names_unknown_ids() -> None:
    m = IdMap(np.array([196, 7]), kind="user")
    assert m.to_internal([196, "7"]).tolist() == [1, 2]
    with pytest.raises(UnknownIdError, match="Unknown user id '5'"):
        m.to_internal([5])
    assert m.to_internal([5, 7], missing="zero").tolist() == [0, 2]
    back = IdMap.from_frame(m.to_frame(), "user")
    assert back == m and back.raw.dtype.kind == "i"


def test_csr_has_padding_row_and_column(data: Interactions) -> None:
    m = data.to_csr()
    assert m.shape == data.shape
    assert m[0].nnz == 0 and m[:, 0].nnz == 0
    assert m.sum() == len(data)


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (pd.DataFrame({"u": [1], "i": [2]}), {"user": "user", "item": "i"}, "Missing column"),
        (pd.DataFrame({"user": [1, 2], "item": [1, None]}), {}, "item column has missing values"),
        (pd.DataFrame({"user": [1], "item": [1], "r": ["x"]}), {"weight": "r"}, "non-numeric value 'x'"),
        (pd.DataFrame({"user": [1], "item": [1], "r": [np.nan]}), {"weight": "r"}, "missing values"),
        (pd.DataFrame({"user": [1], "item": [1], "t": [np.inf]}), {"timestamp": "t"}, "infinite"),
        (pd.DataFrame({"user": [], "item": []}), {}, "empty"),
    ],
)
def test_bad_tables_raise_one_sentence(frame: pd.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Interactions.from_frame(frame, **kwargs)


def test_not_a_dataframe() -> None:
    with pytest.raises(DataError, match="Expected a pandas DataFrame"):
        Interactions.from_frame([[1, 2]])  # type: ignore[arg-type]


# -- preprocessing --------------------------------------------------------------------------


def test_binarize_keeps_ratings_at_or_above_threshold(data: Interactions) -> None:
    b = binarize(data, 4)
    assert len(b) == int((data.df["weight"] >= 4).sum())
    assert "weight" not in b.df.columns
    with pytest.raises(DataError, match="weight >= 99"):
        binarize(data, 99)


def test_dedup_keeps_first_by_time() -> None:
    df = pd.DataFrame({"user": [1, 1, 1], "item": [5, 5, 6], "t": [30, 10, 20]})
    d = dedup(Interactions.from_frame(df, timestamp="t"))
    assert len(d) == 2
    assert sorted(d.df["timestamp"].tolist()) == [10.0, 20.0]


def test_kcore_is_iterated_to_a_fixed_point() -> None:
    # user 4 has one item; dropping it leaves item c with one user, which leaves user 3 with one item.
    # A single pass would keep user 3 and item c; the fixed point keeps users 1, 2 and items a, b.
    rows = [(1, "a"), (1, "b"), (2, "a"), (2, "b"), (3, "a"), (3, "c"), (4, "c")]
    d = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item"]))
    k = kcore(d, 2, 2)
    assert sorted(k.user_map.raw.tolist()) == [1, 2]
    assert sorted(k.item_map.raw.tolist()) == ["a", "b"]
    assert len(k) == 4 and k.n_users == 2 and k.n_items == 2
    with pytest.raises(DataError, match="empty after"):
        kcore(d, 10, 10)


# -- splits ------------------------------------------------------------------------------------


def _pairs(part: Interactions) -> set[tuple[int, int]]:
    return set(zip(part.users.tolist(), part.items.tolist(), strict=True))


def test_leave_one_out_takes_last_by_time_and_one_random_dev(data: Interactions) -> None:
    s = leave_one_out(data, seed=3)
    assert len(s.test) == len(s.valid) == data.n_users
    assert len(s.train) + len(s.valid) + len(s.test) == len(data)
    assert not (_pairs(s.train) & _pairs(s.test)) and not (_pairs(s.train) & _pairs(s.valid))
    last = data.df.sort_values("timestamp").groupby("user").tail(1)
    assert _pairs(s.test) == set(zip(last["user"], last["item"], strict=True))
    # deterministic by seed, different across seeds
    assert _pairs(leave_one_out(data, seed=3).valid) == _pairs(s.valid)
    assert _pairs(leave_one_out(data, seed=4).valid) != _pairs(s.valid)


def test_leave_one_out_short_users() -> None:
    df = pd.DataFrame({"user": [1, 1, 1, 2, 2], "item": [1, 2, 3, 1, 2], "t": [1, 2, 3, 4, 5]})
    d = Interactions.from_frame(df, timestamp="t")
    with pytest.raises(DataError, match="user 2 has 2 interaction"):
        leave_one_out(d)
    dropped = leave_one_out(d, short="drop")
    assert set(dropped.test.users.tolist()) == {1} and 2 not in set(dropped.train.users.tolist())
    kept = leave_one_out(d, short="train")
    assert set(kept.test.users.tolist()) == {1} and 2 in set(kept.train.users.tolist())


def test_leave_one_out_random_without_time(frame: pd.DataFrame) -> None:
    d = Interactions.from_frame(frame)
    s = leave_one_out(d, seed=0)
    assert len(s.test) == d.n_users and s.params["by_time"] is False


def test_group_holdout_two_per_playlist() -> None:
    rng = np.random.default_rng(0)
    rows = [(f"u{p % 3}", f"p{p}", int(i)) for p in range(10) for i in rng.choice(50, 6, replace=False)]
    d = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "pl", "item"]), groups={"playlist": "pl"})
    s = group_holdout(d, group="playlist", seed=1)
    assert np.bincount(s.test.df["playlist"]).max() == 1 and len(s.test) == 10 and len(s.valid) == 10
    assert len(s.train) == len(d) - 20
    with pytest.raises(DataError, match="no 'basket' grouping"):
        group_holdout(d, group="basket")


def test_temporal_split_global_and_per_user(data: Interactions) -> None:
    s = temporal_split(data, (0.7, 0.1, 0.2))
    assert s.train.df["timestamp"].max() <= s.valid.df["timestamp"].min()
    assert s.valid.df["timestamp"].max() <= s.test.df["timestamp"].min()
    assert len(s.test) == round(0.2 * len(data)) or abs(len(s.test) - 0.2 * len(data)) <= 1
    p = temporal_split(data, (0.7, 0.1, 0.2), per_user=True)
    for u in range(1, data.n_users + 1):
        tr = p.train.df[p.train.df.user == u]["timestamp"].max()
        te = p.test.df[p.test.df.user == u]["timestamp"]
        assert te.empty or tr <= te.min()
    with pytest.raises(DataError, match="summing to 1"):
        temporal_split(data, (0.5, 0.1, 0.1))


def test_temporal_split_needs_time(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="no timestamp"):
        temporal_split(Interactions.from_frame(frame))


def test_random_split_is_seeded_partition(data: Interactions) -> None:
    a, b = random_split(data, seed=1), random_split(data, seed=1)
    assert _pairs(a.test) == _pairs(b.test)
    assert len(a.train) + len(a.valid) + len(a.test) == len(data)


# -- sampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dense_cells", [0, 10**9], ids=["sorted-keys", "bitmap"])
def test_negatives_never_hit_seen_items_or_padding(data: Interactions, dense_cells: int, monkeypatch) -> None:
    import segue.data.sampling as sampling

    monkeypatch.setattr(sampling, "_DENSE_CELLS", dense_cells)
    seen = data.to_csr()
    s = NegativeSampler(seen, seed=0)
    users = np.repeat(np.arange(1, data.n_users + 1), 50)
    negs = s.sample(users, 4)
    assert negs.shape == (len(users), 4) and negs.min() >= 1 and negs.max() <= data.n_items
    dense = seen.toarray() > 0
    assert not dense[users[:, None], negs].any()
    # uniform over the unseen items: every unseen item of user 1 is drawn about equally often
    u1 = s.sample(np.full(20000, 1), 1).ravel()
    counts = np.bincount(u1, minlength=data.n_items + 1)[~dense[1]][1:]
    assert counts.min() > 0.6 * counts.mean()


def test_negatives_are_seeded(data: Interactions) -> None:
    a = NegativeSampler(data.to_csr(), seed=5).sample(np.arange(1, 10), 3)
    b = NegativeSampler(data.to_csr(), seed=5).sample(np.arange(1, 10), 3)
    assert np.array_equal(a, b)


def test_popularity_sampling_prefers_popular_items(data: Interactions) -> None:
    pop = np.zeros(data.n_items + 1)
    pop[1:] = 1.0
    pop[-1] = 1000.0
    s = NegativeSampler(sp.csr_matrix(data.shape), seed=0, popularity=pop)
    draws = s.sample(np.ones(2000, dtype=int), 1).ravel()
    assert (draws == data.n_items).mean() > 0.8


@pytest.mark.parametrize("dense_cells", [0, 10**9], ids=["sorted-keys", "bitmap"])
def test_candidates_are_distinct_and_exclude_all_known(data: Interactions, dense_cells: int, monkeypatch) -> None:
    import segue.data.sampling as sampling

    monkeypatch.setattr(sampling, "_DENSE_CELLS", dense_cells)
    known = data.to_csr()
    users = np.arange(1, data.n_users + 1)
    c = sample_candidates(users, known, 20, seed=0)
    assert all(len(set(row)) == 20 for row in c.tolist())
    assert not (known.toarray() > 0)[users[:, None], c].any()
    assert np.array_equal(c, sample_candidates(users, known, 20, seed=0))


def test_sampling_too_many_negatives_is_a_clear_error(data: Interactions) -> None:
    with pytest.raises(DataError, match="fewer than 39 to sample"):
        sample_candidates(np.array([1]), data.to_csr(), 39)


def test_dense_user_falls_back_to_exact_sampling() -> None:
    # user 1 has seen all but 2 of 200 items: rejection would take many rounds
    items = np.arange(1, 199)
    df = pd.DataFrame({"user": 1, "item": np.r_[items, 199, 200]})
    d = Interactions.from_frame(pd.concat([df, pd.DataFrame({"user": [2, 2], "item": [199, 200]})]))
    seen = d.to_csr()
    seen[1, d.item_map.to_internal([199, 200])] = 0
    seen.eliminate_zeros()
    c = NegativeSampler(seen, seed=0).sample(np.array([1]), 2, distinct=True)
    assert set(d.item_map.to_raw(c[0]).tolist()) == {199, 200}


# -- sequences --------------------------------------------------------------------------------------


def test_history_windows_are_the_previous_items_left_padded() -> None:
    df = pd.DataFrame({"user": [1, 1, 1, 2, 2], "item": [10, 11, 12, 20, 21], "t": [3, 1, 2, 1, 2]})
    d = Interactions.from_frame(df, timestamp="t")
    w = history_windows(d, 2)
    raw = lambda row: [d.item_map.raw[i - 1] if i else 0 for i in row]  # noqa: E731
    # row order is the input order: (1,10,t=3) follows 11 (t=1) then 12 (t=2)
    assert raw(w[0]) == [11, 12]
    assert raw(w[1]) == [0, 0]
    assert raw(w[2]) == [0, 11]
    assert raw(w[3]) == [0, 0] and raw(w[4]) == [0, 20]
    last = last_items(d, d.user_map.to_internal([1, 2]), 3)
    assert [raw(r) for r in last] == [[11, 12, 10], [0, 20, 21]]
