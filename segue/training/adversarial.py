"""One adversarial plug-in for APR (MASR paper, M.7) and QABPR (quaternion paper, B.6, Eqs. 5.39-5.41).

Per mini-batch, over the parameters the model declares (:meth:`Recommender.adversary_tables`)::

    g_P     = dL(Theta + delta_start) / d delta_P          (one backward pass)
    delta_P = eps * scale(P) * normalize(g_P)              (constant afterwards)
    L_total = L(Theta) + weight * L(Theta + delta)         (gradients reach Theta, not delta)

=================  =====================================  ======================================
option             APR (playlist models)                  QABPR (quaternion models)
=================  =====================================  ======================================
``adv_warm``       True: delta_start = the previous        False: delta_start = 0
                   batch's noise (M.7)
``adv_scale``      ``std``: the unbiased std of P          ``unit``: 1
``adv_norm``       ``row``: L2 per row of the stored       ``row`` per embedding row, or
                   tensor (1-D tensors: sign), or          ``tensor``: the whole table (Eq. 5.40)
                   ``tensor``
=================  =====================================  ======================================

Rows a batch does not touch have zero gradient and stay unperturbed. The perturbed loss is
evaluated with :func:`torch.func.functional_call`, so models need no adversarial code of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from segue.errors import ConfigError
from segue.models.losses import LossSpec


def normalize_grad(g: Tensor, how: str = "row") -> Tensor:
    """L2-normalise a gradient per row of the stored 2-D tensor (1-D tensors: sign) or globally; zero stays zero."""
    if how == "tensor":
        n = g.norm()
        return g / n if n > 0 else torch.zeros_like(g)
    if g.dim() <= 1:
        return torch.sign(g)
    flat = g.reshape(g.shape[0], -1)
    n = flat.norm(dim=1, keepdim=True)
    return torch.where(n > 0, flat / n.clamp_min(1e-30), torch.zeros_like(flat)).reshape(g.shape)


def adversarial_noise(
    grads: dict[str, Tensor], params: dict[str, Tensor], eps: float, how: str = "row", scale: str = "std"
) -> dict[str, Tensor]:
    """delta_P = eps * scale(P) * normalize(dL/dP) for each perturbed parameter (Eq. 4.33 / 5.40)."""
    out = {}
    for name, g in grads.items():
        if scale == "std":
            p = params[name].detach()
            s = p.std() if p.numel() > 1 else p.abs().reshape(())
        else:
            s = 1.0
        out[name] = (eps * s * normalize_grad(g.detach(), how)).detach()
    return out


class _LossCall(nn.Module):
    """Wraps a model so that ``functional_call`` can evaluate its ``loss`` at substituted parameters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, batch: Any, spec: LossSpec) -> Tensor:
        return self.m.loss(batch, spec)


@dataclass
class Adversary:
    """The adversarial term of the loss (see module docstring)."""

    names: list[str]
    eps: float = 1.0
    weight: float = 1.0
    norm: str = "row"
    scale: str = "std"
    warm: bool = True
    prev: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("An adversarial stage needs at least one parameter to perturb; the model declares none.")
        if self.norm not in ("row", "tensor"):
            raise ConfigError(f"adv_norm must be 'row' or 'tensor', got {self.norm!r}.")
        if self.scale not in ("std", "unit"):
            raise ConfigError(f"adv_scale must be 'std' or 'unit', got {self.scale!r}.")
        if self.eps < 0 or self.weight < 0:
            raise ConfigError(f"adv_eps and adv_weight must be >= 0, got {self.eps} and {self.weight}.")

    @classmethod
    def from_config(cls, names: list[str], cfg: Any) -> Adversary:
        return cls(names, cfg.adv_eps, cfg.adv_weight, cfg.adv_norm, cfg.adv_scale, cfg.adv_warm)

    def loss_at(self, model: nn.Module, params: dict[str, Tensor], batch: Any, spec: LossSpec) -> Tensor:
        """The model's loss with ``params`` substituted for its parameters of the same names."""
        wrapper = _LossCall(model)
        return functional_call(
            wrapper, {f"m.{n}": t for n, t in params.items()}, (batch, spec), strict=False, tie_weights=True
        )

    def noise(self, model: nn.Module, batch: Any, spec: LossSpec) -> dict[str, Tensor]:
        """New noise from the gradient of the loss at Theta + delta_start (Eq. 4.33 / 5.40)."""
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ConfigError(f"The adversary perturbs unknown parameter(s) {', '.join(missing)}.")
        if self.eps == 0:
            return {n: torch.zeros_like(params[n]) for n in self.names}
        start = self.prev if self.warm else {}
        deltas = {
            n: (start[n] if n in start else torch.zeros_like(params[n])).clone().requires_grad_(True)
            for n in self.names
        }
        loss = self.loss_at(model, {n: params[n].detach() + deltas[n] for n in self.names}, batch, spec)
        grads = torch.autograd.grad(loss, [deltas[n] for n in self.names], allow_unused=True)
        g = {n: (torch.zeros_like(params[n]) if gr is None else gr) for n, gr in zip(self.names, grads, strict=True)}
        noise = adversarial_noise(g, params, self.eps, self.norm, self.scale)
        if self.warm:
            self.prev = noise
        return noise

    def term(self, model: nn.Module, batch: Any, spec: LossSpec) -> Tensor:
        """``weight * L(Theta + delta)`` with delta from :meth:`noise`, held constant."""
        noise = self.noise(model, batch, spec)
        if not self.weight:
            return torch.zeros((), device=next(iter(noise.values())).device)
        params = dict(model.named_parameters())
        return self.weight * self.loss_at(model, {n: params[n] + d for n, d in noise.items()}, batch, spec)


__all__ = ["Adversary", "adversarial_noise", "normalize_grad"]
