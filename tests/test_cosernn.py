"""CoSeRNN (spec A.15 checklist): embeddings, causality, masking, the split, metrics, baselines, serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from segue.data.sessions import TEST, TRAIN, VALID, build_sessions, synthetic_log, temporal_split
from segue.errors import ConfigError, DataError, UnknownIdError
from segue.evaluation.sessions import build_session_eval, evaluate_sessions
from segue.models.cosernn import (
    CoSeRNN,
    CoSeRNNConfig,
    Word2VecConfig,
    baseline_predictions,
    build_cosernn,
    context_groups,
    pad_users,
    session_inputs,
    track_popularity,
    train_track_embeddings,
)
from segue.training.cosernn import _targets, fit_cosernn, masked_cosine_loss

T0 = 1_556_000_000.0
SMALL = {"hidden": 16, "width": 16, "batch_size": 8, "lr": 0.005}


def _log(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "track", "timestamp"])


def _hand_data(
    vectors: dict[str, tuple[float, float]], sessions: list[list[str]], skipped: list[list[bool]] | None = None
):
    """One user, one session per list (hours apart); 2-d track vectors given by hand."""
    rows, skips = [], []
    for s, tracks in enumerate(sessions):
        for j, t in enumerate(tracks):
            rows.append(("u", t, T0 + 7200 * s + 60 * j))
            skips.append(bool(skipped[s][j]) if skipped else False)
    frame = _log(rows)
    if skipped:
        frame["skipped"] = skips
    data = build_sessions(frame)
    vec = np.zeros((data.n_tracks_vocab + 1, 2), dtype=np.float32)
    for raw, v in vectors.items():
        vec[data.track_map.to_internal(raw)[0]] = v
    return data, session_inputs(data, vec)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module (the brief's rule on the shared cores), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synth():
    log = synthetic_log(n_users=60, n_tracks=240, n_clusters=8, sessions_per_user=(20, 30), days=40, seed=1)
    data = build_sessions(log, name="synthetic")
    labels = temporal_split(data, test_days=10, valid_days=4)
    vectors = train_track_embeddings(
        [data.tracks[i] for i in np.flatnonzero(labels == TRAIN)], data.n_tracks_vocab, Word2VecConfig(seed=0)
    )
    return data, labels, session_inputs(data, vectors)


# -- embeddings (A.3, A.4, A.15.1) ---------------------------------------------------------------


def test_track_and_session_vectors_are_unit_or_zero(synth) -> None:
    data, labels, inputs = synth
    norms = np.linalg.norm(inputs.vectors, axis=1)
    assert norms[0] == 0 and np.allclose(norms[norms > 0], 1, atol=1e-5)
    for key in ("all", "played", "skipped"):
        n = np.linalg.norm(inputs.emb[key], axis=1)
        assert np.all(np.isclose(n, 0) | np.isclose(n, 1, atol=1e-5)), key
    assert (np.linalg.norm(inputs.emb["skipped"], axis=1) == 0).any()  # sessions without skips give 0
    again = train_track_embeddings(
        [data.tracks[i] for i in np.flatnonzero(labels == TRAIN)], data.n_tracks_vocab, Word2VecConfig(seed=0)
    )
    np.testing.assert_allclose(again, inputs.vectors)  # seeded
    with pytest.raises(ConfigError):
        train_track_embeddings([np.array([1, 2])], 2, Word2VecConfig(window=0))
    with pytest.raises(DataError, match="two or more"):
        train_track_embeddings([np.array([1])], 2)


def test_session_vectors_use_the_first_ten_tracks_only() -> None:
    tracks = [f"a{i}" for i in range(10)] + ["b"]
    data, inputs = _hand_data({**{f"a{i}": (1.0, 0.0) for i in range(10)}, "b": (0.0, 1.0)}, [tracks])
    np.testing.assert_allclose(inputs.emb["all"][0], [1.0, 0.0])  # the 11th track (b) is cut
    assert data.n_tracks[0] == 11
    _, inputs = _hand_data({"a": (1.0, 0.0), "b": (0.0, 1.0)}, [["a", "b"]], [[False, True]])
    np.testing.assert_allclose(inputs.emb["played"][0], [1, 0])
    np.testing.assert_allclose(inputs.emb["skipped"][0], [0, 1])
    np.testing.assert_allclose(inputs.emb["all"][0], np.array([1, 1]) / np.sqrt(2), rtol=1e-6)


def test_session_inputs_shape_check(synth) -> None:
    data, _, inputs = synth
    with pytest.raises(DataError, match="Track vectors"):
        session_inputs(data, inputs.vectors[:-1])


# -- the model (A.5, A.15.3-6) -------------------------------------------------------------------


def test_longterm_weights_are_one_two_three() -> None:
    net = CoSeRNN(n_context=3, n_source=1, config=CoSeRNNConfig(hidden=4, width=4, dim=2))
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])
    ubar = net.longterm(s, torch.ones(1, 4, dtype=torch.bool))[0]
    assert torch.equal(ubar[0], torch.zeros(2))  # u_bar_1 = 0
    np.testing.assert_allclose(ubar[1].numpy(), [1, 0])
    np.testing.assert_allclose(ubar[3].numpy(), np.array([1 + 3, 2]) / np.hypot(4, 2), rtol=1e-6)  # 1:2:3


def test_causality_and_previous_session_inputs(synth) -> None:
    """A.15.3/4: changing session t's tracks, skips and source leaves u_t unchanged and changes u_{t+1}."""
    _data, _, inputs = synth
    torch.manual_seed(0)
    net = build_cosernn(inputs, CoSeRNNConfig(**SMALL)).eval()
    batch = pad_users(inputs, np.array([1]))
    t = 5
    changed = {k: v.clone() for k, v in batch.items()}
    for key in ("all", "played", "skipped"):
        changed[key][0, t] = -changed[key][0, t] + 0.3
    changed["source"][0, t] = torch.roll(changed["source"][0, t], 1)
    changed["n_log"][0, t] += 2.0
    with torch.no_grad():
        u, v = net(batch), net(changed)
    assert torch.allclose(u[0, : t + 1], v[0, : t + 1])
    assert not torch.allclose(u[0, t + 1], v[0, t + 1])
    assert torch.allclose(u.norm(dim=-1)[batch["mask"]], torch.ones(int(batch["mask"].sum())), atol=1e-5)


def test_padding_never_changes_real_steps(synth) -> None:
    """Masking of padded sessions: a user's vectors are the same alone or padded next to a longer user."""
    data, labels, inputs = synth
    torch.manual_seed(0)
    net = build_cosernn(inputs, CoSeRNNConfig(**SMALL)).eval()
    lengths = data.sessions_per_user
    short, long_ = int(np.argmin(lengths)) + 1, int(np.argmax(lengths)) + 1
    assert lengths[short - 1] < lengths[long_ - 1]
    alone = pad_users(inputs, np.array([short]))
    both = pad_users(inputs, np.array([short, long_]))
    assert not both["mask"][0].all() and (both["rows"][0][~both["mask"][0]] == -1).all()
    with torch.no_grad():
        a, b = net(alone), net(both)
    n = int(lengths[short - 1])
    assert torch.allclose(a[0, :n], b[0, :n], atol=1e-6)
    w = _targets(inputs, labels, TRAIN, both["rows"])
    assert not w[0, n:].any()  # padded steps carry no loss
    u = net.predict(inputs)
    assert np.allclose(u[both["rows"][0, :n].numpy()], a[0, :n].numpy(), atol=1e-6)


def test_the_split_never_puts_a_test_session_into_training_targets(synth) -> None:
    data, labels, inputs = synth
    batch = pad_users(inputs, np.arange(1, data.n_users + 1))
    w = _targets(inputs, labels, TRAIN, batch["rows"])
    rows = batch["rows"][w].numpy()
    assert len(rows) and (labels[rows] == TRAIN).all() and inputs.has_target[rows].all()
    t = pad_users(inputs, np.arange(1, data.n_users + 1))
    test_rows = set(np.flatnonzero(labels == TEST).tolist())
    assert not test_rows & set(rows.tolist())
    # test sessions come after every train session of the same user (temporal)
    for u in range(1, data.n_users + 1):
        lab = labels[data.user == u]
        assert (np.diff(lab) >= 0).all()
    assert t["mask"].sum() == len(data)


def test_masked_cosine_loss() -> None:
    u = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert float(masked_cosine_loss(u, s, torch.tensor([[True, False]]))) == 0.0
    assert float(masked_cosine_loss(u, s, torch.tensor([[True, True]]))) == pytest.approx(0.5)


def test_config_and_feature_flags(synth) -> None:
    _, _, inputs = synth
    with pytest.raises(ConfigError):
        build_cosernn(inputs, CoSeRNNConfig(session_rep=("played", "other")))
    with pytest.raises(ConfigError):
        build_cosernn(inputs, CoSeRNNConfig(share_pathway_weights="some"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        build_cosernn(
            inputs,
            CoSeRNNConfig(
                use_context=False, use_last_embeddings=False, use_n_tracks=False, use_delta=False, use_last_source=False
            ),
        )
    for kw in (
        {"share_pathway_weights": "all"},
        {"session_rep": ("all", "played", "skipped")},
        {"use_longterm": False},
    ):
        net = build_cosernn(inputs, CoSeRNNConfig(**SMALL, **kw))
        assert net(pad_users(inputs, np.array([1, 2]))).shape[-1] == 40


# -- metrics on hand-worked cases (A.9, A.15.9) ----------------------------------------------------


def test_session_and_track_ranking_by_hand() -> None:
    vec = {"a": (1.0, 0.0), "b": (0.0, 1.0), "c": (0.6, 0.8)}
    _data, inputs = _hand_data(vec, [["a"], ["b"], ["a", "c"]])
    ev = build_session_eval(inputs, np.array([2]), session_ks=(20,), track_ks=(25,))
    u = np.zeros((3, 2), dtype=np.float32)
    u[2] = [0.0, 1.0]
    out = evaluate_sessions(u, ev)["metrics"]
    # s3+ = normalise(a + c) = (0.894, 0.447); candidates s1 (cos 0), s2 (cos 1), s3 (cos 0.447): rank 2
    assert out["Sess MRR K=20"] == pytest.approx(0.5) and out["Sess Rank K=20"] == 2
    # tracks: candidates = recent distinct [b, a]; relevant = {a, c} & candidates = {a}; b scores 1, a 0
    assert out["Track mAP K=25"] == pytest.approx(0.5) and out["Track Rec@10 K=25"] == 1.0
    assert out["Cosine"] == pytest.approx(0.4472, abs=1e-4)
    u[2] = [1.0, 0.0]  # s1 = a now scores 1 > s3's 0.894: rank 2; track a first: AP 1
    out = evaluate_sessions(u, ev)["metrics"]
    assert out["Track mAP K=25"] == 1.0 and out["Sess Rank K=20"] == 2
    u[2] = np.array([1.6, 0.8]) / np.hypot(1.6, 0.8)  # the target itself: rank 1
    assert evaluate_sessions(u, ev)["metrics"]["Sess Rank K=20"] == 1


def test_track_ranking_drops_tracks_without_vectors_and_reports_the_share() -> None:
    """A vectorless track scores exactly 0 and would sit above a relevant track with a negative score."""
    vec = {"a": (1.0, 0.0), "b": (0.0, 1.0)}  # "x" has no vector

    def both(sessions: list[list[str]], u3: list[float]) -> tuple[dict, dict, object]:
        _data, inputs = _hand_data(vec, sessions)
        u = np.zeros((4, 2), dtype=np.float32)
        u[3] = u3
        kw = {"session_ks": (20,), "track_ks": (25,)}
        kept = evaluate_sessions(u, build_session_eval(inputs, np.array([3]), vectorless="keep", **kw))
        ev = build_session_eval(inputs, np.array([3]), **kw)
        return kept, evaluate_sessions(u, ev), (inputs, ev)

    # recent distinct tracks before session 3: [b, x, a]; relevant {a}; a scores -0.6, b -0.8, x 0
    kept, dropped, (inputs, ev) = both([["a"], ["x"], ["b"], ["a"]], [-0.6, -0.8])
    assert kept["metrics"]["Track mAP K=25"] == 0.5  # x (0) above a (-0.6)
    assert dropped["metrics"]["Track mAP K=25"] == 1.0  # x not ranked: a first
    assert set(inputs.data.track_map.to_raw(ev.track_cands[25][0][ev.track_cands[25][0] > 0]).tolist()) == {"a", "b"}
    c = dropped["counts"]
    assert c["vectorless candidates dropped K=25"] == 1
    assert c["vectorless share of candidates K=25"] == pytest.approx(1 / 3)
    assert c["vectorless share of relevant K=25"] == 0.0
    assert "vectorless candidates dropped K=25" not in kept["counts"]
    # x relevant too: half the relevant candidates have no vector
    _, dropped, _ = both([["a"], ["x"], ["b"], ["a", "x"]], [-0.6, -0.8])
    assert dropped["counts"]["vectorless share of relevant K=25"] == pytest.approx(1 / 2)
    with pytest.raises(DataError, match="vectorless"):
        build_session_eval(inputs, np.array([3]), vectorless="zero")


def test_session_ranking_on_full_windows() -> None:
    vec = {"a": (1.0, 0.0), "b": (0.0, 1.0), "c": (0.6, 0.8)}
    _data, inputs = _hand_data(vec, [["a"], ["b"], ["c"], ["a"]])
    ev = build_session_eval(inputs, np.array([1, 3]), session_ks=(2,), track_ks=(25,))
    u = np.zeros((4, 2), dtype=np.float32)
    u[1] = [1.0, 0.0]  # session 1 (target b) against a: rank 2
    u[3] = [0.0, 1.0]  # session 3 (target a) against c: rank 2 (c scores 0.8 > 0)
    out = evaluate_sessions(u, ev)
    assert out["counts"]["full windows K=2"] == 2
    assert out["metrics"]["Sess Rank K=2 (full window)"] == 2.0
    ev3 = build_session_eval(inputs, np.array([1, 3]), session_ks=(3,), track_ks=(25,))
    out3 = evaluate_sessions(u, ev3)
    # K = 3: session 1 has one predecessor (not full), session 3 has two (full): a scores 0, b 1, c 0.8 -> rank 3
    assert out3["counts"]["full windows K=3"] == 1
    assert out3["metrics"]["Sess Rank K=3 (full window)"] == 3.0
    assert out3["metrics"]["Sess Rank K=3"] == pytest.approx((2 + 3) / 2)


def test_pessimistic_ties_on_duplicate_sessions() -> None:
    """Identical session vectors are not resolved in the target's favour (Oracle full MRR < 1)."""
    _data, inputs = _hand_data({"a": (1.0, 0.0), "b": (0.0, 1.0)}, [["a"], ["b"], ["a"]])
    ev = build_session_eval(inputs, np.array([2]), session_ks=(20,), track_ks=(25,))
    full = baseline_predictions(inputs, "oracle-full")
    out = evaluate_sessions(full, ev)["metrics"]
    assert out["Cosine"] == 1.0 and out["Sess Rank K=20"] == 2 and out["Sess MRR K=20"] == 0.5
    # K = 2 keeps only the current session and its predecessor b: no duplicate, MRR 1
    ev2 = build_session_eval(inputs, np.array([2]), session_ks=(2,), track_ks=(25,))
    assert evaluate_sessions(full, ev2)["metrics"]["Sess MRR K=2"] == 1.0


def test_oracle_full_is_perfect_without_duplicates(synth) -> None:
    data, labels, inputs = synth
    ev = build_session_eval(inputs, np.flatnonzero(labels == TEST))
    s = inputs.emb["played"]
    dup = any(np.isclose(s[c[c >= 0]] @ s[c[-1]], 1.0, atol=1e-6).sum() > 1 for c in ev.session_cands[20])
    out = evaluate_sessions(baseline_predictions(inputs, "oracle-full"), ev, context_groups(data))
    assert out["metrics"]["Cosine"] == pytest.approx(1.0, abs=1e-6)
    if not dup:
        assert out["metrics"]["Sess MRR K=20"] == 1.0
    assert out["counts"]["sessions"] == len(ev.rows)
    assert set(out["by_context"]) == {"time of day", "device"}


# -- baselines (A.8) -----------------------------------------------------------------------------


def test_baselines_by_hand() -> None:
    vec = {"a": (1.0, 0.0), "b": (0.0, 1.0), "c": (0.6, 0.8)}
    data, inputs = _hand_data(vec, [["a", "a"], ["b"], ["c"], ["a"]])
    last = baseline_predictions(inputs, "last-any")
    assert np.allclose(last[0], 0) and np.allclose(last[3], inputs.emb["played"][2])
    avg = baseline_predictions(inputs, "avg-any")
    expect = 1 * np.array([1, 0]) + 2 * np.array([0, 1]) + 3 * np.array([0.6, 0.8])
    np.testing.assert_allclose(avg[3], expect / np.linalg.norm(expect), rtol=1e-5)
    pop = track_popularity(data, np.arange(4))  # a played 3 times
    p = baseline_predictions(inputs, "popularity", pop)
    np.testing.assert_allclose(p[3], [1, 0])  # the past session of the most popular tracks (a, a)
    half = baseline_predictions(inputs, "oracle-half", seed=1)
    np.testing.assert_allclose(half, baseline_predictions(inputs, "oracle-half", seed=1))
    with pytest.raises(ConfigError):
        baseline_predictions(inputs, "jodie")
    with pytest.raises(ConfigError, match="play counts"):
        baseline_predictions(inputs, "popularity")


def test_same_context_baselines_fall_back_and_match_context(synth) -> None:
    data, _, inputs = synth
    same = baseline_predictions(inputs, "last-same")
    anyc = baseline_predictions(inputs, "last-any")
    key = data.context_key()
    i = next(
        i
        for i in range(len(data))
        if data.position[i] > 2 and key[i] != key[i - 1] and (key[data.offsets[data.user[i] - 1] : i] == key[i]).any()
    )
    lo = data.offsets[data.user[i] - 1]
    j = lo + int(np.flatnonzero(key[lo:i] == key[i])[-1])
    np.testing.assert_allclose(same[i], inputs.emb["played"][j], atol=1e-6)
    first = data.offsets[:-1][data.sessions_per_user > 1] + 1  # second sessions: fallback when context differs
    k = next(r for r in first if key[r] != key[r - 1])
    np.testing.assert_allclose(same[k], anyc[k], atol=1e-6)


# -- training and the planted-structure ordering ---------------------------------------------------


def test_training_beats_popularity_on_planted_structure(synth) -> None:
    data, labels, inputs = synth
    torch.manual_seed(0)
    net = build_cosernn(inputs, CoSeRNNConfig(hidden=32, width=32, batch_size=8, lr=0.005, epochs=12, patience=4))
    hist = fit_cosernn(net, inputs, labels)
    assert hist.epochs and hist.best_valid_cosine is not None and hist.train_sessions_per_second > 0
    ev = build_session_eval(inputs, np.flatnonzero(labels == TEST), track_ks=(25,))
    ours = evaluate_sessions(net.predict(inputs), ev, context_groups(data))["metrics"]
    pop = evaluate_sessions(
        baseline_predictions(inputs, "popularity", track_popularity(data, np.flatnonzero(labels == TRAIN))), ev
    )["metrics"]
    assert ours["Sess MRR K=20"] > pop["Sess MRR K=20"]
    assert ours["Cosine"] > pop["Cosine"]
    with pytest.raises(DataError, match="labels"):
        fit_cosernn(net, inputs, labels[:-1])
    with pytest.raises(DataError, match="nothing to train"):
        fit_cosernn(net, inputs, np.full(len(labels), VALID))


# -- serving -------------------------------------------------------------------------------------


def test_serving_query_equals_the_models_next_session_vector(synth) -> None:
    from segue.serving.cosernn import SessionService

    data, _labels, inputs = synth
    torch.manual_seed(0)
    net = build_cosernn(inputs, CoSeRNNConfig(**SMALL)).eval()
    full = net.predict(inputs)
    # history = every session but each user's last; the query is the last session's start
    keep = np.ones(len(data), dtype=bool)
    keep[data.offsets[1:] - 1] = False
    from dataclasses import replace

    offsets = np.concatenate([[0], np.cumsum(data.sessions_per_user - 1)])
    hist = replace(
        data,
        **{
            f: getattr(data, f)[keep]
            for f in (
                "user",
                "start",
                "end",
                "n_tracks",
                "tracks",
                "skipped",
                "hour",
                "dow",
                "device",
                "source",
                "delta",
            )
        },
        offsets=offsets,
    )
    service = SessionService(net, session_inputs(hist, inputs.vectors), kind="exact")
    u = 3
    last = data.offsets[u] - 1
    raw = data.user_map.to_raw([u])[0]
    q = service.query(
        raw, int(data.hour[last]), int(data.dow[last]), data.device_vocab[data.device[last]], float(data.start[last])
    )
    np.testing.assert_allclose(q, full[last], atol=1e-5)
    rec = service.recommend(raw, 8, 2, "mobile", k=5)
    assert len(rec.tracks) == 5 and rec.scores == sorted(rec.scores, reverse=True)
    exact = np.argsort(-(inputs.vectors[service.index_ids] @ rec.query))[:5]
    assert rec.tracks == data.track_map.to_raw(service.index_ids[exact]).tolist()
    with pytest.raises(UnknownIdError):
        service.query("nobody", 8, 2)
    with pytest.raises(DataError, match="hour"):
        service.query(raw, 24, 2)
    with pytest.raises(DataError, match="Unknown device"):
        service.query(raw, 8, 2, "fridge")


def test_session_http_route(synth) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from segue.serving.cosernn import SessionService, create_session_app

    data, _, inputs = synth
    torch.manual_seed(0)
    service = SessionService(build_cosernn(inputs, CoSeRNNConfig(**SMALL)), inputs, exclude_recent=2)
    client = TestClient(create_session_app(service), raise_server_exceptions=False)
    user = str(data.user_map.to_raw([1])[0])
    r = client.post("/recommend", json={"user": user, "context": {"hour": 21, "dow": 5, "device": "mobile"}, "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 4 and body["query"] == "cosernn-session-start"
    recent = set(
        data.track_map.to_raw(
            data.tracks[data.offsets[1] - 2 : data.offsets[1]].ravel()[
                data.tracks[data.offsets[1] - 2 : data.offsets[1]].ravel() > 0
            ]
        ).astype(str)
    )
    assert not recent & {i["item"] for i in body["items"]}
    assert client.post("/recommend", json={"user": "nobody", "context": {"hour": 1, "dow": 1}}).status_code == 404
    bad = client.post("/recommend", json={"user": user, "context": {"hour": 30, "dow": 1}})
    assert bad.status_code == 422 and "hour" in bad.json()["error"]
    assert client.post("/recommend", json={"user": user}).status_code == 422
    assert client.get("/health").json()["tracks_indexed"] == service.index.n
