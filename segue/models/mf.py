"""Matrix factorisation: MF-BPR (Rendle et al., UAI 2009) and WMF (Hu, Koren, Volinsky, ICDM 2008).

``mf-bpr``: score(u, i) = p_u . q_i (+ b_i), trained by the generic trainer with the BPR
loss -log sigma(s(u, i+) - s(u, i-)) and an L2 penalty lambda (|p_u|^2 + |q_i+|^2 +
|q_i-|^2) on the rows of the batch (the SDMR spec's A.9 form, extended to the negative
item as in Rendle's gradient).

``wmf``: implicit-feedback weighted MF fitted by alternating least squares through the
``implicit`` package (confidence 1 + alpha * r), exposed behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from segue.errors import ConfigError, DataError
from segue.models.base import Context, Measure, Recommender, register

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.models.base import Monitor


class _DotModel(Recommender):
    """Shared scoring of models whose score is a dot product of user and item vectors."""

    measure: ClassVar[Measure | None] = "dot"
    user_emb: nn.Embedding
    item_emb: nn.Embedding

    def _item_bias(self) -> Tensor | None:
        return None

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        u = self.user_emb(users)  # (B, d)
        v = self.item_emb(items)  # (B, C, d)
        # a broadcast product, not einsum: einsum runs B tiny (1 x d)(d x C) matmuls, ~2x slower on CPU
        s = (u.unsqueeze(1) * v).sum(-1)
        b = self._item_bias()
        return s if b is None else s + b[items]

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        s = self.user_emb(users) @ self.item_emb.weight.T
        b = self._item_bias()
        if b is not None:
            s = s + b[None, :]
        s[:, 0] = float("-inf")
        return s

    def item_vectors(self) -> Tensor:
        v = self.item_emb.weight.detach()
        b = self._item_bias()
        return v if b is None else torch.cat([v, b.detach()[:, None]], dim=1)

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        u = self.user_emb(users).detach()
        return u if self._item_bias() is None else torch.cat([u, torch.ones(len(u), 1, device=u.device)], dim=1)


@register
class MFBPR(_DotModel):
    """Matrix factorisation trained with BPR (see module docstring).

    Defaults were chosen by dev HR@10 / NDCG@10 on the ml-100k leave-one-out protocol (never on
    test); the search and its results are in docs/results/foundation-baselines.md. The optimizer and learning
    rate were chosen later, on the same dev set, for the time to reach a given dev HR@10 (below).
    """

    name: ClassVar[str] = "mf-bpr"
    # one torch thread: on 2 shared cores, 2 threads made this model 10x slower (docs/results/foundation-baselines.md)
    # Adagrad at lr 0.2 (was Adam at 0.01, chosen on ml-100k dev): dev HR@10 0.756 after 2 epochs instead of 5;
    # best dev HR@10 -0.004, NDCG@10 -0.001 (mean of 5 seeds, seed sd 0.005; benchmarks/bench_mf_convergence.py).
    # Dense Adagrad, not sparse-adagrad (the same numbers): a 4096 x 5 batch touches almost every item row.
    train_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adagrad",
        "lr": 0.2,
        "batch_size": 4096,
        "n_negatives": 4,
        "epochs": 100,
        "threads": 1,
    }

    @dataclass
    class Config:
        dim: int = 64
        reg: float = 0.005
        init_std: float = 0.1
        item_bias: bool = False

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.reg < 0 or c.init_std <= 0:
            raise ConfigError(f"mf-bpr needs dim >= 1, reg >= 0 and init_std > 0, got {c}.")
        self.user_emb = nn.Embedding(n_users + 1, c.dim, padding_idx=0)
        self.item_emb = nn.Embedding(n_items + 1, c.dim, padding_idx=0)
        nn.init.normal_(self.user_emb.weight, std=c.init_std)
        nn.init.normal_(self.item_emb.weight, std=c.init_std)
        with torch.no_grad():
            self.user_emb.weight[0].zero_()
            self.item_emb.weight[0].zero_()
        self.bias = nn.Parameter(torch.zeros(n_items + 1)) if c.item_bias else None

    def _item_bias(self) -> Tensor | None:
        return self.bias

    def sparse_tables(self) -> tuple[str, ...]:
        """Embedding tables read only by row in training: the sparse optimizers update just the rows of a batch."""
        return ("user_emb.weight", "item_emb.weight")

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if self.config.reg == 0:
            return torch.zeros((), device=users.device)
        u = self.user_emb(users)
        v = self.item_emb(items)
        return self.config.reg * (u.pow(2).sum() + v.pow(2).sum()) / users.shape[0]


@register
class WMF(_DotModel):
    """Weighted matrix factorisation by ALS, fitted with the ``implicit`` package.

    Confidence is ``1 + alpha * r`` with ``r`` the interaction weight (1 for binary data,
    the play count or rating where the table has a ``weight`` column and ``use_weights``).
    """

    name: ClassVar[str] = "wmf"
    trainable: ClassVar[bool] = False

    @dataclass
    class Config:
        factors: int = 64
        regularization: float = 0.01
        alpha: float = 1.0
        iterations: int = 15
        use_weights: bool = False
        seed: int = 0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.factors < 1 or c.iterations < 1 or c.regularization < 0 or c.alpha <= 0:
            raise ConfigError(f"wmf needs factors >= 1, iterations >= 1, regularization >= 0 and alpha > 0, got {c}.")
        self.user_emb = nn.Embedding(n_users + 1, c.factors)
        self.item_emb = nn.Embedding(n_items + 1, c.factors)
        self.user_emb.weight.requires_grad_(False)
        self.item_emb.weight.requires_grad_(False)

    def fit(self, train: Interactions, monitor: Monitor | None = None, **extras: Any) -> None:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError("wmf needs the 'implicit' package: pip install 'segue[peers]'.") from e
        from segue.models.baselines import _check_train

        _check_train(self, train)
        c = self.config
        x = train.to_csr("weight" if (c.use_weights and train.has_weight) else None)
        if (x.data < 0).any():
            raise DataError("wmf needs non-negative interaction weights.")
        import warnings

        import threadpoolctl

        # implicit's own threads do the work; a second BLAS thread pool only slows it down
        with threadpoolctl.threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*BLAS is configured to use")
            model = AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=c.alpha,
                iterations=c.iterations,
                random_state=c.seed,
                calculate_training_loss=False,
            )
            model.fit(x.tocsr().astype(np.float32), show_progress=False)
        with torch.no_grad():
            self.user_emb.weight.copy_(torch.as_tensor(np.asarray(model.user_factors)))
            self.item_emb.weight.copy_(torch.as_tensor(np.asarray(model.item_factors)))
        self.fitted = True
