"""Quaternion algebra for the QUALE / QUASE / QUALSE models (spec B.2, Eqs. 5.24-5.28).

A quaternion vector of (real) size ``d`` is stored as one real tensor whose last axis is
the concatenation ``[r | a | b | c]`` of its four components, each of length ``d / 4``
(Eq. 5.28, the "[X]" operator); ``d`` must be divisible by 4. A quaternion *scalar* is the
case ``d = 4``. Every function here works on the last axis and broadcasts over the others.

* :func:`hamilton` - the Hamilton product (Eq. 5.26), element-wise over the ``d / 4``
  positions; :func:`conjugate`, :func:`qnorm`; :func:`left_matrix` - the 4 x 4 real matrix
  ``L(X)`` with ``X (x) Y = L(X) y`` for quaternion scalars.
* :func:`component_dot` - ``(r_X.r_Y, a_X.a_Y, b_X.b_Y, c_X.c_Y)`` (Eq. 5.25);
  :func:`qinner` - their average ``(1/4) [X].[Y]`` (the output layer of Eq. 5.32);
  :func:`component_softmax` - four independent softmaxes; :func:`component_cat`.
* :class:`QuaternionLinear` - ``W (x) x`` with ``W = Wr + Wa i + Wb j + Wc k``, computed as the
  real block matrix ``[[Wr,-Wa,-Wb,-Wc],[Wa,Wr,-Wc,Wb],[Wb,Wc,Wr,-Wa],[Wc,-Wb,Wa,Wr]]``
  applied to ``[xr; xa; xb; xc]`` (``dout * din / 4`` parameters, 75% fewer than a real layer).
* :func:`quaternion_attention` - the personalised / global quaternion attention of Eqs.
  5.30-5.31 and 5.34: the Hamilton product of each step with the context, reduced to four
  logits by summing each component over its ``d / 4`` positions ([AMBIG] default), masked
  component softmax over the steps, component-wise weighted sum.
* :class:`QuaternionLSTMCell`, :class:`QuaternionGRUCell` - recurrent cells (Eq. 5.33; the
  GRU equations are the standard ones with every ``W x`` / ``R h`` a quaternion linear layer,
  the spec's [AMBIG] default) with split activations (Eq. 5.27: applied element-wise to the
  concatenated real vector).

Initialisation ([AMBIG] default): quaternion weights are normal with
``std = 1 / sqrt(2 (n_in + n_out))`` on the quaternion dims ``n = d / 4`` (Glorot with the
fan computed on quaternion units, as in Parcollet et al.); biases start at 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segue.errors import ConfigError, DataError


def check_dim(d: int, what: str = "quaternion size") -> int:
    """``d`` if it is a positive multiple of 4, else a ConfigError."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 4 or d % 4:
        raise ConfigError(f"The {what} must be a positive multiple of 4 (four components of d/4), got {d!r}.")
    return d


def components(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four components ``(r, a, b, c)`` of ``x`` (last axis ``[r|a|b|c]``)."""
    if x.shape[-1] % 4:
        raise DataError(f"A quaternion tensor needs a last axis divisible by 4, got shape {tuple(x.shape)}.")
    r, a, b, c = x.chunk(4, dim=-1)
    return r, a, b, c


def hamilton(x: Tensor, y: Tensor) -> Tensor:
    """Hamilton product ``x (x) y`` (Eq. 5.26), element-wise over the ``d / 4`` positions."""
    rx, ax, bx, cx = components(x)
    ry, ay, by, cy = components(y)
    r = rx * ry - ax * ay - bx * by - cx * cy
    a = rx * ay + ax * ry + bx * cy - cx * by
    b = rx * by - ax * cy + bx * ry + cx * ay
    c = rx * cy + ax * by - bx * ay + cx * ry
    return torch.cat([r, a, b, c], dim=-1)


def conjugate(x: Tensor) -> Tensor:
    """``r - a i - b j - c k``."""
    r, a, b, c = components(x)
    return torch.cat([r, -a, -b, -c], dim=-1)


def qnorm(x: Tensor) -> Tensor:
    """Norm of each quaternion position, shape ``(..., d / 4)``: ``sqrt(r^2 + a^2 + b^2 + c^2)``."""
    r, a, b, c = components(x)
    return (r.square() + a.square() + b.square() + c.square()).sqrt()


def left_matrix(q: Tensor) -> Tensor:
    """The real ``(..., 4, 4)`` matrix ``L(q)`` of left multiplication: ``q (x) p = L(q) p`` for scalars."""
    if q.shape[-1] != 4:
        raise DataError(f"left_matrix takes quaternion scalars (last axis 4), got shape {tuple(q.shape)}.")
    r, a, b, c = q.unbind(-1)
    rows = [
        torch.stack([r, -a, -b, -c], -1),
        torch.stack([a, r, -c, b], -1),
        torch.stack([b, c, r, -a], -1),
        torch.stack([c, -b, a, r], -1),
    ]
    return torch.stack(rows, -2)


def component_dot(x: Tensor, y: Tensor) -> Tensor:
    """``(r_x.r_y, a_x.a_y, b_x.b_y, c_x.c_y)``, shape ``(..., 4)`` (Eq. 5.25 with f = dot)."""
    if x.shape[-1] % 4:
        raise DataError(f"A quaternion tensor needs a last axis divisible by 4, got shape {tuple(x.shape)}.")
    prod = x * y
    return prod.unflatten(-1, (4, prod.shape[-1] // 4)).sum(-1)


def qinner(x: Tensor, y: Tensor) -> Tensor:
    """Average of :func:`component_dot`: ``(1/4) [x].[y]`` (the QCF output, Eq. 5.32)."""
    return (x * y).sum(-1) / 4.0


def component_cat(*xs: Tensor) -> Tensor:
    """Component-wise concatenation ``[X, Y]``: r with r, a with a, ... (total size = sum of sizes)."""
    parts = [components(x) for x in xs]
    return torch.cat([torch.cat([p[i] for p in parts], dim=-1) for i in range(4)], dim=-1)


def component_softmax(logits: Tensor, mask: Tensor | None = None, dim: int = -2) -> Tensor:
    """Four independent softmaxes over ``dim`` of ``(..., L, 4)`` logits; masked steps get exactly 0.

    A row whose steps are all masked gets all-zero weights (not NaN).
    """
    if logits.shape[-1] != 4:
        raise DataError(f"component_softmax takes (..., L, 4) logits, got shape {tuple(logits.shape)}.")
    if mask is None:
        return torch.softmax(logits, dim=dim)
    m = mask.unsqueeze(-1).expand_as(logits)
    z = logits.masked_fill(~m, float("-inf"))
    any_valid = m.any(dim=dim, keepdim=True)
    z = torch.where(any_valid, z, torch.zeros_like(z))
    return torch.softmax(z, dim=dim) * m


def _repeat(weights: Tensor, d: int) -> Tensor:
    """``(..., L, 4)`` per-component weights to ``(..., L, d)``: each repeated over its ``d/4`` positions."""
    return weights.repeat_interleave(d // 4, dim=-1)


def quaternion_attention(
    steps: Tensor, context: Tensor, mask: Tensor | None = None, per_dim: bool = False
) -> tuple[Tensor, Tensor]:
    """Quaternion attention of Eqs. 5.30-5.31 / 5.34 over ``steps`` ``(B, L, d)`` with ``context``.

    ``context`` is ``(B, d)`` (personalised, QUALE) or ``(d,)`` (global, QUASE). The logits are
    ``(steps (x) context) / sqrt(d)``, each component summed over its ``d/4`` positions, giving
    ``(B, L, 4)``; :func:`component_softmax` over ``L`` with ``mask`` ``(B, L)``; the output is
    ``sum_k alpha_k x p_k`` component-wise, ``(B, d)``. With ``per_dim`` (the spec's flag
    alternative) the softmax runs over ``L`` separately for each of the ``d`` real positions.
    Returns ``(output, weights)``; weights are ``(B, L, 4)`` (``(B, L, d)`` with ``per_dim``).
    """
    if steps.dim() != 3:
        raise DataError(f"Attention steps must be (B, L, d), got shape {tuple(steps.shape)}.")
    d = steps.shape[-1]
    ctx = context.unsqueeze(-2) if context.dim() == 2 else context
    prod = hamilton(steps, ctx) / math.sqrt(d)  # (B, L, d)
    if per_dim:
        if mask is None:
            alpha = torch.softmax(prod, dim=1)
        else:
            m = mask.unsqueeze(-1).expand_as(prod)
            z = prod.masked_fill(~m, float("-inf"))
            z = torch.where(m.any(dim=1, keepdim=True), z, torch.zeros_like(z))
            alpha = torch.softmax(z, dim=1) * m
        return (alpha * steps).sum(1), alpha
    logits = prod.unflatten(-1, (4, d // 4)).sum(-1)  # (B, L, 4)
    alpha = component_softmax(logits, mask, dim=1)
    return (_repeat(alpha, d) * steps).sum(1), alpha


class QuaternionLinear(nn.Module):
    """``W (x) x`` for a quaternion weight ``W`` of ``(out/4) x (in/4)`` quaternions (see module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features = check_dim(in_features, "quaternion linear input size")
        self.out_features = check_dim(out_features, "quaternion linear output size")
        n_in, n_out = in_features // 4, out_features // 4
        std = 1.0 / math.sqrt(2.0 * (n_in + n_out))
        self.r = nn.Parameter(torch.randn(n_out, n_in) * std)
        self.a = nn.Parameter(torch.randn(n_out, n_in) * std)
        self.b = nn.Parameter(torch.randn(n_out, n_in) * std)
        self.c = nn.Parameter(torch.randn(n_out, n_in) * std)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def weight_matrix(self) -> Tensor:
        """The real ``(out, in)`` block matrix equal to this layer."""
        r, a, b, c = self.r, self.a, self.b, self.c
        return torch.cat(
            [
                torch.cat([r, -a, -b, -c], dim=1),
                torch.cat([a, r, -c, b], dim=1),
                torch.cat([b, c, r, -a], dim=1),
                torch.cat([c, -b, a, r], dim=1),
            ],
            dim=0,
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise DataError(f"QuaternionLinear expects inputs of size {self.in_features}, got {x.shape[-1]}.")
        return F.linear(x, self.weight_matrix(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _stacked(layers: list[QuaternionLinear]) -> Tensor:
    """The block matrices of several layers with the same input, stacked into one ``(k * out, in)`` matrix."""
    return torch.cat([layer.weight_matrix() for layer in layers], dim=0)


class QuaternionLSTMCell(nn.Module):
    """Quaternion LSTM cell (Eq. 5.33): every ``W p`` and ``R h`` is a quaternion linear layer."""

    gates = ("f", "i", "o", "c")

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = check_dim(hidden_size, "hidden size")
        self.W = nn.ModuleList(QuaternionLinear(input_size, hidden_size) for _ in self.gates)
        self.R = nn.ModuleList(QuaternionLinear(hidden_size, hidden_size) for _ in self.gates)
        self.g = nn.Parameter(torch.zeros(4 * hidden_size))  # g_f, g_i, g_o, g_c

    def weights(self) -> tuple[Tensor, Tensor]:
        """The stacked input and recurrent matrices (compute once per sequence)."""
        return _stacked(list(self.W)), _stacked(list(self.R))  # type: ignore[arg-type]

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor], weights: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        w, r = weights if weights is not None else self.weights()
        h, c = state
        z = F.linear(x, w) + F.linear(h, r) + self.g
        f, i, o, cand = z.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new


class QuaternionGRUCell(nn.Module):
    """Quaternion GRU cell ([AMBIG] default): update ``z``, reset ``r``, candidate ``n``.

    ``z = sigma(W_z p + R_z h + g_z)``, ``r = sigma(W_r p + R_r h + g_r)``,
    ``n = tanh(W_n p + r x (R_n h) + g_n)``, ``h' = (1 - z) x n + z x h`` (PyTorch's convention).
    """

    gates = ("z", "r", "n")

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = check_dim(hidden_size, "hidden size")
        self.W = nn.ModuleList(QuaternionLinear(input_size, hidden_size) for _ in self.gates)
        self.R = nn.ModuleList(QuaternionLinear(hidden_size, hidden_size) for _ in self.gates)
        self.g = nn.Parameter(torch.zeros(3 * hidden_size))

    def weights(self) -> tuple[Tensor, Tensor]:
        return _stacked(list(self.W)), _stacked(list(self.R))  # type: ignore[arg-type]

    def forward(self, x: Tensor, state: Tensor, weights: tuple[Tensor, Tensor] | None = None) -> Tensor:
        w, r = weights if weights is not None else self.weights()
        wx = F.linear(x, w) + self.g
        rh = F.linear(state, r)
        wz, wr, wn = wx.chunk(3, dim=-1)
        rz, rr, rn = rh.chunk(3, dim=-1)
        z = torch.sigmoid(wz + rz)
        reset = torch.sigmoid(wr + rr)
        n = torch.tanh(wn + reset * rn)
        return (1 - z) * n + z * state


def run_cell(cell: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """Hidden states ``(B, L, h)`` of ``cell`` over ``x`` ``(B, L, d)``, starting from zeros.

    Padded steps (``mask`` False) keep the previous state, so left padding changes nothing.
    Works for the quaternion cells and for :class:`torch.nn.LSTMCell` / :class:`torch.nn.GRUCell`.
    """
    b, length, _ = x.shape
    hsize = cell.hidden_size
    h = x.new_zeros(b, hsize)
    lstm = isinstance(cell, (QuaternionLSTMCell, nn.LSTMCell))
    c = x.new_zeros(b, hsize) if lstm else None
    weights = cell.weights() if hasattr(cell, "weights") else None
    outs = []
    for t in range(length):
        keep = mask[:, t : t + 1]
        if lstm:
            if weights is not None:
                h_new, c_new = cell(x[:, t], (h, c), weights)
            else:
                h_new, c_new = cell(x[:, t], (h, c))
            c = torch.where(keep, c_new, c)
        else:
            h_new = cell(x[:, t], h, weights) if weights is not None else cell(x[:, t], h)
        h = torch.where(keep, h_new, h)
        outs.append(h)
    return torch.stack(outs, dim=1)


__all__ = [
    "QuaternionGRUCell",
    "QuaternionLSTMCell",
    "QuaternionLinear",
    "check_dim",
    "component_cat",
    "component_dot",
    "component_softmax",
    "components",
    "conjugate",
    "hamilton",
    "left_matrix",
    "qinner",
    "qnorm",
    "quaternion_attention",
    "run_cell",
]
