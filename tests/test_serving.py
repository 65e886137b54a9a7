"""Serving: export round-trips, the index layer, the Python API, the HTTP API (and a schemathesis run)."""

from __future__ import annotations

import json
import socket
import threading
import time
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
from segue.serving.export import ExportError, ServingModel, UnsupportedQueryError, export_run
from segue.serving.index import VectorIndex
from segue.training.checkpoint import load_run, save_run
from segue.training.trainer import TrainConfig

from .conftest import make_frame

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from segue.serving.app import create_app  # noqa: E402

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
    return TestClient(create_app(mf), raise_server_exceptions=False)


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
        mf.recommend("no-such-user", K)
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
    assert client.get("/docs").status_code == 200


def test_http_bad_inputs(client: TestClient, toy: Interactions, exports: dict[str, Path]) -> None:
    user, item = str(toy.user_map.raw[0]), str(toy.item_map.raw[0])
    assert "Unknown user id '99999'" in _error(client.get("/recommend?user=99999"), 404)
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
        {},
    ]
    for kw in bad_bodies:
        _error(client.post("/recommend", **kw), 422)
    assert "not valid JSON" in _error(client.post("/recommend", **bad_bodies[0]), 422)
    _error(client.get("/no-such-path"), 404)
    _error(client.delete("/recommend"), 405)
    # a model without vectors cannot answer /similar or item lists: 400, not 500
    pop = TestClient(create_app(ServingModel.load(exports["pop"])), raise_server_exceptions=False)
    assert pop.get(f"/recommend?user={user}&k={K}").status_code == 200
    assert "no item vectors" in _error(pop.get(f"/similar?item={item}"), 400)
    assert "cannot recommend for a list" in _error(pop.post("/recommend", json={"items": [item]}), 400)


def test_schemathesis_finds_no_server_error(client: TestClient) -> None:
    """Schema-driven requests, valid and invalid, against the app's own OpenAPI schema: no 500, documented answers.

    Runs schemathesis' strategies under hypothesis directly (its pytest fixture loader does not
    work with pytest 9), a bounded number of examples per operation and generation mode.
    """
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
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
        assert httpx.get(f"http://127.0.0.1:{port}/recommend", params={"user": "nobody"}).status_code == 404
    finally:
        server.should_exit = True
        thread.join(10)
