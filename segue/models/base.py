"""The one interface every segue model implements, and the model registry.

The evaluator and the server call only :meth:`Recommender.score`,
:meth:`Recommender.score_all` and :meth:`Recommender.recommend` (plus the vectors for ANN
serving). Scores are "higher is better": distance models return minus the distance.

A model never reads files and never imports training or evaluation: it *declares* what the
shared machinery needs (its :meth:`~Recommender.loss` on a batch of its :attr:`~Recommender.batch_kind`,
the tables an adversary may perturb, the parts of staged training) and
:func:`segue.training.fit` runs it. Closed-form models (popularity, kNN, ALS) implement
``fit(train, monitor=None)`` themselves, with a dev monitor callback as ``implicit`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from segue.config import from_options
from segue.data.batch import BATCH_KINDS, Context
from segue.errors import ConfigError, DataError
from segue.models.losses import LossSpec

if TYPE_CHECKING:
    from segue.data.interactions import Interactions

Measure = Literal["dot", "cosine", "l2"]


class Recommender(nn.Module):
    """Base class: a ``torch.nn.Module`` with the scoring interface.

    Subclasses set ``name`` (kebab case registry key), define a ``Config`` dataclass of
    hyper-parameters, build their parameters in ``__init__(n_users, n_items, config)`` and
    implement :meth:`score`. Embedding-based models also set ``measure`` and implement
    :meth:`item_vectors` / :meth:`query_vectors` so the server can retrieve through an
    ANN index.
    """

    name: ClassVar[str] = ""
    measure: ClassVar[Measure | None] = None
    #: Context keys the model needs (subset of {"history", "group", "features"}).
    needs: ClassVar[frozenset[str]] = frozenset()
    #: Whether the trainer fits this model by gradient steps; closed-form models (``False``) implement
    #: ``fit(train, monitor=None, **extras)`` themselves, where ``monitor(model, "NDCG@10")`` returns a
    #: dev metric, and return ``None`` or a History-shaped dict (``epochs``, ``best_epoch``, ...).
    trainable: ClassVar[bool] = True
    #: The batch kind the trainer builds for this model (one of segue.data.batch.BATCH_KINDS).
    batch_kind: ClassVar[str] = "pairs"
    #: Trainer options this model is tuned for (override TrainConfig's generic defaults;
    #: a config file or command-line flag overrides these in turn).
    train_defaults: ClassVar[dict[str, Any]] = {}

    @dataclass
    class Config:
        pass

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__()
        if n_users < 1 or n_items < 1:
            raise DataError(f"A model needs at least one user and one item, got {n_users} users and {n_items} items.")
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise ConfigError(
                f"{type(self).__name__} expects a {self.Config.__qualname__}, got {type(config).__name__}."
            )
        self.fitted = False

    # -- the scoring interface ------------------------------------------------------------
    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        """Scores of shape (B, C) for users (B,) against candidate items (B, C); higher is better."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score().")

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        """Scores of shape (B, n_items + 1) over the whole catalogue; column 0 (padding) is -inf.

        The default calls :meth:`score` over item chunks; embedding models override it with a
        matrix product.
        """
        b = users.shape[0]
        out = torch.empty(b, self.n_items + 1, device=users.device)
        out[:, 0] = float("-inf")
        for start in range(1, self.n_items + 1, chunk):
            ids = torch.arange(start, min(start + chunk, self.n_items + 1), device=users.device)
            out[:, start : start + len(ids)] = self.score(users, ids.expand(b, -1), context)
        return out

    @torch.no_grad()
    def recommend(
        self,
        users: Tensor | np.ndarray,
        k: int,
        context: Context | None = None,
        exclude: sp.csr_matrix | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Top-k internal item ids and their scores for each user, (B, k) each.

        ``exclude`` is a user x item CSR matrix (e.g. the training interactions): its
        non-zeros are never recommended.
        """
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}.")
        users = torch.as_tensor(np.asarray(users), dtype=torch.long)
        if users.ndim != 1:
            raise DataError(f"users must be a 1-D array of internal ids, got shape {tuple(users.shape)}.")
        if users.numel() and (users.min() < 1 or users.max() > self.n_queries):
            raise DataError(f"Internal {self.query_kind} ids must lie in 1..{self.n_queries}.")
        available = self.n_items
        if exclude is not None:
            seen = np.diff(exclude.indptr)[users.numpy()]
            available -= int(seen.max()) if len(seen) else 0
        if k > self.n_items:
            raise ConfigError(f"k={k} is larger than the catalogue of {self.n_items} items.")
        was_training = self.training
        self.eval()
        try:
            scores = self.score_all(users.to(self.device), context).float().cpu()
        finally:
            self.train(was_training)
        check_scores(scores, type(self).__name__)
        if exclude is not None:
            rows = exclude[users.numpy()]
            r, c = rows.nonzero()
            scores[torch.as_tensor(r, dtype=torch.long), torch.as_tensor(c, dtype=torch.long)] = float("-inf")
        top = torch.topk(scores, k, dim=1)
        ids, vals = top.indices, top.values
        if k > available:
            # fewer unseen items than k for some user: pad with 0 (no item) rather than repeat seen ones
            ids = torch.where(torch.isinf(vals) & (vals < 0), torch.zeros_like(ids), ids)
        return ids, vals

    @property
    def n_queries(self) -> int:
        """How many query ids :meth:`score` accepts as ``users`` (playlist models: playlists)."""
        return self.n_users

    @property
    def query_kind(self) -> str:
        return "user"

    # -- ANN serving --------------------------------------------------------------------
    def item_vectors(self) -> Tensor:
        """Item embeddings (n_items + 1, d) whose :attr:`measure` with a query vector is the score."""
        raise NotImplementedError(f"{type(self).__name__} has no item vectors for ANN retrieval.")

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        """Query embeddings (B, d) for users (and context), see :meth:`item_vectors`."""
        raise NotImplementedError(f"{type(self).__name__} has no query vectors for ANN retrieval.")

    # -- what a model declares for training ------------------------------------------------
    def loss(self, batch: Any, spec: LossSpec) -> Tensor:
        """The data loss on one training batch of :attr:`batch_kind` (the trainer adds :meth:`regularization`).

        Default: ``spec`` (pairwise or pointwise) over :meth:`score` of ``[positive, negatives]``.
        """
        return spec(self.score(batch.users, batch.items, batch.context))

    def adversary_tables(self) -> list[str]:
        """Names of the parameters an adversary may perturb (APR, QABPR); empty for none."""
        return []

    @property
    def adversarial(self) -> bool:
        """Whether training ends with an adversarial stage over :meth:`adversary_tables`."""
        return False

    def adversary_options(self) -> dict[str, Any]:
        """Trainer options of the adversarial stage that this model's config fixes (``adv_*`` keys)."""
        return {}

    def parts(self) -> dict[str, Recommender]:
        """Sub-models still to be trained before this one (staged training); empty for none."""
        return {}

    def assemble(
        self, train: Interactions, parts: dict[str, Recommender], *, seed: int = 0, context: str = "history"
    ) -> None:
        """Called before this model's own stage with the :meth:`parts` just trained (maybe none): copy or freeze them."""

    def final_stage_options(self) -> dict[str, Any]:
        """Trainer options that differ for this model's own stage after its parts (e.g. a fine-tuning lr)."""
        return {}

    def prepare(self, train: Interactions) -> None:
        """Called by the trainer before training on ``train``: derive data-sized tables (owners, neighbourhoods)."""

    def fit(self, train: Interactions, monitor: Monitor | None = None, **extras: Any) -> Any:
        """Closed-form models fit themselves; every other model is trained by :func:`segue.training.fit`."""
        raise ConfigError(
            f"{self.name} is trained by segue.training.fit(model, train, valid, config), not by model.fit()."
        )

    def history_length(self) -> int:
        """Length s of the history window a sequential model reads (0 for models without one)."""
        return 0

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        """L2 penalty on the parameters a batch touched; the trainer adds it to the loss."""
        return torch.zeros((), device=self.device)

    # -- bookkeeping --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Closed-form models hold data-sized buffers (neighbour lists, histories) whose shape is
        # only known after fit: take the saved shape instead of failing on a size mismatch.
        for name, buf in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buf is not None and saved is not None and saved.shape != buf.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=buf.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.fitted = True

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @classmethod
    def config_from_dict(cls, values: dict[str, Any]) -> Any:
        """Build this model's Config from a dict, rejecting unknown keys and mistyped values with a clear message."""
        return from_options(cls.Config, values, f"model {cls.name!r}")


def checked_history(model: Recommender, users: Tensor, context: Context | None, w: int) -> Tensor:
    """The (B, w) history of ``context``, checked; longer windows keep their most recent ``w`` items."""
    if context is None or context.history is None:
        raise DataError(f"{model.name} needs context.history, the (B, window) most recent items of each user.")
    h = context.history
    if h.ndim != 2 or h.shape[0] != users.shape[0]:
        raise DataError(f"{model.name} needs a (B, window) history for B={users.shape[0]} users, got {tuple(h.shape)}.")
    if h.shape[1] > w:
        h = h[:, -w:]
    h = h.long()
    if h.numel() and (h.min() < 0 or h.max() > model.n_items):
        raise DataError(f"{model.name}: history item ids must lie in 0..{model.n_items} (0 = padding).")
    return h


def check_scores(scores: Tensor, model: str) -> None:
    """Raise if a model produced NaN scores (never rank on them silently)."""
    if torch.isnan(scores).any():
        raise DataError(f"{model} produced NaN scores; the model diverged or its inputs contain NaNs.")


# -- registry -------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator adding a model to the registry under ``cls.name``."""
    if not cls.name:
        raise ConfigError(f"{cls.__name__} has no registry name.")
    if cls.batch_kind not in BATCH_KINDS:
        raise ConfigError(f"{cls.__name__} declares batch kind {cls.batch_kind!r}; known: {', '.join(BATCH_KINDS)}.")
    if cls.trainable and cls.score is Recommender.score and cls.loss is Recommender.loss:
        raise ConfigError(f"{cls.__name__} declares neither a score nor a loss, so the trainer cannot fit it.")
    if not cls.trainable and cls.fit is Recommender.fit:
        raise ConfigError(f"{cls.__name__} is closed-form (trainable = False) but implements no fit(train, monitor).")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    """Import every module of ``segue.models`` once, so their ``@register`` decorators run."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import segue.models

    for mod in pkgutil.iter_modules(segue.models.__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"segue.models.{mod.name}")
    _LOADED = True


_LOADED = False


def get_model_class(name: str) -> type[Recommender]:
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def list_models() -> dict[str, type[Recommender]]:
    _load_builtin()
    return dict(sorted(_REGISTRY.items()))


def build_model(name: str, n_users: int, n_items: int, options: dict[str, Any] | None = None) -> Recommender:
    cls = get_model_class(name)
    return cls(n_users, n_items, cls.config_from_dict(options or {}))


ModelFactory = Callable[[int, int], Recommender]
#: A dev-set callback handed to closed-form ``fit``: ``monitor(model, "NDCG@10")`` -> the metric.
Monitor = Callable[[Recommender, str], float]
