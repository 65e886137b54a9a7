"""Serving: export round-trips, the index layer, the Python API, the HTTP API (and a schemathesis run)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from segue.data.interactions import Interactions
from segue.errors import ConfigError, DataError, SegueError, UnknownIdError
from segue.evaluation.protocols import get_protocol
from segue.models.base import Context, Recommender, register
from segue.pipeline import run
from segue.serving import Recommender as ServingRecommender
from segue.serving.export import ExportError, Recommendations, ServingModel, UnsupportedQueryError, export_run
from segue.serving.index import VectorIndex
from segue.training.checkpoint import load_run, save_run
from segue.training.trainer import TrainConfig

from .conftest import make_frame

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from segue.serving.app import LOOPBACK_HOSTS, ServerSettings, bind_socket, create_app, uvicorn_config  # noqa: E402

K = 5


# -- test models for the two retrieval modes no built-in model uses yet ------------------------
class _AttentionToy(Recommender):
    """Item embeddings whose score is not a plain similarity: served by ANN candidates + re-scoring."""

    name: ClassVar[str] = "test-serving-attention"
    trainable: ClassVar[bool] = False

    def fit(self, train: Any, monitor: Any = None) -> None:
        self.fitted = True

    @dataclass
    class Config:
        dim: int = 8

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        g = torch.Generator().manual_seed(0)
        self.user_emb = nn.Parameter(torch.randn(n_users + 1, self.config.dim, generator=g))
        self.item_emb = nn.Parameter(torch.randn(n_items + 1, self.config.dim, generator=g))

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        u, v = self.user_emb[users][:, None, :], self.item_emb[items]
        return torch.tanh((u * v).sum(-1)) - 0.1 * v.norm(dim=-1)

    def item_vectors(self) -> Tensor:
        return self.item_emb.detach()


class _ContextToy(Recommender):
    """A dot model whose query is built from a context (a playlist): served by ANN on model queries."""

    name: ClassVar[str] = "test-serving-context"
    measure: ClassVar[Any] = "dot"
    needs: ClassVar[frozenset[str]] = frozenset({"group"})
    trainable: ClassVar[bool] = False

    def fit(self, train: Any, monitor: Any = None) -> None:
        self.fitted = True

    @dataclass
    class Config:
        dim: int = 8

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        g = torch.Generator().manual_seed(1)
        self.user_emb = nn.Parameter(torch.randn(n_users + 1, self.config.dim, generator=g) * 0.1)
        self.item_emb = nn.Parameter(torch.randn(n_items + 1, self.config.dim, generator=g))

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        assert context is not None and context.group is not None
        g = context.group
        mask = (g > 0).float()[..., None]
        mean = (self.item_emb[g] * mask).sum(1) / mask.sum(1).clamp(min=1)
        return (self.user_emb[users] + mean).detach()

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return torch.einsum("bd,bcd->bc", self.query_vectors(users, context), self.item_emb[items])

    def item_vectors(self) -> Tensor:
        return self.item_emb.detach()


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _test_models_registered() -> Any:
    """Register the test models for this module only, so other tests' registry listings stay clean."""
    from segue.models import base

    for cls in (_AttentionToy, _ContextToy):
        register(cls)
    yield
    for cls in (_AttentionToy, _ContextToy):
        base._REGISTRY.pop(cls.name, None)


@pytest.fixture(scope="module")
def toy() -> Interactions:
    return Interactions.from_frame(make_frame(), timestamp="ts", weight="rating", name="toy")


@pytest.fixture(scope="module")
def runs(toy: Interactions, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serving-runs")
    proto = get_protocol("loo-sampled", n_negatives=10)
    out = {}
    for name in ("mf-bpr", "pop", "itemknn"):
        run(name, toy, protocol=proto, train_config=TrainConfig(epochs=2, progress=False), out=base / name, log=None)
        out[name] = base / name
    seen = toy.to_csr()
    seen.data[:] = 1
    for cls in (_AttentionToy, _ContextToy):
        model = cls(toy.n_users, toy.n_items)
        model.fitted = True
        save_run(
            base / cls.name,
            model,
            user_map=toy.user_map,
            item_map=toy.item_map,
            seen=seen,
            config={"dataset": "toy"},
        )
        out[cls.name] = base / cls.name
    return out


@pytest.fixture(scope="module")
def exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serving-exports")
    out = {}
    for name, rd in runs.items():
        out[name] = export_run(rd, base / f"{name}-exact", index="exact")
    out["mf-bpr-hnsw"] = export_run(runs["mf-bpr"], base / "mf-bpr-hnsw", index="hnsw", m=8, ef_search=64)
    # every item is a candidate: re-scoring must then reproduce the model's exact ranking
    out["attention-all"] = export_run(
        runs[_AttentionToy.name], base / "attention-all", index="hnsw", m=8, candidates=10_000
    )
    return out


@pytest.fixture(scope="module")
def mf(exports: dict[str, Path]) -> ServingModel:
    return ServingModel.load(exports["mf-bpr-hnsw"])


@pytest.fixture(scope="module")
def client(mf: ServingModel) -> TestClient:
    return _client(mf)


def _client(model: ServingModel, **settings: Any) -> TestClient:
    """A TestClient that sends Host: localhost (the default allow-list) and turns server errors into 500s."""
    return TestClient(
        create_app(model, ServerSettings(**settings)), base_url="http://localhost", raise_server_exceptions=False
    )


# -- export / load round trip -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mf-bpr", "pop", "itemknn", _AttentionToy.name])
def test_exact_export_gives_the_models_own_top_k(name: str, runs: dict[str, Path], exports: dict[str, Path]) -> None:
    r = load_run(runs[name])
    sm = ServingModel.load(exports[name if name != _AttentionToy.name else "attention-all"])
    users = np.arange(1, r.model.n_users + 1)
    ref_ids, ref_scores = r.model.recommend(users, K, exclude=r.seen)
    ids, scores, _, _ = sm.top_k_internal(users, K)
    np.testing.assert_array_equal(ids, ref_ids.numpy())
    np.testing.assert_allclose(scores, ref_scores.numpy(), rtol=1e-5, atol=1e-5)
    # and by raw ids through the public API
    raw_user = r.user_map.to_raw([1])[0]
    rec = ServingRecommender.load(exports[name]).recommend(raw_user, K)
    assert rec.items == r.item_map.to_raw(ref_ids[0].numpy()).tolist()


def test_hnsw_export_agrees_with_exact(exports: dict[str, Path]) -> None:
    ann, ref = ServingModel.load(exports["mf-bpr-hnsw"]), ServingModel.load(exports["mf-bpr-hnsw"], exact=True)
    users = np.arange(1, ann.n_users + 1)
    a, _, query, _ = ann.top_k_internal(users, K)
    b, _, _, how_ref = ref.top_k_internal(users, K)
    assert query == "user-vector" and set(how_ref) == {"exact"}
    recall = np.mean([len(np.intersect1d(x, y)) / K for x, y in zip(a, b, strict=True)])
    assert recall >= 0.95


def test_metadata_and_files(exports: dict[str, Path]) -> None:
    expected = {
        "mf-bpr": ("ann", False),
        "pop": ("exact-model", True),
        "itemknn": ("exact-model", True),
        _AttentionToy.name: ("ann+rescore", True),
        _ContextToy.name: ("ann", True),
    }
    for name, (retrieval, needs_model) in expected.items():
        meta = json.loads((exports[name] / "metadata.json").read_text())
        assert meta["retrieval"] == retrieval and meta["model_at_query_time"] == needs_model
        assert meta["retrieval_note"].endswith(".") and meta["versions"]["faiss"]
        assert (exports[name] / "weights.safetensors").exists() == needs_model
        for f in meta["files"].values():
            assert (exports[name] / f).exists()
            assert Path(f).suffix in {".json", ".parquet", ".npz", ".npy", ".faiss", ".safetensors"}
            if f.endswith(".npy"):
                assert np.load(exports[name] / f, allow_pickle=False).dtype == np.float32
    meta = json.loads((exports["mf-bpr"] / "metadata.json").read_text())
    assert meta["measure"] == "dot" and meta["dim"] == 64 and meta["query"] == "user-vectors"
    assert np.load(exports["mf-bpr"] / "item_vectors.npy").shape == (meta["n_items"] + 1, 64)


def test_export_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SegueError, match="does not exist"):
        export_run(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ConfigError, match="index must be"):
        export_run(runs["mf-bpr"], tmp_path / "out", index="ivf")
    export_run(runs["pop"], tmp_path / "out")
    with pytest.raises(ExportError, match="already exists"):
        export_run(runs["pop"], tmp_path / "out")
    with pytest.raises(ExportError, match="not a segue export"):
        ServingModel.load(tmp_path)
    (tmp_path / "out" / "seen.npz").unlink()
    with pytest.raises(SegueError, match="incomplete"):
        ServingModel.load(tmp_path / "out")


# -- index layer --------------------------------------------------------------------------------
@pytest.mark.parametrize("measure", ["dot", "cosine", "l2"])
def test_index_recall_scores_exclusion_and_persistence(measure: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 16)).astype(np.float32) * rng.uniform(0.5, 2, (1000, 1)).astype(np.float32)
    q = rng.standard_normal((50, 16)).astype(np.float32)
    idx = VectorIndex.build(x, measure, "hnsw", m=16, ef_construction=48, ef_search=64)
    assert idx.recall(q, 10) >= 0.95
    # scores are the measure itself (higher is better), computed exactly
    res = idx.search(q, 10)
    xs = x / np.linalg.norm(x, axis=1, keepdims=True) if measure == "cosine" else x
    qs = q / np.linalg.norm(q, axis=1, keepdims=True) if measure == "cosine" else q
    v = xs[res.ids - 1]
    want = -((v - qs[:, None]) ** 2).sum(-1) if measure == "l2" else np.einsum("bkd,bd->bk", v, qs)
    np.testing.assert_allclose(res.scores, want, rtol=1e-4, atol=1e-4)
    assert (np.diff(res.scores, axis=1) <= 1e-6).all()
    # exclusion: over-fetch and filter, the excluded items never come back
    excl = [res.ids[b, :5] for b in range(len(q))]
    res2 = idx.search(q, 10, excl)
    for b in range(len(q)):
        assert not np.isin(res2.ids[b], excl[b]).any()
        np.testing.assert_array_equal(res2.ids[b, :5], res.ids[b, 5:])
    # save / load gives the same answers
    idx.save(tmp_path / "i.faiss")
    back = VectorIndex.load(tmp_path / "i.faiss")
    assert back.describe() == idx.describe()
    np.testing.assert_array_equal(back.search(q, 10, excl).ids, res2.ids)


def test_index_fallback_and_padding() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 8)).astype(np.float32)
    idx = VectorIndex.build(x, "dot", "hnsw", m=8, dot_strategy="ip")
    q = rng.standard_normal((2, 8)).astype(np.float32)
    heavy = [np.arange(1, 96), np.zeros(0, np.int64)]  # 95 of 100 items excluded for the first query
    res = idx.search(q, 10, heavy)
    assert res.exact.tolist() == [True, False]
    assert set(res.ids[0, :5]) == {96, 97, 98, 99, 100} and (res.ids[0, 5:] == 0).all()
    assert np.isneginf(res.scores[0, 5:]).all()
    with pytest.raises(DataError, match="shape"):
        idx.search(np.zeros((1, 3), np.float32), 10)
    with pytest.raises(ConfigError, match="positive"):
        idx.search(q, 0)
    with pytest.raises(DataError, match="NaN"):
        VectorIndex.build(np.full((3, 2), np.nan, np.float32), "dot")


def test_dot_strategy_auto_keeps_the_better_graph() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1000, 16)).astype(np.float32) * rng.lognormal(0, 0.5, (1000, 1)).astype(np.float32)
    q = rng.standard_normal((40, 16)).astype(np.float32)
    auto = VectorIndex.build(x, "dot", "hnsw", m=16, ef_construction=48, ef_search=64, sample_queries=q)
    recalls = auto.params["dot_strategy_recall"]
    assert set(recalls) == {"ip", "l2-transform"}
    assert recalls[auto.params["dot_strategy"]] == max(recalls.values())
    assert auto.recall(q, 10) >= 0.9 and auto.vectors.shape == (1000, 16)
    for strategy in ("ip", "l2-transform"):
        idx = VectorIndex.build(x, "dot", "hnsw", m=8, ef_construction=16, dot_strategy=strategy)
        assert idx.params["dot_strategy"] == strategy and idx.dim == 16


# -- Python API -----------------------------------------------------------------------------------
def test_python_api(mf: ServingModel, toy: Interactions) -> None:
    user = toy.user_map.raw[0]
    rec = mf.recommend(user, K)
    seen = set(toy.item_map.to_raw(mf._seen(1)).tolist())
    assert len(rec.items) == K and not seen & set(rec.items)
    assert rec.query == "user-vector" and rec.retrieval in ("ann", "exact")
    assert rec.scores == sorted(rec.scores, reverse=True)
    assert len(mf.recommend_many(list(toy.user_map.raw[:3]), K)) == 3
    items = list(toy.item_map.raw[:3])
    rec = mf.recommend_items(items, K)
    assert rec.query == "mean-of-items" and not set(items) & set(rec.items)
    rec = mf.recommend_items([*items, "no-such-item"], K, ignore_unknown=True)
    assert rec.ignored == ["no-such-item"]
    sim = mf.similar(items[0], K)
    assert items[0] not in sim.items and sim.query == "item-vector"
    with pytest.raises(UnknownIdError, match="Unknown user id"):
        mf.recommend("no-such-user", K, unknown="error")
    # an unknown user gets the most popular training items, flagged (the library, CLI and HTTP agree)
    pop = mf.recommend("no-such-user", K)
    counts = np.asarray(mf.seen.sum(axis=0)).ravel()
    assert pop.query == "popular-fallback" and pop.scores == sorted(counts[1:], reverse=True)[:K]
    assert [r.query for r in mf.recommend_many([user, "no-such-user"], K)] == ["user-vector", "popular-fallback"]
    with pytest.raises(UnknownIdError, match="Unknown item id"):
        mf.recommend_items(["no-such-item"], K)
    with pytest.raises(ConfigError, match="k must be"):
        mf.recommend(user, 0)
    with pytest.raises(ConfigError, match="k must be"):
        mf.recommend(user, mf.n_items + 1)
    # every unseen item when k is the catalogue size; fewer when the user has seen some
    assert len(mf.recommend(user, mf.n_items).items) == mf.n_items - len(seen)


def test_context_and_rescore_models(exports: dict[str, Path], runs: dict[str, Path]) -> None:
    sm = ServingModel.load(exports[_ContextToy.name])
    r = load_run(runs[_ContextToy.name])
    items = [int(i) for i in r.item_map.raw[:4]]
    rec = sm.recommend_items(items, K)
    assert rec.query == "model-context"
    ctx = Context(group=torch.as_tensor(r.item_map.to_internal(items))[None, :])
    scores = r.model.score_all(torch.zeros(1, dtype=torch.long), ctx)[0]
    scores[r.item_map.to_internal(items)] = -np.inf
    scores[0] = -np.inf
    assert rec.items == r.item_map.to_raw(torch.topk(scores, K).indices.numpy()).tolist()
    assert sm.recommend(r.user_map.raw[0], K).query == "user-history"
    att = ServingModel.load(exports[_AttentionToy.name])
    assert att.recommend(r.user_map.raw[0], K).retrieval == "ann+rescore"
    assert att.recommend_items(items, K).query == "mean-of-items"
    pop = ServingModel.load(exports["pop"])
    with pytest.raises(UnsupportedQueryError):
        pop.similar(items[0], K)
    with pytest.raises(UnsupportedQueryError):
        pop.recommend_items(items, K)


# -- HTTP API --------------------------------------------------------------------------------------
def _error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    msg = body["error"]
    assert msg.endswith(".") and "\n" not in msg and "Traceback" not in msg
    return msg


def test_http_endpoints(client: TestClient, toy: Interactions, mf: ServingModel) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "mf-bpr" and h["n_items"] == toy.n_items
    user = str(toy.user_map.raw[0])
    body = client.get(f"/recommend?user={user}&k={K}").json()
    assert [i["item"] for i in body["items"]] == [str(i) for i in mf.recommend(user, K).items]
    assert body["user"] == user and body["query"] == "user-vector" and len(body["items"]) == K
    assert all(isinstance(i["item"], str) and isinstance(i["score"], float) for i in body["items"])
    items = [str(i) for i in toy.item_map.raw[:3]]
    body = client.post("/recommend", json={"items": items, "k": K}).json()
    assert body["query"] == "mean-of-items" and not set(items) & {i["item"] for i in body["items"]}
    body = client.post("/recommend", json={"items": [*items, "zz"], "k": K, "ignore_unknown": True}).json()
    assert body["ignored"] == ["zz"]
    body = client.get(f"/similar?item={items[0]}&k={K}").json()
    assert body["item"] == items[0] and items[0] not in {i["item"] for i in body["items"]}
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/recommend", "/similar", "/health"}
    assert client.get("/docs").status_code == 404  # off by default: Swagger UI loads from a CDN


def test_http_bad_inputs(client: TestClient, toy: Interactions, exports: dict[str, Path]) -> None:
    user, item = str(toy.user_map.raw[0]), str(toy.item_map.raw[0])
    assert "Unknown user id '99999'" in _error(client.get("/recommend?user=99999&unknown=error"), 404)
    fallback = client.get("/recommend?user=99999&k=3")
    assert fallback.status_code == 200 and fallback.json()["query"] == "popular-fallback"
    assert client.get("/recommend?user=99999&unknown=maybe").status_code == 422
    assert "Unknown item id 'nope'" in _error(client.get("/similar?item=nope"), 404)
    assert "Unknown item id 'nope'" in _error(client.post("/recommend", json={"items": ["nope"]}), 404)
    for k in ("0", "-1", str(toy.n_items + 1), "abc", "1.5", ""):
        assert "'k'" in _error(client.get(f"/recommend?user={user}&k={k}"), 422)
        _error(client.get(f"/similar?item={item}&k={k}"), 422)
    assert "Missing query parameter 'user'" in _error(client.get("/recommend"), 422)
    _error(client.get("/recommend?user="), 422)
    _error(client.get("/recommend?user=" + "x" * 300), 422)
    bad_bodies: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"json": [1, 2]},
        {"json": {}},
        {"json": {"items": []}},
        {"json": {"items": "1"}},
        {"json": {"items": [1.5]}},
        {"json": {"items": [None]}},
        {"json": {"items": [item], "k": 0}},
        {"json": {"items": [item], "k": "ten"}},
        {"json": {"items": [item], "extra": 1}},
        {"json": {"items": [item] * 10_001}},
        {"json": {"items": ["x" * 300]}},  # an id over 256 characters: 422, not 404
        {"json": {"items": [item], "user": "u" * 300}},
        {},
    ]
    for kw in bad_bodies:
        _error(client.post("/recommend", **kw), 422)
    assert "not valid JSON" in _error(client.post("/recommend", **bad_bodies[0]), 422)
    _error(client.get("/no-such-path"), 404)
    _error(client.delete("/recommend"), 405)
    # a model without vectors cannot answer /similar or item lists: 400, not 500
    pop = _client(ServingModel.load(exports["pop"]))
    assert pop.get(f"/recommend?user={user}&k={K}").status_code == 200
    assert "no item vectors" in _error(pop.get(f"/similar?item={item}"), 400)
    assert "cannot recommend for a list" in _error(pop.post("/recommend", json={"items": [item]}), 400)


def test_schemathesis_finds_no_server_error(mf: ServingModel) -> None:
    """Schema-driven requests, valid and invalid, against the app's own OpenAPI schema: no 500, documented answers.

    Runs schemathesis' strategies under hypothesis directly (its pytest fixture loader does not
    work with pytest 9), a bounded number of examples per operation and generation mode.
    """
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

    app = create_app(mf, ServerSettings(allowed_hosts=(*LOOPBACK_HOSTS, "testserver")))  # schemathesis' Host
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    statuses: list[int] = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in schemathesis.GenerationMode:

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: Any) -> None:
                statuses.append(case.call_and_validate(checks=checks).status_code)

            try:
                check()
            except Unsatisfiable:  # no invalid request exists (GET /health has no parameters)
                assert mode == schemathesis.GenerationMode.NEGATIVE
    assert statuses and max(statuses) < 500 and {200, 422} <= set(statuses)


# -- CLI and a real server -----------------------------------------------------------------------
def test_cli_export_and_serve(runs: dict[str, Path], tmp_path: Path, toy: Interactions) -> None:
    from typer.testing import CliRunner

    from segue.cli import app

    res = CliRunner().invoke(app, ["export", str(runs["mf-bpr"]), str(tmp_path / "exp"), "--index", "hnsw"])
    assert res.exit_code == 0, res.output
    assert "retrieval ann" in res.output
    res = CliRunner().invoke(app, ["export", str(runs["mf-bpr"]), str(tmp_path / "exp")])
    assert isinstance(res.exception, SegueError)  # main() turns it into one line and exit status 2
    res = CliRunner().invoke(app, ["serve", str(tmp_path / "exp"), "--port", "0"])
    assert isinstance(res.exception, ConfigError)

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(ServingModel.load(tmp_path / "exp")), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        r = httpx.get(f"http://127.0.0.1:{port}/recommend", params={"user": str(toy.user_map.raw[0]), "k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        assert httpx.get(f"http://127.0.0.1:{port}/recommend", params={"user": "nobody", "unknown": "error"}).status_code == 404
    finally:
        server.should_exit = True
        thread.join(10)


# -- limits and safety (issue 15): each test fails when its guarantee is removed -----------------
@contextmanager
def _running(app: Any, protocol: type | None = None) -> Iterator[int]:
    """A real uvicorn server (the app's own settings, timeouts and guarded protocol) on a free loopback port."""
    import uvicorn

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn_config(app, app.state.settings, host="127.0.0.1", port=port, log_level="error")
    if protocol is not None:
        config.http = protocol
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.02)
        assert server.started
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _raw(port: int, data: bytes = b"", wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``wait`` passes)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            return got + b"<still open>", time.perf_counter() - t0
    return got, time.perf_counter() - t0


def _raw_json(response: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_serve_binds_loopback_by_default(exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from typer.testing import CliRunner

    from segue.cli import app
    from segue.serving import app as app_module

    assert inspect.signature(app_module.serve).parameters["host"].default == "127.0.0.1"
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        app_module, "serve", lambda model, **kw: calls.append({"model": model, "bound": kw["sock"].getsockname(), **kw})
    )
    monkeypatch.setenv("SEGUE_API_KEY", "from-the-env")
    res = CliRunner().invoke(app, ["serve", str(exports["mf-bpr"]), "--port", "0"])
    assert isinstance(res.exception, ConfigError)  # port 0 is refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(app, ["serve", str(exports["mf-bpr"]), "--port", str(port)])
    assert res.exit_code == 0, res.output
    (call,) = calls
    assert call["host"] == "127.0.0.1" and call["bound"] == ("127.0.0.1", port) and call["workers"] == 1
    s = call["settings"]
    assert s.allowed_hosts == ("localhost", "127.0.0.1", "::1") and s.api_key == "from-the-env" and not s.docs
    res = CliRunner().invoke(
        app,
        ["serve", str(exports["mf-bpr"]), "--port", str(port), "--workers", "3", "--allowed-host", "rec.example"],
    )
    assert res.exit_code == 0, res.output
    assert calls[-1]["workers"] == 3 and calls[-1]["model"] == exports["mf-bpr"]  # each worker loads the export
    assert "rec.example" in calls[-1]["settings"].allowed_hosts


def test_no_cors_headers(client: TestClient, toy: Interactions) -> None:
    origin = {"Origin": "http://evil.example"}
    user = str(toy.user_map.raw[0])
    responses = [
        client.get(f"/recommend?user={user}", headers=origin),
        client.post("/recommend", json={"items": [str(toy.item_map.raw[0])]}, headers=origin),
        client.options(
            "/recommend", headers={**origin, "Access-Control-Request-Method": "POST"}
        ),  # a browser's preflight
    ]
    assert [r.status_code for r in responses] == [200, 200, 405]
    for r in responses:
        assert not any(h.startswith("access-control-") for h in r.headers)


def test_host_allow_list(mf: ServingModel) -> None:
    c = _client(mf)
    for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
        assert c.get("/health", headers={"Host": host}).status_code == 200, host
    # DNS rebinding: a browser on attacker.example resolving to 127.0.0.1 sends Host: attacker.example
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.2", ""):
        msg = _error(c.get("/health", headers={"Host": host}), 400)
        assert "not allowed" in msg and "--allowed-host" in msg
    _error(c.post("/recommend", json={"items": ["1"]}, headers={"Host": "attacker.example"}), 400)
    c = _client(mf, allowed_hosts=(*LOOPBACK_HOSTS, "rec.example", "*.corp.example"))
    for host in ("rec.example", "a.corp.example", "localhost"):
        assert c.get("/health", headers={"Host": host}).status_code == 200, host
    assert c.get("/health", headers={"Host": "other.example"}).status_code == 400
    with pytest.raises(ConfigError, match="allowed-host"):
        ServerSettings(allowed_hosts=("a b",))


def test_api_key(mf: ServingModel, toy: Interactions) -> None:
    c = _client(mf, api_key="s3cret")
    user, item = str(toy.user_map.raw[0]), str(toy.item_map.raw[0])
    ok = {"X-API-Key": "s3cret"}
    for method, path, kw in [
        ("GET", f"/recommend?user={user}", {}),
        ("GET", f"/similar?item={item}", {}),
        ("POST", "/recommend", {"json": {"items": [item]}}),
        ("POST", "/recommend", {"content": b"{not json"}),  # refused before the body is read
        ("GET", "/openapi.json", {}),
        ("GET", "/no-such-path", {}),
    ]:
        r = c.request(method, path, **kw)
        assert "needs an API key" in _error(r, 401) and r.headers["www-authenticate"].startswith("ApiKey")
        assert "is wrong" in _error(c.request(method, path, headers={"X-API-Key": "s3cre"}, **kw), 401)
        assert c.request(method, path, headers=ok, **kw).status_code in (200, 404, 422)
    assert c.get("/health").status_code == 200  # open
    assert c.get(f"/recommend?user={user}", headers=ok).status_code == 200
    assert "X-API-Key" in json.dumps(c.get("/openapi.json", headers=ok).json()["components"]["securitySchemes"])
    with pytest.raises(ConfigError, match="empty"):
        ServerSettings(api_key=" ")


def test_exclude_seen_false_needs_the_key(mf: ServingModel, toy: Interactions) -> None:
    """Comparing exclude_seen=false with true lists a user's training items: only a keyed caller may ask."""
    user, items = str(toy.user_map.raw[0]), [str(i) for i in toy.item_map.raw[:3]]
    seen = set(toy.item_map.to_raw(mf._seen(1)).tolist())
    n = toy.n_items
    anonymous, keyed = _client(mf), _client(mf, api_key="k")
    assert "API key" in _error(anonymous.get(f"/recommend?user={user}&k={n}&exclude_seen=false"), 403)
    assert "API key" in _error(
        anonymous.post("/recommend", json={"items": items, "user": user, "exclude_seen": False}), 403
    )
    # without a user exclude_seen has no effect and is allowed
    assert anonymous.post("/recommend", json={"items": items, "exclude_seen": False}).status_code == 200
    shown = {i["item"] for i in anonymous.get(f"/recommend?user={user}&k={n}").json()["items"]}
    assert not shown & {str(i) for i in seen}
    r = keyed.get(f"/recommend?user={user}&k={n}&exclude_seen=false", headers={"X-API-Key": "k"})
    assert {str(i) for i in seen} <= {i["item"] for i in r.json()["items"]}


def test_strict_types(client: TestClient, toy: Interactions) -> None:
    user, item = str(toy.user_map.raw[0]), str(toy.item_map.raw[0])
    for k in ("true", "%2010", "10%20", "10.0", "+10", "1e1", "010", "0x10", "１０"):  # the last: full-width digits
        assert "'k'" in _error(client.get(f"/recommend?user={user}&k={k}"), 422), k
        assert "'k'" in _error(client.get(f"/similar?item={item}&k={k}"), 422), k
    assert "whole number" in _error(client.get(f"/recommend?user={user}&k=10.0"), 422)
    for v in ("1", "0", "yes", "on", "True", "t"):
        assert "true or false" in _error(client.get(f"/recommend?user={user}&exclude_seen={v}"), 422), v
    assert client.get(f"/recommend?user={user}&k=10&exclude_seen=true").status_code == 200
    for body in (
        {"items": [True]},
        {"items": [1.0]},
        {"items": [item], "k": True},
        {"items": [item], "k": 10.0},
        {"items": [item], "k": "10"},
        {"items": [item], "user": True},
        {"items": [item], "exclude_items": 1},
        {"items": [item], "ignore_unknown": "true"},
    ):
        _error(client.post("/recommend", json=body), 422)
    assert client.post("/recommend", json={"items": [item, int(item)], "k": 3}).status_code == 200


def test_item_and_work_bounds(mf: ServingModel, toy: Interactions) -> None:
    items = [str(i) for i in toy.item_map.raw]
    c = _client(mf, max_items=6, max_work=50)
    assert c.post("/recommend", json={"items": items[:6], "k": 8}).status_code == 200  # 48 <= 50
    assert "'items'" in _error(c.post("/recommend", json={"items": items[:7], "k": 1}), 422)
    msg = _error(c.post("/recommend", json={"items": items[:6], "k": 9}), 422)  # 54 > 50
    assert "k × items = 54" in msg and "at most 50" in msg
    # the defaults
    d = ServerSettings()
    assert (d.max_items, d.max_work, d.max_k, d.max_body_bytes) == (1000, 100_000, 1000, 1 << 20)
    _error(_client(mf).post("/recommend", json={"items": ["1"] * 1001}), 422)


def test_body_limit(mf: ServingModel) -> None:
    c = _client(mf, max_body_bytes=2000)
    big = json.dumps({"items": ["x" * 200] * 12}).encode()
    assert "larger than this server's limit of 2,000 bytes" in _error(
        c.post("/recommend", content=big, headers={"content-type": "application/json"}), 413
    )
    assert c.post("/recommend", json={"items": ["x" * 200] * 5}).status_code == 404  # under the limit: read


def test_body_limit_streamed_and_declared(mf: ServingModel) -> None:
    """On a real server: a chunked body is refused as soon as it passes the limit (before it ends), a declared
    Content-Length over the limit before anything is read, on any endpoint; both with a JSON sentence."""
    with _running(create_app(mf, ServerSettings(max_body_bytes=1000, timeout=3))) as port:
        head = b"POST /recommend HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        chunk = b'{"items": [' + b'"xxxxxxxxxxxxxxxx",' * 80  # 1,531 bytes, and the body never ends
        got, took = _raw(port, head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        status, headers, body = _raw_json(got)
        assert status == 413 and "limit of 1,000 bytes" in body["error"] and took < 2.5
        for request in (
            head + b"Content-Length: 1000000000\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000\r\n\r\n",
        ):
            got, took = _raw(port, request)
            status, headers, body = _raw_json(got)
            assert status == 413 and headers["connection"] == "close" and body["error"].endswith(".")
            assert took < 2.5


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_slow_clients_are_disconnected(mf: ServingModel, protocol: str) -> None:
    """slowloris: a client that connects and sends nothing, sends its headers a byte at a time, or stops halfway
    through its body is disconnected within the timeout (uvicorn alone keeps the first two open for ever)."""
    from segue.serving import app as app_module

    cls = app_module.GuardedH11Protocol if protocol == "h11" else app_module.GuardedHttpToolsProtocol
    if cls is None:
        pytest.skip("httptools is not installed")
    timeout = 0.5
    with _running(create_app(mf, ServerSettings(timeout=timeout, keep_alive=0.3)), protocol=cls) as port:
        got, took = _raw(port)
        assert got == b"" and took < timeout + 1.5

        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
            closed = False
            for _ in range(40):  # one header byte every 0.1 s: never a complete head
                try:
                    s.sendall(b"X")
                    time.sleep(0.1)
                except OSError:
                    closed = True
                    break
            if not closed:
                s.settimeout(0.5)
                try:
                    closed = s.recv(100) == b""
                except (TimeoutError, OSError):
                    closed = False
            assert closed and time.perf_counter() - t0 < timeout + 1.5

        got, took = _raw(port, b"POST /recommend HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        status, _, body = _raw_json(got)
        assert status == 408 and "did not arrive within 0.5 seconds" in body["error"] and took < timeout + 1.5

        # a healthy client is unaffected, and a kept-alive connection still serves a second request
        with httpx.Client(base_url=f"http://localhost:{port}") as h:
            assert h.get("/health").status_code == 200
            time.sleep(0.1)
            assert h.get("/health").status_code == 200


def test_concurrent_answers_equal_serial_answers(mf: ServingModel, toy: Interactions) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    users, items = [str(u) for u in toy.user_map.raw], [str(i) for i in toy.item_map.raw]
    requests: list[tuple[str, str, Any]] = []
    for r in range(60):
        if r % 3 == 0:
            requests.append(("GET", f"/recommend?user={rng.choice(users)}&k={rng.integers(1, 20)}", None))
        elif r % 3 == 1:
            requests.append(("POST", "/recommend", {"items": rng.choice(items, 5).tolist(), "k": 7}))
        else:
            requests.append(("GET", f"/similar?item={rng.choice(items)}&k=5", None))
    with _running(create_app(mf)) as port, httpx.Client(base_url=f"http://localhost:{port}") as h:

        def ask(req: tuple[str, str, Any]) -> Any:
            r = h.request(req[0], req[1], json=req[2])
            assert r.status_code == 200, r.text
            return r.json()

        serial = [ask(r) for r in requests]
        with ThreadPoolExecutor(16) as pool:
            concurrent = list(pool.map(ask, requests))
    assert concurrent == serial


def test_an_expensive_request_does_not_stall_the_loop(exports: dict[str, Path], toy: Interactions) -> None:
    """The handlers run in a threadpool: while one request computes (here: 1.5 s), /health still answers at once."""
    slow = ServingModel.load(exports["mf-bpr-hnsw"])
    fast_answer = slow.recommend_items

    def expensive(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # faiss and numpy release the GIL while they search, as sleep does
        return fast_answer(*args, **kwargs)

    slow.recommend_items = expensive  # type: ignore[method-assign]
    with _running(create_app(slow)) as port:
        base = f"http://localhost:{port}"
        worker = threading.Thread(
            target=lambda: httpx.post(f"{base}/recommend", json={"items": [str(toy.item_map.raw[0])]}, timeout=10)
        )
        worker.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/recommend", params={"user": str(toy.user_map.raw[0])}).status_code == 200
        waited = time.perf_counter() - t0
        worker.join()
    assert waited < 0.8, waited


def test_server_fault_is_a_clean_500(exports: dict[str, Path], toy: Interactions) -> None:
    broken = ServingModel.load(exports["mf-bpr"])
    broken.user_vectors = np.full_like(np.asarray(broken.user_vectors), np.nan)  # a diverged model
    c = _client(broken)
    msg = _error(c.get(f"/recommend?user={toy.user_map.raw[0]}"), 500)
    assert msg.startswith("The server could not answer this request") and "NaN" in msg
    rec = broken.recommend_items
    broken.recommend_items = lambda *a, **kw: Recommendations(["1"], [float("nan")], "q", "r")  # type: ignore[method-assign]
    assert "NaN score" in _error(c.post("/recommend", json={"items": [str(toy.item_map.raw[0])]}), 500)
    broken.recommend_items = rec  # type: ignore[method-assign]
    # all items unknown with ignore_unknown is still the client's error
    assert "None of the request's items" in _error(
        c.post("/recommend", json={"items": ["zz"], "ignore_unknown": True}), 422
    )


def test_allow_header_and_head(client: TestClient, toy: Interactions) -> None:
    r = client.delete("/recommend")
    _error(r, 405)
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    r = client.put("/health")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
    r = client.post("/similar")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
    for path in ("/health", f"/recommend?user={toy.user_map.raw[0]}", f"/similar?item={toy.item_map.raw[0]}"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"" and r.headers["content-type"] == "application/json"
    assert client.head("/recommend?user=nobody&unknown=error").status_code == 404


def test_docs_page_only_when_asked(mf: ServingModel) -> None:
    assert _client(mf).get("/docs").status_code == 404
    assert _client(mf).get("/openapi.json").status_code == 200
    assert _client(mf, docs=True).get("/docs").status_code == 200


def test_taken_port_is_one_line_and_exit_2(exports: dict[str, Path]) -> None:
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "from segue.cli import main; main()",
                "serve",
                str(exports["mf-bpr"]),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.strip()
        == f"error: Port {port} on 127.0.0.1 is already in use; stop the other server or choose another --port."
    )


def test_worker_app_loads_the_export_with_the_settings(
    exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch, toy: Interactions
) -> None:
    """`--workers N`: each process builds its app from the parent's settings (here in-process)."""
    from segue.serving import app as app_module

    settings = ServerSettings(api_key="k", max_items=3)
    spec = {"path": str(exports["mf-bpr"]), "exact": False, "ef_search": None, "settings": settings.to_json()}
    monkeypatch.setenv(app_module._WORKER_ENV, json.dumps(spec))
    worker = app_module.worker_app()
    assert worker.state.settings == settings
    c = TestClient(worker, base_url="http://localhost")
    assert c.get(f"/recommend?user={toy.user_map.raw[0]}").status_code == 401
    items = [str(i) for i in toy.item_map.raw[:4]]
    assert c.post("/recommend", json={"items": items}, headers={"X-API-Key": "k"}).status_code == 422


@pytest.mark.slow
def test_workers_serve_from_several_processes(exports: dict[str, Path], toy: Interactions) -> None:
    """`segue serve --workers 2` for real: two processes answer on one port, with the settings of the parent."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["serve", str(exports["mf-bpr"]), "--port", str(port), "--workers", "2", "--max-items", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from segue.cli import main; main()", *cmd],
        env={**os.environ, "SEGUE_API_KEY": "k"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base, key = f"http://127.0.0.1:{port}", {"X-API-Key": "k"}
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        user, items = str(toy.user_map.raw[0]), [str(i) for i in toy.item_map.raw[:3]]
        assert httpx.get(f"{base}/recommend", params={"user": user}).status_code == 401
        with httpx.Client(base_url=base, headers=key) as h:  # fresh connections reach both workers
            answers = {
                h.get("/recommend", params={"user": user}, headers={"Connection": "close"}).text for _ in range(8)
            }
            assert len(answers) == 1 and "items" in answers.pop()
            assert h.post("/recommend", json={"items": items}).status_code == 422  # --max-items 2 in the workers
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
