"""Vector indexes for serving: an HNSW graph (faiss) for approximate search and a flat index as the reference.

Both index types hold the item vectors of internal ids ``1..n`` (faiss label ``i`` is internal
id ``i + 1``; the padding id 0 is never indexed) and answer batched top-k queries in which
each query may carry its own set of excluded items (what the user already consumed).

Scores are always "higher is better" and exact (HNSW-Flat keeps the float vectors; only the
candidate set is approximate):

* ``dot``: the inner product. HNSW answers maximum-inner-product search either directly on a
  graph built with the inner product (``dot_strategy="ip"``) or through the reduction of
  Bachrach et al. (RecSys 2014, "l2-transform"): items get an extra coordinate
  ``sqrt(M^2 - |v|^2)`` (``M`` the largest item norm) and queries a 0, so that the nearest
  neighbour in L2 is the item of largest inner product. Which one recalls more depends on
  the data (trained embeddings with spread-out norms favour the transform, random vectors
  with near-equal norms the plain graph), so ``"auto"`` measures both on a sample.
* ``cosine``: vectors and queries are L2-normalised, then compared by inner product.
* ``l2``: *minus the squared* Euclidean distance.

Exclusion over-fetches ``k + len(excluded)`` neighbours from the graph (queries grouped by
that size) and filters them; a query that still has fewer than ``k`` results, or whose
over-fetch would cover a large part of the catalogue, is answered by exact search with its
excluded items masked. When fewer than ``k`` items remain after exclusion, the missing places
hold id 0 and score ``-inf``, as :meth:`segue.models.base.Recommender.recommend` does.

Indexes are saved as ``<name>.faiss`` (faiss' own format, no pickles) with a ``<name>.json``
side file describing them (kind, measure, strategy, sizes, parameters, faiss version).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from segue.errors import ConfigError, DataError, RunDirError

Measure = Literal["dot", "cosine", "l2"]
IndexKind = Literal["hnsw", "exact"]
MEASURES: tuple[str, ...] = ("dot", "cosine", "l2")
INDEX_KINDS: tuple[str, ...] = ("hnsw", "exact")
DOT_STRATEGIES: tuple[str, ...] = ("auto", "ip", "l2-transform")

#: Above this fraction of the catalogue, over-fetching from the graph costs more than exact search.
EXACT_FRACTION = 0.2
#: Float budget of one block of the exact score matrix (queries x items).
_EXACT_BLOCK = 1 << 24
_EMPTY = np.zeros(0, dtype=np.int64)
_DESCRIPTION_KEYS = ("library", "faiss_version", "kind", "measure", "n", "dim")


def set_threads(n: int | None) -> None:
    """Set the number of OpenMP threads faiss uses (None leaves faiss' default)."""
    if n is not None:
        if n < 1:
            raise ConfigError(f"threads must be >= 1, got {n}.")
        faiss.omp_set_num_threads(int(n))


@dataclass
class SearchResult:
    """Top-k answer for a batch of queries.

    ``ids``: (B, k) internal item ids, 0 where fewer than k items were available;
    ``scores``: (B, k) float32, ``-inf`` in those places; ``exact``: (B,) whether a query was
    answered by exact search (the index's kind, the caller's request, or the fallback).
    """

    ids: np.ndarray
    scores: np.ndarray
    exact: np.ndarray


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _check_vectors(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"{what} must be a non-empty (n, d) matrix, got shape {tuple(x.shape)}.")
    if not np.isfinite(x).all():
        raise DataError(f"{what} contain NaN or infinite values.")
    return x


def _l2_transform(x: np.ndarray) -> tuple[np.ndarray, float]:
    sq = np.einsum("ij,ij->i", x, x)
    top = float(sq.max())
    extra = np.sqrt(np.maximum(top - sq, 0.0))[:, None]
    return np.ascontiguousarray(np.hstack([x, extra]).astype(np.float32)), top


class VectorIndex:
    """A faiss index over item vectors (see the module docstring).

    Build with :meth:`build`, persist with :meth:`save` / :meth:`load`, query with :meth:`search`.
    """

    def __init__(self, index: faiss.Index, kind: IndexKind, measure: Measure, params: dict[str, Any]) -> None:
        self.index = index
        self.kind: IndexKind = kind
        self.measure: Measure = measure
        self.params = dict(params)
        self.transform = params.get("dot_strategy") == "l2-transform"
        flat = faiss.downcast_index(index.storage) if kind == "hnsw" else index
        n, d = index.ntotal, index.d
        # a zero-copy view of the float vectors faiss stores (valid while self.index lives)
        self._stored = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
        self._sq_norms: np.ndarray | None = None
        self._n = int(n)
        self._dim = int(d) - (1 if self.transform else 0)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        measure: Measure,
        kind: IndexKind = "hnsw",
        *,
        m: int = 32,
        ef_construction: int = 100,
        ef_search: int = 128,
        dot_strategy: str = "auto",
        sample_queries: np.ndarray | None = None,
        threads: int | None = None,
    ) -> VectorIndex:
        """Index ``vectors`` (n, d): row ``i`` is internal item id ``i + 1``.

        ``dot_strategy`` (``dot`` with HNSW only): ``ip``, ``l2-transform`` or ``auto``, which
        builds both on a sample of at most 20,000 items and keeps the one with the higher
        recall@10 for ``sample_queries`` (default: sampled item vectors) at ``ef_search``.
        """
        if measure not in MEASURES:
            raise ConfigError(f"Unknown measure {measure!r}; expected one of {', '.join(MEASURES)}.")
        if kind not in INDEX_KINDS:
            raise ConfigError(f"Unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}.")
        if dot_strategy not in DOT_STRATEGIES:
            raise ConfigError(f"Unknown dot strategy {dot_strategy!r}; expected one of {', '.join(DOT_STRATEGIES)}.")
        if m < 2 or ef_construction < 1 or ef_search < 1:
            raise ConfigError(
                f"HNSW needs m >= 2, ef_construction >= 1 and ef_search >= 1, got {m}, {ef_construction}, {ef_search}."
            )
        x = _check_vectors(vectors, "Item vectors")
        if measure == "cosine":
            x = normalize(x)
        x = np.ascontiguousarray(x)
        t0 = time.perf_counter()
        set_threads(threads)
        params: dict[str, Any] = {}
        if kind == "hnsw":
            params = {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}
            if measure == "dot":
                if dot_strategy == "auto":
                    dot_strategy, params["dot_strategy_recall"] = _choose_dot_strategy(
                        x, sample_queries, m, ef_construction, ef_search
                    )
                params["dot_strategy"] = dot_strategy
            if params.get("dot_strategy") == "l2-transform":
                stored, params["max_sq_norm"] = _l2_transform(x)
                index = faiss.IndexHNSWFlat(stored.shape[1], m, faiss.METRIC_L2)
            else:
                stored = x
                metric = faiss.METRIC_L2 if measure == "l2" else faiss.METRIC_INNER_PRODUCT
                index = faiss.IndexHNSWFlat(x.shape[1], m, metric)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        else:
            stored = x
            index = faiss.IndexFlat(x.shape[1], faiss.METRIC_L2 if measure == "l2" else faiss.METRIC_INNER_PRODUCT)
        index.add(stored)
        params["build_seconds"] = round(time.perf_counter() - t0, 3)
        return cls(index, kind, measure, params)

    # -- persistence --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The JSON description saved beside the index."""
        return {
            "library": "faiss",
            "faiss_version": faiss.__version__,
            "kind": self.kind,
            "measure": self.measure,
            "n": self.n,
            "dim": self.dim,
            **self.params,
        }

    def save(self, path: str | Path) -> None:
        """Write ``path`` (``.faiss``) and its description ``path`` with suffix ``.json``."""
        path = Path(path)
        faiss.write_index(self.index, str(path))
        path.with_suffix(".json").write_text(json.dumps(self.describe(), indent=2))

    @classmethod
    def load(cls, path: str | Path, *, ef_search: int | None = None) -> VectorIndex:
        """Read an index written by :meth:`save`; ``ef_search`` overrides the saved search breadth."""
        path = Path(path)
        side = path.with_suffix(".json")
        if not path.exists() or not side.exists():
            raise RunDirError(f"Index {path} (or its description {side.name}) does not exist.")
        try:
            info = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            first = (str(e).strip().splitlines() or ["unknown error"])[0]
            raise RunDirError(f"Index description {side} is unreadable ({first}).") from e
        if not isinstance(info, dict):
            raise RunDirError(f"Index description {side} must hold a JSON object, not {type(info).__name__}.")
        try:
            index = faiss.read_index(str(path))
        except Exception as e:  # faiss raises RuntimeError on a damaged or truncated file
            first = (str(e).strip().splitlines() or ["unknown error"])[0][:200]
            raise RunDirError(f"Index {path} is unreadable ({first}).") from e
        kind, measure = info.get("kind"), info.get("measure")
        if kind not in INDEX_KINDS or measure not in MEASURES:
            raise RunDirError(f"Index description {side} names an unknown kind or measure ({kind!r}, {measure!r}).")
        expected = faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexFlat
        if not isinstance(index, expected):
            raise RunDirError(f"Index {path} is not the {kind} index that {side.name} describes.")
        params = {k: v for k, v in info.items() if k not in _DESCRIPTION_KEYS}
        out = cls(index, kind, measure, params)
        if out.n != info.get("n") or out.dim != info.get("dim"):
            raise RunDirError(f"Index {path} does not match its description {side.name} (size or dimension).")
        if ef_search is not None:
            out.set_ef_search(ef_search)
        return out

    # -- properties ---------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of indexed items."""
        return self._n

    @property
    def dim(self) -> int:
        """Dimension of the item vectors and of the queries."""
        return self._dim

    @property
    def vectors(self) -> np.ndarray:
        """The indexed vectors (n, d), a read-only view; normalised for ``cosine``."""
        v = self._stored[:, : self.dim]
        v.flags.writeable = False
        return v

    def set_ef_search(self, ef_search: int) -> None:
        """Breadth of the HNSW search (recall / latency trade-off); ignored by the exact index."""
        if isinstance(ef_search, bool) or not isinstance(ef_search, (int, np.integer)) or ef_search < 1:
            raise ConfigError(f"ef_search must be a positive integer, got {ef_search!r}.")
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = int(ef_search)
            self.params["ef_search"] = int(ef_search)

    def memory_bytes(self) -> int:
        """Bytes held by the index: the float vectors plus, for HNSW, the graph's links, levels and offsets."""
        total = self._stored.size * 4
        if self.kind == "hnsw":
            h = self.index.hnsw
            total += h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8
        return int(total)

    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        """Queries as contiguous float32 (B, d), normalised for ``cosine``."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DataError(f"Queries must have shape (B, {self.dim}), got {tuple(q.shape)}.")
        if not np.isfinite(q).all():
            raise DataError("Queries contain NaN or infinite values.")
        return normalize(q) if self.measure == "cosine" else np.ascontiguousarray(q)

    # -- search -------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
        *,
        exact: bool = False,
    ) -> SearchResult:
        """Top-k internal ids and scores for each query row, skipping each row's ``exclude`` ids.

        ``exclude[b]`` holds internal item ids (1-based) never to return for query ``b``.
        ``exact=True`` forces exact search (the reference).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}.")
        k = int(k)
        q = self.prepare_queries(queries)
        b = len(q)
        if exclude is not None and len(exclude) != b:
            raise DataError(f"exclude has {len(exclude)} rows for {b} queries.")
        ex = [self._clean(e) for e in exclude] if exclude is not None else [_EMPTY] * b
        ids = np.zeros((b, k), dtype=np.int64)
        scores = np.full((b, k), -np.inf, dtype=np.float32)
        used_exact = np.zeros(b, dtype=bool)
        n = self._n
        rest: list[int] = []
        if exact or self.kind == "exact":
            rest = list(range(b))
        else:
            limit = max(EXACT_FRACTION * n, k)
            # group queries by over-fetch size k + len(excluded), rounded up to a power of two, so that
            # one heavy user does not widen everyone's search
            groups: dict[int, list[int]] = {}
            for r in range(b):
                fetch = k + len(ex[r])
                if fetch > limit:
                    rest.append(r)
                else:
                    groups.setdefault(min(1 << (fetch - 1).bit_length(), n), []).append(r)
            for size, rows in groups.items():
                cand = self._ann_candidates(q[rows] if len(rows) < b else q, size)
                for j, r in enumerate(rows):
                    c = cand[j]
                    c = c[c > 0]
                    e = ex[r]
                    if len(e):
                        pos = np.searchsorted(e, c)
                        c = c[e[np.minimum(pos, len(e) - 1)] != c]
                    if len(c) < min(k, n - len(e)):
                        rest.append(r)
                        continue
                    c = c[:k]
                    ids[r, : len(c)] = c
                    scores[r, : len(c)] = self._scores(q[r], c)
        if rest:
            rest_a = np.asarray(sorted(rest), dtype=np.int64)
            e_ids, e_scores = self._exact(q[rest_a], k, [ex[r] for r in rest_a])
            ids[rest_a], scores[rest_a] = e_ids, e_scores
            used_exact[rest_a] = True
        return SearchResult(ids, scores, used_exact)

    def recall(self, queries: np.ndarray, k: int = 10, exclude: Sequence[np.ndarray] | None = None) -> float:
        """Mean recall@k of this index's answers against exact search for ``queries``."""
        got = self.search(queries, k, exclude).ids
        ref = self.search(queries, k, exclude, exact=True).ids
        hits = [
            len(np.intersect1d(a[a > 0], b[b > 0])) / max(1, int((b > 0).sum())) for a, b in zip(got, ref, strict=True)
        ]
        return float(np.mean(hits)) if hits else 1.0

    def exact_scores(self, queries: np.ndarray) -> np.ndarray:
        """Scores (B, n) of prepared queries against every indexed item (column j = internal id j + 1)."""
        v = self.vectors
        s = queries @ v.T
        if self.measure == "l2":
            if self._sq_norms is None:
                self._sq_norms = np.einsum("ij,ij->i", v, v)
            s = 2 * s - self._sq_norms[None, :] - np.einsum("ij,ij->i", queries, queries)[:, None]
        return s.astype(np.float32, copy=False)

    def _clean(self, e: np.ndarray) -> np.ndarray:
        """Excluded ids as a sorted, unique int64 array within 1..n (CSR rows already are: no copy)."""
        e = np.asarray(e, dtype=np.int64)
        if len(e) == 0:
            return _EMPTY
        if e[0] >= 1 and e[-1] <= self._n and (len(e) == 1 or bool((e[1:] > e[:-1]).all())):
            return e
        e = np.unique(e)
        return e[(e >= 1) & (e <= self._n)]

    def _ann_candidates(self, q: np.ndarray, size: int) -> np.ndarray:
        """Graph search: internal ids (0 = none), best first, (B, size)."""
        if self.transform:
            q = np.hstack([q, np.zeros((len(q), 1), np.float32)])
        _, lab = self.index.search(q, size)
        return lab.astype(np.int64) + 1  # faiss' -1 (not found) becomes 0

    def _scores(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact scores of one prepared query (d,) against items ``ids`` (1-based)."""
        v = self._stored[ids - 1, : self._dim]
        s = v @ q
        if self.measure == "l2":
            s = 2 * s - np.einsum("ij,ij->i", v, v) - float(q @ q)
        return s.astype(np.float32, copy=False)

    def _exact(self, q: np.ndarray, k: int, ex: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        b = len(q)
        ids = np.zeros((b, k), dtype=np.int64)
        scores = np.full((b, k), -np.inf, dtype=np.float32)
        step = max(1, _EXACT_BLOCK // max(self.n, 1))
        kk = min(k, self.n)
        for start in range(0, b, step):
            s = self.exact_scores(q[start : start + step])
            for j in range(len(s)):
                e = ex[start + j]
                if len(e):
                    s[j, e - 1] = -np.inf
            if kk < self.n:
                part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            else:
                part = np.tile(np.arange(self.n), (len(s), 1))
            vals = np.take_along_axis(s, part, axis=1)
            order = np.argsort(-vals, axis=1, kind="stable")
            top = np.take_along_axis(part, order, axis=1)
            vals = np.take_along_axis(vals, order, axis=1)
            ids[start : start + len(s), :kk] = np.where(np.isneginf(vals), 0, top + 1)
            scores[start : start + len(s), :kk] = vals
        return ids, scores


def _choose_dot_strategy(
    x: np.ndarray, queries: np.ndarray | None, m: int, ef_construction: int, ef_search: int, sample: int = 20_000
) -> tuple[str, dict[str, float]]:
    """Build both MIPS strategies on a sample and return the one with the higher recall@10 (and both recalls)."""
    rng = np.random.default_rng(0)
    xs = x if len(x) <= sample else x[np.sort(rng.choice(len(x), sample, replace=False))]
    if queries is None or len(queries) == 0:
        queries = x
    qs = queries[rng.choice(len(queries), min(500, len(queries)), replace=False)]
    recalls = {}
    for strategy in ("ip", "l2-transform"):
        idx = VectorIndex.build(
            xs, "dot", "hnsw", m=m, ef_construction=ef_construction, ef_search=ef_search, dot_strategy=strategy
        )
        recalls[strategy] = round(idx.recall(qs, min(10, len(xs))), 4)
    best = max(recalls, key=lambda s: (recalls[s], s == "l2-transform"))
    return best, recalls
