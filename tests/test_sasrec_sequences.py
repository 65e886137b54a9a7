"""Per-sequence SASRec training: sequence rows, per-position negatives and SASRec.loss (batch kind "sequences")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from segue.data.batch import SequenceBatch
from segue.data.interactions import Interactions
from segue.data.sampling import NegativeSampler
from segue.data.sequences import history_windows, last_items, sequence_negatives, sequence_rows
from segue.errors import DataError
from segue.models.base import Context, build_model
from segue.models.losses import LossSpec, get_loss

N_USERS, N_ITEMS = 6, 25


@pytest.fixture(autouse=True)
def _flush_denormals():
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def _table() -> Interactions:
    # user a: 3 (t1), 5 (t3), 7 (t3, after 5 in file order), 1 (t5); user b: 2, 6, 8; user c: one item
    frame = pd.DataFrame(
        {
            "user": ["a", "b", "a", "c", "a", "b", "a", "b"],
            "item": [10, 11, 12, 13, 14, 15, 16, 17],
            "ts": [5, 1, 1, 1, 3, 2, 3, 9],
        }
    )
    return Interactions.from_frame(frame, timestamp="ts")


def test_sequence_rows_hand_built() -> None:
    data = _table()
    assert data.items.tolist() == [1, 2, 3, 4, 5, 6, 7, 8] and data.users.tolist() == [1, 2, 1, 3, 1, 2, 1, 2]
    users, inputs, targets = sequence_rows(data, 5)
    assert users.tolist() == [1, 2]  # user 3 has a single item: no row
    assert inputs.tolist() == [[0, 0, 3, 5, 7], [0, 0, 0, 2, 6]]
    assert targets.tolist() == [[0, 0, 5, 7, 1], [0, 0, 0, 6, 8]]
    assert inputs.dtype == targets.dtype == users.dtype == np.int64
    users, inputs, targets = sequence_rows(data, 2)  # the most recent positions only
    assert users.tolist() == [1, 2]
    assert inputs.tolist() == [[5, 7], [2, 6]]
    assert targets.tolist() == [[7, 1], [6, 8]]
    with pytest.raises(DataError, match="max_len"):
        sequence_rows(data, 0)


def test_sequence_rows_agree_with_history_windows(data: Interactions) -> None:
    L = 5
    users, inputs, targets = sequence_rows(data, L)
    windows = history_windows(data, L)
    row_of = {(u, i): r for r, (u, i) in enumerate(zip(data.users.tolist(), data.items.tolist(), strict=True))}
    for r, u in enumerate(users.tolist()):
        for j in np.flatnonzero(targets[r]).tolist():
            w = windows[row_of[(u, int(targets[r, j]))]]
            assert w[L - 1 - j :].tolist() == inputs[r, : j + 1].tolist()  # the inputs up to j are the window


def test_negatives_never_hit_the_users_items(data: Interactions) -> None:
    users, _, targets = sequence_rows(data, 10)
    sampler = NegativeSampler(data.to_csr(), seed=0)
    negs = sequence_negatives(sampler, users, targets, 3)
    assert negs.shape == (*targets.shape, 3)
    seen = data.to_csr().toarray() != 0
    real = targets != 0
    assert (negs[real] >= 1).all() and (negs[~real] == 0).all()
    assert not seen[np.broadcast_to(users[:, None, None], negs.shape)[real], negs[real]].any()
    assert len(np.unique(negs[real])) > 10  # draws spread over the unseen items


def _model(**extra: object):
    torch.manual_seed(0)
    return build_model("sasrec", N_USERS, N_ITEMS, {"dim": 8, "max_len": 10, "dropout": 0.2, **extra}).eval()


def _batch(n_neg: int = 2, L: int = 10) -> SequenceBatch:
    g = torch.Generator().manual_seed(5)
    users = torch.tensor([1, 2, 3, 6])
    seq = torch.randint(1, N_ITEMS + 1, (4, L + 1), generator=g)
    lengths = [L + 1, 5, 2, 8]  # row 2: a single target; every other row is left-padded
    for r, n in enumerate(lengths):
        seq[r, : L + 1 - n] = 0
    inputs, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
    inputs[targets == 0] = 0
    negs = torch.randint(1, N_ITEMS + 1, (4, L, n_neg), generator=g) * (targets != 0)[..., None]
    return SequenceBatch(users, inputs, targets, negs)


@pytest.mark.parametrize("loss_name", ["bce", "bpr"])
def test_last_position_loss_equals_the_window_loss_through_score(loss_name: str) -> None:
    m = _model(reg=0.01)
    assert m.batch_kind == "sequences"
    b = _batch()
    last = torch.zeros_like(b.targets)
    last[:, -1] = b.targets[:, -1]
    only_last = SequenceBatch(b.users, b.inputs, last, b.negatives)
    # the generic trainer's row: the window that ends at the last input, scored through score()
    cand = torch.cat([b.targets[:, -1:], b.negatives[:, -1]], 1)
    scores = m.score(b.users, cand, Context(history=b.inputs))
    window = get_loss(loss_name)(scores[:, :1], scores[:, 1:]) + m.regularization(b.users, cand)
    assert torch.allclose(m.loss(only_last, LossSpec(loss_name)), window, atol=1e-6)


def test_per_position_loss_is_the_mean_over_real_targets() -> None:
    m = _model()
    b = _batch(n_neg=1)
    h = m.ln_out(m.encode(b.inputs))
    pos = (h * m.item_emb(b.targets)).sum(-1)
    neg = (h * m.item_emb(b.negatives[..., 0])).sum(-1)
    per = 0.5 * (torch.nn.functional.softplus(-pos) + torch.nn.functional.softplus(neg))  # bce over [pos, neg]
    real = b.targets != 0
    assert torch.allclose(m.loss(b, LossSpec("bce")), per[real].mean(), atol=1e-6)


def test_trimming_leading_padding_columns_changes_nothing() -> None:
    # positions count from the end: a row of L < max_len equals the same row left-padded to max_len
    m = _model(max_len=16)
    b = _batch()
    wide = SequenceBatch(
        b.users,
        torch.nn.functional.pad(b.inputs, (6, 0)),
        torch.nn.functional.pad(b.targets, (6, 0)),
        torch.nn.functional.pad(b.negatives, (0, 0, 6, 0)),
    )
    assert torch.allclose(m.loss(b, LossSpec("bce")), m.loss(wide, LossSpec("bce")), atol=1e-6)


def test_padding_positions_contribute_nothing() -> None:
    m = _model()
    b = _batch()
    pad = b.targets == 0
    assert pad.any() and (b.negatives[pad] == 0).all()
    # make item N_ITEMS appear nowhere, then name it at every padded position's negatives
    inputs, targets, negs = (torch.where(t == N_ITEMS, 1, t) for t in (b.inputs, b.targets, b.negatives))
    base = SequenceBatch(b.users, inputs, targets, negs)
    other = negs.clone()
    other[pad] = N_ITEMS
    changed = SequenceBatch(b.users, inputs, targets, other)
    assert torch.equal(m.loss(base, LossSpec("bce")), m.loss(changed, LossSpec("bce")))
    assert torch.equal(m.loss(base, LossSpec("bpr")), m.loss(changed, LossSpec("bpr")))
    m.zero_grad()
    m.loss(changed, LossSpec("bce")).backward()
    assert torch.equal(m.item_emb.weight.grad[N_ITEMS], torch.zeros(8))  # no gradient reaches it


@pytest.mark.parametrize("train", [False, True])
def test_no_nan_with_heavy_padding(train: bool) -> None:
    m = _model(max_len=50, n_blocks=2)
    m.train(train)
    L = 50
    inputs = torch.zeros(3, L, dtype=torch.long)
    targets = torch.zeros(3, L, dtype=torch.long)
    inputs[:, -1], targets[:, -1] = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])  # one target per row
    inputs[2, -3:-1], targets[2, -3:-1] = torch.tensor([7, 8]), torch.tensor([8, 3])
    negs = torch.where(targets != 0, 9, 0)[..., None]
    b = SequenceBatch(torch.tensor([1, 2, 3]), inputs, targets, negs)
    out = m.encode(inputs)
    assert torch.isfinite(out).all() and torch.equal(out[:, :-3], torch.zeros_like(out[:, :-3]))
    loss = m.loss(b, LossSpec("bce"))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_bad_sequence_batches() -> None:
    m = _model()
    b = _batch()
    with pytest.raises(DataError, match="no target"):
        m.loss(SequenceBatch(b.users, b.inputs, torch.zeros_like(b.targets), b.negatives), LossSpec("bce"))
    with pytest.raises(DataError, match="max_len"):
        m.loss(_batch(L=12), LossSpec("bce"))
    with pytest.raises(DataError, match="item ids"):
        m.loss(SequenceBatch(b.users, b.inputs, b.targets, b.negatives + N_ITEMS), LossSpec("bce"))
    with pytest.raises(DataError, match="negatives"):
        m.loss(SequenceBatch(b.users, b.inputs, b.targets, b.negatives[:, :, 0]), LossSpec("bce"))


def test_sequence_training_learns_a_successor_pattern() -> None:
    # every user walks the catalogue in order from a random start: the next item is always i + 1
    rng = np.random.default_rng(0)
    rows, held_out = [], {}
    for u in range(40):
        start = int(rng.integers(1, 18))
        rows += [(u, start + k, k) for k in range(11)]
        held_out[u] = start + 11
    rows.append((99, 29, 0))  # items 28 and 29 occur in training
    rows.append((99, 28, 1))
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "ts"]), timestamp="ts")
    torch.manual_seed(0)
    m = build_model("sasrec", data.n_users, data.n_items, {"dim": 16, "max_len": 12, "n_blocks": 1, "dropout": 0.1})
    users, inputs, targets = sequence_rows(data, 12)
    sampler = NegativeSampler(data.to_csr(), seed=0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for _ in range(60):
        negs = sequence_negatives(sampler, users, targets, 1)
        loss = m.loss(SequenceBatch(*map(torch.as_tensor, (users, inputs, targets, negs))), LossSpec("bce"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    # each user's next (held-out) item, ranked against every item the user has not consumed
    test_users = data.user_map.to_internal(list(held_out))
    hist = torch.as_tensor(last_items(data, test_users, 12))
    ids, _ = m.recommend(test_users, 1, Context(history=hist), exclude=data.to_csr())
    truth = data.item_map.to_internal(list(held_out.values()))
    assert (ids[:, 0].numpy() == truth).mean() > 0.8
