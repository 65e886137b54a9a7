"""General-task baselines of the SDMR table (spec A.9): CML and NeuMF (GMF + MLP, with pre-training).

``cml`` (Hsieh et al., WWW'17)
    ``score = -|u - v|^2`` with user and item vectors kept inside the unit ball (the CML
    paper's norm clipping, applied at lookup). As in the SDMR comparison (spec A.9) it is
    trained with BPR, ``-log sigma(|u - v-|^2 - |u - v+|^2)``, instead of CML's WARP hinge;
    the CML covariance regulariser is available as ``cov_reg`` (off by default).
``gmf``, ``mlp``, ``neumf`` (He et al., WWW'17, "Neural Collaborative Filtering")
    GMF ``h . (p_u * q_i)``; MLP a ReLU tower over ``[p_u; q_i]`` whose widths halve down to
    ``factors`` (the paper's "predictive factors"; ``layers`` hidden layers, embedding size
    ``factors * 2**(layers - 1)`` each); NeuMF concatenates the two last layers into
    ``h``. Scores are logits; NCF's pointwise log loss is the trainer's ``loss="bce"``.
    ``neumf`` with ``pretrain=True`` (NeuMF++ in the SDMR table) first trains GMF and MLP
    with the given training config, copies their weights, sets
    ``h = [alpha h_GMF; (1 - alpha) h_MLP]`` (alpha = 0.5) and fine-tunes with vanilla SGD
    (the NCF paper's choice after pre-training; ``finetune_optimizer``/``finetune_lr``).
    Initialisation N(0, 0.01) for embeddings, Xavier/LeCun for layers, as in NCF's code.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from segue.errors import ConfigError, DataError
from segue.models.base import Context, Measure, Recommender, register

if TYPE_CHECKING:
    from segue.data.interactions import Interactions


def _emb(n: int, dim: int, std: float, max_norm: float | None = None) -> nn.Embedding:
    e = nn.Embedding(n + 1, dim, padding_idx=0, max_norm=max_norm)
    nn.init.normal_(e.weight, std=std)
    with torch.no_grad():
        e.weight[0].zero_()
    return e


def _check(model: Recommender, users: Tensor, items: Tensor) -> None:
    if users.ndim != 1 or items.ndim != 2 or items.shape[0] != users.shape[0]:
        raise DataError(
            f"{model.name} scores users (B,) against items (B, C), got {tuple(users.shape)} and {tuple(items.shape)}."
        )


@register
class CML(Recommender):
    """Collaborative metric learning trained with BPR (see module docstring)."""

    name: ClassVar[str] = "cml"
    measure: ClassVar[Measure | None] = "l2"

    @dataclass
    class Config:
        dim: int = 64
        init_std: float = 0.1
        max_norm: float = 1.0  # unit-ball clipping of CML; 0 disables it
        reg: float = 0.0
        cov_reg: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.init_std <= 0 or c.max_norm < 0 or c.reg < 0 or c.cov_reg < 0:
            raise ConfigError(f"cml needs dim >= 1, init_std > 0 and non-negative norms/penalties, got {c}.")
        mn = c.max_norm or None
        self.user_emb = _emb(n_users, c.dim, c.init_std, mn)
        self.item_emb = _emb(n_items, c.dim, c.init_std, mn)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check(self, users, items)
        u = self.user_emb(users)[:, None, :]
        v = self.item_emb(items)
        return -(u - v).square().sum(-1)

    def _items_in_ball(self) -> Tensor:
        """Every item row as a lookup sees it: clipped to ``max_norm`` as ``nn.Embedding(max_norm)``
        does in place (the same formula), without changing the stored weights."""
        v = self.item_emb.weight
        mn = self.config.max_norm
        if not mn:
            return v
        norm = v.norm(dim=1, keepdim=True)
        return torch.where(norm > mn, v * (mn / (norm + 1e-7)), v)

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        u = self.user_emb(users)
        v = self._items_in_ball()
        s = -(u.square().sum(1, keepdim=True) - 2 * u @ v.T + v.square().sum(1)[None, :])
        s[:, 0] = float("-inf")
        return s

    def item_vectors(self) -> Tensor:
        return self._items_in_ball().detach()

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        return self.user_emb(users).detach()

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        c = self.config
        out = torch.zeros((), device=users.device)
        if c.reg:
            out = out + c.reg * (self.user_emb(users).pow(2).sum() + self.item_emb(items).pow(2).sum()) / len(users)
        if c.cov_reg:
            y = torch.cat([self.user_emb(users), self.item_emb(items.reshape(-1))])
            y = y - y.mean(0, keepdim=True)
            cov = y.T @ y / len(y)
            out = out + c.cov_reg * (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / len(y)
        return out


class _NCF(Recommender):
    """Shared parts of GMF, MLP and NeuMF: logits over (user, item) pairs."""

    def _gmf(self, users: Tensor, items: Tensor) -> Tensor:
        return self.gmf_user(users)[:, None, :] * self.gmf_item(items)

    def _mlp(self, users: Tensor, items: Tensor) -> Tensor:
        v = self.mlp_item(items)
        u = self.mlp_user(users)[:, None, :].expand(-1, v.shape[1], -1)
        x = torch.cat([u, v], dim=-1)
        for layer in self.tower:
            x = torch.relu(layer(x))
        return x

    def _build_gmf(self, n_users: int, n_items: int, factors: int, std: float) -> None:
        self.gmf_user = _emb(n_users, factors, std)
        self.gmf_item = _emb(n_items, factors, std)

    def _build_mlp(self, n_users: int, n_items: int, factors: int, layers: int, std: float) -> None:
        width = factors * 2**layers  # input of the tower: [p; q]
        self.mlp_user = _emb(n_users, width // 2, std)
        self.mlp_item = _emb(n_items, width // 2, std)
        sizes = [width // 2**i for i in range(layers + 1)]
        self.tower = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        for layer in self.tower:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _ncf_reg(self, users: Tensor, items: Tensor, tables: list[tuple[nn.Embedding, nn.Embedding]]) -> Tensor:
        reg = self.config.reg
        out = torch.zeros((), device=users.device)
        if reg:
            for tu, ti in tables:
                out = out + reg * (tu(users).pow(2).sum() + ti(items).pow(2).sum()) / len(users)
        return out


def _ncf_checks(name: str, c: Any) -> None:
    if c.factors < 1 or getattr(c, "layers", 1) < 1 or c.init_std <= 0 or c.reg < 0:
        raise ConfigError(f"{name} needs factors >= 1, layers >= 1, init_std > 0 and reg >= 0, got {c}.")


def _output_layer(width: int) -> nn.Linear:
    """NCF's prediction layer h: width -> 1, LeCun-uniform weights and a zero bias."""
    h = nn.Linear(width, 1)
    nn.init.uniform_(h.weight, -math.sqrt(3 / width), math.sqrt(3 / width))
    nn.init.zeros_(h.bias)
    return h


@register
class GMF(_NCF):
    """Generalized matrix factorisation: ``h . (p_u * q_i)`` (NCF, Eq. 9)."""

    name: ClassVar[str] = "gmf"

    @dataclass
    class Config:
        factors: int = 16
        init_std: float = 0.01
        reg: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        _ncf_checks(self.name, c)
        self._build_gmf(n_users, n_items, c.factors, c.init_std)
        self.h = _output_layer(c.factors)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check(self, users, items)
        return self.h(self._gmf(users, items)).squeeze(-1)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        return self._ncf_reg(users, items, [(self.gmf_user, self.gmf_item)])


@register
class MLP(_NCF):
    """NCF's multi-layer perceptron over ``[p_u; q_i]`` with a halving ReLU tower (NCF, Eq. 10)."""

    name: ClassVar[str] = "mlp"

    @dataclass
    class Config:
        factors: int = 16  # width of the last hidden layer
        layers: int = 3
        init_std: float = 0.01
        reg: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        _ncf_checks(self.name, c)
        self._build_mlp(n_users, n_items, c.factors, c.layers, c.init_std)
        self.h = _output_layer(c.factors)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check(self, users, items)
        return self.h(self._mlp(users, items)).squeeze(-1)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        return self._ncf_reg(users, items, [(self.mlp_user, self.mlp_item)])


@register
class NeuMF(_NCF):
    """GMF and MLP fused in one output layer; ``pretrain`` gives NeuMF++ (see module docstring)."""

    name: ClassVar[str] = "neumf"
    train_defaults: ClassVar[dict[str, Any]] = {"loss": "bce", "n_negatives": 4}

    @dataclass
    class Config:
        factors: int = 16
        layers: int = 3
        init_std: float = 0.01
        reg: float = 0.0
        pretrain: bool = True
        alpha: float = 0.5
        finetune_optimizer: str = "sgd"
        finetune_lr: float = 1e-3

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        _ncf_checks(self.name, c)
        if not 0 <= c.alpha <= 1:
            raise ConfigError(f"neumf alpha must lie in [0, 1], got {c.alpha}.")
        self._build_gmf(n_users, n_items, c.factors, c.init_std)
        self._build_mlp(n_users, n_items, c.factors, c.layers, c.init_std)
        self.h = _output_layer(2 * c.factors)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check(self, users, items)
        x = torch.cat([self._gmf(users, items), self._mlp(users, items)], dim=-1)
        return self.h(x).squeeze(-1)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        return self._ncf_reg(users, items, [(self.gmf_user, self.gmf_item), (self.mlp_user, self.mlp_item)])

    def load_parts(self, gmf: GMF, mlp: MLP) -> None:
        """Copy pre-trained GMF and MLP weights in and set ``h = [alpha h_GMF; (1 - alpha) h_MLP]``."""
        c = self.config
        if gmf.config.factors != c.factors or mlp.config.factors != c.factors or mlp.config.layers != c.layers:
            raise ConfigError("The pre-trained GMF/MLP sizes do not match this NeuMF's factors and layers.")
        with torch.no_grad():
            self.gmf_user.weight.copy_(gmf.gmf_user.weight)
            self.gmf_item.weight.copy_(gmf.gmf_item.weight)
            self.mlp_user.weight.copy_(mlp.mlp_user.weight)
            self.mlp_item.weight.copy_(mlp.mlp_item.weight)
            for dst, src in zip(self.tower, mlp.tower, strict=True):
                dst.load_state_dict(src.state_dict())
            self.h.weight.copy_(torch.cat([c.alpha * gmf.h.weight, (1 - c.alpha) * mlp.h.weight], dim=1))
            self.h.bias.copy_(c.alpha * gmf.h.bias + (1 - c.alpha) * mlp.h.bias)

    def parts(self) -> dict[str, Recommender]:
        """NeuMF++: GMF and MLP of the same sizes, pre-trained with the same options."""
        c = self.config
        if not c.pretrain:
            return {}
        gmf = GMF(self.n_users, self.n_items, GMF.Config(factors=c.factors, init_std=c.init_std, reg=c.reg))
        mlp = MLP(
            self.n_users, self.n_items, MLP.Config(factors=c.factors, layers=c.layers, init_std=c.init_std, reg=c.reg)
        )
        return {"gmf": gmf, "mlp": mlp}

    def assemble(
        self, train: Interactions, parts: dict[str, Recommender], *, seed: int = 0, context: str = "history"
    ) -> None:
        if parts:
            self.load_parts(parts["gmf"], parts["mlp"])  # type: ignore[arg-type]

    def final_stage_options(self) -> dict[str, Any]:
        """NeuMF++ fine-tunes the fused model with its own optimizer and learning rate."""
        c = self.config
        return {"optimizer": c.finetune_optimizer, "lr": c.finetune_lr} if c.pretrain else {}
