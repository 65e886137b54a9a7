"""CMN (Collaborative Memory Network): attention reductions, masking, persistence, training."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from segue.data.interactions import Interactions
from segue.errors import DataError, NotFittedError
from segue.models.cmn import CMN, neighbourhoods
from segue.pipeline import run
from segue.training.trainer import TrainConfig


def _data() -> Interactions:
    # users a, b, c; item 10 consumed by a and b, item 11 by c only, item 12 by everyone
    df = pd.DataFrame({"user": ["a", "a", "b", "b", "c", "c", "a", "b"], "item": [10, 12, 10, 12, 11, 12, 13, 13]})
    return Interactions.from_frame(df, name="cmn-toy")


def _ids(d: Interactions, kind: str, raw: list) -> torch.Tensor:
    m = d.user_map if kind == "user" else d.item_map
    return torch.as_tensor(m.to_internal(pd.Series(raw)), dtype=torch.long)


def test_neighbourhood_lists_the_item_users_and_caps_them() -> None:
    d = _data()
    nb = neighbourhoods(d, 10)
    i12 = int(_ids(d, "item", [12])[0])
    assert sorted(nb[i12][nb[i12] != 0].tolist()) == sorted(_ids(d, "user", ["a", "b", "c"]).tolist())
    capped = neighbourhoods(d, 2, seed=1)
    assert capped.shape[1] == 2 and (capped[i12] != 0).sum() == 2
    assert (nb[0] == 0).all()


def test_one_neighbour_hop_reduces_to_its_output_memory() -> None:
    d = _data()
    m = CMN(d.n_users, d.n_items, CMN.Config(dim=4, hops=1)).eval()
    m.set_neighbourhood(d)
    u, i = _ids(d, "user", ["c"]), _ids(d, "item", [10])  # N(10) = {a, b}, c is not in it
    # keep only neighbour a: attention over one member is 1, so o = c_a
    a = _ids(d, "user", ["a"])
    m.neighbours[i] = torch.cat([a, torch.zeros(m.neighbours.shape[1] - 1, dtype=torch.long)])
    with torch.no_grad():
        got = m.score(u, i[None, :])[0, 0]
        o = m.out_mem(a)[0]
        want = m.v(torch.relu(m.u_proj(m.user_mem(u)[0] * m.item_mem(i)[0]) + m.w_proj(o)))[0]
    assert torch.allclose(got, want, atol=1e-6)


def test_query_user_and_padding_are_masked_out() -> None:
    d = _data()
    m = CMN(d.n_users, d.n_items, CMN.Config(dim=4, hops=2)).eval()
    m.set_neighbourhood(d)
    a, i = _ids(d, "user", ["a"]), _ids(d, "item", [13])  # N(13) = {a, b}
    with torch.no_grad():
        full = m.score(a, i[None, :])
        # scoring for a must not depend on a's own output memory (a is masked out of N(13))
        m.out_mem.weight[a] += 5.0
        assert torch.allclose(m.score(a, i[None, :]), full)
        # an item whose only neighbour is the query user: o = 0
        c, i11 = _ids(d, "user", ["c"]), _ids(d, "item", [11])
        got = m.score(c, i11[None, :])[0, 0]
        want = m.v(torch.relu(m.u_proj(m.user_mem(c)[0] * m.item_mem(i11)[0]) + m.w_proj.bias))[0]
    assert torch.allclose(got, want, atol=1e-6)


def test_errors_and_state_dict_round_trip(tmp_path) -> None:
    d = _data()
    m = CMN(d.n_users, d.n_items, CMN.Config(dim=4))
    with pytest.raises(NotFittedError, match="neighbourhood"):
        m.score(torch.tensor([1]), torch.tensor([[1]]))
    m.set_neighbourhood(d)
    with pytest.raises(DataError, match="expects users"):
        m.score(torch.tensor([1, 2]), torch.tensor([1, 2]))
    m2 = CMN(d.n_users, d.n_items, CMN.Config(dim=4))
    m2.load_state_dict(m.state_dict())
    users, items = torch.tensor([1, 2]), torch.tensor([[1, 2], [3, 4]])
    assert torch.equal(m2.neighbours, m.neighbours)
    assert torch.allclose(m2.eval().score(users, items), m.eval().score(users, items))


def test_cmn_pp_trains_end_to_end(data: Interactions) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, n_negatives=4, progress=False, threads=1, monitor="HR@10")
    res = run("cmn", data, protocol="loo-full", model_options={"dim": 8, "hops": 2}, train_config=cfg, log=None)
    assert len(res.history.epochs) == 2
    assert all(0 <= v <= 1 for v in res.metrics.values())
