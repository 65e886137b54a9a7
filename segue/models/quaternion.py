"""Quaternion algebra for the QUALE / QUASE / QUALSE models (spec B.2, Eqs. 5.24-5.28).

A quaternion vector of (real) size ``d`` is stored as one real tensor whose last axis is
the concatenation ``[r | a | b | c]`` of its four components, each of length ``d / 4``
(Eq. 5.28, the "[X]" operator); ``d`` must be divisible by 4. A quaternion *scalar* is the
case ``d = 4``. Every function here works on the last axis and broadcasts over the others.

* :func:`hamilton` - the Hamilton product (Eq. 5.26), element-wise over the ``d / 4``
  positions; :func:`conjugate`, :func:`qnorm`; :func:`left_matrix` - the 4 x 4 real matrix
  ``L(X)`` with ``X (x) Y = L(X) y`` for quaternion scalars; :func:`right_blocks` /
  :func:`right_matrix` - right multiplication ``x (x) q`` by a fixed ``q`` as real blocks / one
  real ``(d, d)`` matrix.
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

Kernels (all BLAS-shaped; the math is the plain formulas above, checked against them in
``tests/test_qualse_kernels.py``): with one factor fixed, the Hamilton product is a real
linear map whose 4 x 4 blocks are signed copies of that factor's components
(:func:`right_blocks`, :func:`right_matrix`; the same structure gives the block matrices of
:class:`QuaternionLinear`, built with one gather and one sign product for all the layers of a
cell at once). The attention logits are therefore one batched product of the steps with
the four flattened block rows of the context, and the weighted read another
(``_ComponentAttention``, hand-written backward). The cells run a whole window in one
autograd function (``_LSTMSequence``, ``_GRUSequence``): the input transforms of every step
are one product, each step one ``(B, h) x (h, k h)`` product plus element-wise gates written
into saved buffers, ``tanh`` through :func:`segue.models.sdmr.fast_tanh`'s expm1 form (several
times faster than ``torch.tanh`` on CPU), and the backward one product per step plus one for
the recurrent weights.

Initialisation ([AMBIG] default): quaternion weights are normal with
``std = 1 / sqrt(2 (n_in + n_out))`` on the quaternion dims ``n = d / 4`` (Glorot with the
fan computed on quaternion units, as in Parcollet et al.); biases start at 0.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from segue.errors import ConfigError, DataError
from segue.models.sdmr import _tanh_of_twice_, fast_tanh


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


# -- the Hamilton product as a real 4 x 4 block structure -------------------------------------
# Component ``c`` of ``x (x) y`` (Eq. 5.26) is ``sum_j sign[c, j] x_j y_{c ^ j}`` (the component
# index of the other factor is ``c XOR j``): with one factor fixed, the product is a real linear
# map whose 4 x 4 blocks are signed copies of that factor's components. ``_LEFT_SIGN`` is for
# ``w (x) x`` with ``w`` fixed (the blocks of :class:`QuaternionLinear`), ``_RIGHT_SIGN`` for
# ``x (x) q`` with ``q`` fixed (the attention logits).
_PERM = ((0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0))
_LEFT_SIGN = ((1, -1, -1, -1), (1, 1, -1, 1), (1, 1, 1, -1), (1, -1, 1, 1))
_RIGHT_SIGN = ((1, -1, -1, -1), (1, 1, 1, -1), (1, -1, 1, 1), (1, 1, -1, 1))


@functools.lru_cache(maxsize=64)
def _block_constants(
    signs: tuple[tuple[int, ...], ...], scale: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The gather index ``c ^ j`` (16,) and the ``scale * sign`` (4, 4) of :func:`_signed_blocks`, made once.

    Made outside inference mode, so that a first call under ``torch.inference_mode`` does not cache
    tensors that autograd may not save.
    """
    with torch.inference_mode(False):
        return torch.tensor(_PERM, device=device).flatten(), torch.tensor(signs, dtype=dtype, device=device) * scale


def _signed_blocks(comps: Tensor, axis: int, signs: tuple[tuple[int, ...], ...], scale: float = 1.0) -> Tensor:
    """Components on ``axis`` (size 4) to blocks ``[c, j] = scale * sign[c, j] * comp_{c ^ j}`` on two axes there.

    One gather and one multiplication (the products with +-1 are exact), whatever the other axes.
    """
    axis = axis % comps.dim()
    index, sign = _block_constants(signs, float(scale), comps.dtype, comps.device)
    blocks = comps.index_select(axis, index).unflatten(axis, (4, 4))
    return blocks * sign.view((4, 4) + (1,) * (blocks.dim() - axis - 2))


def right_blocks(q: Tensor, scale: float = 1.0) -> Tensor:
    """``(..., 4, 4, d/4)`` blocks ``R`` of right multiplication by ``q`` (..., d): ``(x (x) q)_c = sum_j R[c, j] x_j``.

    ``R = [[qr, -qa, -qb, -qc], [qa, qr, qc, -qb], [qb, -qc, qr, qa], [qc, qb, -qa, qr]]`` (Eq. 5.26,
    component by component and position by position), times ``scale``.
    """
    components(q)  # checks the size
    return _signed_blocks(q.unflatten(-1, (4, q.shape[-1] // 4)), -2, _RIGHT_SIGN, scale)


def right_matrix(q: Tensor, scale: float = 1.0) -> Tensor:
    """The real ``(d, d)`` matrix ``M`` with ``x (x) q = x @ M`` for every ``x`` (one shared ``q`` of size ``d``).

    The blocks of :func:`right_blocks` are diagonal over the ``d/4`` positions; ``M[(j, n), (c, n)] = R[c, j, n]``.
    """
    if q.dim() != 1:
        raise DataError(f"right_matrix takes one quaternion vector (d,), got shape {tuple(q.shape)}.")
    r = right_blocks(q, scale)  # (c, j, n)
    d = q.shape[0]
    return torch.diag_embed(r.transpose(0, 1)).transpose(1, 2).reshape(d, d)  # (j, n, c, n')


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


def _softmax_last(x: Tensor) -> Tensor:
    """``torch.softmax(x, -1)``; for a last axis under 16 long written out, where the library's kernel is slow on CPU."""
    if x.shape[-1] >= 16:
        return torch.softmax(x, dim=-1)
    e = (x - x.amax(dim=-1, keepdim=True)).exp_()
    return e.div_(e.sum(dim=-1, keepdim=True))


class _ComponentAttention(torch.autograd.Function):
    """The component attention of Eqs. 5.30-5.31 / 5.34 as batched matrix products, with a hand-written backward.

    Inputs: ``steps`` (B, L, d); ``vt`` (B, 4, d), row ``c`` the vector whose dot product with a step
    is component ``c`` of ``step (x) context`` summed over its ``d/4`` positions and divided by
    ``sqrt(d)`` (the rows of :func:`right_blocks` of the context, flattened); ``mask`` (B, 1, L) or None.

    * logits (B, 4, L) = ``vt @ steps^T`` (one ``bmm``, the softmax axis last);
    * ``alpha`` = the masked softmax over L (masked steps exactly 0, all-masked rows all 0);
    * ``alpha @ steps`` (B, 4, d) is one ``bmm`` whose row ``c`` holds, in its component block ``c``,
      ``sum_k alpha_k^c p_k^c``: the output is those four diagonal blocks (the other twelve are
      computed and dropped, which costs less than gathering the (B, 4, L, d/4) layout).

    The backward is three more ``bmm``: ``d alpha = G @ steps^T`` (G the block-diagonal output
    gradient), ``d steps = [alpha; d logits]^T @ [G; vt]`` in one product (contraction 8), and
    ``d vt = d logits @ steps``. Returns ``(output (B, d), alpha (B, 4, L))``; ``alpha`` has no gradient.
    """

    @staticmethod
    def forward(ctx: Any, steps: Tensor, vt: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        b, _, d = steps.shape
        if vt.dim() == 2:  # one context for every row
            logits = torch.matmul(vt, steps.transpose(1, 2))
        else:
            logits = torch.bmm(vt, steps.transpose(1, 2))  # (B, 4, L)
        if mask is None:
            alpha = _softmax_last(logits)
        else:
            logits.masked_fill_(~mask, float("-inf"))
            logits.masked_fill_(~mask.any(dim=-1, keepdim=True), 0.0)  # all-masked rows: softmax of zeros, times 0
            alpha = _softmax_last(logits).mul_(mask)
        full = torch.bmm(alpha, steps)  # (B, 4, d)
        out = full.view(b, 4, 4, d // 4).diagonal(dim1=1, dim2=2).transpose(1, 2).reshape(b, d)
        ctx.save_for_backward(steps, vt, alpha)
        ctx.mark_non_differentiable(alpha)
        return out, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _grad_alpha: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        steps, vt, alpha = ctx.saved_tensors
        b, length, d = steps.shape
        g = grad.new_zeros(b, 4, d)
        g.view(b, 4, 4, d // 4).diagonal(dim1=1, dim2=2).copy_(grad.reshape(b, 4, d // 4).transpose(1, 2))
        g_alpha = torch.bmm(g, steps.transpose(1, 2))  # (B, 4, L)
        # softmax backward (masked steps have alpha = 0, so they get 0)
        g_logits = g_alpha.sub_((alpha * g_alpha).sum(-1, keepdim=True)).mul_(alpha)
        g_steps = g_vt = None
        if ctx.needs_input_grad[0]:
            g_steps = torch.bmm(torch.cat([alpha, g_logits], 1).transpose(1, 2), torch.cat([g, vt.expand(b, 4, d)], 1))
        if ctx.needs_input_grad[1]:
            if vt.dim() == 2:
                g_vt = g_logits.transpose(1, 2).reshape(b * length, 4).t() @ steps.view(b * length, d)
            else:
                g_vt = torch.bmm(g_logits, steps)
        return g_steps, g_vt, None


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

    Kernels: the Hamilton product with a fixed context is linear in the step, ``p (x) q = R(q) p``
    (:func:`right_blocks`), so the four component sums are four dot products of the step with the
    flattened rows of ``R(q) / sqrt(d)``: the logits of a whole window are one batched matrix
    product, and so is the weighted sum (:class:`_ComponentAttention`). With ``per_dim`` the full
    product is needed: one ``(B L, d) x (d, d)`` product with :func:`right_matrix` for a global
    context, the element-wise :func:`hamilton` for a personalised one.
    """
    if steps.dim() != 3:
        raise DataError(f"Attention steps must be (B, L, d), got shape {tuple(steps.shape)}.")
    b, length, d = steps.shape
    scale = 1.0 / math.sqrt(d)
    if per_dim:
        if context.dim() == 1:
            prod = (steps.reshape(b * length, d) @ right_matrix(context, scale)).view(b, length, d)
        else:
            prod = hamilton(steps, context.unsqueeze(-2)) / math.sqrt(d)
        if mask is None:
            alpha = torch.softmax(prod, dim=1)
        else:
            m = mask.unsqueeze(-1)  # (B, L, 1), broadcast over the d positions
            z = prod.masked_fill(~m, float("-inf")).masked_fill_(~m.any(dim=1, keepdim=True), 0.0)
            alpha = torch.softmax(z, dim=1) * m
        return (alpha * steps).sum(1), alpha
    vt = right_blocks(context, scale).flatten(-2)  # (4, d) or (B, 4, d): row c = the flattened blocks R[c, :]
    out, alpha = _ComponentAttention.apply(steps.contiguous(), vt, None if mask is None else mask.unsqueeze(1))
    return out, alpha.transpose(1, 2)


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
        return _block_matrices(torch.stack([self.r, self.a, self.b, self.c]))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise DataError(f"QuaternionLinear expects inputs of size {self.in_features}, got {x.shape[-1]}.")
        return F.linear(x, self.weight_matrix(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _block_matrices(comps: Tensor) -> Tensor:
    """``(..., 4, n_out, n_in)`` components ``r, a, b, c`` to the ``(..., 4 n_out, 4 n_in)`` real block matrices.

    ``[[r, -a, -b, -c], [a, r, -c, b], [b, c, r, -a], [c, -b, a, r]]`` (left multiplication, Eq. 5.26),
    built with one gather, one sign multiplication and one transposing copy, however many layers are
    stacked on the leading axes.
    """
    n_out, n_in = comps.shape[-2:]
    blocks = _signed_blocks(comps, -3, _LEFT_SIGN)  # (..., c, j, n_out, n_in)
    return blocks.transpose(-3, -2).reshape(*comps.shape[:-3], 4 * n_out, 4 * n_in)


def _stacked(layers: list[QuaternionLinear]) -> Tensor:
    """The block matrices of several layers with the same input, stacked into one ``(k * out, in)`` matrix."""
    first = layers[0]
    comps = torch.stack([p for layer in layers for p in (layer.r, layer.a, layer.b, layer.c)])
    matrices = _block_matrices(comps.unflatten(0, (len(layers), 4)))  # (k, out, in)
    return matrices.reshape(len(layers) * first.out_features, first.in_features)


def _cell_weights(cell: nn.Module) -> tuple[Tensor, Tensor]:
    """A cell's stacked input and recurrent block matrices; built together when they have the same shape."""
    w_layers, r_layers = list(cell.W), list(cell.R)  # type: ignore[arg-type]
    if w_layers[0].in_features == r_layers[0].in_features:
        w, r = _stacked(w_layers + r_layers).chunk(2, dim=0)
        return w, r
    return _stacked(w_layers), _stacked(r_layers)


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
        return _cell_weights(self)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor], weights: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        w, r = weights if weights is not None else self.weights()
        h, c = state
        return self._step(torch.addmm(F.linear(x, w), h, r.t()) + self.g, c)

    def _step(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step from the pre-activations ``z = W p + R h + g`` (B, 4h) and the cell state."""
        hs = self.hidden_size
        f, i, o = torch.sigmoid(z[:, : 3 * hs]).chunk(3, dim=-1)
        c_new = f * c + i * fast_tanh(z[:, 3 * hs :])
        h_new = o * fast_tanh(c_new)
        return h_new, c_new

    def run(self, x: Tensor, mask: Tensor) -> Tensor:
        """Hidden states (B, L, h) over ``x`` (B, L, d) from zeros; see :func:`run_cell`.

        The input transforms ``W p_t + g`` of all steps are one ``(L B, d) x (d, 4h)`` product; the
        recurrence is :class:`_LSTMSequence`.
        """
        b, length, _ = x.shape
        w, r = self.weights()
        xw = torch.addmm(self.g, x.transpose(0, 1).reshape(length * b, -1), w.t()).view(length, b, -1)
        return _LSTMSequence.apply(xw, r, mask.t().unsqueeze(-1)).transpose(0, 1)


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
        return _cell_weights(self)

    def forward(self, x: Tensor, state: Tensor, weights: tuple[Tensor, Tensor] | None = None) -> Tensor:
        w, r = weights if weights is not None else self.weights()
        return self._step(F.linear(x, w) + self.g, F.linear(state, r), state)

    def _step(self, wx: Tensor, rh: Tensor, state: Tensor) -> Tensor:
        """One step from ``W p + g`` and ``R h`` (B, 3h) each."""
        hs = self.hidden_size
        z, reset = torch.sigmoid(wx[:, : 2 * hs] + rh[:, : 2 * hs]).chunk(2, dim=-1)
        n = fast_tanh(wx[:, 2 * hs :] + reset * rh[:, 2 * hs :])
        return (1 - z) * n + z * state

    def run(self, x: Tensor, mask: Tensor) -> Tensor:
        """Hidden states (B, L, h) over ``x`` (B, L, d) from zeros; see :func:`run_cell`.

        The input transforms ``W p_t + g`` of all steps are one ``(L B, d) x (d, 3h)`` product; the
        recurrence is :class:`_GRUSequence`.
        """
        b, length, _ = x.shape
        w, r = self.weights()
        xw = torch.addmm(self.g, x.transpose(0, 1).reshape(length * b, -1), w.t()).view(length, b, -1)
        return _GRUSequence.apply(xw, r, mask.t().unsqueeze(-1)).transpose(0, 1)


def _tanh_into(x: Tensor, out: Tensor) -> Tensor:
    """``out <- tanh(x)``, by :mod:`segue.models.sdmr`'s expm1 form (see ``fast_tanh``)."""
    return _tanh_of_twice_(torch.mul(x, 2.0, out=out))


class _LSTMSequence(torch.autograd.Function):
    """The masked quaternion-LSTM recurrence (Eq. 5.33) over a window, with a hand-written backward.

    Inputs: ``xw`` (L, B, 4h), the input transforms ``W p_t + g`` of every step (one product, outside);
    ``r`` (4h, h), the stacked recurrent block matrices; ``keep`` (L, B, 1) bool, False on padded
    steps (which keep the previous ``h`` and ``c``). Output: the hidden states (L, B, h), from
    ``h_0 = c_0 = 0``.

    Each step is one ``addmm`` (``z = W p_t + g + R h``; none at the first step, where ``h = 0``), the
    gate activations written into one saved (L, B, 4h) buffer (sigmoid for f, i, o, the expm1-based
    tanh for the candidate) and a few element-wise products into preallocated states. The backward
    runs the steps in reverse with one ``(B, 4h) x (4h, h)`` product each and forms ``dR`` as one
    ``(4h, L B) x (L B, h)`` product.
    """

    @staticmethod
    def forward(ctx: Any, xw: Tensor, r: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        length, b, g4 = xw.shape
        hs = g4 // 4
        act = torch.empty_like(xw)  # [f, i, o, tanh(candidate)]
        tc = xw.new_empty(length, b, hs)  # tanh(c_new)
        hbuf = xw.new_zeros(length + 1, b, hs)  # h_0 = 0, then the (masked) states
        cbuf = xw.new_zeros(length + 1, b, hs)
        c_new, h_new = xw.new_empty(b, hs), xw.new_empty(b, hs)
        for t in range(length):
            z = torch.addmm(xw[t], hbuf[t], r.t()) if t else xw[t]
            a = act[t]
            torch.sigmoid(z[:, : 3 * hs], out=a[:, : 3 * hs])
            _tanh_into(z[:, 3 * hs :], a[:, 3 * hs :])
            f, i, o, cand = a.split(hs, dim=1)
            torch.mul(f, cbuf[t], out=c_new).addcmul_(i, cand)  # c' = f c + i tanh(.)
            torch.mul(o, _tanh_into(c_new, tc[t]), out=h_new)  # h' = o tanh(c')
            torch.where(keep[t], c_new, cbuf[t], out=cbuf[t + 1])
            torch.where(keep[t], h_new, hbuf[t], out=hbuf[t + 1])
        ctx.save_for_backward(act, tc, hbuf, cbuf, r, keep)
        return hbuf[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        act, tc, hbuf, cbuf, r, keep = ctx.saved_tensors
        length, _, g4 = act.shape
        hs = g4 // 4
        k = keep.to(act.dtype)
        slope = torch.empty_like(act)  # derivatives of the activations at their inputs
        s = act[..., : 3 * hs]
        torch.mul(s, 1.0 - s, out=slope[..., : 3 * hs])
        torch.addcmul(torch.ones_like(tc), act[..., 3 * hs :], act[..., 3 * hs :], value=-1.0, out=slope[..., 3 * hs :])
        tc_slope = torch.addcmul(torch.ones_like(tc), tc, tc, value=-1.0)
        dz = torch.empty_like(act)  # the gradient of every step's pre-activations = d xw
        dh = grad[length - 1]  # total gradient of the masked state h_t
        dc = torch.zeros_like(dh)
        for t in reversed(range(length)):
            f, i, o, cand = act[t].split(hs, dim=1)
            dh_new = dh * k[t]
            dc_new = torch.addcmul(dc * k[t], dh_new * o, tc_slope[t])
            zt = dz[t]
            torch.mul(dc_new, cbuf[t], out=zt[:, :hs])  # d f
            torch.mul(dc_new, cand, out=zt[:, hs : 2 * hs])  # d i
            torch.mul(dh_new, tc[t], out=zt[:, 2 * hs : 3 * hs])  # d o
            torch.mul(dc_new, i, out=zt[:, 3 * hs :])  # d tanh(candidate)
            zt.mul_(slope[t])
            if t:
                dc = torch.addcmul(dc * (1.0 - k[t]), dc_new, f)
                dh = torch.addmm(torch.addcmul(grad[t - 1], dh, 1.0 - k[t]), zt, r)
        dr = None
        if ctx.needs_input_grad[1]:
            dr = torch.mm(dz[1:].reshape(-1, g4).t(), hbuf[1:length].reshape(-1, hs))  # zeros when length = 1
        return dz, dr, None


class _GRUSequence(torch.autograd.Function):
    """The masked quaternion-GRU recurrence over a window, with a hand-written backward (see :class:`_LSTMSequence`).

    Inputs ``xw`` (L, B, 3h) = ``W p_t + g``, ``r`` (3h, h), ``keep`` (L, B, 1). Per step:
    ``R h`` (one ``mm``), ``[z, r] = sigma(W p + g + R h)`` on the first 2h, ``n = tanh(W_n p + g_n +
    r x R_n h)``, ``h' = (1 - z) x n + z x h``; padded steps keep ``h``.
    """

    @staticmethod
    def forward(ctx: Any, xw: Tensor, r: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        length, b, g3 = xw.shape
        hs = g3 // 3
        act = torch.empty_like(xw)  # [z, reset, n]
        rh = torch.zeros_like(xw)  # R h_{t-1} (0 at the first step)
        hbuf = xw.new_zeros(length + 1, b, hs)
        h_new = xw.new_empty(b, hs)
        for t in range(length):
            if t:
                torch.mm(hbuf[t], r.t(), out=rh[t])
            a, x_t, rh_t = act[t], xw[t], rh[t]
            torch.sigmoid(torch.add(x_t[:, : 2 * hs], rh_t[:, : 2 * hs]), out=a[:, : 2 * hs])
            z, reset, n = a.split(hs, dim=1)
            _tanh_into(torch.addcmul(x_t[:, 2 * hs :], reset, rh_t[:, 2 * hs :]), n)
            torch.addcmul((1.0 - z).mul_(n), z, hbuf[t], out=h_new)
            torch.where(keep[t], h_new, hbuf[t], out=hbuf[t + 1])
        ctx.save_for_backward(act, rh, hbuf, r, keep)
        return hbuf[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        act, rh, hbuf, r, keep = ctx.saved_tensors
        length, _, g3 = act.shape
        hs = g3 // 3
        k = keep.to(act.dtype)
        slope = torch.empty_like(act)
        s = act[..., : 2 * hs]
        torch.mul(s, 1.0 - s, out=slope[..., : 2 * hs])
        n_all = act[..., 2 * hs :]
        torch.addcmul(torch.ones_like(n_all), n_all, n_all, value=-1.0, out=slope[..., 2 * hs :])
        dx = torch.empty_like(act)  # d xw
        drh = torch.empty_like(act)  # d (R h)
        dh = grad[length - 1]
        for t in reversed(range(length)):
            z, reset, n = act[t].split(hs, dim=1)
            hp = hbuf[t]
            dh_new = dh * k[t]
            xt, rt = dx[t], drh[t]
            torch.mul(dh_new, hp - n, out=xt[:, :hs])  # d z
            torch.mul(dh_new, 1.0 - z, out=xt[:, 2 * hs :])  # d n
            xt[:, 2 * hs :].mul_(slope[t, :, 2 * hs :])  # d (n's pre-activation)
            torch.mul(xt[:, 2 * hs :], rh[t, :, 2 * hs :], out=xt[:, hs : 2 * hs])  # d reset
            xt[:, : 2 * hs].mul_(slope[t, :, : 2 * hs])
            if t:
                rt[:, : 2 * hs].copy_(xt[:, : 2 * hs])
                torch.mul(xt[:, 2 * hs :], reset, out=rt[:, 2 * hs :])
                dh = torch.addmm(torch.addcmul(grad[t - 1], dh, 1.0 - k[t]).addcmul_(dh_new, z), rt, r)
        dr = None
        if ctx.needs_input_grad[1]:
            dr = torch.mm(drh[1:].reshape(-1, g3).t(), hbuf[1:length].reshape(-1, hs))  # zeros when length = 1
        return dx, dr, None


def run_cell(cell: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """Hidden states ``(B, L, h)`` of ``cell`` over ``x`` ``(B, L, d)``, starting from zeros.

    Padded steps (``mask`` False) keep the previous state, so left padding changes nothing.
    Works for the quaternion cells (their ``run``, the input transforms of all steps in one
    product) and for :class:`torch.nn.LSTMCell` / :class:`torch.nn.GRUCell` (step by step).
    """
    if isinstance(cell, (QuaternionLSTMCell, QuaternionGRUCell)):
        return cell.run(x, mask)
    b, length, _ = x.shape
    hsize = cell.hidden_size
    h = x.new_zeros(b, hsize)
    lstm = isinstance(cell, nn.LSTMCell)
    c = x.new_zeros(b, hsize) if lstm else None
    outs = []
    for t in range(length):
        keep = mask[:, t : t + 1]
        if lstm:
            h_new, c_new = cell(x[:, t], (h, c))
            c = torch.where(keep, c_new, c)
        else:
            h_new = cell(x[:, t], h)
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
    "right_blocks",
    "right_matrix",
    "run_cell",
]
