"""Quaternion algebra (spec B.2): Hamilton product, matrix form, norms, the quaternion linear layer, cells."""

from __future__ import annotations

import math

import pytest
import torch

from segue.errors import ConfigError, DataError
from segue.models.quaternion import (
    QuaternionGRUCell,
    QuaternionLinear,
    QuaternionLSTMCell,
    component_cat,
    component_dot,
    component_softmax,
    conjugate,
    hamilton,
    left_matrix,
    qinner,
    qnorm,
    quaternion_attention,
    run_cell,
)

ONE = torch.tensor([1.0, 0, 0, 0])
I = torch.tensor([0.0, 1, 0, 0])  # noqa: E741
J = torch.tensor([0.0, 0, 1, 0])
K = torch.tensor([0.0, 0, 0, 1])


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Tiny Adam moments become denormal floats, which are ~100x slower on x86: flush them while testing."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def test_unit_products() -> None:
    assert torch.equal(hamilton(I, J), K)
    assert torch.equal(hamilton(J, I), -K)
    assert torch.equal(hamilton(I, I), -ONE)
    assert torch.equal(hamilton(J, J), -ONE)
    assert torch.equal(hamilton(K, K), -ONE)
    assert torch.equal(hamilton(J, K), I)
    assert torch.equal(hamilton(K, I), J)
    assert torch.equal(hamilton(K, J), -I)
    assert torch.equal(hamilton(I, K), -J)
    assert torch.equal(hamilton(hamilton(I, J), K), -ONE)  # ijk = -1


def test_hand_worked_product() -> None:
    # (1 + 2i + 3j + 4k)(5 + 6i + 7j + 8k), worked by hand:
    # r = 5 - 12 - 21 - 32 = -60; i = 6 + 10 + 24 - 28 = 12; j = 7 - 16 + 15 + 24 = 30; k = 8 + 14 - 18 + 20 = 24
    x = torch.tensor([1.0, 2, 3, 4])
    y = torch.tensor([5.0, 6, 7, 8])
    assert torch.equal(hamilton(x, y), torch.tensor([-60.0, 12, 30, 24]))
    # and the other order differs only in the sign of the cross-product part
    assert torch.equal(hamilton(y, x), torch.tensor([-60.0, 20, 14, 32]))


def test_non_commutative_and_matrix_form() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    assert not torch.allclose(hamilton(x, y), hamilton(y, x))
    via_matrix = (left_matrix(x) @ y.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(hamilton(x, y), via_matrix, atol=1e-6)
    # L is a homomorphism: L(x (x) y) = L(x) L(y)
    assert torch.allclose(left_matrix(hamilton(x, y)), left_matrix(x) @ left_matrix(y), atol=1e-5)


def test_norm_multiplicative_conjugate_and_associative() -> None:
    g = torch.Generator().manual_seed(1)
    x, y, z = (torch.randn(50, 4, generator=g, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(qnorm(hamilton(x, y)), qnorm(x) * qnorm(y))
    xx = hamilton(x, conjugate(x))
    assert torch.allclose(xx[:, 0], qnorm(x).squeeze(-1) ** 2)
    assert torch.allclose(xx[:, 1:], torch.zeros_like(xx[:, 1:]), atol=1e-12)
    assert torch.allclose(hamilton(hamilton(x, y), z), hamilton(x, hamilton(y, z)))
    # conjugate of a product reverses the order
    assert torch.allclose(conjugate(hamilton(x, y)), hamilton(conjugate(y), conjugate(x)))


def test_vector_product_is_positionwise() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(3, 12, generator=g), torch.randn(3, 12, generator=g)  # d = 12: 3 positions
    out = hamilton(x, y)
    for p in range(3):
        xs = x[:, p::3]  # r, a, b, c of position p
        ys = y[:, p::3]
        assert torch.allclose(out[:, p::3], hamilton(xs, ys), atol=1e-6)


def test_component_ops() -> None:
    x = torch.arange(8.0)
    y = torch.ones(8)
    assert torch.equal(component_dot(x, y), torch.tensor([1.0, 5, 9, 13]))
    assert qinner(x, y).item() == pytest.approx(28 / 4)
    cat = component_cat(torch.arange(4.0), torch.arange(10.0, 18.0))
    assert torch.equal(cat, torch.tensor([0.0, 10, 11, 1, 12, 13, 2, 14, 15, 3, 16, 17]))
    logits = torch.randn(2, 5, 4)
    mask = torch.tensor([[False, True, True, True, True], [False] * 5])
    w = component_softmax(logits, mask, dim=1)
    assert torch.allclose(w[0].sum(0), torch.ones(4))
    assert torch.equal(w[0, 0], torch.zeros(4))
    assert torch.equal(w[1], torch.zeros(5, 4))  # all masked -> zeros, not NaN


def test_quaternion_linear_equals_block_expansion() -> None:
    torch.manual_seed(0)
    layer = QuaternionLinear(8, 12, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 8)
    r, a, b, c = layer.r, layer.a, layer.b, layer.c
    xr, xa, xb, xc = x.chunk(4, dim=-1)
    # the component equations of spec B.2
    out_r = xr @ r.T - xa @ a.T - xb @ b.T - xc @ c.T
    out_a = xr @ a.T + xa @ r.T - xb @ c.T + xc @ b.T
    out_b = xr @ b.T + xa @ c.T + xb @ r.T - xc @ a.T
    out_c = xr @ c.T - xa @ b.T + xb @ a.T + xc @ r.T
    expected = torch.cat([out_r, out_a, out_b, out_c], -1) + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    # ... and W (x) x is the Hamilton product position by position for a 4 -> 4 layer (Figure 5.9)
    small = QuaternionLinear(4, 4)
    w = torch.cat([small.r, small.a, small.b, small.c], -1).reshape(4)
    xq = torch.randn(3, 4)
    assert torch.allclose(small(xq), hamilton(w.expand(3, 4), xq), atol=1e-6)
    # parameters: dout * din / 4 (+ bias)
    assert sum(p.numel() for p in QuaternionLinear(16, 32).parameters()) == 16 * 32 // 4
    assert sum(p.numel() for p in small.parameters()) == 4


def test_quaternion_linear_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="multiple of 4"):
        QuaternionLinear(6, 8)
    with pytest.raises(DataError, match="size 8"):
        QuaternionLinear(8, 8)(torch.zeros(2, 4))
    with pytest.raises(DataError, match="divisible by 4"):
        hamilton(torch.zeros(3), torch.zeros(3))


def test_attention_masks_and_reduces() -> None:
    torch.manual_seed(0)
    steps = torch.randn(2, 6, 8)
    ctx = torch.randn(2, 8)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    out, alpha = quaternion_attention(steps, ctx, mask)
    assert out.shape == (2, 8) and alpha.shape == (2, 6, 4)
    assert torch.equal(alpha[0, :2], torch.zeros(2, 4))
    # reference: logits = component sums of the Hamilton product / sqrt(d)
    prod = hamilton(steps, ctx[:, None, :]) / math.sqrt(8)
    logits = prod.reshape(2, 6, 4, 2).sum(-1)
    ref_alpha = torch.softmax(logits[1], dim=0)
    assert torch.allclose(alpha[1], ref_alpha, atol=1e-6)
    ref_out = (ref_alpha.repeat_interleave(2, dim=-1) * steps[1]).sum(0)
    assert torch.allclose(out[1], ref_out, atol=1e-6)
    # dropping the masked steps changes nothing
    out2, _ = quaternion_attention(steps[:1, 2:], ctx[:1])
    assert torch.allclose(out[0], out2[0], atol=1e-6)
    # per-dimension flag keeps a weight per real position
    _out3, alpha3 = quaternion_attention(steps, ctx, mask, per_dim=True)
    assert alpha3.shape == (2, 6, 8) and torch.allclose(alpha3[0].sum(0), torch.ones(8))


@pytest.mark.parametrize("cell_cls", [QuaternionLSTMCell, QuaternionGRUCell])
def test_cells_shapes_and_left_padding(cell_cls: type) -> None:
    torch.manual_seed(0)
    cell = cell_cls(8, 12)
    x = torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    h = run_cell(cell, x, mask)
    assert h.shape == (3, 5, 12) and torch.isfinite(h).all()
    # two extra left-padded steps leave the states unchanged
    xp = torch.cat([torch.zeros(3, 2, 8), x], 1)
    mp = torch.cat([torch.zeros(3, 2, dtype=torch.bool), mask], 1)
    hp = run_cell(cell, xp, mp)
    assert torch.allclose(hp[:, 2:], h, atol=1e-6)
    assert torch.equal(hp[:, :2], torch.zeros(3, 2, 12))
