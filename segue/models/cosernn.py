"""CoSeRNN (Hansen et al., RecSys'20): contextual and sequential session-level user embeddings.

Spec: Part A of ``shared/specs/seed-003-coserrn-and-ch3-spec.md``; section numbers below refer to it.

Pieces
------
* :func:`train_track_embeddings` (A.3): gensim word2vec CBOW (``sg=0``, 40-d, window 5,
  5 negatives, ``min_count`` 5, 10 epochs, one worker, seeded), each vector L2-normalised, frozen.
  Row 0 (padding) and tracks below ``min_count`` are zero vectors.
* :func:`session_embeddings` (A.4): ``s``, ``s+`` and ``s-`` = the normalised mean of the first
  10 tracks' vectors (all / played / skipped); an empty set gives the zero vector.
* :func:`session_inputs` builds the per-session model inputs once: the context one-hots
  ``c_t`` = day of week (7) + hour (24) + device (the data's vocabulary, index 0 = unknown), the
  stream-source one-hot (vocabulary incl. "none"), ``log1p(N_t)`` and ``log1p(Delta_t)`` (A.2
  [AMBIG] defaults), and the optional static user features (age-bucket one-hot).
* :class:`CoSeRNN` (A.5), an ``nn.Module``: per pathway (``session_rep``, default played +
  skipped) ``f_t = c_t (+) s_{t-1}^rep (+) [N_{t-1}, z_{t-1}, Delta_t]`` -> FC_ReLU -> FC_ReLU
  (width 200) -> LSTM (cell ``d`` = 400, one layer); the pathway outputs are concatenated ->
  FC_ReLU -> FC_ReLU (200) -> ``o_t``; ``u_hat = FC_id(o_t)`` (40-d); the long-term vector
  ``u_bar_t`` = normalised ``sum_{t' < t} t' s_{t'}`` (Eq. 1, 0 for the first session); a 2-way
  softmax over ``FC(o_t)`` fuses them and the result is L2-normalised. [AMBIG] defaults: shared
  input MLP and separate LSTMs (``share_pathway_weights="mlp"``), ``longterm_source="all"``,
  attention from ``o_t``, no dropout, initial LSTM state from the user features when present
  (Dense(d, ReLU) -> Dense(d) for h0 and for c0), else learned constants. Everything at step t is
  computed from sessions ``< t`` plus the current context and ``Delta_t``: the inputs are shifted
  by one step inside :meth:`CoSeRNN.forward`, so a caller passes each session's *own* features
  and cannot leak the target. Sessions are padded at the end of each user's sequence; the LSTM
  is causal, so padding never reaches a real step, and padded steps are masked out of the loss.
* Baselines and oracles of A.8 (:func:`baseline_predictions`): ``last-any``, ``last-same``,
  ``avg-any``, ``avg-same`` (context = (time-of-day bucket, device), falling back to the
  any-context variant), ``popularity`` (the ``s+`` of the user's past session with the highest
  mean training play count), ``oracle-full`` and ``oracle-half`` (a seeded random ceil(n/2) of
  the kept tracks, all tracks). JODIE, RRN and LatentCross are not implemented: their
  adaptations in the paper are described in one sentence each ("we tune the parameters used in
  the original paper"), JODIE's per-interaction coupled user/item updates with t-batching would
  need a second training loop and far more compute than these 2 shared cores allow, and on the
  thin real logs here (a median of 2 sessions per user) they could not be tuned meaningfully.

Why not :class:`segue.models.base.Recommender`
----------------------------------------------
That interface scores ``(user, item)`` pairs from a per-user query. CoSeRNN predicts one
vector per *session* from the user's whole session history plus the session's context, its
target is a session vector (cosine loss, no negatives), and it ranks sessions and recent tracks
rather than the catalogue. So it keeps this module's small interface: a *session model* has
``predict(inputs, users=None) -> (S, 40)``, the unit-norm preference vector at the start of every
session (row-aligned with :class:`~segue.data.sessions.SessionData`), and
:meth:`CoSeRNN.step` gives the vector of a *new* session from a cached state, which is the query
that :mod:`segue.serving.cosernn` sends to a :class:`~segue.serving.index.VectorIndex` over the
frozen track vectors (cosine = dot product, all vectors unit norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segue.data.sessions import SessionData, tod_bucket
from segue.errors import ConfigError, DataError

EMBED_DIM = 40
REPS = ("all", "played", "skipped")
BASELINES = ("popularity", "last-any", "last-same", "avg-any", "avg-same")
ORACLES = ("oracle-half", "oracle-full")
REFERENCES = ("random", "global-mean")

# --------------------------------------------------------------------------------------------
# track and session embeddings (A.3, A.4)
# --------------------------------------------------------------------------------------------


@dataclass
class Word2VecConfig:
    """gensim word2vec options (A.3 [AMBIG] defaults)."""

    dim: int = EMBED_DIM
    window: int = 5
    negative: int = 5
    min_count: int = 5
    epochs: int = 10
    seed: int = 0
    sg: int = 0  # 0 = CBOW


def train_track_embeddings(
    sentences: list[np.ndarray], n_tracks: int, config: Word2VecConfig | None = None
) -> np.ndarray:
    """Unit-norm CBOW track vectors (n_tracks + 1, dim) from sequences of internal track ids; row 0 and rare tracks are 0."""
    try:
        from gensim.models import Word2Vec
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("CoSeRNN track embeddings need the 'gensim' package: pip install 'segue[w2v]'.") from e
    c = config or Word2VecConfig()
    if c.dim < 1 or c.window < 1 or c.negative < 1 or c.min_count < 1 or c.epochs < 1:
        raise ConfigError(f"word2vec options must all be >= 1, got {c}.")
    corpus = [[str(int(t)) for t in s if t > 0] for s in sentences]
    corpus = [s for s in corpus if len(s) >= 2]
    if not corpus:
        raise DataError("No session has two or more tracks to train track embeddings on.")
    model = Word2Vec(
        sentences=corpus,
        vector_size=c.dim,
        window=c.window,
        negative=c.negative,
        min_count=c.min_count,
        epochs=c.epochs,
        sg=c.sg,
        workers=1,
        seed=c.seed,
    )
    out = np.zeros((n_tracks + 1, c.dim), dtype=np.float32)
    if len(model.wv.index_to_key) == 0:
        raise DataError(f"No track occurs min_count={c.min_count} times; lower min_count.")
    keys = np.asarray([int(k) for k in model.wv.index_to_key], dtype=np.int64)
    v = np.asarray(model.wv.vectors, dtype=np.float32)
    out[keys] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > 1e-12, x / np.maximum(n, 1e-12), 0.0).astype(np.float32)


def mean_embedding(tracks: np.ndarray, mask: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Normalised mean of ``vectors[tracks]`` over ``mask`` per row ((S, L) -> (S, d)); empty rows give 0."""
    e = vectors[tracks] * mask[..., None]
    return _normalize(e.sum(axis=1))


def session_embeddings(data: SessionData, vectors: np.ndarray) -> dict[str, np.ndarray]:
    """``{"all": s, "played": s+, "skipped": s-}``, each (S, d) unit norm or 0 (A.4)."""
    present = data.tracks > 0
    return {
        "all": mean_embedding(data.tracks, present, vectors),
        "played": mean_embedding(data.tracks, data.played, vectors),
        "skipped": mean_embedding(data.tracks, present & data.skipped, vectors),
    }


# --------------------------------------------------------------------------------------------
# model inputs
# --------------------------------------------------------------------------------------------


@dataclass
class SessionInputs:
    """Per-session arrays the models read, row-aligned with a :class:`SessionData`."""

    data: SessionData
    vectors: np.ndarray  # (n_tracks + 1, d) frozen unit-norm track vectors
    emb: dict[str, np.ndarray]  # all / played / skipped, (S, d)
    context: np.ndarray  # (S, C) one-hot day + hour + device
    source: np.ndarray  # (S, Z) one-hot stream source
    n_log: np.ndarray  # (S,) log1p(N_t)
    delta_log: np.ndarray  # (S,) log1p(Delta_t)
    has_target: np.ndarray = field(init=False)  # (S,) the session has a played track with a vector

    def __post_init__(self) -> None:
        self.has_target = np.linalg.norm(self.emb["played"], axis=1) > 0.5

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def context_onehot(dow: np.ndarray, hour: np.ndarray, device: np.ndarray, n_devices: int) -> np.ndarray:
    """``c_t`` = one-hot(day of week, 7) + one-hot(hour, 24) + one-hot(device, n_devices)."""
    n = len(dow)
    out = np.zeros((n, 7 + 24 + n_devices), dtype=np.float32)
    r = np.arange(n)
    out[r, np.asarray(dow, dtype=np.int64)] = 1.0
    out[r, 7 + np.asarray(hour, dtype=np.int64)] = 1.0
    out[r, 31 + np.asarray(device, dtype=np.int64)] = 1.0
    return out


def session_inputs(data: SessionData, vectors: np.ndarray) -> SessionInputs:
    """Embed the sessions and encode their features (see the module docstring)."""
    if vectors.ndim != 2 or vectors.shape[0] != data.n_tracks_vocab + 1:
        raise DataError(
            f"Track vectors must have shape ({data.n_tracks_vocab + 1}, d) for this session table, got {vectors.shape}."
        )
    src = np.zeros((len(data), len(data.source_vocab)), dtype=np.float32)
    src[np.arange(len(data)), data.source] = 1.0
    return SessionInputs(
        data=data,
        vectors=vectors.astype(np.float32),
        emb=session_embeddings(data, vectors),
        context=context_onehot(data.dow, data.hour, data.device, len(data.device_vocab)),
        source=src,
        n_log=np.log1p(data.n_tracks).astype(np.float32),
        delta_log=np.log1p(data.delta).astype(np.float32),
    )


def pad_users(inputs: SessionInputs, users: np.ndarray, max_len: int = 400) -> dict[str, Tensor]:
    """Padded (B, T, ...) tensors of the given users' last ``max_len`` sessions, plus ``rows`` (B, T; -1 = pad)."""
    d = inputs.data
    users = np.asarray(users, dtype=np.int64)
    lo, hi = d.offsets[users - 1], d.offsets[users]
    lo = np.maximum(lo, hi - max_len)
    lens = hi - lo
    t = int(lens.max()) if len(lens) else 0
    rows = np.full((len(users), t), -1, dtype=np.int64)
    for b, (a, z) in enumerate(zip(lo, hi, strict=True)):
        rows[b, : z - a] = np.arange(a, z)
    mask = rows >= 0
    safe = np.where(mask, rows, 0)

    def take(x: np.ndarray) -> Tensor:
        v = x[safe]
        v[~mask] = 0
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))

    out = {
        "all": take(inputs.emb["all"]),
        "played": take(inputs.emb["played"]),
        "skipped": take(inputs.emb["skipped"]),
        "context": take(inputs.context),
        "source": take(inputs.source),
        "n_log": take(inputs.n_log),
        "delta_log": take(inputs.delta_log),
        "mask": torch.from_numpy(mask),
        "rows": torch.from_numpy(rows),
    }
    if d.user_features is not None:
        out["user_features"] = torch.from_numpy(d.user_features[users].astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------
# the model (A.5, A.6)
# --------------------------------------------------------------------------------------------


@dataclass
class CoSeRNNConfig:
    """Hyper-parameters; defaults are the paper's (A.5 / A.6) and the spec's [AMBIG] choices."""

    hidden: int = 400  # LSTM cell size d
    width: int = 200  # FC layer width
    dim: int = EMBED_DIM
    session_rep: tuple[str, ...] = ("played", "skipped")
    share_pathway_weights: Literal["none", "mlp", "all"] = "mlp"
    longterm_source: Literal["all", "played"] = "all"
    use_longterm: bool = True
    use_last_embeddings: bool = True
    use_context: bool = True
    use_n_tracks: bool = True
    use_delta: bool = True
    use_last_source: bool = True
    use_current_source: bool = False  # the hypothetical z_t of Table 3 (not at session start)
    dropout: float = 0.0
    max_len: int = 400  # sessions per user sequence (the code's cap)
    # training (A.6; the loop is segue.training.cosernn)
    lr: float = 0.0005
    batch_size: int = 256  # users per batch
    epochs: int = 50
    patience: int = 10
    clip: float = 5.0
    seed: int = 0
    max_seconds: float | None = None


def masked_cosine_loss(u: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """``sum w (1 - u . s+) / sum w`` over (B, T) steps (``u`` and ``target`` unit norm; A.7)."""
    w = weight.to(u.dtype)
    return ((1.0 - (u * target).sum(-1)) * w).sum() / w.sum().clamp(min=1.0)


class CoSeRNN(nn.Module):
    """The CoSeRNN network (see the module docstring); inputs from :func:`pad_users`.

    Trained by the one trainer on ``sessions`` batches (segue.training.cosernn builds them).
    """

    name: ClassVar[str] = "cosernn"
    batch_kind: ClassVar[str] = "sessions"

    def __init__(self, n_context: int, n_source: int, n_user_features: int = 0, config: CoSeRNNConfig | None = None):
        super().__init__()
        c = config or CoSeRNNConfig()
        reps = tuple(c.session_rep)
        if not reps or any(r not in REPS for r in reps) or len(set(reps)) != len(reps):
            raise ConfigError(f"session_rep must be a non-empty subset of {REPS}, got {c.session_rep!r}.")
        if c.share_pathway_weights not in ("none", "mlp", "all"):
            raise ConfigError(f"share_pathway_weights must be none, mlp or all, got {c.share_pathway_weights!r}.")
        if c.longterm_source not in ("all", "played"):
            raise ConfigError(f"longterm_source must be all or played, got {c.longterm_source!r}.")
        if c.hidden < 1 or c.width < 1 or c.dim < 1 or not 0 <= c.dropout < 1:
            raise ConfigError(f"hidden, width and dim must be >= 1 and dropout in [0, 1), got {c}.")
        self.config = c
        self.reps = reps
        self.n_context, self.n_source, self.n_user_features = n_context, n_source, n_user_features
        f = (
            (n_context if c.use_context else 0)
            + (c.dim if c.use_last_embeddings else 0)
            + (1 if c.use_n_tracks else 0)
            + (n_source if c.use_last_source else 0)
            + (n_source if c.use_current_source else 0)
            + (1 if c.use_delta else 0)
        )
        if f == 0:
            raise ConfigError("CoSeRNN needs at least one input feature.")
        self.n_features = f
        n_mlp = 1 if c.share_pathway_weights in ("mlp", "all") else len(reps)
        n_lstm = 1 if c.share_pathway_weights == "all" else len(reps)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(f, c.width), nn.ReLU(), nn.Linear(c.width, c.width), nn.ReLU())
            for _ in range(n_mlp)
        )
        self.lstms = nn.ModuleList(nn.LSTM(c.width, c.hidden, num_layers=1, batch_first=True) for _ in range(n_lstm))
        self.out_mlp = nn.Sequential(
            nn.Linear(c.hidden * len(reps), c.width), nn.ReLU(), nn.Linear(c.width, c.width), nn.ReLU()
        )
        self.drop = nn.Dropout(c.dropout)
        self.u_hat = nn.Linear(c.width, c.dim)
        self.attention = nn.Linear(c.width, 2)
        if n_user_features:
            self.init_net = nn.Sequential(nn.Linear(n_user_features, c.hidden), nn.ReLU())
            self.init_h = nn.Linear(c.hidden, c.hidden)
            self.init_c = nn.Linear(c.hidden, c.hidden)
        else:
            self.h0 = nn.Parameter(torch.zeros(len(reps), c.hidden))
            self.c0 = nn.Parameter(torch.zeros(len(reps), c.hidden))

    # -- pieces -------------------------------------------------------------------------------
    def _mlp(self, i: int) -> nn.Module:
        return self.mlps[0 if len(self.mlps) == 1 else i]

    def _lstm(self, i: int) -> nn.LSTM:
        return self.lstms[0 if len(self.lstms) == 1 else i]

    def _features(self, batch: dict[str, Tensor], rep: str, prev: dict[str, Tensor]) -> Tensor:
        c = self.config
        parts = []
        if c.use_context:
            parts.append(batch["context"])
        if c.use_last_embeddings:
            parts.append(prev[rep])
        if c.use_n_tracks:
            parts.append(prev["n_log"].unsqueeze(-1))
        if c.use_last_source:
            parts.append(prev["source"])
        if c.use_current_source:
            parts.append(batch["source"])
        if c.use_delta:
            parts.append(batch["delta_log"].unsqueeze(-1))
        return torch.cat(parts, dim=-1)

    def initial_state(self, batch_size: int, user_features: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """(h0, c0) per pathway, each (1, B, d)."""
        if self.n_user_features:
            if user_features is None:
                raise DataError("This CoSeRNN was built with user features; pass them.")
            z = self.init_net(user_features)
            h, cc = self.init_h(z), self.init_c(z)
            return [(h.unsqueeze(0), cc.unsqueeze(0)) for _ in self.reps]
        return [
            (
                self.h0[i].expand(batch_size, -1).unsqueeze(0).contiguous(),
                self.c0[i].expand(batch_size, -1).unsqueeze(0).contiguous(),
            )
            for i in range(len(self.reps))
        ]

    @staticmethod
    def shift(x: Tensor) -> Tensor:
        """The previous step's value at every step (zeros at step 0): (B, T, ...) -> (B, T, ...)."""
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)

    def longterm(self, sessions: Tensor, mask: Tensor) -> Tensor:
        """Eq. (1): ``u_bar_t`` = normalised ``sum_{t' < t} t' s_{t'}`` per step (0 at t = 1), (B, T, d)."""
        t = torch.arange(1, sessions.shape[1] + 1, dtype=sessions.dtype, device=sessions.device)
        w = (t[None, :] * mask.to(sessions.dtype)).unsqueeze(-1)
        return F.normalize(self.shift(torch.cumsum(w * sessions, dim=1)), dim=-1, eps=1e-12)

    def forward(self, batch: dict[str, Tensor], return_state: bool = False) -> Any:
        """Unit-norm preference vectors ``u_t`` (B, T, d) for every session step (padded steps are garbage)."""
        prev = {k: self.shift(batch[k]) for k in ("all", "played", "skipped", "n_log", "source")}
        b = batch["context"].shape[0]
        states = self.initial_state(b, batch.get("user_features"))
        outs, finals = [], []
        for i, rep in enumerate(self.reps):
            x = self._mlp(i)(self._features(batch, rep, prev))
            o, st = self._lstm(i)(x, states[i])
            outs.append(o)
            finals.append(st)
        o = self.drop(self.out_mlp(torch.cat(outs, dim=-1)))
        u_hat = self.u_hat(o)
        if self.config.use_longterm:
            src = batch["all"] if self.config.longterm_source == "all" else batch["played"]
            u_bar = self.longterm(src, batch["mask"])
            beta = torch.softmax(self.attention(o), dim=-1)
            u = beta[..., :1] * u_hat + beta[..., 1:] * u_bar
        else:
            u = u_hat
        u = F.normalize(u, dim=-1, eps=1e-12)
        return (u, finals) if return_state else u

    def loss(self, batch: Any, spec: Any = None) -> Tensor:
        """A.7: the masked cosine loss of a ``sessions`` batch (:class:`~segue.data.batch.FieldBatch` of
        :func:`pad_users` tensors plus ``weight``, the steps whose target is a training session)."""
        return masked_cosine_loss(self(batch), batch["played"], batch["weight"])

    # -- one step (serving) ----------------------------------------------------------------------
    @torch.no_grad()
    def step(
        self,
        state: list[tuple[Tensor, Tensor]],
        prev: dict[str, Tensor],
        current: dict[str, Tensor],
        longterm_sum: Tensor,
    ) -> Tensor:
        """``u`` (B, d) of a new session from the cached LSTM ``state`` after the user's history.

        ``prev``: the last session's ``all`` / ``played`` / ``skipped`` (B, d), ``n_log`` (B,),
        ``source`` (B, Z); ``current``: ``context`` (B, C), ``delta_log`` (B,) (and ``source``
        with ``use_current_source``); ``longterm_sum``: ``sum_{t'} t' s_{t'}`` over the history.
        """
        outs = []
        for i, rep in enumerate(self.reps):
            x = self._mlp(i)(self._features(current, rep, prev))
            outs.append(self._cell(self._lstm(i), x, state[i])[0])
        o = self.out_mlp(torch.cat(outs, dim=-1))
        u = self.u_hat(o)
        if self.config.use_longterm:
            beta = torch.softmax(self.attention(o), dim=-1)
            u = beta[:, :1] * u + beta[:, 1:] * F.normalize(longterm_sum, dim=-1, eps=1e-12)
        return F.normalize(u, dim=-1, eps=1e-12)

    @staticmethod
    def _cell(lstm: nn.LSTM, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step of a one-layer ``nn.LSTM`` written out (PyTorch's gate order i, f, g, o).

        The same arithmetic as ``lstm(x[:, None], state)``, without the per-call overhead of the
        sequence kernel (about 0.5 ms on one CPU thread, most of a serving query).
        """
        h, c = state[0][0], state[1][0]
        gates = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(h, lstm.weight_hh_l0, lstm.bias_hh_l0)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    # -- the session-model interface ---------------------------------------------------------------
    @torch.no_grad()
    def predict(self, inputs: SessionInputs, users: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
        """``u_t`` for every session of ``users`` (default all), row-aligned with the session table; other rows 0."""
        was = self.training
        self.eval()
        d = inputs.data
        users = np.arange(1, d.n_users + 1) if users is None else np.asarray(users)
        out = np.zeros((len(d), self.config.dim), dtype=np.float32)
        try:
            for s in range(0, len(users), batch_size):
                batch = pad_users(inputs, users[s : s + batch_size], self.config.max_len)
                u = self(batch).numpy()
                m = batch["mask"].numpy()
                out[batch["rows"].numpy()[m]] = u[m]
        finally:
            self.train(was)
        return out


def build_cosernn(inputs: SessionInputs, config: CoSeRNNConfig | None = None) -> CoSeRNN:
    """A CoSeRNN sized for these inputs (context, source and user-feature widths)."""
    feats = inputs.data.user_features
    return CoSeRNN(
        inputs.context.shape[1],
        inputs.source.shape[1],
        0 if feats is None else feats.shape[1],
        config or CoSeRNNConfig(),
    )


# --------------------------------------------------------------------------------------------
# baselines and oracles (A.8)
# --------------------------------------------------------------------------------------------


def track_popularity(data: SessionData, rows: np.ndarray) -> np.ndarray:
    """Play counts (n_tracks + 1,) of the kept tracks of the given session rows (the training period)."""
    t = data.tracks[rows]
    return np.bincount(t[t > 0], minlength=data.n_tracks_vocab + 1).astype(np.float64)


def baseline_predictions(
    inputs: SessionInputs,
    kind: str,
    popularity: np.ndarray | None = None,
    seed: int = 0,
    same_context_device: bool = True,
    train_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Predictions (S, d) of a heuristic baseline or oracle for every session (A.8 [AMBIG] defaults).

    History baselines read only sessions ``< t`` of the same user and use ``s+`` (sessions
    without a played track are skipped as history); a session without usable history gets 0.
    """
    known = BASELINES + ORACLES + REFERENCES
    if kind not in known:
        raise ConfigError(f"Unknown baseline {kind!r}; expected one of {', '.join(known)}.")
    d = inputs.data
    s_pos = inputs.emb["played"]
    out = np.zeros_like(s_pos)
    if kind == "random":  # a reference point, not a baseline of the paper: a seeded random direction
        return _normalize(np.random.default_rng(seed).standard_normal(s_pos.shape).astype(np.float32))
    if kind == "global-mean":
        if train_rows is None:
            raise ConfigError("The global-mean reference needs the training session rows.")
        return np.tile(_normalize(s_pos[train_rows].sum(0)), (len(d), 1))
    if kind == "oracle-full":
        return s_pos.copy()
    if kind == "oracle-half":
        rng = np.random.default_rng(seed)
        present = d.tracks > 0
        mask = np.zeros_like(present)
        for i in range(len(d)):
            idx = np.flatnonzero(present[i])
            if len(idx):
                mask[i, rng.choice(idx, math.ceil(len(idx) / 2), replace=False)] = True
        return mean_embedding(d.tracks, mask, inputs.vectors)
    if kind == "popularity":
        if popularity is None:
            raise ConfigError("The popularity baseline needs track play counts (track_popularity).")
        t = d.tracks
        sess_pop = np.where(t > 0, popularity[t], 0.0).sum(1) / np.maximum((t > 0).sum(1), 1)
    ctx = d.context_key(use_device=same_context_device)
    has = inputs.has_target
    for u in range(1, d.n_users + 1):
        lo, hi = d.offsets[u - 1], d.offsets[u]
        acc = np.zeros(s_pos.shape[1])
        last_row = -1
        best_row, best_pop = -1, -np.inf
        last_ctx: dict[int, int] = {}
        acc_ctx: dict[int, np.ndarray] = {}
        for i in range(lo, hi):
            k = int(ctx[i])
            if kind == "last-any" and last_row >= 0:
                out[i] = s_pos[last_row]
            elif kind == "last-same" and last_row >= 0:
                out[i] = s_pos[last_ctx.get(k, last_row)]
            elif kind == "avg-any":
                out[i] = acc
            elif kind == "avg-same":
                out[i] = acc_ctx.get(k, acc)
            elif kind == "popularity" and best_row >= 0:
                out[i] = s_pos[best_row]
            if has[i]:
                w = float(i - lo + 1)  # t' of Eq. (1)
                last_row = i
                last_ctx[k] = i
                acc = acc + w * s_pos[i]
                acc_ctx[k] = acc_ctx.get(k, np.zeros_like(acc)) + w * s_pos[i]
                if kind == "popularity" and sess_pop[i] > best_pop:
                    best_row, best_pop = i, float(sess_pop[i])
    return _normalize(out)


def context_groups(data: SessionData) -> dict[str, np.ndarray]:
    """Named per-session labels for the per-context breakdown: time-of-day bucket and device."""
    from segue.data.sessions import TOD_BUCKETS

    return {
        "time of day": np.asarray(TOD_BUCKETS, dtype=object)[tod_bucket(data.hour)],
        "device": np.asarray(data.device_vocab, dtype=object)[data.device],
    }


__all__ = [
    "BASELINES",
    "ORACLES",
    "REFERENCES",
    "CoSeRNN",
    "CoSeRNNConfig",
    "SessionInputs",
    "Word2VecConfig",
    "baseline_predictions",
    "build_cosernn",
    "context_groups",
    "context_onehot",
    "mean_embedding",
    "pad_users",
    "session_embeddings",
    "session_inputs",
    "track_popularity",
    "train_track_embeddings",
]
