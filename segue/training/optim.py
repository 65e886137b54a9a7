"""Optimizers of the generic trainer, built by name.

``adam``, ``adagrad`` and ``sgd`` update every parameter densely, as ``torch.optim`` does;
``adam`` and ``adagrad`` use torch's fused kernels where they exist (one pass over each
tensor instead of one per elementary operation: 2-5x less optimizer time per step on CPU,
benchmarks/bench_optim_steps.py; the same updates up to float rounding).

``sparse-adam`` and ``sparse-adagrad`` make the cost of a step follow the rows a batch
touches instead of the size of the embedding tables. A model opts in by listing its
tables in :meth:`sparse_tables` (parameter names, each the ``weight`` of an
:class:`~torch.nn.Embedding`); these optimizers switch those embeddings to sparse
gradients (the dense names switch them back) and update only the rows present in a
batch: the moments (Adam) or the squared-gradient sums (Adagrad) of the other rows are
left as they are, and so is their weight decay ("lazy" updates, as in TensorFlow's
LazyAdam). Parameters with dense gradients (the rest of the model, or a table a model
reads densely) get the ordinary dense update, so a model without :meth:`sparse_tables`
trains as with the dense optimizer of the same name. Lazy Adam is not dense Adam: a row
missing from a batch keeps its moments instead of decaying them and takes no step; a
row present in every batch follows dense Adam exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from segue.errors import ConfigError

#: Names accepted by :func:`make_optimizer` (and by ``TrainConfig.optimizer``).
OPTIMIZERS: tuple[str, ...] = ("adam", "adagrad", "sgd", "sparse-adam", "sparse-adagrad")
SPARSE_OPTIMIZERS: frozenset[str] = frozenset({"sparse-adam", "sparse-adagrad"})


def make_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.0, nesterov: bool = False
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over the trainable parameters of ``model`` (see module docstring)."""
    check_name(name)
    tables = sparse_embeddings(model)
    for emb in tables:
        emb.sparse = name in SPARSE_OPTIMIZERS
    params = [p for p in model.parameters() if p.requires_grad]
    return optimizer_for_params(name, params, lr, weight_decay, momentum, nesterov)


def optimizer_for_params(
    name: str, params: Iterable[Tensor], lr: float, weight_decay: float, momentum: float = 0.0, nesterov: bool = False
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params``; sparse names update sparse gradients lazily, dense ones densely.

    ``momentum`` and ``nesterov`` apply to ``sgd`` only; other optimizers refuse them.
    """
    check_name(name)
    if (momentum or nesterov) and name != "sgd":
        raise ConfigError(f"momentum and nesterov apply to the sgd optimizer only, not {name!r}.")
    params = list(params)
    if name in ("adam", "sparse-adam"):
        fused = bool(params) and all(_fusable(p) for p in params)
        cls = LazyAdam if name == "sparse-adam" else torch.optim.Adam
        return cls(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if name in ("adagrad", "sparse-adagrad"):
        fused = bool(params) and all(_fusable(p, ("cpu",)) for p in params)  # torch fuses Adagrad on CPU only
        cls = LazyAdagrad if name == "sparse-adagrad" else torch.optim.Adagrad
        return cls(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)


def check_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}.")


def sparse_embeddings(model: nn.Module) -> list[nn.Embedding]:
    """The embeddings whose weights ``model.sparse_tables()`` names (none when it has no such method)."""
    names = model.sparse_tables() if hasattr(model, "sparse_tables") else ()
    out = []
    for pname in names:
        owner, _, attr = pname.rpartition(".")
        try:
            emb = model.get_submodule(owner)
        except AttributeError:
            emb = None
        if not isinstance(emb, nn.Embedding) or attr != "weight":
            raise ConfigError(f"sparse_tables() names {pname!r}, which is not the weight of an nn.Embedding.")
        out.append(emb)
    return out


def _fusable(p: Tensor, devices: tuple[str, ...] = ("cpu", "cuda")) -> bool:
    return p.is_floating_point() and p.device.type in devices


def _touched(p: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """Row indices (unique) and gradient rows of a sparse (COO, dim 0 sparse) gradient of ``p``."""
    if grad.sparse_dim() != 1:
        raise ConfigError(f"Lazy optimizers need row-sparse gradients, got {grad.sparse_dim()} sparse dimensions.")
    grad = grad.coalesce()
    return grad.indices()[0], grad.values()


def _swap_sparse_grads(opt: torch.optim.Optimizer) -> list[tuple[Tensor, Tensor, dict]]:
    """Detach the sparse gradients (the dense optimizer must not see them); put back by :func:`_restore`."""
    hidden = []
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.is_sparse:
                hidden.append((p, p.grad, group))
                p.grad = None
    return hidden


def _restore(hidden: list[tuple[Tensor, Tensor, dict]]) -> None:
    for p, g, _ in hidden:
        p.grad = g


class _LazyStep:
    """The step of the lazy optimizers: sparse gradients update their rows, the rest the parent's way."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hidden = _swap_sparse_grads(self)  # type: ignore[arg-type]
        try:
            for p, g, group in hidden:
                self._lazy_update(p, g, group)  # type: ignore[attr-defined]
            super().step()  # type: ignore[misc]
        finally:
            _restore(hidden)
        return loss


class LazyAdam(_LazyStep, torch.optim.Adam):
    """Adam whose sparse gradients update only the rows they touch (see module docstring).

    Dense gradients take :class:`torch.optim.Adam`'s own (fused where asked) update; for a
    sparse one, weight decay (L2 added to the gradient, or AdamW's decoupled form) applies
    to the touched rows only. The state layout is Adam's.
    """

    def __init__(self, params, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, *args, **kwargs)
        if any(g["amsgrad"] or g["differentiable"] or g["capturable"] for g in self.param_groups):
            raise ConfigError("sparse-adam supports neither amsgrad, differentiable nor capturable.")

    def _lazy_update(self, p: Tensor, grad: Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            fused = bool(group["fused"])
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device) if fused else torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        idx, g = _touched(p, grad)
        if idx.numel() == 0:
            return
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            g = -g
        rows = p.index_select(0, idx)
        if wd and group["decoupled_weight_decay"]:
            rows.mul_(1 - lr * wd)
        elif wd:
            g = g.add(rows, alpha=wd)
        state["step"] += 1
        t = float(state["step"])
        m = state["exp_avg"].index_select(0, idx).lerp_(g, 1 - beta1)
        v = state["exp_avg_sq"].index_select(0, idx).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        state["exp_avg"].index_copy_(0, idx, m)
        state["exp_avg_sq"].index_copy_(0, idx, v)
        # Adam's own form: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
        denom = v.sqrt_().div_(math.sqrt(1 - beta2**t)).add_(eps)
        rows.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
        p.index_copy_(0, idx, rows)


class LazyAdagrad(_LazyStep, torch.optim.Adagrad):
    """Adagrad whose sparse gradients update only the rows they touch, weight decay included."""

    def _lazy_update(self, p: Tensor, grad: Tensor, group: dict) -> None:
        state = self.state[p]  # Adagrad fills it at construction
        idx, g = _touched(p, grad)
        if idx.numel() == 0:
            return
        if group["maximize"]:
            g = -g
        rows = p.index_select(0, idx)
        if group["weight_decay"]:
            g = g.add(rows, alpha=group["weight_decay"])
        state["step"] += 1
        clr = group["lr"] / (1 + (float(state["step"]) - 1) * group["lr_decay"])
        s = state["sum"].index_select(0, idx).addcmul_(g, g)
        state["sum"].index_copy_(0, idx, s)
        rows.addcdiv_(g, s.sqrt_().add_(group["eps"]), value=-clr)
        p.index_copy_(0, idx, rows)
