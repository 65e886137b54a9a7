"""The rewritten SDM / SDP / SDMR / CMN scoring kernels against a copy of the previous kernel math.

The ``old_*`` functions below are the scoring code as it was before the kernels were rewritten
(plain autograd, ``torch.tanh``, ``einsum`` reads, a gathered (B, C, K, d) neighbourhood in
CMN). The tests check that the new kernels give the same outputs and the same gradients for
every parameter, on random inputs with padded histories and neighbourhoods.
``benchmarks/bench_kernels.py`` times the same ``old_*`` functions against the new code.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from segue.models.base import Context
from segue.models.cmn import CMN
from segue.models.sdmr import SDM, SDMR, SDP, fast_tanh


# -- the previous kernels (reference) ----------------------------------------------------------
def old_masked_softmin(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = (-z).masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim=-1, keepdim=True)
    logits = torch.where(any_valid, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=-1) * mask


def old_sdm_features(
    m: SDM, users: torch.Tensor, items: torch.Tensor, hist: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``SDM._features`` before the rewrite (``m.act`` is ``torch.tanh`` in training)."""
    act = m.act
    mask = (hist != 0)[:, None, :]
    q = act(m.wa(m.user_in(users)[:, None, :], m.item_in(items)))
    p = act(m.wb(m.user_out(users)[:, None, :], m.item_out(items)))
    q, p = m.drop(q), m.drop(p)
    ck = m.wc.wy(m.item_in(hist))[:, None, :, :]
    dk = m.wd.wy(m.item_out(hist))[:, None, :, :]
    r = m.drop(act(m.wd.wx(p)[:, :, None, :] + dk)).square()
    e = None
    attention = []
    for hop in range(1, m.config.hops + 1):
        if hop > 1:
            g = torch.sigmoid(m._gate(hop)(q))
            q = (1 - g) * e + g * q
        z = act(m.wc.wx(q)[:, :, None, :] + ck).square().sum(-1)
        a = old_masked_softmin(z, mask)
        e = torch.einsum("bcs,bcsd->bcd", a, r)
        attention.append(a)
    assert e is not None
    return m.out(e).squeeze(-1), e, attention


def old_sdp_features(m: SDP, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``SDP.features`` before the rewrite (tanh layers with ``torch.tanh``)."""
    u = m.user_emb(users)[:, None, :]
    v = m.item_emb(items)
    e = m.drop(torch.tanh(m.fc1(u, v)))
    for layer in m.deep:
        e = torch.tanh(layer(e))
    e2 = e.square()
    return m.out(e2).squeeze(-1), e2


def old_sdmr_distance(m: SDMR, users: torch.Tensor, items: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """``SDMR.distance`` before the rewrite."""
    with torch.set_grad_enabled(m.config.retrain and torch.is_grad_enabled()):
        e_sdp = old_sdp_features(m.sdp, users, items)[1]
        e_sdm = old_sdm_features(m.sdm, users, items, hist)[1]
    o = m.fusion(torch.cat([e_sdp, e_sdm], dim=-1)).squeeze(-1)
    return torch.relu(o) if m.config.activation == "relu" else o


def old_cmn_score(m: CMN, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``CMN._score`` before the rewrite."""
    m_u = m.user_mem(users)[:, None, :]
    e_i = m.item_mem(items)
    nb = m.neighbours[items]
    mask = (nb != 0) & (nb != users[:, None, None])
    m_v = m.user_mem(nb)
    c_v = m.out_mem(nb)
    z = m_u + e_i
    o = torch.zeros_like(z)
    for hop in range(m.config.hops):
        if hop:
            z = torch.relu(m.hop_w[hop - 1](z) + o)
        q = torch.einsum("bcd,bckd->bck", z, m_v).masked_fill(~mask, float("-inf"))
        p = torch.softmax(q, dim=-1).nan_to_num(0.0)
        o = torch.einsum("bck,bckd->bcd", p, c_v)
    return m.v(torch.relu(m.u_proj(m_u * e_i) + m.w_proj(o))).squeeze(-1)


# -- helpers -----------------------------------------------------------------------------------
N_USERS, N_ITEMS = 40, 60


def _inputs(b: int = 12, c: int = 5, s: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Users, candidates and a left-padded history: full rows, partly padded rows and one empty row."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(1, N_USERS + 1, (b,), generator=gen)
    items = torch.randint(1, N_ITEMS + 1, (b, c), generator=gen)
    hist = torch.randint(1, N_ITEMS + 1, (b, s), generator=gen)
    for row in range(b):
        pad = row % (s + 1)  # 0..s padded positions, row 5 has none left
        hist[row, :pad] = 0
    return users, items, hist


def _perturb(m: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Move every parameter (biases included) off its init so that nothing is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def _grads(m: torch.nn.Module, fn: Callable[[], torch.Tensor | tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    """Gradients of a scalar mixing every output of ``fn`` (non-linearly, so no gradient is a plain sum)."""
    m.zero_grad(set_to_none=True)
    out = fn()
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o.sin() * (i + 1)).sum() for i, o in enumerate(outs))
    loss.backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal up to float32 rounding: ``rtol`` of each value, and of the largest value for near-zero entries."""
    scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale + 1e-12)


def _same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name in want:
        _close(got[name], want[name])


# -- fast_tanh ---------------------------------------------------------------------------------
def test_fast_tanh_matches_tanh_everywhere() -> None:
    x = torch.cat(
        [
            torch.linspace(-12, 12, 20001),
            torch.logspace(-30, 2, 400),
            -torch.logspace(-30, 2, 400),
            torch.tensor([0.0, -0.0, 40.0, 44.5, 60.0, 1e4, -1e4, float("inf"), float("-inf")]),
        ]
    )
    want = torch.tanh(x.double())
    got = fast_tanh(x)
    assert torch.all((got.double() - want).abs() <= 4e-7 * want.abs() + 1e-45)
    assert torch.isnan(fast_tanh(torch.tensor([float("nan")]))).all()
    xg = x[:20001].clone().requires_grad_()
    g = torch.randn(xg.shape)
    (got_grad,) = torch.autograd.grad(fast_tanh(xg), xg, g)
    (want_grad,) = torch.autograd.grad(torch.tanh(xg), xg, g)
    _close(got_grad, want_grad)


# -- SDM ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("hops,hop_gates", [(1, False), (3, False), (3, True)])
def test_sdm_matches_the_old_kernel(hops: int, hop_gates: bool) -> None:
    torch.manual_seed(hops)
    m = SDM(N_USERS, N_ITEMS, SDM.Config(dim=16, hops=hops, s=5, hop_gates=hop_gates, init_std=0.3))
    _perturb(m, seed=hops)
    users, items, hist = _inputs(seed=hops)
    m.train()
    want_o, want_e, want_a = old_sdm_features(m, users, items, hist)
    got_o, got_e, got_a = m.features(users, items, Context(history=hist), return_attention=True)  # type: ignore[misc]
    _close(got_o, want_o)
    _close(got_e, want_e)
    for got, want in zip(got_a, want_a, strict=True):
        _close(got, want)
    assert torch.all(got_a[0][hist[:, None, :].expand_as(got_a[0]) == 0] == 0)  # padding gets no attention
    assert torch.all(got_e[(hist == 0).all(1)] == 0)  # an empty history reads nothing
    _same_grads(
        _grads(m, lambda: m.features(users, items, Context(history=hist))),  # type: ignore[arg-type,return-value]
        _grads(m, lambda: old_sdm_features(m, users, items, hist)[:2]),
    )
    with torch.no_grad():  # the inference path keeps nothing for a backward pass
        _close(m.distance(users, items, Context(history=hist)), want_o.detach())


def test_sdm_matches_the_old_kernel_at_init_scale_and_full_width() -> None:
    """Default init (tiny activations, where tanh accuracy near 0 matters) and d = 64."""
    torch.manual_seed(5)
    m = SDM(N_USERS, N_ITEMS, SDM.Config(dim=64, hops=3, s=5))
    users, items, hist = _inputs(b=8, seed=5)
    want_o = old_sdm_features(m, users, items, hist)[0]
    _close(m.distance(users, items, Context(history=hist)), want_o)
    _same_grads(
        _grads(m, lambda: m.features(users, items, Context(history=hist))),  # type: ignore[arg-type,return-value]
        _grads(m, lambda: old_sdm_features(m, users, items, hist)[:2]),
    )


def test_sdm_with_dropout_keeps_the_old_random_stream() -> None:
    """Active dropout takes the plain-autograd path, which draws the same masks in the same order."""
    m = SDM(N_USERS, N_ITEMS, SDM.Config(dim=8, hops=2, s=5, dropout=0.3, init_std=0.3)).train()
    users, items, hist = _inputs(seed=7)
    torch.manual_seed(11)
    want = old_sdm_features(m, users, items, hist)[0]
    torch.manual_seed(11)
    _close(m.distance(users, items, Context(history=hist)), want)


def test_sdm_large_preactivations_saturate_like_tanh() -> None:
    """Inputs far into tanh's flat part (where the kernel clamps) still match."""
    torch.manual_seed(6)
    m = SDM(N_USERS, N_ITEMS, SDM.Config(dim=8, hops=2, s=5, init_std=20.0))
    users, items, hist = _inputs(seed=6)
    want_o = old_sdm_features(m, users, items, hist)[0]
    _close(m.distance(users, items, Context(history=hist)), want_o)
    _same_grads(
        _grads(m, lambda: m.features(users, items, Context(history=hist))),  # type: ignore[arg-type,return-value]
        _grads(m, lambda: old_sdm_features(m, users, items, hist)[:2]),
    )


# -- SDP / SDMR --------------------------------------------------------------------------------
def test_sdp_matches_the_old_kernel() -> None:
    torch.manual_seed(8)
    m = SDP(N_USERS, N_ITEMS, SDP.Config(dim=16, layers=2))
    _perturb(m, seed=8)
    users, items, _ = _inputs(seed=8)
    _close(m.distance(users, items), old_sdp_features(m, users, items)[0])
    _same_grads(_grads(m, lambda: m.features(users, items)), _grads(m, lambda: old_sdp_features(m, users, items)))


@pytest.mark.parametrize("retrain", [False, True])
def test_sdmr_matches_the_old_kernel(retrain: bool) -> None:
    torch.manual_seed(9)
    m = SDMR(N_USERS, N_ITEMS, SDMR.Config(sdp_dim=16, sdm_dim=16, hops=3, retrain=retrain))
    _perturb(m, seed=9)
    if not retrain:  # what fit() does before learning the fusion
        m.sdp.requires_grad_(False)
        m.sdm.requires_grad_(False)
    m.train()
    users, items, hist = _inputs(seed=9)
    ctx = Context(history=hist)
    _close(m.distance(users, items, ctx), old_sdmr_distance(m, users, items, hist))
    got = _grads(m, lambda: m.pre_activation(users, items, ctx))
    want = _grads(
        m,
        lambda: m.fusion(
            torch.cat([old_sdp_features(m.sdp, users, items)[1], old_sdm_features(m.sdm, users, items, hist)[1]], -1)
        ).squeeze(-1),
    )
    if not retrain:
        assert set(got) == {"fusion.weight", "fusion.bias"}
    _same_grads(got, want)


# -- CMN ---------------------------------------------------------------------------------------
def _cmn(hops: int, seed: int) -> CMN:
    torch.manual_seed(seed)
    m = CMN(N_USERS, N_ITEMS, CMN.Config(dim=16, hops=hops, max_neighbours=7, init_std=0.3))
    _perturb(m, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    nb = torch.randint(1, N_USERS + 1, (N_ITEMS + 1, 7), generator=gen)
    nb[torch.rand(nb.shape, generator=gen) < 0.3] = 0  # padded neighbourhoods
    nb[0] = 0
    nb[3] = 0  # an item nobody else consumed
    m.neighbours = nb
    m.has_neighbourhood = True
    return m


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_cmn_matches_the_old_kernel(hops: int) -> None:
    m = _cmn(hops, seed=20 + hops)
    users, items, _ = _inputs(b=16, seed=hops)
    items[0, 0] = 3
    users[1] = int(m.neighbours[items[1, 0]].max())  # the query user is in the item's neighbourhood
    m.train()
    _close(m.score(users, items), old_cmn_score(m, users, items))
    got = _grads(m, lambda: m.score(users, items))
    want = _grads(m, lambda: old_cmn_score(m, users, items))
    _same_grads(got, want)
    assert torch.all(got["user_mem.weight"][0] == 0) and torch.all(got["out_mem.weight"][0] == 0)


# -- persistence -------------------------------------------------------------------------------
def test_parameters_and_state_dict_keys_are_unchanged() -> None:
    sdm = ["gates.0.bias", "gates.0.weight", "item_in.weight", "item_out.weight", "out.bias", "out.weight"]
    sdm += ["user_in.weight", "user_out.weight"]
    sdm += [f"{w}.{p}" for w in ("wa", "wb", "wc", "wd") for p in ("wx.bias", "wx.weight", "wy.weight")]
    assert sorted(SDM(5, 7, SDM.Config(dim=4, hops=3)).state_dict()) == sorted(sdm)
    sdp = ["fc1.wx.bias", "fc1.wx.weight", "fc1.wy.weight", "item_emb.weight", "out.bias", "out.weight"]
    sdp += ["user_emb.weight"]
    sdmr = ["fusion.bias", "fusion.weight"] + [f"sdm.{k}" for k in sdm] + [f"sdp.{k}" for k in sdp]
    assert sorted(SDMR(5, 7).state_dict()) == sorted(sdmr)
    cmn = ["hop_w.0.weight", "item_mem.weight", "neighbours", "out_mem.weight", "u_proj.weight"]
    cmn += ["user_mem.weight", "v.weight", "w_proj.bias", "w_proj.weight"]
    assert sorted(CMN(5, 7, CMN.Config(hops=2)).state_dict()) == sorted(cmn)
