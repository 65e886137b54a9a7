"""segue.api.Fitted: every music use case by raw ids over a trained run, with the same fallbacks as the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segue.api import Fitted
from segue.data import Interactions
from segue.errors import ConfigError, DataError, UnknownIdError
from segue.evaluation.protocols import get_protocol
from segue.pipeline import run
from segue.training.trainer import TrainConfig

from .conftest import make_frame

QUICK = {"epochs": 1, "progress": False, "patience": None}


@pytest.fixture(scope="module")
def toy() -> Interactions:
    return Interactions.from_frame(make_frame(n_users=24, n_items=30, per_user=8), timestamp="ts", name="toy")


def _fit(tmp: Path, model: str, data: Interactions, options: dict | None = None) -> Fitted:
    out = tmp / model
    proto = get_protocol("loo-sampled", n_negatives=10)
    run(model, data, protocol=proto, model_options=options, train_config=TrainConfig(**QUICK), out=out, log=None)
    return Fitted.load(out)


def test_vector_model_answers_users_lists_similar_and_unknown_users(tmp_path: Path, toy: Interactions) -> None:
    m = _fit(tmp_path, "mf-bpr", toy)
    seen_m = m.run.seen
    u3 = int(m.run.user_map.to_internal(["u3"])[0])
    seen = set(map(str, m.run.item_map.to_raw(seen_m.indices[seen_m.indptr[u3] : seen_m.indptr[u3 + 1]])))
    rec = m.recommend("u3", k=5)
    assert (
        len(rec.items) == 5 and not seen & set(map(str, rec.items)) and rec.scores == sorted(rec.scores, reverse=True)
    )
    with_seen = m.recommend("u3", k=30, exclude_seen=False)
    assert seen <= set(map(str, with_seen.items))
    # an unknown user gets the popular items, flagged; or a one-sentence error when asked
    pop = m.recommend("nobody", k=3)
    counts = np.asarray(seen_m.sum(axis=0)).ravel()  # training interactions per item
    top = m.run.item_map.to_internal(list(map(str, pop.items)))
    assert pop.query == "popular-fallback" and list(counts[top]) == sorted(counts[1:], reverse=True)[:3]
    with pytest.raises(UnknownIdError, match="Unknown user id 'nobody'"):
        m.recommend("nobody", unknown="error")
    # a list of items (a session, a new playlist): the mean of their vectors, the items excluded
    seeds = ["101", "102"]
    cont = m.continue_playlist(seeds, k=4)
    assert cont.query == "mean-of-items" and len(cont.items) == 4 and not set(seeds) & set(map(str, cont.items))
    vecs = m.model.item_vectors().detach().numpy()
    ids = m.run.item_map.to_internal(seeds)
    expect = np.argsort(-(vecs[1:] @ vecs[ids].mean(0)), kind="stable") + 1
    expect = [i for i in expect if i not in ids][:4]
    assert list(m.run.item_map.to_internal(list(map(str, cont.items)))) == expect
    near = m.similar("101", k=3)
    assert "101" not in map(str, near.items) and len(near.items) == 3
    for bad in (0, 31, True, 2.0):
        with pytest.raises(ConfigError, match="k must be an integer between 1 and the catalogue size 30"):
            m.recommend("u3", k=bad)
    with pytest.raises(UnknownIdError, match="Unknown item id 'zzz'"):
        m.similar("zzz")
    with pytest.raises(ConfigError, match="no audio tower"):
        m.from_audio(["x.ogg"])


def test_sequential_model_reads_recent_items_or_a_given_history(tmp_path: Path, toy: Interactions) -> None:
    m = _fit(tmp_path, "caser", toy, {"s": 3})
    uid = m.run.user_map.to_internal(["u5"])
    latest = m.run.item_map.to_raw(m.run.recent[uid][0][m.run.recent[uid][0] > 0]).tolist()
    default = m.recommend("u5", k=4)
    assert default.query == "user-history"
    assert m.recommend("u5", k=4, history=latest).items == default.items
    # a session in progress: the same history, the session's own items excluded
    nxt = m.next_track(latest, k=4)
    assert nxt.query == "model-context" and not set(map(str, latest)) & set(map(str, nxt.items))
    # an unknown listener with a history is a session in progress
    assert m.recommend("new-listener", k=4, history=latest).items == nxt.items
    with pytest.raises(UnknownIdError, match="Unknown item id '999'"):
        m.next_track(["999"])
    with pytest.raises(DataError, match="no items"):
        m.next_track([])


def test_history_and_lists_are_refused_with_one_sentence(tmp_path: Path, toy: Interactions) -> None:
    m = _fit(tmp_path, "pop", toy)
    with pytest.raises(ConfigError, match="history is for sequential models; pop does not read one"):
        m.recommend("u1", history=["101"])
    with pytest.raises(ConfigError, match="cannot recommend for a list of items"):
        m.continue_playlist(["101"])
    with pytest.raises(ConfigError, match="no item vectors"):
        m.similar("101")
