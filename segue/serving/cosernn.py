"""Serving CoSeRNN: the preference vector at session start, top-k tracks through the vector index.

:class:`SessionService` holds a trained :class:`~segue.models.cosernn.CoSeRNN`, the session
inputs it was trained on (the users' histories) and a
:class:`~segue.serving.index.VectorIndex` over the frozen unit-norm track vectors (``dot`` =
cosine; tracks without a vector are left out of the index). At start-up it runs every user's
history through the network once and caches, per user, the LSTM states after the last known
session, that session's features and the running long-term sum of Eq. (1). A query for a user
and the current context (local hour, day of week, device, and the time now, for ``Delta_t``)
is then one LSTM step (:meth:`CoSeRNN.step`) and one index search: this is the paper's "computed
once at session start" query (A.12).

:func:`create_session_app` is a FastAPI app with ``POST /recommend``
(``{"user": ..., "context": {"hour": 8, "dow": 0, "device": "mobile", "time": 1556000000},
"k": 10}``) and ``GET /health``, with the error conventions of :mod:`segue.serving.app` (404
unknown user, 422 malformed). It is a separate app, not a route of the export-directory app,
because a CoSeRNN is not an export of the generic run format (its query needs the user's
session history and context, not an item list); :func:`session_router` returns the same
routes as an ``APIRouter`` under a prefix for mounting into another app.
"""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segue.data.sessions import SessionData
from segue.errors import DataError, UnknownIdError
from segue.models.cosernn import CoSeRNN, SessionInputs, context_onehot, pad_users
from segue.serving.index import VectorIndex


@dataclass
class SessionRecommendation:
    """Top-k raw track ids and cosine scores, the query vector and the seconds each part took."""

    tracks: list[Any]
    scores: list[float]
    query: np.ndarray
    model_seconds: float
    search_seconds: float


class SessionService:
    """A trained CoSeRNN answering "what to play at the start of this user's next session"."""

    def __init__(
        self,
        model: CoSeRNN,
        inputs: SessionInputs,
        index: VectorIndex | None = None,
        kind: str = "hnsw",
        exclude_recent: int = 0,
    ) -> None:
        self.model = model.eval()
        self.inputs = inputs
        self.data: SessionData = inputs.data
        vec = inputs.vectors[1:]
        self.has_vector = np.linalg.norm(vec, axis=1) > 0.5
        self.index_ids = np.flatnonzero(self.has_vector) + 1  # index row j -> internal track id
        if index is None:
            index = VectorIndex.build(vec[self.has_vector], "dot", kind, dot_strategy="ip")  # type: ignore[arg-type]
        self.index = index
        self.exclude_recent = exclude_recent
        self._cache()

    @torch.no_grad()
    def _cache(self) -> None:
        """Per-user LSTM states after the whole known history, the last session's features, Eq. (1) sums."""
        d, m = self.data, self.model
        n = d.n_users
        reps = len(m.reps)
        hid = m.config.hidden
        self.h = torch.zeros(reps, n + 1, hid)
        self.c = torch.zeros(reps, n + 1, hid)
        lengths = d.sessions_per_user
        for length in np.unique(lengths):
            users = np.flatnonzero(lengths == length) + 1
            for s in range(0, len(users), 256):
                part = users[s : s + 256]
                batch = pad_users(self.inputs, part, m.config.max_len)
                _, finals = m(batch, return_state=True)
                for i, (h, c) in enumerate(finals):
                    self.h[i, part] = h[0]
                    self.c[i, part] = c[0]
        last = d.offsets[1:] - 1
        self.last_row = last
        src = self.inputs.emb["all"] if m.config.longterm_source == "all" else self.inputs.emb["played"]
        # Eq. (1) weights t' = the position inside the modelled window (the last max_len sessions)
        w = (d.position + 1 - np.maximum(lengths[d.user - 1] - m.config.max_len, 0)).astype(np.float32)
        sums = np.zeros((n + 1, src.shape[1]), dtype=np.float32)
        np.add.at(sums, d.user, src * np.maximum(w, 0.0)[:, None])
        self.longterm = torch.from_numpy(sums)

    def user_id(self, raw: Any) -> int:
        return int(self.data.user_map.to_internal(raw)[0])

    def device_code(self, device: str | None) -> int:
        if device is None:
            return 0
        vocab = self.data.device_vocab
        if device not in vocab:
            raise DataError(f"Unknown device {device!r}; known devices: {', '.join(vocab[1:]) or 'none'}.")
        return vocab.index(device)

    @torch.no_grad()
    def query(self, user: Any, hour: int, dow: int, device: str | None = None, now: float | None = None) -> np.ndarray:
        """The unit-norm preference vector (d,) of the user's next session in this context."""
        if not (0 <= int(hour) <= 23 and 0 <= int(dow) <= 6):
            raise DataError(f"hour must be 0..23 and dow 0..6, got {hour} and {dow}.")
        u = self.user_id(user)
        d, inp = self.data, self.inputs
        row = int(self.last_row[u - 1])
        now = float(d.end[row]) if now is None else float(now)
        if now < d.start[row]:
            raise DataError("The session start time lies before the user's last known session.")
        delta = np.log1p(max(now - float(d.end[row]), 0.0))
        ctx = context_onehot(
            np.array([dow]), np.array([hour]), np.array([self.device_code(device)]), len(d.device_vocab)
        )
        prev = {
            "all": torch.from_numpy(inp.emb["all"][row : row + 1]),
            "played": torch.from_numpy(inp.emb["played"][row : row + 1]),
            "skipped": torch.from_numpy(inp.emb["skipped"][row : row + 1]),
            "n_log": torch.from_numpy(inp.n_log[row : row + 1]),
            "source": torch.from_numpy(inp.source[row : row + 1]),
        }
        current = {"context": torch.from_numpy(ctx), "delta_log": torch.tensor([delta], dtype=torch.float32)}
        if self.model.config.use_current_source:
            current["source"] = torch.zeros(1, inp.source.shape[1])
            current["source"][0, 0] = 1.0
        state = [
            (self.h[i, u : u + 1].unsqueeze(0), self.c[i, u : u + 1].unsqueeze(0)) for i in range(len(self.model.reps))
        ]
        return self.model.step(state, prev, current, self.longterm[u : u + 1])[0].numpy()

    def recommend(
        self, user: Any, hour: int, dow: int, device: str | None = None, now: float | None = None, k: int = 10
    ) -> SessionRecommendation:
        """Top-k tracks for the start of the user's next session (optionally without the last sessions' tracks)."""
        t0 = time.perf_counter()
        q = self.query(user, hour, dow, device, now)
        t1 = time.perf_counter()
        exclude = None
        if self.exclude_recent:
            u = self.user_id(user)
            lo = max(self.data.offsets[u - 1], self.data.offsets[u] - self.exclude_recent)
            seen = np.unique(self.data.tracks[lo : self.data.offsets[u]])
            pos = np.searchsorted(self.index_ids, seen)
            ok = (pos < len(self.index_ids)) & (self.index_ids[np.minimum(pos, len(self.index_ids) - 1)] == seen)
            exclude = [np.sort(pos[ok] + 1)]
        res = self.index.search(q[None, :], min(k, self.index.n), exclude)
        t2 = time.perf_counter()
        ids = res.ids[0]
        ok = ids > 0
        tracks = self.data.track_map.to_raw(self.index_ids[ids[ok] - 1]).tolist()
        return SessionRecommendation(tracks, res.scores[0][ok].astype(float).tolist(), q, t1 - t0, t2 - t1)


def _routes(service: SessionService, router: Any) -> None:
    from pydantic import BaseModel, ConfigDict, Field

    from segue.serving.app import MAX_ID_LENGTH, MAX_K, _json

    k_max = max(1, min(MAX_K, service.index.n))

    class SessionContext(BaseModel):
        model_config = ConfigDict(extra="forbid")
        hour: int = Field(ge=0, le=23, description="Local hour of the session start.")
        dow: int = Field(ge=0, le=6, description="Day of week, 0 = Monday.")
        device: str | None = Field(None, max_length=64, description="Device, one of the training vocabulary.")
        time: float | None = Field(
            None, description="Session start, Unix seconds (for the time since the last session)."
        )

    class SessionRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user: str | int = Field(description="Raw user id.")
        context: SessionContext
        k: int = Field(10, ge=1, le=k_max)

    @router.post("/recommend", summary="Top-k tracks at the start of a user's next session")
    async def recommend(body: SessionRequest) -> Any:
        if len(str(body.user)) > MAX_ID_LENGTH:
            raise DataError(f"Raw ids must be at most {MAX_ID_LENGTH} characters long.")
        c = body.context
        rec = service.recommend(body.user, c.hour, c.dow, c.device, c.time, body.k)
        return _json(
            {
                "user": str(body.user),
                "k": body.k,
                "items": [{"item": str(t), "score": s} for t, s in zip(rec.tracks, rec.scores, strict=True)],
                "query": "cosernn-session-start",
                "retrieval": service.index.kind,
            }
        )

    @router.get("/health", summary="Model and index summary")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": "cosernn",
            "users": service.data.n_users,
            "tracks_indexed": service.index.n,
            "index": service.index.kind,
            "devices": list(service.data.device_vocab[1:]),
        }


def session_router(service: SessionService, prefix: str = "/session") -> Any:
    """The routes as a FastAPI ``APIRouter`` (mount it with ``app.include_router``)."""
    from fastapi import APIRouter

    router = APIRouter(prefix=prefix)
    _routes(service, router)
    return router


def create_session_app(service: SessionService) -> Any:
    """A FastAPI app serving ``service``: ``POST /recommend`` and ``GET /health``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from segue.errors import SegueError
    from segue.serving.app import _error, _validation_sentence

    app = FastAPI(title="segue CoSeRNN session recommendations")

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_sentence(exc))

    @app.exception_handler(SegueError)
    async def _on_segue(request: Request, exc: SegueError) -> JSONResponse:
        return _error(404 if isinstance(exc, UnknownIdError) else 422, str(exc))

    _routes(service, app.router)
    return app


__all__ = ["SessionRecommendation", "SessionService", "create_session_app", "session_router"]
