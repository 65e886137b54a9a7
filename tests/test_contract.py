"""One contract test over every registered model (in the spirit of scikit-learn's ``check_estimator``).

Every name in :func:`segue.models.base.list_models` is built with tiny options on a toy table this
file builds itself, fitted once (through :func:`fit_model`, the single fitting entry point) and then
checked against the :class:`~segue.models.base.Recommender` interface:

``fit``        fitting succeeds and leaves the model marked fitted
``score``      (B, C) finite float scores for users (B,) and candidates (B, C)
``score_all``  (B, n_items + 1), column 0 = -inf, columns equal to ``score`` on the same items
``recommend``  (B, k) ids, never an excluded (training) item
``save_load``  identical scores after a save_run / load_run round trip (every family, see ``_reload``)
``vectors``    for a model with ``measure``: query and item vectors reproduce ``score`` under it

A registered model without a recipe in :data:`RECIPES` fails every check (it is never skipped).
A (model, check) pair that fails today is listed in :data:`KNOWN_DEFECTS` as a strict xfail.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from segue.data.interactions import Interactions
from segue.data.sequences import last_items
from segue.models.base import Context, Recommender, build_model, get_model_class, list_models
from tests.conftest import make_frame

torch.set_num_threads(1)


# -- the single fitting entry point ----------------------------------------------------------------
def fit_model(model: Recommender, train: Interactions, valid: Any = None, **kw: Any) -> Any:
    """Fit ``model`` on ``train`` with a tiny training configuration; every fit in this file goes through here.

    ``kw`` carries the family's side inputs (``mels=``, ``features=``, ``topics=``) and may
    override ``config``: :func:`segue.training.fit` with a tiny ``TrainConfig`` (the playlist
    models' own defaults for them), or the audio loops' config; closed-form models get ``None``.
    """
    from segue.models.dcue import _AudioRecommender
    from segue.models.playlist import PlaylistModel
    from segue.models.tripletrec import TripletRec
    from segue.training import fit
    from segue.training.audio import AudioTrainConfig, triplet_config
    from segue.training.playlist import playlist_config
    from segue.training.trainer import TrainConfig

    config = kw.pop("config", None)
    if config is None:
        if isinstance(model, PlaylistModel):
            config = playlist_config(epochs=1, apr_epochs=1, batch_size=64, device="cpu", progress=False)
        elif isinstance(model, TripletRec):
            config = triplet_config(steps=2, batch_size=16)
        elif isinstance(model, _AudioRecommender):
            config = AudioTrainConfig(steps=2, batch_size=4, lr=0.01, eval_every=2, norm_clips=8)
        elif model.trainable:
            tiny = {"epochs": 1, "batch_size": 64, "n_negatives": 2, "progress": False, "threads": 1, "device": "cpu"}
            config = TrainConfig(**{**model.train_defaults, **tiny})
    kw.setdefault("log", None)
    return fit(model, train, valid, config, **kw)


# -- toy data ----------------------------------------------------------------------------------------
@functools.cache
def _pairs() -> Interactions:
    """16 users, 6 timed interactions each, over two clusters of items (conftest's make_frame)."""
    return Interactions.from_frame(
        make_frame(n_users=16, n_items=24, per_user=6), timestamp="ts", weight="rating", name="contract"
    )


@functools.cache
def _playlists() -> Interactions:
    """6 owners with 2 playlists each (so playlist ids exceed user ids), 5 songs per playlist."""
    from tests.test_playlist import toy_playlists

    return toy_playlists(n_users=6, per_user=2, n_songs=30, size=5)


N_TOPICS = 3


@functools.cache
def _topic_data() -> tuple[Interactions, np.ndarray, np.ndarray]:
    """TripletRec's world: 2^3 - 1 topic groups as users, each consuming the songs of its topics."""
    from segue.models.tripletrec import k_hot_groups

    rng = np.random.default_rng(0)
    n_songs = 18
    song_topic = np.arange(n_songs) % N_TOPICS
    groups = k_hot_groups(N_TOPICS).numpy().astype(bool)
    rows = [(g + 1, s + 1) for g in range(len(groups)) for s in range(n_songs) if groups[g, song_topic[s]]]
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item"]), name="topics")
    raw_items = data.item_map.to_raw(np.arange(1, data.n_items + 1)).astype(int)
    topics = song_topic[raw_items - 1]
    features = rng.standard_normal((data.n_items, 12)).astype(np.float32)
    features[np.arange(data.n_items), topics] += 3.0
    return data, features, topics


@functools.cache
def _mels(n_items: int) -> np.ndarray:
    return np.random.default_rng(0).random((n_items, 8, 130)).astype(np.float32)


# -- recipes: how to build and fit each registered model -------------------------------------------
@dataclass
class Case:
    """A fitted model and the inputs its checks use (query ids, their context, the excluded items)."""

    model: Recommender
    train: Interactions
    queries: torch.Tensor  # (Q,) user ids, or playlist ids for playlist models
    context: Callable[[torch.Tensor], Context | None]
    exclude: sp.csr_matrix  # query id x item: the training items of each query
    group_maps: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    family: str  # pairs | history | playlist | playlist-fusion | audio | triplet
    options: dict[str, Any] = field(default_factory=dict)
    parts: tuple[str, ...] = ()  # playlist-fusion: the registered parts to fit first


QUAT = {"dim": 8, "init_std": 0.1}
RME_SMALL = {"factors": 4, "max_iter": 2, "em_iter": 1}
AUDIO = {"dim": 8, "n_mels": 8}
TRIPLET = {"n_topics": N_TOPICS, "in_dim": 12, "n_coeffs": 4, "item_hidden": [8], "user_hidden": [8], "dim": 4}

RECIPES: dict[str, Recipe] = {
    # user -> item models on plain pairs
    "pop": Recipe("pairs"),
    "random": Recipe("pairs", {"draws": 3}),
    "itemknn": Recipe("pairs", {"k": 10}),
    "mf-bpr": Recipe("pairs", {"dim": 8}),
    "wmf": Recipe("pairs", {"factors": 4, "iterations": 2}),
    "wmf-als": Recipe("pairs", RME_SMALL),
    "rme": Recipe("pairs", RME_SMALL),
    "u-rme": Recipe("pairs", RME_SMALL),
    "i-rme": Recipe("pairs", RME_SMALL),
    "cofactor": Recipe("pairs", RME_SMALL),
    "item2vec": Recipe("pairs", {"dim": 8, "epochs": 1}),
    "sdp": Recipe("pairs", {"dim": 8}),
    # init_std 0.5 puts the embeddings on CML's unit-ball boundary at once, as long training does
    "cml": Recipe("pairs", {"dim": 8, "init_std": 0.5}),
    "gmf": Recipe("pairs", {"factors": 4}),
    "mlp": Recipe("pairs", {"factors": 4, "layers": 2}),
    "neumf": Recipe("pairs", {"factors": 4, "layers": 2}),
    "cmn": Recipe("pairs", {"dim": 8, "max_neighbours": 5}),
    # sequential models: context.history = the user's last training items
    "sdm": Recipe("history", {"dim": 8, "hops": 2, "s": 3}),
    "sdmr": Recipe("history", {"sdp_dim": 8, "sdm_dim": 8, "hops": 2, "s": 3}),
    "prme": Recipe("history", {"dim": 8}),
    "prme-s": Recipe("history", {"dim": 8, "s": 3}),
    "transrec": Recipe("history", {"dim": 8}),
    "caser": Recipe("history", {"dim": 8, "s": 3, "n_h": 2, "n_v": 2}),
    "sasrec": Recipe("history", {"dim": 8, "max_len": 5, "n_blocks": 1}),
    "agru": Recipe("history", {"dim": 8, "s": 3}),
    "alstm": Recipe("history", {"dim": 8, "s": 3}),
    "fpmc": Recipe("history", {"dim": 8}),
    "aasvd": Recipe("history", {"dim": 8, "l": 8}),
    "quale": Recipe("history", {**QUAT, "l": 8}),
    "quase": Recipe("history", {**QUAT, "s": 3}),
    "qualse": Recipe("history", {**QUAT, "l": 8, "s": 3}),
    "aquale": Recipe("history", {**QUAT, "l": 8, "adv_epochs": 1}),
    "aquase": Recipe("history", {**QUAT, "s": 3, "adv_epochs": 1}),
    "aqualse": Recipe("history", {**QUAT, "l": 8, "s": 3, "adv_epochs": 1}),
    # playlist models: queries are playlist ids, context.group = the playlist's training songs
    "mdr": Recipe("playlist", {"dim": 8}),
    "mass": Recipe("playlist", {"dim": 8}),
    "fism": Recipe("playlist", {"dim": 8}),
    "amdr": Recipe("playlist", {"dim": 8}),
    "amass": Recipe("playlist", {"dim": 8}),
    "masr": Recipe("playlist-fusion", {"dim": 8}, parts=("mdr", "mass")),
    "amasr": Recipe("playlist-fusion", {"dim": 8}, parts=("amdr", "amass")),
    # content models: clip log-mels, or song features and topics
    "dcue": Recipe("audio", {**AUDIO, "n_negatives": 2}),
    "dcue-id": Recipe("audio", {**AUDIO, "n_negatives": 2}),
    "wmf-regression": Recipe("audio", {**AUDIO, "factors": 4, "iterations": 2}),
    "tripletrec": Recipe("triplet", TRIPLET),
    "twonet": Recipe("triplet", TRIPLET),
}


def _training_matrix(data: Interactions) -> sp.csr_matrix:
    seen = data.to_csr()
    seen.data[:] = 1
    return seen


def _build_case(name: str) -> Case:
    recipe = RECIPES.get(name)
    if recipe is None:
        pytest.fail(
            f"Registered model {name!r} has no recipe in tests/test_contract.py RECIPES: "
            "add one (its family and tiny options) so the contract covers it."
        )
    torch.manual_seed(0)
    fam = recipe.family
    if fam in ("pairs", "history", "audio"):
        train = _pairs()
        model = build_model(name, train.n_users, train.n_items, recipe.options)
        kw: dict[str, Any] = {}
        if fam == "audio" and name != "dcue-id":
            kw["mels"] = _mels(train.n_items)
        fit_model(model, train, **kw)
        context: Callable[[torch.Tensor], Context | None] = lambda users: None  # noqa: E731
        if fam == "history":
            s = model.history_length()
            context = lambda users: Context(history=torch.as_tensor(last_items(train, users.numpy(), s)))  # noqa: E731
        queries = torch.arange(1, train.n_users + 1)
        return Case(model, train, queries, context, _training_matrix(train))
    if fam in ("playlist", "playlist-fusion"):
        from segue.evaluation.playlist import member_matrix, playlist_matrix

        train = _playlists()
        n_p = len(train.group_maps["playlist"])
        opts = {**recipe.options, "n_playlists": n_p}
        if fam == "playlist":
            model = build_model(name, train.n_users, train.n_items, opts)
            fit_model(model, train)
        else:
            parts = []
            for part in recipe.parts:
                p = build_model(part, train.n_users, train.n_items, opts)
                fit_model(p, train)
                parts.append(p)
            model = get_model_class(name).from_parts(*parts)  # type: ignore[attr-defined]
        members = torch.as_tensor(member_matrix(train, n_p))
        return Case(
            model,
            train,
            torch.arange(1, n_p + 1),
            lambda playlists: Context(group=members[playlists]),
            playlist_matrix(train, n_p),
            group_maps=train.group_maps,
        )
    if fam == "triplet":
        train, features, topics = _topic_data()
        model = build_model(name, train.n_users, train.n_items, recipe.options)
        with warnings.catch_warnings():  # the all-topics group has no negative song (make_triples warns)
            warnings.filterwarnings("ignore", message="Group .* has no negative song")
            fit_model(model, train, features=features, topics=topics)
        return Case(model, train, torch.arange(1, train.n_users + 1), lambda users: None, _training_matrix(train))
    raise AssertionError(f"unknown recipe family {fam!r}")


@functools.cache
def _fitted(name: str) -> Case:
    case = _build_case(name)
    case.model.eval()
    return case


def _case(name: str) -> Case:
    """The fitted case with a private copy of the model: no check sees what another check's calls did to it."""
    case = _fitted(name)
    return dataclasses.replace(case, model=copy.deepcopy(case.model))


# -- known defects: (model, check) pairs that fail today (strict xfail) ------------------------------
CHECKS = ("fit", "score", "score_all", "recommend", "save_load", "vectors")

#: (model, check) -> (the precise defect, the exception the check fails with today); empty since issue 14
#: fixed the three found (CML's in-place max-norm, playlist query ids, MASR.from_parts' config)
KNOWN_DEFECTS: dict[tuple[str, str], tuple[str, type[BaseException]]] = {}

NAMES = list(list_models())


def _params(check: str, names: list[str] | None = None) -> list[Any]:
    out = []
    for n in NAMES if names is None else names:
        known = KNOWN_DEFECTS.get((n, check))
        if known is None:
            out.append(n)
        else:
            reason, raises = known
            out.append(pytest.param(n, marks=pytest.mark.xfail(strict=True, raises=raises, reason=reason)))
    return out


def _sample(case: Case, b: int = 4, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` query ids (first, last and two in between) and (b, c) candidates: one training item, then random."""
    q = case.queries
    users = q[torch.linspace(0, len(q) - 1, b).round().long()]
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, case.model.n_items + 1, (b, c), generator=g)
    ex = case.exclude
    for r, u in enumerate(users.tolist()):
        seen = ex.indices[ex.indptr[u] : ex.indptr[u + 1]]
        if len(seen):
            items[r, 0] = int(seen[0])
    return users, items


# -- the checks --------------------------------------------------------------------------------------
def test_every_registered_model_has_a_recipe() -> None:
    missing = sorted(set(NAMES) - set(RECIPES))
    stale = sorted(set(RECIPES) - set(NAMES))
    assert not missing, f"registered models without a recipe in RECIPES: {missing}"
    assert not stale, f"RECIPES names models that are not registered: {stale}"
    bad = sorted(k for k in KNOWN_DEFECTS if k[0] not in NAMES or k[1] not in CHECKS)
    assert not bad, f"KNOWN_DEFECTS entries for unknown models or checks: {bad}"


@pytest.mark.parametrize("name", _params("fit"))
def test_fit(name: str) -> None:
    case = _case(name)
    assert case.model.fitted, f"{name}: fit_model returned but the model is not marked fitted"
    assert isinstance(case.model, get_model_class(name))


@pytest.mark.parametrize("name", _params("score"))
def test_score(name: str) -> None:
    case = _case(name)
    users, items = _sample(case)
    with torch.no_grad():
        s = case.model.score(users, items, case.context(users))
    assert s.shape == items.shape, f"{name}: score gave {tuple(s.shape)} for candidates {tuple(items.shape)}"
    assert s.dtype.is_floating_point, f"{name}: score dtype {s.dtype}"
    assert torch.isfinite(s).all(), f"{name}: non-finite scores {s}"


@pytest.mark.parametrize("name", _params("score_all"))
def test_score_all(name: str) -> None:
    case = _case(name)
    users, items = _sample(case)
    ctx = case.context(users)
    with torch.no_grad():
        full = case.model.score_all(users, ctx)
        part = case.model.score(users, items, ctx)
    n = case.model.n_items
    assert full.shape == (len(users), n + 1), (
        f"{name}: score_all gave {tuple(full.shape)}, want ({len(users)}, {n + 1})"
    )
    assert full.dtype.is_floating_point
    assert torch.isneginf(full[:, 0]).all(), f"{name}: column 0 (padding) must be -inf, got {full[:, 0]}"
    assert torch.isfinite(full[:, 1:]).all(), f"{name}: score_all has non-finite scores for real items"
    torch.testing.assert_close(
        full.gather(1, items), part, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: score_all != score\n{m}"
    )


@pytest.mark.parametrize("name", _params("recommend"))
def test_recommend_never_returns_an_excluded_item(name: str) -> None:
    case = _case(name)
    k = 5
    users = case.queries
    ids, vals = case.model.recommend(users.numpy(), k, case.context(users), exclude=case.exclude)
    assert ids.shape == (len(users), k) and vals.shape == (len(users), k), f"{name}: got {tuple(ids.shape)}"
    assert not ids.dtype.is_floating_point
    assert ((ids >= 0) & (ids <= case.model.n_items)).all(), f"{name}: ids outside 0..n_items: {ids}"
    assert (vals[:, :-1] >= vals[:, 1:]).all(), f"{name}: scores are not sorted best first"
    ex = case.exclude
    n = case.model.n_items
    for r, u in enumerate(users.tolist()):
        seen = set(ex.indices[ex.indptr[u] : ex.indptr[u + 1]].tolist())
        got = ids[r].tolist()
        assert not seen & set(got), f"{name}: query {u} was recommended excluded items {sorted(seen & set(got))}"
        real = min(k, n - len(seen))  # fewer unseen items than k: the rest is padding (id 0, score -inf)
        assert 0 not in got[:real] and len(set(got[:real])) == real, f"{name}: query {u} got {got}"
        assert got[real:] == [0] * (k - real), f"{name}: query {u} with {n - len(seen)} unseen items got {got}"
        assert torch.isneginf(vals[r, real:]).all()
    assert (np.diff(ex.indptr)[users.numpy()] <= n - k).any(), "the toy data must leave k unseen items to someone"


def _reload(case: Case, tmp_path: Path) -> Recommender:
    """The model after a run-directory round trip (save_run / load_run, as the pipeline and server do).

    Every family goes through the run directory, including those the pipeline does not write run
    directories for yet (playlist, audio, triplet): load_run rebuilds the model from its registry name
    and its own saved config, as ``export`` / ``serve`` do, so this is also the state_dict round trip
    into a freshly built model.
    """
    from segue.training.checkpoint import load_run, save_run

    m = case.model
    save_run(
        tmp_path / "run",
        m,
        user_map=case.train.user_map,
        item_map=case.train.item_map,
        seen=case.exclude,
        config={"dataset": case.train.name},
        group_maps=case.group_maps,
    )
    run = load_run(tmp_path / "run")
    assert run.config["model"] == m.name
    return run.model


@pytest.mark.parametrize("name", _params("save_load"))
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    case = _case(name)
    users, items = _sample(case)
    ctx = case.context(users)
    loaded = _reload(case, tmp_path)
    assert type(loaded) is type(case.model)
    with torch.no_grad():
        before = (case.model.score(users, items, ctx), case.model.score_all(users, ctx))
        after = (loaded.score(users, items, ctx), loaded.score_all(users, ctx))
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)


MEASURED = [n for n, cls in list_models().items() if cls.measure is not None]


def implied_scores(measure: str, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, n + 1) scores of query vectors (B, d) against item vectors (n + 1, d) under ``measure``.

    As the serving index reads them (segue/serving/index.py): ``dot`` the inner product, ``cosine``
    the inner product of L2-normalised vectors, ``l2`` minus the squared Euclidean distance.
    """
    if measure == "dot":
        return q @ v.T
    if measure == "cosine":
        return torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(v, dim=-1).T
    if measure == "l2":
        return -torch.cdist(q.double(), v.double()).square().to(q.dtype)
    raise AssertionError(f"unknown measure {measure!r}")


@pytest.mark.parametrize("name", _params("vectors", MEASURED))
def test_vectors_reproduce_the_score_under_the_measure(name: str) -> None:
    case = _case(name)
    m = case.model
    users, items = _sample(case)
    ctx = case.context(users)
    with torch.no_grad():
        q = m.query_vectors(users, ctx).clone()  # copies: scoring must not be what makes them agree
        v = m.item_vectors().clone()
        want = m.score(users, items, ctx)
    assert q.ndim == 2 and q.shape[0] == len(users), f"{name}: query_vectors shape {tuple(q.shape)}"
    assert v.shape == (m.n_items + 1, q.shape[1]), f"{name}: item_vectors shape {tuple(v.shape)}, queries {q.shape}"
    got = implied_scores(m.measure, q, v).gather(1, items)  # type: ignore[arg-type]
    torch.testing.assert_close(
        got, want, rtol=1e-4, atol=1e-4, msg=lambda s: f"{name}: vectors under {m.measure!r} != score\n{s}"
    )
