"""SDP, SDM and SDMR: signed-distance recommenders (Tran, dissertation Section 5.2; spec Part A).

Every model here computes a *distance* ``o`` (lower = more preferred); the
:class:`~segue.models.base.Recommender` interface gets ``-o`` only in :meth:`score`, so
the trainer's BPR loss ``-log sigma(score+ - score-)`` is exactly Eq. 5.22,
``-log sigma(o- - o+)``.

``sdp`` (Eqs. 5.1-5.6)
    ``e = tanh(W1 [u; v] + b1)``, ``o = w_o . e**2 + b_o`` (one layer, ``l = 1``, as in the
    experiments). [AMBIG] hidden width ``d1 = d`` (``hidden``); [CODE-HINT] ``W1`` starts as
    ``[I, -I]`` so SDP starts as the squared Euclidean distance (``init_euclidean``).
``sdm`` (Eqs. 5.7-5.19)
    Input/output memories ``U(i), V(i), U(o), V(o)``; queries ``q = tanh(Wa [u(i); v(i)_j])``,
    ``p = tanh(Wb [u(o); v(o)_j])``; attention ``z_k = |tanh(Wc [q; v(i)_k])|^2``,
    ``a = softmax(-z)`` over the ``s`` most recent context items; output
    ``e = sum_k a_k tanh(Wd [p; v(o)_k])**2``, ``o = w_e . e + b_e``; ``H`` gated hops
    ``q(h) = (1 - g) e(h-1) + g q(h-1)``, ``g = sigmoid(Wg q(h-1) + bg)``, with every weight
    tied across hops. [AMBIG] one global gate (``hop_gates=True`` gives one gate per hop);
    ``p`` is computed once (it never changes across hops); padding id 0 is masked out of
    the softmax; a case with *no* context item at all (a user's first training row) gets
    ``e = 0``, i.e. ``o = b_e`` (the spec leaves this open).
``sdmr`` (Eq. 5.21)
    ``o = ReLU(w_u . [e_SDP; e_SDM] + b_u)`` over the frozen, separately pre-trained SDP and
    SDM features; only ``w_u, b_u`` are learned (``retrain=True`` also fine-tunes the parts,
    ``activation="identity"`` drops the ReLU: both are the spec's optional flags).

Efficiency (spec A.12): every ``W [x; y]`` is split as ``W_x x + W_y y``, so the context
transforms ``Wc_y v(i)_k`` and ``Wd_y v(o)_k`` are computed once per case and shared by all
candidates, the query transforms once per candidate, and only the element-wise
``tanh(. + .)`` runs per (candidate, context item): the cost per scored pair is
``O(H s d)`` element-wise plus ``O(H d^2)`` instead of ``O(H s d^2)``. The output
transform ``square(tanh(Wd [p; v(o)_k]))`` is hop-invariant and computed once. All the hops
run in one autograd function (``_SDMHops``) whose hand-written backward keeps the
(cases, candidates, s, d) work to a few passes over preallocated buffers (no einsum, no
broadcast copies), every matrix product being a (rows, d) x (d, d) GEMM; tanh is evaluated
through ``expm1`` (``fast_tanh``), which on CPU is several times faster than ``torch.tanh``.

Initialisation (A.5): embeddings ~ N(0, 0.01) (std), edge-weight layers ``w_o, w_e, w_u``
He-normal; the 2d -> d transforms of SDM are Xavier-normal (the text says nothing).
Regularisation ([AMBIG], A.5): ``reg`` times the squared norm of the embedding rows a batch
touches (per case, as MF-BPR does) plus ``reg_dense`` times the squared dense weights.
Dropout (not in the text; [CODE-HINT] 0.2) is optional and off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from segue.errors import ConfigError, DataError
from segue.models.base import Context, Recommender, checked_history, register

if TYPE_CHECKING:
    from segue.data.interactions import Interactions

#: Elements of the largest (cases, candidates, s, d) block SDM materialises at once.
_BLOCK_ELEMENTS = 1 << 23


def _embedding(n: int, dim: int, std: float) -> nn.Embedding:
    emb = nn.Embedding(n + 1, dim, padding_idx=0)
    nn.init.normal_(emb.weight, std=std)
    with torch.no_grad():
        emb.weight[0].zero_()
    return emb


def _he_linear(d_in: int, d_out: int = 1) -> nn.Linear:
    lin = nn.Linear(d_in, d_out)
    nn.init.normal_(lin.weight, std=math.sqrt(2.0 / d_in))
    nn.init.zeros_(lin.bias)
    return lin


class _Split2(nn.Module):
    """``W [x; y] + b`` stored as ``W_x x + W_y y + b`` (W in R^{out x 2d}), so either half can be cached."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.wx = nn.Linear(d_in, d_out, bias=True)
        self.wy = nn.Linear(d_in, d_out, bias=False)
        w = torch.empty(d_out, 2 * d_in)
        nn.init.xavier_normal_(w)
        with torch.no_grad():
            self.wx.weight.copy_(w[:, :d_in])
            self.wy.weight.copy_(w[:, d_in:])
            self.wx.bias.zero_()

    def set_weight(self, w: Tensor, b: Tensor | None = None) -> None:
        """Set the full ``(out, 2d)`` matrix ``W`` (and bias); used by the reduction tests and the SDP init."""
        d = self.wx.in_features
        with torch.no_grad():
            self.wx.weight.copy_(w[:, :d])
            self.wy.weight.copy_(w[:, d:])
            self.wx.bias.copy_(torch.zeros(w.shape[0]) if b is None else b)

    def full_weight(self) -> Tensor:
        return torch.cat([self.wx.weight, self.wy.weight], dim=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.wx(x) + self.wy(y)


def _activation(name: str) -> Any:
    if name == "tanh":
        return fast_tanh
    if name == "relu":
        return torch.relu
    if name == "identity":
        return lambda x: x
    raise ConfigError(f"activation must be tanh, relu or identity, got {name!r}.")


def _check_items(model: Recommender, users: Tensor, items: Tensor) -> None:
    if users.ndim != 1 or items.ndim != 2 or items.shape[0] != users.shape[0]:
        raise DataError(
            f"{model.name} scores users (B,) against items (B, C), got {tuple(users.shape)} and {tuple(items.shape)}."
        )


_history = checked_history


def masked_softmin(z: Tensor, mask: Tensor) -> Tensor:
    """``softmax(-z)`` over the last axis with ``mask == False`` positions at exactly 0 (all-masked rows give 0)."""
    logits = (-z).masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim=-1, keepdim=True)
    logits = torch.where(any_valid, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=-1) * mask


# -- kernels -----------------------------------------------------------------------------------
# ``torch.tanh`` on CPU runs at ~2 ns per element (a scalar loop), several times slower than
# the vectorised ``expm1`` it is rewritten with here: tanh(x) = expm1(2x) / (expm1(2x) + 2),
# accurate to a few ulp for every x (no cancellation near 0, unlike 2 sigmoid(2x) - 1).
# ``expm1`` overflows only for 2x > 88.7, so 2x is clamped at 80 (tanh is 1.0 in float32
# from x = 9) when some input could get there. The backward passes use ``1 - tanh^2`` as
# ``torch.tanh`` does.
_TWICE_X_MAX = 80.0


def _tanh_of_twice_(x2: Tensor) -> Tensor:
    """``tanh(x)`` from ``x2 = 2 x``, computed in place in ``x2`` (a fresh tensor)."""
    e = x2.clamp_(max=_TWICE_X_MAX).expm1_()
    return e.div_(e + 2.0)


class _Tanh(torch.autograd.Function):
    """``torch.tanh`` with a vectorised forward (see above)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        t = _tanh_of_twice_(x * 2.0)
        ctx.save_for_backward(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (t,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, t)


def fast_tanh(x: Tensor) -> Tensor:
    """``tanh(x)``: the same values to a few ulp and the same gradient as ``torch.tanh``, faster on CPU."""
    return _Tanh.apply(x)


def _squared_tanh_into(t: Tensor, t2: Tensor, x2: Tensor, y2: Tensor, y2_max: float) -> None:
    """``t <- tanh(u)``, ``t2 <- tanh(u)^2`` for ``u[b, c, k, :] = (x2[b, c, :] + y2[b, k, :]) / 2`` (B, C, K, d).

    Everything runs in the two given (B, C, K, d) buffers: one broadcast add, then in-place passes.
    """
    torch.add(x2.unsqueeze(2), y2.unsqueeze(1), out=t)
    if not float(x2.max()) + y2_max <= _TWICE_X_MAX:  # also true on NaN (which the clamp keeps)
        t.clamp_(max=_TWICE_X_MAX)
    t.expm1_()
    torch.add(t, 2.0, out=t2)
    t.div_(t2)
    torch.mul(t, t, out=t2)


class _SDMHops(torch.autograd.Function):
    """The SDM attention and output modules over all hops (Eqs. 5.9-5.11, 5.13-5.17, 5.19), with a hand-written backward.

    Inputs (per case b and candidate c; k runs over the s context items):

    * ``q1`` (B, C, d): the input query q(1) of Eq. 5.7;
    * ``p_out`` (B, C, d): ``Wd_x p + b_d``, the candidate half of Eq. 5.13's transform;
    * ``ck`` (B, s, d), ``dk`` (B, s, d): ``Wc_y v(i)_k`` and ``Wd_y v(o)_k``, the context halves of
      Eqs. 5.9 and 5.13, computed once per case and shared by all its candidates;
    * ``mask`` (B, 1, s): the non-padding context positions;
    * ``wc, bc``: ``Wc_x, b_c``; then ``wg, bg`` for each of the hops 2..H (the same tensors
      repeated when the gate is global).

    Returns ``e(H)`` (B, C, d) and the (B, C, s) attention of every hop (not differentiable).

    The only (B, C, s, d) work is the broadcast ``tanh`` of Eqs. 5.9 and 5.13 (see ``fast_tanh``),
    its square, the weighted read ``sum_k a_k r_k`` and their backward passes, all written into
    preallocated buffers; ``r`` (Eq. 5.13's squared transform) is computed once for all hops and
    its gradient is accumulated over the hops in one buffer. Every matrix product is a
    (B*C, d) x (d, d) GEMM. ``keep`` is False under ``no_grad`` (nothing is saved).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        keep: bool,
        q1: Tensor,
        p_out: Tensor,
        ck: Tensor,
        dk: Tensor,
        mask: Tensor,
        wc: Tensor,
        bc: Tensor,
        *gates: Tensor,
    ) -> tuple[Tensor, ...]:
        b, c, d = q1.shape
        shape = (b, c, ck.shape[1], d)
        ck2, dk2 = ck * 2.0, dk * 2.0
        ck2_max = float(ck2.max())
        tmp = q1.new_empty(shape)  # t^2, then the weighted read
        scratch = None if keep else q1.new_empty(shape)  # the slopes, when they need not be kept
        # hop-invariant output transform r = tanh(Wd_x p + b_d + Wd_y v(o)_k)^2 (Eq. 5.13)
        r = q1.new_empty(shape)
        slope_r = q1.new_empty(shape) if keep else scratch
        _squared_tanh_into(slope_r, r, p_out * 2.0, dk2, float(dk2.max()))
        if keep:
            slope_r.addcmul_(r, slope_r, value=-1.0)  # t (1 - t^2)
        q, e = q1, None
        qs, es, gs, slopes, attention = [], [], [], [], []
        for hop in range(1, 2 + len(gates) // 2):
            if hop > 1:
                assert e is not None
                g = torch.sigmoid(F.linear(q, gates[2 * hop - 4], gates[2 * hop - 3]))  # Eq. 5.14
                es.append(e)
                gs.append(g)
                q = (1 - g) * e + g * q  # Eq. 5.15
            qs.append(q)
            # z_k = |tanh(Wc_x q + b_c + Wc_y v(i)_k)|^2 (Eqs. 5.9 / 5.16)
            t = q1.new_empty(shape) if keep else scratch
            _squared_tanh_into(t, tmp, F.linear(q, wc, bc) * 2.0, ck2, ck2_max)
            z = tmp.sum(-1)
            if keep:
                slopes.append(t.addcmul_(tmp, t, value=-1.0))  # t (1 - t^2)
            a = masked_softmin(z, mask)  # Eqs. 5.10 / 5.17
            attention.append(a)
            torch.mul(a.unsqueeze(-1), r, out=tmp)
            e = tmp.sum(2)  # Eqs. 5.13 / 5.19: e = sum_k a_k r_k
        assert e is not None
        if keep:
            ctx.hops = len(qs)
            ctx.save_for_backward(wc, r, slope_r, *gates[::2], *qs, *es, *gs, *slopes, *attention)
        ctx.mark_non_differentiable(*attention)
        return (e, *attention)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_e: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        h = ctx.hops
        wc, r, slope_r, *saved = ctx.saved_tensors
        gate_ws, qs, es, gs = (
            saved[: h - 1],
            saved[h - 1 : 2 * h - 1],
            saved[2 * h - 1 : 3 * h - 2],
            saved[3 * h - 2 : 4 * h - 3],
        )
        slopes, attention = saved[4 * h - 3 : 5 * h - 3], saved[5 * h - 3 :]
        d = wc.shape[0]
        tmp = torch.empty_like(r)
        acc = torch.empty_like(r)  # dL/dr, summed over the hops
        g_wc, g_bc = torch.zeros_like(wc), wc.new_zeros(d)
        g_ck = torch.zeros_like(r[:, 0])
        g_gates: list[Tensor] = []
        ge, gq_next = grad_e, None  # dL/de(h), dL/dq(h) through hop h + 1
        for hop in range(len(qs), 0, -1):
            a, q = attention[hop - 1], qs[hop - 1]
            # read e = sum_k a_k r_k
            torch.mul(r, ge.unsqueeze(2), out=tmp)
            ga = tmp.sum(-1)
            if hop == len(qs):
                torch.mul(a.unsqueeze(-1), ge.unsqueeze(2), out=acc)
            else:
                acc.addcmul_(a.unsqueeze(-1), ge.unsqueeze(2))
            # a = softmax(-z) over the unmasked positions (a = 0 elsewhere): dL/dz = a (sum_k a_k ga_k - ga)
            gz = (a * ga).sum(-1, keepdim=True).sub(ga).mul_(a)
            # z = |tanh(u)|^2 with u = Wc_x q + b_c + ck: dz/du = 2 t (1 - t^2)
            torch.mul(slopes[hop - 1], gz.unsqueeze(-1), out=tmp)
            g_u = tmp.sum(2).mul_(2.0)  # (B, C, d)
            g_ck.add_(tmp.sum(1), alpha=2.0)
            flat = g_u.reshape(-1, d)
            g_wc.addmm_(flat.t(), q.reshape(-1, d))
            g_bc.add_(flat.sum(0))
            gq = g_u @ wc
            if gq_next is not None:
                gq.add_(gq_next)
            if hop == 1:
                gq_next = gq
                break
            # q = (1 - g) e' + g q' with g = sigmoid(Wg q' + b_g), e' = e(h - 1), q' = q(h - 1)
            g, e_prev, q_prev = gs[hop - 2], es[hop - 2], qs[hop - 2]
            ge = gq * (1 - g)
            g_lin = (q_prev - e_prev).mul_(gq).mul_(g * (1 - g))
            flat = g_lin.reshape(-1, d)
            g_gates[:0] = [flat.t() @ q_prev.reshape(-1, d), flat.sum(0)]
            gq_next = (g_lin @ gate_ws[hop - 2]).add_(gq * g)
        # r = tanh(u)^2 with u = p_out + dk
        acc.mul_(slope_r)
        g_p = acc.sum(2).mul_(2.0)
        g_dk = acc.sum(1).mul_(2.0)
        return (None, gq_next, g_p, g_ck, g_dk, None, g_wc, g_bc, *g_gates)


# -- SDP ---------------------------------------------------------------------------------------

#: [CODE-HINT] the authors' training (thanhdtran/SDMR, main.py defaults and model_rec.py ``Rec``): BPR
#: against the hardest of 4 sampled negatives (``Rec._get_neg_pred``: ``torch.max`` over the negatives'
#: predictions), summed over the batch (losses.py ``bpr_loss``, ``average=False``), Adam lr 1e-3, batch
#: 256, 3 hops. The text's reading (one BPR term per negative, Eq. 5.22) stays ``neg_reduce="each"``.
#: Not taken over: the code's StepLR (x0.5 every 20 epochs) and its epoch choice on the *test* set
#: (we select on dev only).
SDMR_TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 256,
    "lr": 1e-3,
    "n_negatives": 4,
    "neg_reduce": "max",
    "reduction": "sum",
    "monitor": "HR@10,NDCG@10",
}


@register
class SDP(Recommender):
    """Signed Distance-based Perceptron (Eqs. 5.1-5.6); see the module docstring."""

    name: ClassVar[str] = "sdp"
    train_defaults: ClassVar[dict[str, Any]] = SDMR_TRAIN_DEFAULTS  # [CODE-HINT], see above

    @dataclass
    class Config:
        dim: int = 64
        hidden: int = 0  # d1; 0 means d1 = dim ([AMBIG] default)
        layers: int = 1  # l, the number of tanh layers (1 in the experiments)
        activation: str = "tanh"
        init_euclidean: bool = True  # [CODE-HINT] W1 = [I, -I] when d1 = d
        init_std: float = 0.01
        reg: float = 1e-3
        reg_dense: float = 0.0
        dropout: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.hidden < 0 or c.layers < 1 or c.init_std <= 0 or c.reg < 0 or c.reg_dense < 0:
            raise ConfigError(f"sdp needs dim >= 1, hidden >= 0, layers >= 1, init_std > 0, reg >= 0, got {c}.")
        if not 0 <= c.dropout < 1:
            raise ConfigError(f"sdp dropout must lie in [0, 1), got {c.dropout}.")
        self.act = _activation(c.activation)
        d1 = c.hidden or c.dim
        self.user_emb = _embedding(n_users, c.dim, c.init_std)
        self.item_emb = _embedding(n_items, c.dim, c.init_std)
        self.fc1 = _Split2(c.dim, d1)
        if c.init_euclidean and d1 == c.dim:
            eye = torch.eye(c.dim)
            self.fc1.set_weight(torch.cat([eye, -eye], dim=1))
        self.deep = nn.ModuleList(nn.Linear(d1, d1) for _ in range(c.layers - 1))
        self.out = _he_linear(d1)
        self.drop = nn.Dropout(c.dropout)
        self.feature_dim = d1

    def features(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """The distance ``o`` (B, C) and the squared layer ``e(l+1)`` (B, C, d1) of Eq. 5.5."""
        _check_items(self, users, items)
        u = self.user_emb(users)[:, None, :]  # (B, 1, d)
        v = self.item_emb(items)  # (B, C, d)
        e = self.drop(self.act(self.fc1(u, v)))
        for layer in self.deep:
            e = self.act(layer(e))
        e2 = e.square()
        return self.out(e2).squeeze(-1), e2

    def distance(self, users: Tensor, items: Tensor) -> Tensor:
        return self.features(users, items)[0]

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return -self.distance(users, items)

    def sparse_tables(self) -> tuple[str, ...]:  # read only by row: the sparse optimizers may update just those
        return ("user_emb.weight", "item_emb.weight")

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        c = self.config
        out = torch.zeros((), device=users.device)
        if c.reg:
            out = out + c.reg * (self.user_emb(users).pow(2).sum() + self.item_emb(items).pow(2).sum()) / len(users)
        if c.reg_dense:
            dense = [self.fc1.full_weight(), self.out.weight, *(m.weight for m in self.deep)]
            out = out + c.reg_dense * sum(w.pow(2).sum() for w in dense)
        return out


# -- SDM ---------------------------------------------------------------------------------------
@register
class SDM(Recommender):
    """Signed Distance-based Memory network with ``hops`` gated, weight-tied hops (Eqs. 5.7-5.19)."""

    name: ClassVar[str] = "sdm"
    train_defaults: ClassVar[dict[str, Any]] = SDMR_TRAIN_DEFAULTS  # [CODE-HINT], see above
    needs: ClassVar[frozenset[str]] = frozenset({"history"})

    @dataclass
    class Config:
        dim: int = 64
        hops: int = 3
        s: int = 5  # context window (most recent items), tuned over {5, 10, 20}
        hop_gates: bool = False  # [AMBIG] False: one global gate (Wg, bg); True: one per hop
        init_std: float = 0.01
        reg: float = 1e-3
        reg_dense: float = 0.0
        dropout: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.hops < 1 or c.s < 1 or c.init_std <= 0 or c.reg < 0 or c.reg_dense < 0:
            raise ConfigError(f"sdm needs dim >= 1, hops >= 1, s >= 1, init_std > 0 and reg >= 0, got {c}.")
        if not 0 <= c.dropout < 1:
            raise ConfigError(f"sdm dropout must lie in [0, 1), got {c.dropout}.")
        d = c.dim
        self.user_in = _embedding(n_users, d, c.init_std)
        self.item_in = _embedding(n_items, d, c.init_std)
        self.user_out = _embedding(n_users, d, c.init_std)
        self.item_out = _embedding(n_items, d, c.init_std)
        self.wa = _Split2(d, d)
        self.wb = _Split2(d, d)
        self.wc = _Split2(d, d)
        self.wd = _Split2(d, d)
        self.gates = nn.ModuleList(nn.Linear(d, d) for _ in range(max(c.hops - 1, 1) if c.hop_gates else 1))
        self.out = _he_linear(d)
        self.drop = nn.Dropout(c.dropout)
        self.feature_dim = d
        # the reduction tests swap tanh for the identity; training always uses tanh
        self.act: Any = torch.tanh

    def history_length(self) -> int:
        return self.config.s

    def sparse_tables(self) -> tuple[str, ...]:  # read only by row: the sparse optimizers may update just those
        return ("user_in.weight", "item_in.weight", "user_out.weight", "item_out.weight")

    def _gate(self, hop: int) -> nn.Linear:
        return self.gates[hop - 2] if self.config.hop_gates else self.gates[0]

    def features(
        self, users: Tensor, items: Tensor, context: Context | None, *, return_attention: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """Distance ``o`` (B, C), last-hop ``e(H)`` (B, C, d) and, if asked, the (B, C, s) attention of each hop."""
        _check_items(self, users, items)
        hist = _history(self, users, context, self.config.s)
        b, c = items.shape
        s = hist.shape[1]
        step = max(1, _BLOCK_ELEMENTS // max(1, c * s * self.config.dim))
        if b <= step:
            return self._features(users, items, hist, return_attention)
        parts = [
            self._features(users[i : i + step], items[i : i + step], hist[i : i + step], return_attention)
            for i in range(0, b, step)
        ]
        o = torch.cat([p[0] for p in parts])
        e = torch.cat([p[1] for p in parts])
        if not return_attention:
            return o, e
        att = [torch.cat([p[2][h] for p in parts]) for h in range(len(parts[0][2]))]  # type: ignore[misc]
        return o, e, att

    def _features(
        self, users: Tensor, items: Tensor, hist: Tensor, return_attention: bool
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        b, c = items.shape
        s, d = hist.shape[1], self.config.dim
        mask = (hist != 0)[:, None, :]  # (B, 1, s)
        fast = self.act is torch.tanh and not (self.training and self.drop.p > 0) and b * c * s > 0
        act = fast_tanh if fast else self.act
        # one lookup per item memory for the candidates and the context items
        ids = torch.cat([items.reshape(-1), hist.reshape(-1)])
        v_in, v_out = self.item_in(ids), self.item_out(ids)
        # queries per candidate (Eqs. 5.7, 5.8)
        q = act(self.wa(self.user_in(users)[:, None, :], v_in[: b * c].view(b, c, d)))  # (B, C, d)
        p = act(self.wb(self.user_out(users)[:, None, :], v_out[: b * c].view(b, c, d)))  # (B, C, d)
        q, p = self.drop(q), self.drop(p)
        # per-case context memories, shared by all candidates: Wc_y v(i)_k and Wd_y v(o)_k
        ck = self.wc.wy(v_in[b * c :].view(b, s, d))  # (B, s, d)
        dk = self.wd.wy(v_out[b * c :].view(b, s, d))  # (B, s, d)
        if fast:
            gates = [
                t for hop in range(2, self.config.hops + 1) for t in (self._gate(hop).weight, self._gate(hop).bias)
            ]
            wc = self.wc.wx
            args = (q, self.wd.wx(p), ck, dk, mask, wc.weight, wc.bias, *gates)
            keep = torch.is_grad_enabled() and any(t.requires_grad for t in args)
            e, *attention = _SDMHops.apply(keep, *args)
        else:  # another activation (the reduction tests) or active dropout: plain autograd, same math
            # hop-invariant output transform (Eq. 5.13 inner term)
            r = self.drop(act(self.wd.wx(p)[:, :, None, :] + dk[:, None, :, :])).square()  # (B, C, s, d)
            e, attention = None, []
            for hop in range(1, self.config.hops + 1):
                if hop > 1:
                    assert e is not None
                    g = torch.sigmoid(self._gate(hop)(q))  # Eq. 5.14
                    q = (1 - g) * e + g * q  # Eq. 5.15
                z = act(self.wc.wx(q)[:, :, None, :] + ck[:, None, :, :]).square().sum(-1)  # (B, C, s), Eq. 5.9
                a = masked_softmin(z, mask)  # Eq. 5.10
                e = (a[..., None] * r).sum(2)  # Eq. 5.13 / 5.19
                attention.append(a)
        assert e is not None
        o = self.out(e).squeeze(-1)  # Eq. 5.12 / 5.18
        return (o, e, attention) if return_attention else (o, e)

    def distance(self, users: Tensor, items: Tensor, context: Context | None) -> Tensor:
        return self.features(users, items, context)[0]

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return -self.distance(users, items, context)

    def attention(self, users: Tensor, items: Tensor, context: Context | None) -> list[Tensor]:
        """Per-hop attention weights (B, C, s) over the context window (for RQ2-style analyses)."""
        return self.features(users, items, context, return_attention=True)[2]  # type: ignore[misc]

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        c = self.config
        out = torch.zeros((), device=users.device)
        if c.reg:
            rows = sum(
                t.pow(2).sum()
                for t in (self.user_in(users), self.user_out(users), self.item_in(items), self.item_out(items))
            )
            out = out + c.reg * rows / len(users)
        if c.reg_dense:
            dense = [m.full_weight() for m in (self.wa, self.wb, self.wc, self.wd)]
            dense += [g.weight for g in self.gates] + [self.out.weight]
            out = out + c.reg_dense * sum(w.pow(2).sum() for w in dense)
        return out


# -- SDMR --------------------------------------------------------------------------------------
@register
class SDMR(Recommender):
    """Fusion of a frozen SDP and a frozen SDM through one ReLU unit (Eq. 5.21).

    :meth:`fit` pre-trains the two parts with BPR (same training config) unless they were
    given through :meth:`from_parts`, freezes them, then learns ``w_u, b_u`` only.
    The parts' options are the ``sdp_*`` / ``sdm_*`` fields of the config.
    """

    name: ClassVar[str] = "sdmr"
    train_defaults: ClassVar[dict[str, Any]] = SDMR_TRAIN_DEFAULTS  # [CODE-HINT], see above
    needs: ClassVar[frozenset[str]] = frozenset({"history"})

    @dataclass
    class Config:
        sdp_dim: int = 64
        sdm_dim: int = 64
        hops: int = 3
        s: int = 5
        reg: float = 1e-3
        activation: str = "relu"  # or "identity"
        bias_init: str = "active"  # "active": data-dependent b_u so every sampled pre-activation is > 0; "zero"
        retrain: bool = False  # True: fine-tune SDP and SDM with the fusion layer
        hop_gates: bool = False
        dropout: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.activation not in ("relu", "identity"):
            raise ConfigError(f"sdmr activation must be relu or identity, got {c.activation!r}.")
        if c.bias_init not in ("active", "zero"):
            raise ConfigError(f"sdmr bias_init must be active or zero, got {c.bias_init!r}.")
        self.sdp = SDP(n_users, n_items, SDP.Config(dim=c.sdp_dim, reg=c.reg, dropout=c.dropout))
        self.sdm = SDM(
            n_users,
            n_items,
            SDM.Config(dim=c.sdm_dim, hops=c.hops, s=c.s, reg=c.reg, hop_gates=c.hop_gates, dropout=c.dropout),
        )
        self.fusion = _he_linear(self.sdp.feature_dim + self.sdm.feature_dim)
        self.pretrained = False

    @classmethod
    def from_parts(cls, sdp: SDP, sdm: SDM, **options: Any) -> SDMR:
        """An SDMR over already trained parts (their weights are copied); ``options`` are extra Config fields."""
        if (sdp.n_users, sdp.n_items) != (sdm.n_users, sdm.n_items):
            raise DataError("SDP and SDM were built for different numbers of users or items.")
        cfg = cls.Config(
            sdp_dim=sdp.config.dim,
            sdm_dim=sdm.config.dim,
            hops=sdm.config.hops,
            s=sdm.config.s,
            hop_gates=sdm.config.hop_gates,
            **options,
        )
        model = cls(sdp.n_users, sdp.n_items, cfg)
        model.sdp.load_state_dict(sdp.state_dict())
        model.sdm.load_state_dict(sdm.state_dict())
        model.pretrained = True
        return model

    def history_length(self) -> int:
        return self.config.s

    def train(self, mode: bool = True) -> SDMR:
        super().train(mode)
        if not self.config.retrain:  # frozen parts stay in eval mode (no dropout)
            self.sdp.eval()
            self.sdm.eval()
        return self

    def _parts(self, users: Tensor, items: Tensor, context: Context | None) -> tuple[Tensor, Tensor]:
        checked_history(self, users, context, self.config.s)  # errors name sdmr, not its sdm part
        if self.config.retrain:
            return self.sdp.features(users, items)[1], self.sdm.features(users, items, context)[1]
        with torch.no_grad():
            return self.sdp.features(users, items)[1], self.sdm.features(users, items, context)[1]

    def pre_activation(self, users: Tensor, items: Tensor, context: Context | None) -> Tensor:
        """``w_u . [e_SDP; e_SDM] + b_u`` (B, C), before the ReLU."""
        e_sdp, e_sdm = self._parts(users, items, context)
        return self.fusion(torch.cat([e_sdp, e_sdm], dim=-1)).squeeze(-1)

    def distance(self, users: Tensor, items: Tensor, context: Context | None) -> Tensor:
        o = self.pre_activation(users, items, context)
        return torch.relu(o) if self.config.activation == "relu" else o

    @torch.no_grad()
    def init_bias(self, train: Interactions, n: int = 4096, seed: int = 0, context: str = "history") -> None:
        """[AMBIG] (b_u's init is not stated) Set ``b_u`` so the pre-activation is > 0 on sampled training pairs.

        With ``b_u = 0`` and a He-normal ``w_u`` a large share of (user, item) pairs can start
        with a negative pre-activation, where the ReLU passes no gradient (the spec's A.4
        warning) and every such candidate ties at distance 0.
        """
        from segue.data.sequences import row_contexts

        gen = torch.Generator().manual_seed(seed)
        rows = torch.randint(len(train), (min(n, len(train)),), generator=gen)
        users = torch.tensor(train.users)[rows].to(self.device)
        pos = torch.tensor(train.items)[rows]
        neg = torch.randint(1, self.n_items + 1, (len(rows), 4), generator=gen)
        items = torch.cat([pos[:, None], neg], dim=1).to(self.device)
        hist = torch.as_tensor(row_contexts(train, self.config.s, context))[rows].to(self.device)
        was = self.training
        self.eval()
        pre = self.pre_activation(users, items, Context(history=hist))
        self.train(was)
        self.fusion.bias.sub_(pre.min() - 0.1 * pre.std().clamp(min=1e-3))

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return -self.distance(users, items, context)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if self.config.retrain:
            return self.sdp.regularization(users, items) + self.sdm.regularization(users, items)
        return torch.zeros((), device=users.device)

    def parts(self) -> dict[str, Recommender]:
        """SDP and SDM, pre-trained first unless the model was built :meth:`from_parts`."""
        return {} if self.pretrained else {"sdp": self.sdp, "sdm": self.sdm}

    def assemble(
        self, train: Interactions, parts: dict[str, Recommender], *, seed: int = 0, context: str = "history"
    ) -> None:
        """Freeze SDP and SDM (unless ``retrain``), then start ``b_u`` in the ReLU's active range."""
        self.pretrained = True
        frozen = not self.config.retrain
        self.sdp.requires_grad_(not frozen)
        self.sdm.requires_grad_(not frozen)
        if self.config.bias_init == "active" and self.config.activation == "relu":
            self.init_bias(train, seed=seed, context=context)
