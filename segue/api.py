"""The Python entry point: train on a DataFrame, a file or a dataset, then every music use case by raw ids.

>>> import segue
>>> m = segue.fit("sasrec", plays_df, max_seconds=60)   # user,item,timestamp rows; or a path, or "ml-1m"
>>> m.metrics                                          # test metrics under the protocol (and tie_rate)
>>> m.save("runs/sasrec"); m = segue.load("runs/sasrec")
>>> m = Fitted.load("runs/sasrec-ml-1m")           # a run directory written by `segue train`
>>> m.recommend("42", k=10)                         # a known user; an unknown one gets the popular items
>>> m.next_track(["1193", "661", "914"], k=5)        # a listening session in progress (oldest first)
>>> m.continue_playlist(["t1", "t2"], k=20)          # a new playlist from its seed tracks
>>> m.similar("1193", k=10)                         # the tracks nearest to one track
>>> m.from_audio(["new.ogg"], k=10)                  # cold start (DCUE, WMF + regression): tracks nearest a new clip

Every answer is a :class:`~segue.serving.export.Recommendations` (raw ids, best first, scores,
``query`` and ``retrieval`` saying how it was found). The rules, the same everywhere:

* ``recommend``: a known user's top-k, their training items excluded by default. Sequential
  models read the user's latest training items (the run's ``recent.npz``) or ``history=``. An
  unknown user gets the most popular training items, flagged ``query="popular-fallback"``
  (``unknown="error"`` raises instead).
* ``recommend_items`` (and its names for the use cases, ``continue_playlist`` and
  ``next_track``): models that read a context (playlist members, a history) take the items as
  that context; a new playlist has no playlist or owner embedding (the padding row, zero), so
  only its seed tracks speak. Vector models answer with the mean of the items' vectors. Models
  with neither say so in one sentence.
* ``similar``: nearest items by the model's own ``measure`` over its item vectors (exact search).
* ``from_audio``: the audio models embed each new clip and return the catalogue tracks nearest to it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segue.errors import ConfigError, DataError

if TYPE_CHECKING:
    from segue.serving.export import Recommendations, ServingModel
    from segue.training.checkpoint import Run

#: What an unknown user gets.
UNKNOWN_USER = ("popular", "error")


class Fitted:
    """A trained model with its id maps, answering by raw ids (module docstring)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.model = run.model
        self._server: ServingModel | None = None

    @classmethod
    def load(cls, path: str | Path) -> Fitted:
        """Open a run directory written by ``segue train`` / :func:`segue.pipeline.run` / :meth:`save`."""
        from segue.training.checkpoint import load_run

        return cls(load_run(path))

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Copy the run directory to ``path`` (a segue run directory; ``overwrite`` replaces only one segue wrote)."""
        from segue.dirs import check_target, new_sibling, swap_in

        target = Path(path).expanduser()
        check_target(target, "run", overwrite=overwrite, sources=[self.run.path])
        tmp = new_sibling(target)
        shutil.copytree(self.run.path, tmp, dirs_exist_ok=True)  # new_sibling made the (empty) directory
        swap_in(tmp, target, "run")
        return target

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's saved evaluation (``test`` and ``valid`` metrics, including ``tie_rate``)."""
        return dict(self.run.metrics or {})

    def __repr__(self) -> str:
        c = self.run.config
        return f"Fitted({c.get('model')!r} on {c.get('dataset')!r}, {self.model.n_users} users, {self.model.n_items} items)"

    # -- users ----------------------------------------------------------------------------
    def recommend(
        self,
        user: Any,
        k: int = 10,
        *,
        history: Sequence[Any] | None = None,
        exclude_seen: bool = True,
        unknown: str = "popular",
    ) -> Recommendations:
        """Top-k items for ``user`` (raw id); see the module docstring for sequential models and unknown users."""
        from segue.serving.export import Recommendations

        if unknown not in UNKNOWN_USER:
            raise ConfigError(f"unknown must be one of {', '.join(UNKNOWN_USER)}, got {unknown!r}.")
        k = self._check_k(k)
        if str(user) not in self.run.user_map and unknown == "popular":
            if history is not None:  # a new listener with a history is a session in progress
                return self.next_track(history, k)
            return self.popular(k)
        uid = self.run.user_map.to_internal([user])
        context = self._history_context(uid, history)
        ids_t, scores_t = self.model.recommend(uid, k, context, exclude=self.run.seen if exclude_seen else None)
        ids, scores = ids_t[0].numpy(), scores_t[0].numpy()
        keep = ids > 0
        query = "user-history" if context is not None else "user"
        raw = self.run.item_map.to_raw(ids[keep]).tolist()
        return Recommendations(raw, [float(s) for s in scores[keep]], query, "model")

    def popular(self, k: int = 10, exclude: Sequence[Any] = ()) -> Recommendations:
        """The k items with the most training interactions (ties by id), ``exclude`` (raw ids) left out."""
        return self._serving().popular(self._check_k(k), exclude)

    # -- item lists: playlists, sessions, baskets -------------------------------------------
    def recommend_items(
        self, items: Sequence[Any], k: int = 10, *, user: Any | None = None, ignore_unknown: bool = False
    ) -> Recommendations:
        """Top-k items to follow ``items`` (raw ids, oldest first), the items themselves excluded."""
        return self._serving().recommend_items(
            list(items), self._check_k(k), user=user, exclude_items=True, ignore_unknown=ignore_unknown
        )

    def continue_playlist(
        self, seed_tracks: Sequence[Any], k: int = 10, *, owner: Any | None = None
    ) -> Recommendations:
        """Tracks to continue a new playlist from its seed tracks (MASS, MASR, their ``_ps`` variants, vector models)."""
        return self.recommend_items(seed_tracks, k, user=owner)

    def next_track(self, session: Sequence[Any], k: int = 10, *, user: Any | None = None) -> Recommendations:
        """The next tracks for a listening session in progress (``session``: raw ids, oldest first)."""
        return self.recommend_items(session, k, user=user)

    # -- items ------------------------------------------------------------------------------
    def similar(self, item: Any, k: int = 10) -> Recommendations:
        """The k items nearest to ``item`` (raw id) under the model's measure, the item itself excluded."""
        return self._serving().similar(item, self._check_k(k))

    def from_audio(self, paths: Sequence[str | Path], k: int = 10) -> list[Recommendations]:
        """Cold start: for each new audio file, the k catalogue tracks nearest to its embedding (DCUE family)."""
        import torch

        from segue.audio.frontend import load_audio, log_mel

        if not hasattr(self.model, "encode_items"):
            raise ConfigError(
                f"{self.model.name} has no audio tower; cold start from audio needs dcue or wmf-regression."
            )
        server = self._serving()
        assert server.index is not None
        mels = []
        for p in paths:
            if not Path(p).is_file():
                raise DataError(f"Audio file {p} does not exist.")
            mels.append(log_mel(load_audio(p)))
        width = max(m.shape[-1] for m in mels)
        batch = torch.stack([torch.nn.functional.pad(m, (0, width - m.shape[-1])) for m in mels])
        with torch.no_grad():
            q = self.model.encode_items(batch).float().numpy()
        res = server.index.search(q, self._check_k(k), exact=True)
        return [server._answer(res.ids[r], res.scores[r], "audio-vector", "exact") for r in range(len(paths))]

    # -- plumbing ---------------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.model.n_items:
            raise ConfigError(f"k must be an integer between 1 and the catalogue size {self.model.n_items}, got {k!r}.")
        return int(k)

    def _history_context(self, uid: np.ndarray, history: Sequence[Any] | None) -> Any:
        """The ``Context(history=...)`` a sequential model reads: ``history`` or the run's saved recent items."""
        import torch

        from segue.data.batch import Context

        if "history" not in self.model.needs:
            if history is not None:
                raise ConfigError(f"history is for sequential models; {self.model.name} does not read one.")
            return None
        w = self.model.history_length()
        if history is not None:
            raw = [str(h).strip() for h in history if str(h).strip()]
            if not raw:
                raise ConfigError("history needs at least one item id (oldest first).")
            items = self.run.item_map.to_internal(raw)[-w:]
            return Context(history=torch.tensor([[0] * (w - len(items)) + items.tolist()], dtype=torch.long))
        if self.run.recent is None:
            raise ConfigError(
                f"{self.model.name} reads the user's recent items, which this run directory does not hold "
                "(it predates recent.npz); pass a history."
            )
        return Context(history=torch.as_tensor(self.run.recent[uid][:, -w:], dtype=torch.long))

    def _serving(self) -> ServingModel:
        """The export-side query engine over this run, exact: the model scores, item vectors for neighbours."""
        if self._server is None:
            from segue.serving.export import ServingModel, _item_vectors
            from segue.serving.index import VectorIndex

            m = self.model
            vectors = _item_vectors(m) if m.measure is not None else None
            index = None if vectors is None else VectorIndex.build(vectors[1:], m.measure, "exact")
            meta = {
                "model": m.name,
                "dataset": self.run.config.get("dataset"),
                "retrieval": "exact-model",
                "n_users": m.n_users,
                "n_items": m.n_items,
                "needs": sorted(m.needs),
                "measure": m.measure,
            }
            self._server = ServingModel(
                self.run.path, meta, self.run.user_map, self.run.item_map, self.run.seen, index, None, m, exact=True
            )
            self._server.recent = self.run.recent
        return self._server


def fit(
    model: str,
    data: Any,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    protocol: str | None = None,
    negatives: int | None = None,
    options: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    log: Any = None,
    **train: Any,
) -> Fitted:
    """Train registered model ``model`` on ``data`` and return it fitted, scikit-learn style.

    ``data``: a pandas DataFrame in one of the four formats of :func:`segue.data.load_frame`
    (interactions, sequences, playlists, sessions; ``format`` and ``columns`` as for files), a path to
    a data file, a registered dataset name, or an :class:`~segue.data.Interactions`. ``protocol``
    defaults to the format's (``playlist-holdout`` for playlists, else ``loo-sampled``), with
    ``negatives`` sampled candidates where it samples. ``options`` are the model's options and
    ``train`` keywords the trainer's (``epochs=``, ``max_seconds=``, ``patience=``, ``lr=``, ...).
    The run directory is ``out`` (default: a new temporary directory; keep it with :meth:`Fitted.save`).
    """
    import pandas as pd

    from segue.data.files import DEFAULT_PROTOCOLS, load_frame, open_dataset
    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import get_protocol
    from segue.models.base import get_model_class
    from segue.pipeline import run, train_config_for

    get_model_class(model)  # an unknown name fails here, in one sentence
    fmt = None
    if isinstance(data, pd.DataFrame):
        table = load_frame(data, format, columns)
        fmt = format or ("playlists" if "playlist" in table.group_maps else None)
    elif isinstance(data, Interactions):
        table = data
    elif isinstance(data, (str, Path)):
        source = open_dataset(data, format=format, columns=columns, progress=False)
        table, fmt = source.data, source.format
    else:
        raise DataError(
            f"data must be a DataFrame, a file path, a dataset name or Interactions, got {type(data).__name__}."
        )
    if protocol is None:
        protocol = DEFAULT_PROTOCOLS.get(
            fmt or "", "playlist-holdout" if "playlist" in table.group_maps else "loo-sampled"
        )
    proto = get_protocol(protocol, seed=seed, n_negatives=negatives)
    cfg = train_config_for(model, {"seed": seed, "progress": False, **train})
    target = Path(out).expanduser() if out is not None else Path(tempfile.mkdtemp(prefix="segue-run-")) / "run"
    run(model, table, protocol=proto, model_options=dict(options or {}), train_config=cfg, out=target, seed=seed,
        overwrite=overwrite, log=log)  # fmt: skip
    return Fitted.load(target)


def load(path: str | Path) -> Fitted:
    """:meth:`Fitted.load`: a run directory as a fitted model."""
    return Fitted.load(path)


__all__ = ["UNKNOWN_USER", "Fitted", "fit", "load"]
