"""The rewritten QUALE / QUASE / QUALSE kernels against a copy of the previous kernel math.

The ``old_*`` functions below are the quaternion scoring code as it was before the kernels were
rewritten (16-product Hamilton products, a repeated-weights attention read, block matrices
concatenated from 16 pieces, one cell call per step with ``torch.tanh``, ``F.embedding`` lookups,
``einsum`` scores, a gate recomputed per candidate slice). The tests check that the new kernels
give the same outputs and the same gradients for every parameter, on random inputs with
left-padded and empty history windows, for every model, cell and fusion variant.
``benchmarks/bench_quaternion_kernels.py`` times the same ``old_*`` functions against the new code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from segue.data.interactions import Interactions
from segue.evaluation.sequential import attach_history, sequential_protocol
from segue.models.base import Context, build_model
from segue.models.qualse import QUALE, QUALSE, QUASE
from segue.models.quaternion import (
    QuaternionGRUCell,
    QuaternionLinear,
    QuaternionLSTMCell,
    _stacked,
    hamilton,
    quaternion_attention,
    right_blocks,
    right_matrix,
    run_cell,
)
from segue.pipeline import prepare
from segue.training import fit
from segue.training.adversarial import Adversary
from segue.training.trainer import TrainConfig
from tests.conftest import make_frame


# -- the previous kernels (reference) ----------------------------------------------------------
def old_hamilton(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rx, ax, bx, cx = x.chunk(4, dim=-1)
    ry, ay, by, cy = y.chunk(4, dim=-1)
    r = rx * ry - ax * ay - bx * by - cx * cy
    a = rx * ay + ax * ry + bx * cy - cx * by
    b = rx * by - ax * cy + bx * ry + cx * ay
    c = rx * cy + ax * by - bx * ay + cx * ry
    return torch.cat([r, a, b, c], dim=-1)


def old_component_cat(*xs: torch.Tensor) -> torch.Tensor:
    parts = [x.chunk(4, dim=-1) for x in xs]
    return torch.cat([torch.cat([p[i] for p in parts], dim=-1) for i in range(4)], dim=-1)


def old_component_softmax(logits: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    if mask is None:
        return torch.softmax(logits, dim=dim)
    m = mask.unsqueeze(-1).expand_as(logits)
    z = logits.masked_fill(~m, float("-inf"))
    any_valid = m.any(dim=dim, keepdim=True)
    z = torch.where(any_valid, z, torch.zeros_like(z))
    return torch.softmax(z, dim=dim) * m


def old_attention(
    steps: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None, per_dim: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    d = steps.shape[-1]
    ctx = context.unsqueeze(-2) if context.dim() == 2 else context
    prod = old_hamilton(steps, ctx) / math.sqrt(d)
    if per_dim:
        if mask is None:
            alpha = torch.softmax(prod, dim=1)
        else:
            m = mask.unsqueeze(-1).expand_as(prod)
            z = prod.masked_fill(~m, float("-inf"))
            z = torch.where(m.any(dim=1, keepdim=True), z, torch.zeros_like(z))
            alpha = torch.softmax(z, dim=1) * m
        return (alpha * steps).sum(1), alpha
    logits = prod.unflatten(-1, (4, d // 4)).sum(-1)
    alpha = old_component_softmax(logits, mask, dim=1)
    return (alpha.repeat_interleave(d // 4, dim=-1) * steps).sum(1), alpha


def old_weight_matrix(layer: QuaternionLinear) -> torch.Tensor:
    r, a, b, c = layer.r, layer.a, layer.b, layer.c
    return torch.cat(
        [
            torch.cat([r, -a, -b, -c], dim=1),
            torch.cat([a, r, -c, b], dim=1),
            torch.cat([b, c, r, -a], dim=1),
            torch.cat([c, -b, a, r], dim=1),
        ],
        dim=0,
    )


def old_linear(layer: QuaternionLinear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, old_weight_matrix(layer), layer.bias)


def old_weights(cell: QuaternionLSTMCell | QuaternionGRUCell) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.cat([old_weight_matrix(w) for w in cell.W], dim=0),  # type: ignore[arg-type]
        torch.cat([old_weight_matrix(r) for r in cell.R], dim=0),  # type: ignore[arg-type]
    )


def old_lstm_step(cell: QuaternionLSTMCell, x: torch.Tensor, state: tuple, weights: tuple) -> tuple:
    w, r = weights
    h, c = state
    z = F.linear(x, w) + F.linear(h, r) + cell.g
    f, i, o, cand = z.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def old_gru_step(cell: QuaternionGRUCell, x: torch.Tensor, state: torch.Tensor, weights: tuple) -> torch.Tensor:
    w, r = weights
    wx = F.linear(x, w) + cell.g
    rh = F.linear(state, r)
    wz, wr, wn = wx.chunk(3, dim=-1)
    rz, rr, rn = rh.chunk(3, dim=-1)
    z = torch.sigmoid(wz + rz)
    reset = torch.sigmoid(wr + rr)
    n = torch.tanh(wn + reset * rn)
    return (1 - z) * n + z * state


def old_run_cell(cell: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    b, length, _ = x.shape
    h = x.new_zeros(b, cell.hidden_size)
    lstm = isinstance(cell, QuaternionLSTMCell)
    c = x.new_zeros(b, cell.hidden_size) if lstm else None
    weights = old_weights(cell)  # type: ignore[arg-type]
    outs = []
    for t in range(length):
        keep = mask[:, t : t + 1]
        if lstm:
            h_new, c_new = old_lstm_step(cell, x[:, t], (h, c), weights)  # type: ignore[arg-type]
            c = torch.where(keep, c_new, c)
        else:
            h_new = old_gru_step(cell, x[:, t], h, weights)  # type: ignore[arg-type]
        h = torch.where(keep, h_new, h)
        outs.append(h)
    return torch.stack(outs, dim=1)


def old_lookup(m: torch.nn.Module, name: str, ids: torch.Tensor) -> torch.Tensor:
    return F.embedding(ids, getattr(m, name).weight, padding_idx=0)


def old_long_user(m: QUALE | QUALSE, users: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    return old_attention(
        old_lookup(m, "item_long", hist), old_lookup(m, "user_long", users), hist != 0, m.config.per_dim
    )[0]


def old_short_user(m: QUASE | QUALSE, hist: torch.Tensor) -> torch.Tensor:
    hist = hist[:, -m.config.s :]
    mask = hist != 0
    h = old_run_cell(m.rnn, old_lookup(m, "item_short", hist), mask)
    pooled, _ = old_attention(h, m.context_short, mask, m.config.per_dim)
    return torch.tanh(old_linear(m.out_short, pooled))


def old_gate(m: QUALSE, users: torch.Tensor, items: torch.Tensor, u_long: torch.Tensor, u_short: torch.Tensor):
    ug, pg = ("user_gate", "item_gate") if m.config.gate_tables == "new" else ("user_long", "item_long")
    user_part = old_linear(m.gate_1, old_component_cat(u_long, u_short)) + old_linear(
        m.gate_2, old_lookup(m, ug, users)
    )
    if items.numel() > m.n_items:
        item_part = F.embedding(items, old_linear(m.gate_3, getattr(m, pg).weight))
    else:
        item_part = old_linear(m.gate_3, old_lookup(m, pg, items))
    return torch.sigmoid(user_part[:, None, :] + item_part)


def old_fuse(m: QUALSE, users: torch.Tensor, items: torch.Tensor, u_long: torch.Tensor, u_short: torch.Tensor):
    long_vec = u_long[:, None, :] * old_lookup(m, "item_long", items)
    short_vec = u_short[:, None, :] * old_lookup(m, "item_short", items)
    if m.config.fusion == "fixed":
        c = m.config.fixed_c
        return c * short_vec.sum(-1) / 4.0 + (1 - c) * long_vec.sum(-1) / 4.0
    g = old_gate(m, users, items, u_long, u_short)
    return (g * long_vec) @ m.w_o1 + ((1 - g) * short_vec) @ m.w_o2


def old_score(m: QUALE | QUASE | QUALSE, users: torch.Tensor, items: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """``score`` of the three models before the rewrite."""
    if isinstance(m, QUALSE):
        hist = hist[:, -m.config.l :]
        u_long, u_short = old_long_user(m, users, hist), old_short_user(m, hist)
        chunk = QUALSE._chunk
        parts = [old_fuse(m, users, items[:, i : i + chunk], u_long, u_short) for i in range(0, items.shape[1], chunk)]
        return torch.cat(parts, dim=1)
    if isinstance(m, QUALE):
        hist = hist[:, -m.config.l :]
        return torch.einsum("bd,bcd->bc", old_long_user(m, users, hist), old_lookup(m, "item_long", items)) / 4.0
    return torch.einsum("bd,bcd->bc", old_short_user(m, hist), old_lookup(m, "item_short", items)) / 4.0


def old_regularization(m: QUALE | QUASE | QUALSE, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    c = m.config
    total = torch.zeros(())
    if c.reg:
        rows = sum(getattr(m, t).weight[users].pow(2).sum() for t in m.user_tables if hasattr(m, t))
        rows = rows + sum(getattr(m, t).weight[items].pow(2).sum() for t in m.item_tables if hasattr(m, t))
        total = total + c.reg * rows / len(users)
    if c.reg_theta:
        emb = {id(getattr(m, t).weight) for t in m.adv_tables()}
        total = total + c.reg_theta * sum(p.pow(2).sum() for p in m.parameters() if id(p) not in emb)
    return total


# -- helpers -----------------------------------------------------------------------------------
N_USERS, N_ITEMS = 40, 60


@pytest.fixture(autouse=True)
def _flush_denormals():
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def _inputs(b: int = 14, c: int = 5, w: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Users, candidates and a left-padded window: full rows, partly padded rows and empty rows."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(1, N_USERS + 1, (b,), generator=gen)
    items = torch.randint(1, N_ITEMS + 1, (b, c), generator=gen)
    hist = torch.randint(1, N_ITEMS + 1, (b, w), generator=gen)
    for row in range(b):
        hist[row, : row % (w + 1)] = 0  # 0..w padded positions (row 12 is empty)
    hist[1] = 0  # and one more empty row
    items[0, 1] = items[0, 0]  # a repeated candidate
    return users, items, hist


def _perturb(m: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Move every parameter (biases and the padding rows included) off its init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def _grads(m: torch.nn.Module, fn: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients of a non-linear mix of ``fn``'s outputs (so no gradient is a plain sum)."""
    m.zero_grad(set_to_none=True)
    out = fn()
    (out.sin() * torch.linspace(0.5, 1.5, out.shape[-1])).sum().backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal up to float32 rounding: ``rtol`` of each value, and of the largest value for near-zero entries."""
    scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale + 1e-12)


def _same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name in want:
        _close(got[name], want[name])


def _model(name: str, seed: int, **opts: object) -> QUALE | QUASE | QUALSE:
    torch.manual_seed(seed)
    base: dict[str, object] = {"dim": 16, "init_std": 0.3, "reg": 0.01, "reg_theta": 0.001}
    if name != "quase":
        base["l"] = 10
    m = build_model(name, N_USERS, N_ITEMS, {**base, **opts})
    _perturb(m, seed)
    return m.train()  # type: ignore[return-value]


CASES = [
    ("quale", {}),
    ("quale", {"per_dim": True}),
    ("quase", {"cell": "lstm"}),
    ("quase", {"cell": "gru"}),
    ("quase", {"cell": "lstm", "per_dim": True}),
    ("qualse", {}),
    ("qualse", {"cell": "gru", "gate_bias": True}),
    ("qualse", {"gate_tables": "reuse"}),
    ("qualse", {"fusion": "fixed", "fixed_c": 0.3}),
    ("qualse", {"per_dim": True, "s": 4}),
    ("aqualse", {"gate_tables": "reuse", "cell": "gru", "gate_bias": True}),
]


# -- the models --------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_scores_and_gradients_match_the_old_kernels(name: str, opts: dict) -> None:
    m = _model(name, seed=len(name) + len(opts), **opts)
    users, items, hist = _inputs(seed=len(opts))
    ctx = Context(history=hist)
    want = old_score(m, users, items, hist)
    _close(m.score(users, items, ctx), want)
    _same_grads(
        _grads(m, lambda: m.score(users, items, ctx) + m.regularization(users, items)),
        _grads(m, lambda: old_score(m, users, items, hist) + old_regularization(m, users, items)),
    )
    got = _grads(m, lambda: m.score(users, items, ctx))
    for t in m.adv_tables():  # the padding row gets no gradient, as with F.embedding(padding_idx=0)
        assert f"{t}.weight" not in got or torch.all(got[f"{t}.weight"][0] == 0)
    empty = (hist == 0).all(1)
    if name == "quale":
        assert torch.all(want[empty] == 0)


@pytest.mark.parametrize(("name", "opts"), [c for c in CASES if c[0] != "quase"])
def test_default_scale_and_width(name: str, opts: dict) -> None:
    """The default init (tiny activations) at d = 64 and a 50-item window."""
    torch.manual_seed(3)
    m = build_model(name, N_USERS, N_ITEMS, {"dim": 64, "l": 50, **opts}).train()
    users, items, hist = _inputs(b=10, w=50, seed=3)
    _close(m.score(users, items, Context(history=hist)), old_score(m, users, items, hist))
    _same_grads(
        _grads(m, lambda: m.score(users, items, Context(history=hist)) + m.regularization(users, items)),
        _grads(m, lambda: old_score(m, users, items, hist) + old_regularization(m, users, items)),
    )


@pytest.mark.parametrize("gate_tables", ["new", "reuse"])
def test_long_candidate_lists_in_eval(gate_tables: str) -> None:
    """Evaluation scores 1,000+ candidates in slices, the gate table transformed once (no grad)."""
    m = _model("qualse", seed=4, gate_tables=gate_tables).eval()
    users, _, hist = _inputs(seed=4)
    items = torch.randint(0, N_ITEMS + 1, (len(users), 600), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _close(m.score(users, items, Context(history=hist)), old_score(m, users, items, hist))
        hist = hist[:, -m.config.l :]
        g_new = m.gate(users, items[:, :7], *m.encode(users, hist))
        g_old = old_gate(m, users, items[:, :7], old_long_user(m, users, hist), old_short_user(m, hist))
        _close(g_new, g_old)
    quale = _model("quale", seed=4).eval()
    with torch.no_grad():
        _close(quale.query_vectors(users, Context(history=hist)), old_long_user(quale, users, hist) / 4.0)


# -- the algebra -------------------------------------------------------------------------------
def test_block_matrices_are_the_old_ones_exactly() -> None:
    torch.manual_seed(0)
    layer = QuaternionLinear(8, 12, bias=True)
    assert torch.equal(layer.weight_matrix(), old_weight_matrix(layer))
    cell = QuaternionLSTMCell(8, 12)
    w, r = cell.weights()
    w_old, r_old = old_weights(cell)
    assert torch.equal(w, w_old) and torch.equal(r, r_old)
    assert torch.equal(_stacked(list(cell.W)), w_old)  # type: ignore[arg-type]
    # the gradients reach every component with the right sign
    g = torch.randn(12, 8)
    (ga,) = torch.autograd.grad((layer.weight_matrix() * g).sum(), [layer.a])
    (gb,) = torch.autograd.grad((old_weight_matrix(layer) * g).sum(), [layer.a])
    _close(ga, gb)


def test_right_multiplication_structures() -> None:
    gen = torch.Generator().manual_seed(1)
    x, q = (
        torch.randn(3, 5, 12, generator=gen, dtype=torch.float64),
        torch.randn(12, generator=gen, dtype=torch.float64),
    )
    assert torch.allclose(x @ right_matrix(q), old_hamilton(x, q))
    qs = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    blocks = right_blocks(qs)  # (3, c, j, n)
    via_blocks = (x.unflatten(-1, (1, 4, 3)) * blocks[:, None]).sum(-2).flatten(-2)
    assert torch.allclose(via_blocks, old_hamilton(x, qs[:, None, :]))
    assert torch.equal(hamilton(x, qs[:, None, :]), old_hamilton(x, qs[:, None, :]))


@pytest.mark.parametrize("per_dim", [False, True])
@pytest.mark.parametrize("global_ctx", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_the_old_kernel(per_dim: bool, global_ctx: bool, masked: bool) -> None:
    gen = torch.Generator().manual_seed(int(per_dim) + 2 * int(global_ctx))
    steps = torch.randn(6, 9, 16, generator=gen, requires_grad=True)
    ctx = torch.randn(16 if global_ctx else (6, 16), generator=gen, requires_grad=True)  # type: ignore[call-overload]
    mask = None
    if masked:
        mask = torch.ones(6, 9, dtype=torch.bool)
        mask[0, :4] = False
        mask[2] = False  # an all-padding row: zero weights, zero output
        mask[3, ::2] = False  # gaps too
    out, alpha = quaternion_attention(steps, ctx, mask, per_dim)
    out_old, alpha_old = old_attention(steps, ctx, mask, per_dim)
    _close(out, out_old)
    _close(alpha, alpha_old)
    if masked:
        assert torch.all(alpha[~mask] == 0) and torch.all(out[2] == 0)
    g = torch.randn(out.shape, generator=gen)
    got = torch.autograd.grad(out, [steps, ctx], g)
    want = torch.autograd.grad(out_old, [steps, ctx], g)
    for a, b in zip(got, want, strict=True):
        _close(a, b)
    if masked:
        assert torch.all(got[0][~mask] == 0)  # padded steps get no gradient


@pytest.mark.parametrize("length", [6, 1])
@pytest.mark.parametrize("cell_cls", [QuaternionLSTMCell, QuaternionGRUCell])
def test_cells_match_the_old_step_loop(cell_cls: type, length: int) -> None:
    torch.manual_seed(2)
    cell = cell_cls(8, 12)
    _perturb(cell, 2)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, length, 8, generator=gen, requires_grad=True)
    mask = torch.ones(5, length, dtype=torch.bool)
    mask[0, : length // 2] = False
    mask[1] = False  # an empty window
    mask[2, ::2] = False  # gaps inside the window too
    _close(run_cell(cell, x, mask), old_run_cell(cell, x, mask))
    assert torch.equal(run_cell(cell, x, mask)[1], torch.zeros(length, 12))
    got = _grads(cell, lambda: run_cell(cell, x, mask).flatten(1))
    want = _grads(cell, lambda: old_run_cell(cell, x, mask).flatten(1))
    _same_grads(got, want)
    # the single-step API is unchanged
    state = (torch.randn(5, 12), torch.randn(5, 12)) if cell_cls is QuaternionLSTMCell else torch.randn(5, 12)
    old_step = old_lstm_step if cell_cls is QuaternionLSTMCell else old_gru_step
    new, old = cell(x[:, 0], state), old_step(cell, x[:, 0], state, old_weights(cell))
    for a, b in zip(new if isinstance(new, tuple) else (new,), old if isinstance(old, tuple) else (old,), strict=True):
        _close(a, b)


def test_torch_cells_are_run_as_before() -> None:
    torch.manual_seed(3)
    cell = torch.nn.LSTMCell(8, 8)
    x = torch.randn(4, 5, 8)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[0, :2] = False
    h, c = torch.zeros(4, 8), torch.zeros(4, 8)
    outs = []
    for t in range(5):
        hn, cn = cell(x[:, t], (h, c))
        keep = mask[:, t : t + 1]
        h, c = torch.where(keep, hn, h), torch.where(keep, cn, c)
        outs.append(h)
    assert torch.equal(run_cell(cell, x, mask), torch.stack(outs, 1))


# -- persistence and the adversary ---------------------------------------------------------------
def test_parameters_and_state_dict_keys_are_unchanged() -> None:
    def cell(prefix: str, k: int) -> list[str]:
        return [f"{prefix}.{m}.{i}.{c}" for m in "WR" for i in range(k) for c in "rabc"] + [f"{prefix}.g"]

    def qlin(prefix: str, bias: bool = False) -> list[str]:
        return [f"{prefix}.{c}" for c in "rabc"] + ([f"{prefix}.bias"] if bias else [])

    assert sorted(QUALE(5, 7).state_dict()) == ["item_long.weight", "user_long.weight"]
    quase = ["item_short.weight", "context_short", *cell("rnn", 4), *qlin("out_short")]
    assert sorted(QUASE(5, 7).state_dict()) == sorted(quase)
    assert sorted(QUASE(5, 7, QUASE.Config(cell="gru")).state_dict()) == sorted(
        ["item_short.weight", "context_short", *cell("rnn", 3), *qlin("out_short")]
    )
    qualse = ["user_long.weight", "item_long.weight", "user_gate.weight", "item_gate.weight", *quase]
    qualse += [*qlin("gate_1"), *qlin("gate_2"), *qlin("gate_3"), "w_o1", "w_o2"]
    assert sorted(QUALSE(5, 7).state_dict()) == sorted(qualse)


def test_adversary_substitutes_the_tables() -> None:
    """QABPR evaluates ``loss`` at perturbed tables through ``functional_call``: the new kernels read them."""
    m = _model("aqualse", seed=5)
    users, items, hist = _inputs(seed=5)
    batch_ctx = Context(history=hist)

    class _Sum:
        def __call__(self, scores: torch.Tensor) -> torch.Tensor:
            return scores.sin().sum()

    from segue.data.batch import PairBatch

    batch = PairBatch(users, items, batch_ctx)
    adv = Adversary(m.adversary_tables(), 0.5, 1.0, "row", "unit", False)
    noise = adv.noise(m, batch, _Sum())  # type: ignore[arg-type]
    assert set(noise) == set(m.adversary_tables())
    params = dict(m.named_parameters())
    got = adv.loss_at(m, {n: params[n] + d for n, d in noise.items()}, batch, _Sum())  # type: ignore[arg-type]
    with torch.no_grad():
        for n, d in noise.items():
            params[n].add_(d)
        want = _Sum()(old_score(m, users, items, hist))
    _close(got, want)


def test_aqualse_adversarial_training_step_runs() -> None:
    data = Interactions.from_frame(make_frame(20, 40, 10), timestamp="ts", name="toy")
    _, split, valid, _test = prepare(data, sequential_protocol(per_user=True, n_negatives=10))
    m = build_model("aqualse", data.n_users, data.n_items, {"dim": 8, "l": 6, "s": 3, "adv_epochs": 1})
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    valid_h = attach_history(valid, [split.train], 6)
    cfg = TrainConfig(epochs=1, batch_size=64, n_negatives=4, progress=False, monitor="NDCG@10")
    hist = fit(m, split.train, valid_h, cfg, log=None)
    assert [e["phase"] for e in hist.epochs] == ["adversarial"] * 2
    assert m.fitted and all(torch.isfinite(p).all() for p in m.parameters())
    assert not torch.equal(before["item_gate.weight"], m.item_gate.weight)
