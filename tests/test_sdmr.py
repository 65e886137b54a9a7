"""SDP / SDM / SDMR: the spec's reduction tests (A.2, A.3), shapes, padding, batching and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segue.models.sdmr as sdmr_mod
from segue.data import Interactions
from segue.errors import ConfigError, DataError
from segue.evaluation.protocols import get_protocol
from segue.models.base import Context, build_model
from segue.models.sdmr import SDM, SDMR, SDP, masked_softmin
from segue.pipeline import prepare, run
from segue.training import fit
from segue.training.trainer import TrainConfig

FAST = TrainConfig(epochs=1, batch_size=64, n_negatives=4, progress=False, lr=0.01)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _zero_biases(m: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.zero_()


def test_sdp_reduces_to_squared_euclidean() -> None:
    torch.manual_seed(0)
    m = SDP(5, 7, SDP.Config(dim=4, activation="identity", init_std=1.0))
    eye = torch.eye(4)
    m.fc1.set_weight(torch.cat([eye, -eye], dim=1))
    with torch.no_grad():
        m.out.weight.fill_(1.0)
        m.out.bias.zero_()
    users = torch.tensor([1, 3, 5])
    items = torch.tensor([[1, 2], [3, 7], [6, 4]])
    expected = (m.user_emb(users)[:, None, :] - m.item_emb(items)).square().sum(-1)
    torch.testing.assert_close(m.distance(users, items), expected)
    torch.testing.assert_close(m.score(users, items), -expected)


def test_sdp_default_init_is_euclidean_weights() -> None:
    m = SDP(3, 3, SDP.Config(dim=4))
    eye = torch.eye(4)
    torch.testing.assert_close(m.fc1.full_weight(), torch.cat([eye, -eye], dim=1))


def _sdm_identity(dim: int = 4, hops: int = 1, s: int = 3) -> SDM:
    torch.manual_seed(0)
    m = SDM(6, 9, SDM.Config(dim=dim, hops=hops, s=s, init_std=1.0))
    m.act = _identity
    _zero_biases(m)
    return m


def test_eq59_reduction_item_to_item_distance() -> None:
    m = _sdm_identity()
    eye, zero = torch.eye(4), torch.zeros(4, 4)
    m.wa.set_weight(torch.cat([zero, eye], dim=1))  # q = v(i)_j
    m.wc.set_weight(torch.cat([eye, -eye], dim=1))  # z = |q - v(i)_k|^2
    users = torch.tensor([1, 2])
    items = torch.tensor([[1, 5], [2, 8]])
    hist = torch.tensor([[3, 4, 6], [7, 9, 1]])
    a = m.attention(users, items, Context(history=hist))[0]
    vj, vk = m.item_in(items), m.item_in(hist)
    z = (vj[:, :, None, :] - vk[:, None, :, :]).square().sum(-1)
    torch.testing.assert_close(a, torch.softmax(-z, dim=-1))


def test_eq59_reduction_transrec_like_distance() -> None:
    m = _sdm_identity()
    eye = torch.eye(4)
    m.wa.set_weight(torch.cat([eye, -eye], dim=1))  # q = u - v_j
    m.wc.set_weight(torch.cat([eye, eye], dim=1))  # z = |q + v_k|^2
    users = torch.tensor([1, 4])
    items = torch.tensor([[2, 3], [8, 1]])
    hist = torch.tensor([[5, 6, 7], [2, 3, 9]])
    a = m.attention(users, items, Context(history=hist))[0]
    u, vj, vk = m.user_in(users), m.item_in(items), m.item_in(hist)
    z = (vk[:, None, :, :] + u[:, None, None, :] - vj[:, :, None, :]).square().sum(-1)
    torch.testing.assert_close(a, torch.softmax(-z, dim=-1))


def test_sdm_with_one_context_item_equals_sdp_on_p_and_vk() -> None:
    torch.manual_seed(1)
    sdm = SDM(4, 6, SDM.Config(dim=5, hops=2, s=1, init_std=0.5))
    users = torch.tensor([2])
    items = torch.tensor([[3]])
    k = 5
    o = sdm.distance(users, items, Context(history=torch.tensor([[k]])))
    with torch.no_grad():
        p = torch.tanh(sdm.wb(sdm.user_out(users), sdm.item_out(items[:, 0])))  # (1, d)
    sdp = SDP(1, 6, SDP.Config(dim=5))
    with torch.no_grad():
        sdp.user_emb.weight[1] = p[0]
        sdp.item_emb.weight.copy_(sdm.item_out.weight)
        sdp.fc1.set_weight(sdm.wd.full_weight(), sdm.wd.wx.bias)
        sdp.out.load_state_dict(sdm.out.state_dict())
    torch.testing.assert_close(o, sdp.distance(torch.tensor([1]), torch.tensor([[k]])))


def _naive_sdm(m: SDM, users: torch.Tensor, items: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """The spec's A.11 sketch, one (user, candidate) pair at a time with explicit concatenations."""
    out = torch.empty(items.shape)
    wa, wb, wc, wd = (x.full_weight() for x in (m.wa, m.wb, m.wc, m.wd))
    ba, bb, bc, bd = (x.wx.bias for x in (m.wa, m.wb, m.wc, m.wd))
    for b in range(items.shape[0]):
        u = users[b]
        ctx = [int(k) for k in hist[b] if k != 0]
        for c in range(items.shape[1]):
            j = items[b, c]
            q = torch.tanh(wa @ torch.cat([m.user_in.weight[u], m.item_in.weight[j]]) + ba)
            p = torch.tanh(wb @ torch.cat([m.user_out.weight[u], m.item_out.weight[j]]) + bb)
            e = torch.zeros_like(q)
            for hop in range(1, m.config.hops + 1):
                if hop > 1:
                    g = torch.sigmoid(m._gate(hop)(q))
                    q = (1 - g) * e + g * q
                z = torch.stack([(torch.tanh(wc @ torch.cat([q, m.item_in.weight[k]]) + bc) ** 2).sum() for k in ctx])
                a = torch.softmax(-z, 0)
                r = torch.stack([torch.tanh(wd @ torch.cat([p, m.item_out.weight[k]]) + bd) ** 2 for k in ctx])
                e = (a[:, None] * r).sum(0)
            out[b, c] = m.out.weight[0] @ e + m.out.bias[0]
    return out


@pytest.mark.parametrize("hops,hop_gates", [(1, False), (3, False), (3, True)])
def test_sdm_batched_equals_naive_multi_hop(hops: int, hop_gates: bool) -> None:
    torch.manual_seed(2)
    m = SDM(5, 12, SDM.Config(dim=6, hops=hops, s=4, init_std=0.3, hop_gates=hop_gates))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    users = torch.tensor([1, 4, 5])
    items = torch.tensor([[1, 2, 3], [7, 8, 12], [4, 5, 6]])
    hist = torch.tensor([[0, 0, 3, 9], [1, 2, 3, 4], [0, 0, 0, 11]])
    with torch.no_grad():
        got = m.distance(users, items, Context(history=hist))
        torch.testing.assert_close(got, _naive_sdm(m, users, items, hist), rtol=1e-5, atol=1e-5)


def test_padding_gets_zero_attention_and_changes_nothing() -> None:
    torch.manual_seed(3)
    m = SDM(4, 10, SDM.Config(dim=4, hops=2, s=5, init_std=0.3))
    users = torch.tensor([1, 2])
    items = torch.tensor([[1, 2, 3], [4, 5, 6]])
    short = torch.tensor([[7, 8], [9, 10]])
    padded = torch.tensor([[0, 0, 0, 7, 8], [0, 0, 0, 9, 10]])
    att = m.attention(users, items, Context(history=padded))
    for a in att:
        assert torch.all(a[..., :3] == 0)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 3))
    with torch.no_grad():
        torch.testing.assert_close(
            m.distance(users, items, Context(history=padded)), m.distance(users, items, Context(history=short))
        )


def test_empty_context_gives_zero_memory_not_nan() -> None:
    m = SDM(3, 5, SDM.Config(dim=4, hops=2, s=3))
    users = torch.tensor([1])
    items = torch.tensor([[1, 2]])
    o, e = m.features(users, items, Context(history=torch.zeros(1, 3, dtype=torch.long)))
    assert torch.all(e == 0) and torch.all(torch.isfinite(o))
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.all(masked_softmin(z, torch.tensor([[False, False, False]])) == 0)


def test_sdm_chunking_matches_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    m = SDM(20, 30, SDM.Config(dim=8, hops=3, s=4, init_std=0.3))
    users = torch.arange(1, 21)
    items = torch.randint(1, 31, (20, 11))
    hist = torch.randint(0, 31, (20, 4))
    with torch.no_grad():
        whole = m.distance(users, items, Context(history=hist))
        monkeypatch.setattr(sdmr_mod, "_BLOCK_ELEMENTS", 11 * 4 * 8 * 3)
        torch.testing.assert_close(m.distance(users, items, Context(history=hist)), whole)


def test_shapes_and_score_all() -> None:
    n_users, n_items = 4, 9
    users = torch.tensor([1, 2, 4])
    items = torch.randint(1, n_items + 1, (3, 6))
    ctx = Context(history=torch.randint(0, n_items + 1, (3, 5)))
    for name, opts in (("sdp", {"dim": 8}), ("sdm", {"dim": 8, "hops": 2}), ("sdmr", {"sdp_dim": 8, "sdm_dim": 4})):
        m = build_model(name, n_users, n_items, opts)
        assert m.score(users, items, ctx).shape == (3, 6)
        full = m.score_all(users, ctx)
        assert full.shape == (3, n_items + 1) and torch.isinf(full[:, 0]).all()
        torch.testing.assert_close(full[:, 1:4], m.score(users, torch.arange(1, 4).expand(3, -1), ctx))


def test_bad_inputs_raise_clear_errors() -> None:
    m = SDM(3, 5, SDM.Config(dim=4))
    with pytest.raises(DataError, match=r"needs context\.history"):
        m.score(torch.tensor([1]), torch.tensor([[1, 2]]))
    with pytest.raises(DataError, match=r"\(B, window\) history"):
        m.score(torch.tensor([1]), torch.tensor([[1, 2]]), Context(history=torch.zeros(2, 5, dtype=torch.long)))
    with pytest.raises(DataError, match="against items"):
        SDP(3, 5).score(torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(ConfigError):
        build_model("sdm", 3, 5, {"hops": 0})
    with pytest.raises(ConfigError):
        build_model("sdmr", 3, 5, {"activation": "sigmoid"})


def test_longer_history_is_cut_to_the_most_recent_s() -> None:
    m = SDM(3, 9, SDM.Config(dim=4, s=2))
    users = torch.tensor([1])
    items = torch.tensor([[1, 2]])
    with torch.no_grad():
        a = m.distance(users, items, Context(history=torch.tensor([[5, 6, 7, 8]])))
        b = m.distance(users, items, Context(history=torch.tensor([[7, 8]])))
    torch.testing.assert_close(a, b)


def _toy(data: Interactions) -> tuple[Interactions, tuple]:
    proto = get_protocol("loo-sampled", n_negatives=10)
    _, split, valid, test = prepare(data, proto)
    return proto, (split, valid, test)


def test_training_is_deterministic(data: Interactions) -> None:
    proto, prepared = _toy(data)
    out = []
    for _ in range(2):
        r = run(
            "sdm",
            data,
            protocol=proto,
            model_options={"dim": 8, "hops": 2, "s": 3},
            train_config=FAST,
            prepared=prepared,
            log=None,
        )
        out.append(r.model.item_out.weight.detach().clone())
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_sdmr_freezes_parts_and_learns_fusion(data: Interactions) -> None:
    proto, (split, valid, test) = _toy(data)
    sdp = run(
        "sdp",
        data,
        protocol=proto,
        model_options={"dim": 8},
        train_config=FAST,
        prepared=(split, valid, test),
        log=None,
    ).model
    sdm = run(
        "sdm",
        data,
        protocol=proto,
        model_options={"dim": 8, "hops": 2, "s": 3},
        train_config=FAST,
        prepared=(split, valid, test),
        log=None,
    ).model
    m = SDMR.from_parts(sdp, sdm)  # type: ignore[arg-type]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fit(m, split.train, valid.with_history(split.train, 3), FAST, log=None)
    after = m.state_dict()
    for k, v in before.items():
        if k.startswith("fusion"):
            continue
        assert torch.equal(v, after[k]), k
    assert not torch.equal(before["fusion.weight"], after["fusion.weight"])
    users = torch.tensor([1, 2])
    ctx = Context(history=torch.tensor([[1, 2, 3], [0, 4, 5]]))
    assert (m.distance(users, torch.tensor([[1, 2], [3, 4]]), ctx) >= 0).all()


def test_sdmr_active_bias_init_makes_preactivations_positive(data: Interactions) -> None:
    _, (split, _, _) = _toy(data)
    m = SDMR(split.train.n_users, split.train.n_items, SDMR.Config(sdp_dim=8, sdm_dim=8, s=3))
    with torch.no_grad():
        m.fusion.bias.fill_(-100.0)
    m.init_bias(split.train, n=10_000)
    users = torch.as_tensor(np.arange(1, split.train.n_users + 1))
    items = torch.arange(1, split.train.n_items + 1).expand(len(users), -1)
    from segue.data.sequences import last_items

    ctx = Context(history=torch.as_tensor(last_items(split.train, users.numpy(), 3)))
    assert (m.pre_activation(users, items, ctx) > 0).float().mean() > 0.95


def test_sdmr_errors_name_sdmr() -> None:
    from segue.errors import DataError
    from segue.models.base import build_model

    m = build_model("sdmr", 4, 6, {"sdp_dim": 4, "sdm_dim": 4, "s": 2})
    with pytest.raises(DataError, match=r"^sdmr needs context\.history"):
        m.score(torch.tensor([1]), torch.tensor([[1, 2]]))
