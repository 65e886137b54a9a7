"""Optimizers built by name (segue.training.optim): dense and lazy (row-sparse) updates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segue.data.interactions import Interactions
from segue.data.splits import leave_one_out
from segue.errors import ConfigError
from segue.models.base import build_model
from segue.training import fit
from segue.training.optim import OPTIMIZERS, SPARSE_OPTIMIZERS, LazyAdam, make_optimizer
from segue.training.trainer import TrainConfig


class Toy(nn.Module):
    """An embedding table (offered for sparse updates) and a dense layer."""

    def __init__(self, rows: int = 20, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(rows, dim)
        self.lin = nn.Linear(dim, 1)

    def sparse_tables(self) -> tuple[str, ...]:
        return ("emb.weight",)

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.lin(self.emb(ids)).squeeze(-1) - 1.0).pow(2).mean() + self.emb(ids).pow(2).sum() * 1e-3


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_every_optimizer_takes_a_step_that_lowers_a_toy_loss(name: str, weight_decay: float) -> None:
    model = Toy()
    ids = torch.tensor([1, 3, 3, 7])
    opt = make_optimizer(name, model, lr=0.01, weight_decay=weight_decay)
    before = model.loss(ids)
    opt.zero_grad(set_to_none=True)
    before.backward()
    assert model.emb.weight.grad.is_sparse == (name in SPARSE_OPTIMIZERS)
    opt.step()
    with torch.no_grad():
        assert model.loss(ids) < before


@pytest.mark.parametrize("name", sorted(SPARSE_OPTIMIZERS))
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sparse_step_changes_only_the_touched_rows(name: str, weight_decay: float) -> None:
    model = Toy()
    opt = make_optimizer(name, model, lr=0.05, weight_decay=weight_decay)
    for ids in (torch.tensor([0, 2, 5]), torch.tensor([1, 3, 3, 7])):  # a second step: state exists now
        before = model.emb.weight.detach().clone()
        lin_before = model.lin.weight.detach().clone()
        opt.zero_grad(set_to_none=True)
        model.loss(ids).backward()
        opt.step()
        after = model.emb.weight.detach()
        touched = torch.zeros(len(after), dtype=torch.bool)
        touched[ids] = True
        assert torch.equal(after[~touched], before[~touched])  # bit-identical
        assert (after[touched] != before[touched]).all(dim=1).all()
        assert not torch.equal(model.lin.weight, lin_before)  # the dense rest still learns


def test_dense_names_switch_the_tables_back_to_dense_gradients() -> None:
    model = Toy()
    make_optimizer("sparse-adam", model, 0.01, 0.0)
    assert model.emb.sparse
    make_optimizer("adam", model, 0.01, 0.0)
    assert not model.emb.sparse


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_lazy_adam_is_adam_when_every_row_is_in_every_batch(weight_decay: float) -> None:
    torch.manual_seed(0)
    dense = nn.Parameter(torch.randn(6, 3))
    lazy = nn.Parameter(dense.detach().clone())
    opt_dense = torch.optim.Adam([dense], lr=0.1, weight_decay=weight_decay)
    opt_lazy = LazyAdam([lazy], lr=0.1, weight_decay=weight_decay)
    for _ in range(4):
        ids = torch.randperm(6)
        for p, opt, sparse in ((dense, opt_dense, False), (lazy, opt_lazy, True)):
            opt.zero_grad(set_to_none=True)
            nn.functional.embedding(ids, p, sparse=sparse).pow(3).sum().backward()
            opt.step()
    torch.testing.assert_close(lazy, dense, rtol=0, atol=1e-6)


def test_an_unknown_optimizer_is_a_one_sentence_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        make_optimizer("adamw-9000", Toy(), 0.01, 0.0)
    msg = str(err.value)
    assert "adamw-9000" in msg and msg.endswith(".") and msg.count(". ") == 0
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        TrainConfig(optimizer="adamw-9000")


def test_sparse_tables_must_name_embedding_weights() -> None:
    class Bad(Toy):
        def sparse_tables(self) -> tuple[str, ...]:
            return ("lin.weight",)

    with pytest.raises(ConfigError, match=r"not the weight of an nn\.Embedding"):
        make_optimizer("sparse-adam", Bad(), 0.01, 0.0)


@pytest.mark.parametrize("name", ["sparse-adam", "sparse-adagrad"])
def test_mf_bpr_trains_with_sparse_updates(data: Interactions, name: str) -> None:
    split = leave_one_out(data, seed=0)
    m = build_model("mf-bpr", data.n_users, data.n_items, {"dim": 8})
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, optimizer=name, progress=False)
    hist = fit(m, split.train, None, cfg, log=None)
    assert hist.epochs[-1]["loss"] < hist.epochs[0]["loss"]
    assert torch.equal(m.item_emb.weight[0], torch.zeros(8))  # the padding row is never touched
