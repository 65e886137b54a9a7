"""The serving export: writing it from a run directory (:func:`export_run`) and answering from it (:class:`ServingModel`).

An export directory holds no pickles::

    OUT_DIR/
      metadata.json        model, dataset, retrieval mode, measure, dimension, sizes, index parameters, versions
      id_maps.parquet      raw <-> internal ids (copied from the run directory)
      seen.npz             the training user x item matrix (CSR), to exclude consumed items
      config.json          the run's config (provenance; with the weights it makes OUT_DIR loadable by load_run)
      item_vectors.npy     (n_items + 1, d) float32, row i = internal item id i (row 0 = padding)   [vector models]
      user_vectors.npy     (n_users + 1, d) float32, row u = internal user id u                     [plain vector models]
      index.faiss, index.json   the ANN (or exact) index over items 1..n and its description            [vector models]
      weights.safetensors  the model itself                                          [models that must score at query time]

How a model is served depends on what its interface offers (``metadata["retrieval"]``):

``ann``
    The score is a plain vector similarity (``measure`` in dot / cosine / l2): the index
    answers on its own. User queries are the exported user vectors; for models that take a
    context (sequence, playlist) the model computes the query vector at request time.
``ann+rescore``
    The model has item embeddings but its score is not a plain similarity (memory /
    attention models): the index (cosine on the item embeddings) proposes ``candidates``
    items, which the model itself re-scores exactly. The candidate query is the model's
    ``query_vectors`` where it has them, else the mean of the user's (or request's) item vectors.
``exact-model``
    The model has no vectors (pop, itemknn): every request scores the whole catalogue
    through the model interface (``score_all``), exactly.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from segue.data.interactions import IdMap
from segue.dirs import check_target, check_writable, new_sibling, swap_in, write_failed
from segue.errors import ConfigError, DataError, RunDirError, WriteError
from segue.files import check_float_matrix, inside, is_count, load_csr, load_npy, read_json
from segue.serving.index import VectorIndex, set_threads

if TYPE_CHECKING:
    from segue.models.base import Context
    from segue.models.base import Recommender as Model

EXPORT_FORMAT = 1
#: ``index="auto"`` uses HNSW from this many items on; below it exact search is as fast and exact.
AUTO_HNSW_MIN_ITEMS = 20_000
RETRIEVAL_NOTES = {
    "ann": "Approximate nearest-neighbour search over the item vectors answers on its own: the model's score is "
    "the {measure} of a query vector and an item vector.",
    "ann+rescore": "The model's score is not a plain vector similarity, so an ANN candidate stage (cosine over the "
    "item embeddings, {candidates} candidates) is followed by exact re-scoring of the candidates with the model itself.",
    "exact-model": "The model has no item vectors, so every request scores the whole catalogue exactly through "
    "the model interface (score_all); no ANN index is used.",
}


MEASURE_WORDS = {"dot": "inner product", "cosine": "cosine similarity", "l2": "negative squared Euclidean distance"}


class UnsupportedQueryError(ConfigError):
    """A request that the exported model cannot answer (e.g. /similar for a model without item vectors)."""


class ExportError(RunDirError):
    """An export directory that is missing, incomplete or inconsistent."""


class ExportWriteError(ExportError, WriteError):
    """An export directory that could not be written (a read-only or full disk)."""


# -- export ------------------------------------------------------------------------------
def _versions() -> dict[str, Any]:
    import faiss

    from segue.training.checkpoint import versions

    return {**versions(), "faiss": faiss.__version__}


def _item_vectors(model: Model) -> np.ndarray | None:
    try:
        v = model.item_vectors()
    except NotImplementedError:
        return None
    return v.detach().cpu().numpy().astype(np.float32)


def _user_vectors(model: Model, chunk: int = 65_536) -> np.ndarray | None:
    import torch

    if model.needs:
        return None
    parts = []
    try:
        with torch.no_grad():
            for start in range(1, model.n_users + 1, chunk):
                users = torch.arange(start, min(start + chunk, model.n_users + 1), device=model.device)
                parts.append(model.query_vectors(users).detach().cpu().numpy().astype(np.float32))
    except NotImplementedError:
        return None
    u = np.concatenate(parts)
    return np.concatenate([np.zeros((1, u.shape[1]), np.float32), u])


def _sample_recall(index: VectorIndex, queries: np.ndarray, n: int = 200) -> float:
    """Recall@10 of the index against exact search for up to ``n`` sampled queries (no exclusions)."""
    rng = np.random.default_rng(0)
    rows = rng.choice(len(queries), min(n, len(queries)), replace=False)
    return index.recall(np.asarray(queries[np.sort(rows)]), min(10, index.n))


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    index: str = "auto",
    m: int = 32,
    ef_construction: int = 100,
    ef_search: int = 128,
    dot_strategy: str = "auto",
    candidates: int = 200,
    threads: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the run directory ``run_dir`` for serving into ``out_dir`` (written atomically).

    ``index`` is ``hnsw``, ``exact`` or ``auto`` (HNSW from :data:`AUTO_HNSW_MIN_ITEMS` items on);
    ``m``, ``ef_construction``, ``ef_search`` and ``dot_strategy`` (see :mod:`segue.serving.index`)
    are the HNSW parameters; ``candidates`` is the
    size of the ANN candidate stage of ``ann+rescore`` models. Returns ``out_dir``.
    """
    from segue.training.checkpoint import load_run

    if index not in ("auto", "hnsw", "exact"):
        raise ConfigError(f"index must be auto, hnsw or exact, got {index!r}.")
    if candidates < 1:
        raise ConfigError(f"candidates must be >= 1, got {candidates}.")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise ConfigError("The export directory must differ from the run directory.")
    try:
        check_target(out_dir, "export", overwrite=overwrite, sources=[run_dir])
    except RunDirError as e:
        raise ExportError(str(e)) from e
    run = load_run(run_dir)
    model = run.model
    if "features" in model.needs:
        raise UnsupportedQueryError(f"Model {model.name!r} needs context features, which the server cannot supply.")
    items = _item_vectors(model)
    users = _user_vectors(model) if items is not None and model.measure is not None else None
    if items is None:
        retrieval, index_measure = "exact-model", None
    elif model.measure is not None and (users is not None or model.needs):
        retrieval, index_measure = "ann", model.measure
    else:  # no plain similarity (or no query vectors): candidates by cosine, then the model's own scores
        retrieval, index_measure = "ann+rescore", "cosine"
    if items is not None and (items.shape[0] != model.n_items + 1 or not np.isfinite(items).all()):
        raise DataError(
            f"Model {model.name!r} returned item vectors of shape {items.shape} or with NaNs; expected ({model.n_items + 1}, d)."
        )
    if users is not None and not np.isfinite(users).all():
        raise DataError(f"Model {model.name!r} returned user vectors with NaN or infinite values.")
    needs_model = retrieval != "ann" or users is None
    kind = index if index != "auto" else ("hnsw" if model.n_items >= AUTO_HNSW_MIN_ITEMS else "exact")
    # what will be written: the copied files, the vectors, and an index of about twice the item vectors
    copied = sum((run_dir / f).stat().st_size for f in ("id_maps.parquet", "seen.npz", "config.json"))
    if needs_model:
        copied += (run_dir / "weights.safetensors").stat().st_size
    vectors = (0 if items is None else 3 * items.nbytes) + (0 if users is None else users.nbytes)
    try:
        check_writable(out_dir, copied + vectors, "export directory")
        tmp = new_sibling(out_dir)
    except RunDirError as e:
        raise ExportError(str(e)) from e
    except OSError as e:
        raise ExportWriteError(write_failed(out_dir, e, "export directory") + ".") from e
    try:
        t0 = time.perf_counter()
        files: dict[str, Any] = {"id_maps": "id_maps.parquet", "seen": "seen.npz", "config": "config.json"}
        for name in files.values():
            shutil.copyfile(run_dir / name, tmp / name)
        index_info = None
        if items is not None:
            np.save(tmp / "item_vectors.npy", items)
            files["item_vectors"] = "item_vectors.npy"
            vi = VectorIndex.build(
                items[1:],
                index_measure,
                kind,
                m=m,
                ef_construction=ef_construction,
                ef_search=ef_search,
                dot_strategy=dot_strategy,
                sample_queries=None if users is None else users[1:],
                threads=threads,
            )
            if kind == "hnsw":
                vi.params["recall_at_10"] = round(_sample_recall(vi, items[1:] if users is None else users[1:]), 4)
            vi.save(tmp / "index.faiss")
            files["index"] = "index.faiss"
            index_info = vi.describe()
        if users is not None:
            np.save(tmp / "user_vectors.npy", users)
            files["user_vectors"] = "user_vectors.npy"
        if needs_model:
            shutil.copyfile(run_dir / "weights.safetensors", tmp / "weights.safetensors")
            files["weights"] = "weights.safetensors"
            if run.recent is not None:  # a sequential model's users: their latest training items, in time order
                shutil.copyfile(run_dir / "recent.npz", tmp / "recent.npz")
                files["recent"] = "recent.npz"
        meta = {
            "format": EXPORT_FORMAT,
            "model": model.name,
            "model_options": run.config.get("model_options", {}),
            "dataset": run.config.get("dataset"),
            "source_run": str(run_dir.resolve()),
            "retrieval": retrieval,
            "retrieval_note": RETRIEVAL_NOTES[retrieval].format(
                measure=MEASURE_WORDS.get(str(index_measure), index_measure), candidates=candidates
            ),
            "measure": model.measure,
            "index_measure": index_measure,
            "dim": None if items is None else int(items.shape[1]),
            "n_users": model.n_users,
            "n_items": model.n_items,
            "needs": sorted(model.needs),
            "history_length": int(model.history_length()),
            "query": "user-vectors" if users is not None else "model",
            "model_at_query_time": needs_model,
            "candidates": candidates if retrieval == "ann+rescore" else None,
            "index": index_info,
            "files": files,
            "export_seconds": round(time.perf_counter() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
        swap_in(tmp, out_dir, "export")
    except OSError as e:  # read-only or full disk: nothing is left behind and the run directory is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportWriteError(write_failed(out_dir, e, "export directory") + ".") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# -- loading -----------------------------------------------------------------------------
def read_metadata(meta_file: Path) -> dict[str, Any]:
    """``metadata.json`` of an export, checked entry by entry (types, sizes, relative file names)."""
    meta = read_json(meta_file, error=ExportError)
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(
            f"{meta_file} has export format {meta.get('format')!r}; this segue reads format {EXPORT_FORMAT}."
        )
    checks = [
        (isinstance(meta.get("model"), str), "'model' must be a string"),
        (meta.get("retrieval") in RETRIEVAL_NOTES, f"'retrieval' must be one of {', '.join(RETRIEVAL_NOTES)}"),
        (
            is_count(meta.get("n_users"), 1) and is_count(meta.get("n_items"), 1),
            "'n_users' and 'n_items' must be positive integers",
        ),
        (meta.get("dim") is None or is_count(meta.get("dim"), 1), "'dim' must be a positive integer or null"),
        (
            isinstance(meta.get("needs", []), list) and all(isinstance(x, str) for x in meta.get("needs", [])),
            "'needs' must be a list of names",
        ),
        (
            meta.get("candidates") is None or is_count(meta.get("candidates"), 1),
            "'candidates' must be a positive integer or null",
        ),
        (isinstance(meta.get("model_at_query_time", False), bool), "'model_at_query_time' must be true or false"),
        (is_count(meta.get("history_length", 0)), "'history_length' must be a non-negative integer"),
        (
            isinstance(meta.get("files"), dict) and all(isinstance(k, str) for k in meta.get("files", {})),
            "'files' must be an object of file names",
        ),
    ]
    for ok, why in checks:
        if not ok:
            raise ExportError(f"{meta_file} is malformed: {why}.")
    meta.setdefault("model_at_query_time", False)
    meta.setdefault("dim", None)
    return meta


def all_finite_index(index: VectorIndex) -> bool:
    from segue.files import all_finite

    return all_finite(index.vectors)


# -- serving -----------------------------------------------------------------------------
@dataclass
class Recommendations:
    """One answer: raw item ids, best first, with their scores.

    ``query`` says what the query was (``user-vector``, ``user-history``, ``mean-of-items``,
    ``model-context``, ``item-vector``, ``model``); ``retrieval`` how it was answered (``ann``,
    ``exact``, ``ann+rescore``, ``model``); ``ignored`` lists request items that were unknown
    and skipped.
    """

    items: list[Any]
    scores: list[float]
    query: str
    retrieval: str
    ignored: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServingModel:
    """Recommendations from an export directory, by raw ids (see the module docstring).

    Load with :meth:`load`; ask with :meth:`recommend` (a known user), :meth:`recommend_items`
    (a playlist, session or basket given as raw item ids) and :meth:`similar` (an item).
    """

    def __init__(
        self,
        path: Path,
        metadata: dict[str, Any],
        user_map: IdMap,
        item_map: IdMap,
        seen: sp.csr_matrix,
        index: VectorIndex | None,
        user_vectors: np.ndarray | None,
        model: Model | None,
        *,
        exact: bool = False,
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.user_map = user_map
        self.item_map = item_map
        self.seen = seen
        self.index = index
        self.user_vectors = user_vectors
        self.model = model
        self.exact = exact
        self.retrieval: str = metadata["retrieval"]
        self.n_users: int = int(metadata["n_users"])
        self.n_items: int = int(metadata["n_items"])
        self.needs: frozenset[str] = frozenset(metadata.get("needs", []))
        self.candidates: int = int(metadata.get("candidates") or 200)
        #: a sequential model's users' latest training items, oldest first (``recent.npz``), when exported
        self.recent: np.ndarray | None = None

    # -- loading ------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path, *, exact: bool = False, ef_search: int | None = None, threads: int | None = None
    ) -> ServingModel:
        """Open an export directory written by :func:`export_run` (or ``segue export``).

        ``exact=True`` answers every query by exact search (the reference); ``ef_search``
        overrides the HNSW search breadth; ``threads`` sets faiss' (and torch's) thread count.
        """
        path = Path(path)
        meta_file = path / "metadata.json"
        if not meta_file.exists():
            raise ExportError(
                f"{path} is not a segue export directory (no metadata.json); create one with `segue export`."
            )
        meta = read_metadata(meta_file)
        files = {key: inside(path, name, str(meta_file), error=ExportError) for key, name in meta["files"].items()}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise ExportError(f"Export directory {path} is incomplete: missing {', '.join(sorted(missing))}.")
        for key in ("id_maps", "seen"):
            if key not in files:
                raise ExportError(f"{meta_file} lists no {key} file.")
        n_users, n_items = meta["n_users"], meta["n_items"]
        from segue.training.checkpoint import build_from_config, load_weights, read_config, read_id_maps

        config = None
        if "config" in files:  # provenance, and the model's description when it answers queries
            config = read_config(files["config"], ExportError)
            if (config["model"], config["n_users"], config["n_items"]) != (meta["model"], n_users, n_items):
                raise ExportError(f"{files['config']} describes another model or size than {meta_file}.")
        set_threads(threads)
        model = None
        if meta["model_at_query_time"]:
            import torch

            if "weights" not in files or config is None:
                raise ExportError(f"{meta_file} says the model answers queries but lists no weights or config file.")
            if threads is not None:
                torch.set_num_threads(threads)
            model = build_from_config(config, files["config"], ExportError)
            load_weights(model, files["weights"], "cpu", ExportError)
            model.eval()

        user_map, item_map = read_id_maps(files["id_maps"], n_users, n_items, ExportError, "metadata.json")
        seen = load_csr(files["seen"], n_users + 1, n_items + 1, error=ExportError)
        index = None
        if "index" in files:
            try:
                index = VectorIndex.load(files["index"], ef_search=ef_search)
            except RunDirError as e:
                raise ExportError(str(e)) from e
            if index.n != n_items or (meta["dim"] is not None and index.dim != meta["dim"]):
                raise ExportError(
                    f"{files['index']} holds {index.n} items of dimension {index.dim}; {meta_file} says "
                    f"{n_items} of dimension {meta['dim']}."
                )
            if not all_finite_index(index):
                raise ExportError(f"{files['index']} holds NaN or infinite vectors.")
        elif meta["retrieval"] != "exact-model":
            raise ExportError(f"{meta_file} says retrieval {meta['retrieval']!r} but lists no index file.")
        if "item_vectors" in files:
            dim = None if index is None else index.dim
            check_float_matrix(
                load_npy(files["item_vectors"], error=ExportError),
                files["item_vectors"],
                n_items + 1,
                dim,
                error=ExportError,
            )
        users = None
        if "user_vectors" in files:
            if index is None:
                raise ExportError(f"{meta_file} lists user vectors but no index to search them with.")
            users = load_npy(files["user_vectors"], error=ExportError)
            check_float_matrix(users, files["user_vectors"], n_users + 1, index.dim, error=ExportError)
        if model is None and (users is None or meta["retrieval"] != "ann"):
            raise ExportError(
                f"{meta_file} says the model is not needed at query time, but without it {path} cannot answer."
            )
        out = cls(path, meta, user_map, item_map, seen, index, users, model, exact=exact)
        if "recent" in files and model is not None:
            from segue.training.checkpoint import _load_recent

            try:
                out.recent = _load_recent(files["recent"].parent, model)
            except RunDirError as e:
                raise ExportError(str(e)) from e
        return out

    # -- public API by raw ids ------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A summary for /health: model, dataset, retrieval, sizes, index."""
        m = self.metadata
        return {
            "model": m["model"],
            "dataset": m.get("dataset"),
            "retrieval": self.retrieval,
            "measure": m.get("measure"),
            "dim": m.get("dim"),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "index": None if self.index is None else ("exact" if self.exact else self.index.kind),
            "needs": sorted(self.needs),
        }

    def check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n_items:
            raise ConfigError(f"k must be an integer between 1 and the catalogue size {self.n_items}, got {k!r}.")
        return int(k)

    def recommend(
        self, user: Any, k: int = 10, *, exclude_seen: bool = True, unknown: str = "popular"
    ) -> Recommendations:
        """Top-k items for a user (raw id), excluding what they consumed in training by default.

        An unknown user gets the most popular training items, flagged ``query="popular-fallback"``
        (``unknown="error"`` raises :class:`~segue.errors.UnknownIdError` instead).
        """
        return self.recommend_many([user], k, exclude_seen=exclude_seen, unknown=unknown)[0]

    def recommend_many(
        self, users: Sequence[Any], k: int = 10, *, exclude_seen: bool = True, unknown: str = "popular"
    ) -> list[Recommendations]:
        """:meth:`recommend` for a batch of raw user ids (one batched index query for the known ones)."""
        if unknown not in ("popular", "error"):
            raise ConfigError(f"unknown must be popular or error, got {unknown!r}.")
        k = self.check_k(k)
        uids = self.user_map.to_internal(list(users), missing="raise" if unknown == "error" else "zero")
        known = np.flatnonzero(uids > 0)
        out: list[Recommendations] = [self.popular(k)] * len(uids) if len(known) < len(uids) else [None] * len(uids)  # type: ignore[list-item]
        if len(known):
            ids, scores, query, retrieval = self.top_k_internal(uids[known], k, exclude_seen=exclude_seen)
            for r, row in enumerate(known):
                out[row] = self._answer(ids[r], scores[r], query, retrieval[r])
        return out

    def popular(self, k: int = 10, exclude: Sequence[Any] = ()) -> Recommendations:
        """The k items with the most training interactions (ties by id), ``exclude`` (raw ids) left out."""
        counts = np.asarray(self.seen.sum(axis=0), dtype=np.float64).ravel()
        counts[0] = -np.inf
        if len(exclude):
            counts[self.item_map.to_internal(list(exclude), missing="zero")] = -np.inf
        ids = np.argsort(-counts, kind="stable")[: self.check_k(k)]
        ids = ids[np.isfinite(counts[ids])]
        return Recommendations(self.item_map.to_raw(ids).tolist(), counts[ids].tolist(), "popular-fallback", "popular")

    def recommend_items(
        self,
        items: Sequence[Any],
        k: int = 10,
        *,
        user: Any | None = None,
        exclude_items: bool = True,
        exclude_seen: bool = True,
        ignore_unknown: bool = False,
    ) -> Recommendations:
        """Top-k items for a playlist / session / basket given as raw item ids (oldest first).

        Context models (``needs`` history or group) receive the items as their context. Plain
        vector models use the mean of the items' vectors as the query (``query="mean-of-items"``).
        Models with neither cannot answer and raise :class:`UnsupportedQueryError`. ``user``
        (optional) is passed to context models and, with ``exclude_seen``, adds that user's
        consumed items to the exclusions.
        """
        k = self.check_k(k)
        raw = list(items)
        if not raw:
            raise DataError("The request has no items.")
        internal = self.item_map.to_internal(raw, missing="zero" if ignore_unknown else "raise")
        ignored = [r for r, i in zip(raw, internal, strict=True) if i == 0]
        internal = internal[internal > 0]
        if len(internal) == 0:
            raise DataError("None of the request's items occur in the training data.")
        uid = int(self.user_map.to_internal([user])[0]) if user is not None else 0
        excl = [np.unique(internal)] if exclude_items else []
        if uid and exclude_seen:
            excl.append(self._seen(uid))
        exclude = np.unique(np.concatenate(excl)) if excl else np.zeros(0, np.int64)
        if self.needs:
            ctx = self._context([internal])
            ids, scores, retrieval = self._context_query(np.asarray([uid]), ctx, [internal], k, [exclude])
            query = "model-context"
        elif self.index is not None:
            q = self.index.vectors[internal - 1].mean(axis=0, keepdims=True)
            res = self.index.search(q, k, [exclude], exact=self.exact)
            ids, scores, retrieval = res.ids, res.scores, ["exact" if e else "ann" for e in res.exact]
            query = "mean-of-items"
        else:
            raise UnsupportedQueryError(
                f"Model {self.metadata['model']!r} has no item vectors and takes no context, so it cannot recommend for a list of items."
            )
        out = self._answer(ids[0], scores[0], query, retrieval[0])
        out.ignored = [_plain(r) for r in ignored]
        return out

    def similar(self, item: Any, k: int = 10) -> Recommendations:
        """The k items nearest to ``item`` (raw id) under the index's measure, the item itself excluded."""
        k = self.check_k(k)
        iid = int(self.item_map.to_internal([item])[0])
        if self.index is None:
            raise UnsupportedQueryError(
                f"Model {self.metadata['model']!r} has no item vectors, so it has no similar items."
            )
        res = self.index.search(self.index.vectors[iid - 1][None, :], k, [np.asarray([iid])], exact=self.exact)
        return self._answer(res.ids[0], res.scores[0], "item-vector", "exact" if res.exact[0] else "ann")

    # -- internal ids ---------------------------------------------------------------------
    def top_k_internal(
        self, users: np.ndarray, k: int, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
        """Top-k internal ids (0 = none) and scores (B, k) for internal user ids, with how they were found."""
        users = np.asarray(users, dtype=np.int64)
        if users.size and (users.min() < 1 or users.max() > self.n_users):
            raise DataError(f"Internal user ids must lie in 1..{self.n_users}.")
        exclude = [self._seen(u) for u in users] if exclude_seen else [np.zeros(0, np.int64)] * len(users)
        if self.user_vectors is not None and self.index is not None:
            res = self.index.search(self.user_vectors[users], k, exclude, exact=self.exact)
            return res.ids, res.scores, "user-vector", ["exact" if e else "ann" for e in res.exact]
        if self.needs:
            hist = [self._history(u) for u in users]
            ids, scores, retrieval = self._context_query(users, self._context(hist), hist, k, exclude)
            return ids, scores, "user-history", retrieval
        ids, scores, retrieval = self._context_query(users, None, [self._seen(u) for u in users], k, exclude)
        return ids, scores, "user", retrieval

    def _seen(self, u: int) -> np.ndarray:
        return self.seen.indices[self.seen.indptr[u] : self.seen.indptr[u + 1]].astype(np.int64)

    def _history(self, u: int) -> np.ndarray:
        """A user's context for a model that reads one: the latest training items in time order (``recent``)
        for a sequential model, else the training items (a set: playlist members, a basket)."""
        if "history" in self.needs:
            if self.recent is None:
                raise UnsupportedQueryError(
                    f"Model {self.metadata['model']!r} reads each user's latest items in time order, which this "
                    "export does not hold (re-export the run); POST the history instead."
                )
            row = self.recent[u]
            return row[row > 0].astype(np.int64)
        return self._seen(u)

    def _context(self, item_lists: list[np.ndarray]) -> Context:
        import torch

        from segue.models.base import Context

        assert self.model is not None
        hist = group = None
        if "group" in self.needs:
            width = max(1, max(len(x) for x in item_lists))
            g = np.zeros((len(item_lists), width), np.int64)
            for r, x in enumerate(item_lists):
                g[r, : len(x)] = x
            group = torch.as_tensor(g)
        if "history" in self.needs:
            s = self.model.history_length() or max(1, max(len(x) for x in item_lists))
            h = np.zeros((len(item_lists), s), np.int64)
            for r, x in enumerate(item_lists):
                tail = x[-s:]
                h[r, s - len(tail) :] = tail  # oldest first, left-padded
            hist = torch.as_tensor(h)
        return Context(history=hist, group=group)

    def _context_query(
        self,
        users: np.ndarray,
        ctx: Context | None,
        item_lists: list[np.ndarray],
        k: int,
        exclude: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Answer through the model: query vectors + index, candidates + re-scoring, or exact scoring."""
        import torch

        assert self.model is not None
        users_t = torch.as_tensor(users, dtype=torch.long)
        if self.retrieval == "exact-model":
            return (*self._exact_model(users_t, ctx, k, exclude), ["model"] * len(users))
        assert self.index is not None
        q = self._model_queries(users_t, ctx)
        if self.retrieval == "ann":
            if q is None:
                raise UnsupportedQueryError(f"Model {self.metadata['model']!r} gives no query vector for this request.")
            res = self.index.search(q, k, exclude, exact=self.exact)
            return res.ids, res.scores, ["exact" if e else "ann" for e in res.exact]
        # ann+rescore: ANN candidates, then the model's own scores
        if q is None:
            q = np.stack(
                [
                    self.index.vectors[x - 1].mean(axis=0) if len(x) else np.zeros(self.index.dim, np.float32)
                    for x in item_lists
                ]
            )
        cand = self.index.search(q, min(max(self.candidates, k), self.n_items), exclude, exact=self.exact).ids
        with torch.no_grad():
            s = self.model.score(users_t, torch.as_tensor(cand), ctx).float().cpu().numpy()
        s = np.where(cand > 0, s, -np.inf).astype(np.float32)
        if np.isnan(s).any():
            raise DataError(f"{self.metadata['model']} produced NaN scores.")
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        ids = np.take_along_axis(cand, order, axis=1)
        scores = np.take_along_axis(s, order, axis=1)
        return np.where(np.isneginf(scores), 0, ids), scores, ["ann+rescore"] * len(users)

    def _model_queries(self, users_t: Any, ctx: Context | None) -> np.ndarray | None:
        import torch

        assert self.model is not None
        try:
            with torch.no_grad():
                return self.model.query_vectors(users_t, ctx).float().cpu().numpy()
        except NotImplementedError:
            return None

    def _exact_model(
        self, users_t: Any, ctx: Context | None, k: int, exclude: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from segue.models.base import check_scores

        assert self.model is not None
        with torch.no_grad():
            s = self.model.score_all(users_t, ctx).float().cpu()
        check_scores(s, self.metadata["model"])
        s = s.numpy().copy()
        s[:, 0] = -np.inf
        for r, e in enumerate(exclude):
            s[r, e] = -np.inf
        vals, top = torch.topk(torch.as_tensor(s), k, dim=1)
        ids, scores = top.numpy(), vals.numpy()
        return np.where(np.isneginf(scores), 0, ids), scores

    def _answer(self, ids: np.ndarray, scores: np.ndarray, query: str, retrieval: str) -> Recommendations:
        keep = ids > 0
        raw = self.item_map.to_raw(ids[keep]).tolist()
        return Recommendations(raw, [float(x) for x in scores[keep]], query, retrieval)


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x
