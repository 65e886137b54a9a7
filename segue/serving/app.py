"""The HTTP API (FastAPI) over an export directory.

Endpoints (raw ids in and out; item ids are returned as strings, the form in which the id
maps compare them):

* ``GET /health``: the model, dataset, retrieval mode and sizes.
* ``GET /recommend?user=RAW_ID&k=10&exclude_seen=true``: top-k for a known user.
* ``POST /recommend``: top-k for a playlist / session / basket, ``{"items": [...], "k": 10}``
  (see :meth:`segue.serving.export.ServingModel.recommend_items` for the behaviour per model).
* ``GET /similar?item=RAW_ID&k=10``: the nearest items of an item.
* ``GET /docs`` (OpenAPI page) and ``GET /openapi.json``.

Every client error is a 4xx with a one-sentence JSON body ``{"error": "..."}``: 404 for an
unknown user or item id (and an unknown path), 400 for a request this model cannot answer
(``/similar`` on a model without vectors, item lists for a model without vectors or
context), 405 for a wrong method and 422 for anything malformed (bad ``k``, bad JSON, wrong
types, too many items). A 500 means a bug; its body says so without details.

The handlers are ``async`` and compute on the event loop: a vector export answers in well
under a millisecond, so thread hand-offs would cost more than they save.
"""

import json
import logging
import math
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from segue.errors import SegueError, UnknownIdError
from segue.serving.export import Recommendations, ServingModel, UnsupportedQueryError

log = logging.getLogger("segue.serving")

#: Largest k an HTTP request may ask for (also capped by the catalogue size).
MAX_K = 1000
#: Largest number of items in a POST /recommend body.
MAX_ITEMS = 10_000
#: Longest raw id accepted in a request.
MAX_ID_LENGTH = 256
_FLOAT_MAX = 3.4028234663852886e38


class ErrorBody(BaseModel):
    """A client or server error: one sentence."""

    error: str = Field(examples=["Unknown user id '99999': it does not occur in the training data."])


class ScoredItem(BaseModel):
    item: str = Field(description="Raw item id.")
    score: float = Field(description="The model's score (higher is better).")


class RecommendResponse(BaseModel):
    """Top-k items, best first."""

    items: list[ScoredItem]
    k: int
    user: str | None = Field(None, description="The raw user id of the request, if any.")
    query: str = Field(
        description="How the query was formed: user-vector, user-history, user (exact scoring by the model), "
        "mean-of-items (plain vector models given a list of items: the mean of their vectors), model-context."
    )
    retrieval: str = Field(description="How it was answered: ann, exact, ann+rescore or model.")
    ignored: list[str] = Field(default_factory=list, description="Request items that were unknown and skipped.")


class SimilarResponse(BaseModel):
    """The nearest items of an item, best first."""

    item: str
    k: int
    items: list[ScoredItem]
    query: str
    retrieval: str


class HealthResponse(BaseModel):
    status: str
    model: str
    dataset: str | None
    retrieval: str
    measure: str | None
    dim: int | None
    n_users: int
    n_items: int
    index: str | None
    needs: list[str]


RawId = str | int
_UNION_TAGS = frozenset({"str", "int"})


def _items_request(k_max: int, max_items: int) -> type[BaseModel]:
    """The POST /recommend body, with the bounds of this model in its schema."""

    class ItemsRequest(BaseModel):
        """A playlist, session or basket given as raw item ids (oldest first)."""

        model_config = ConfigDict(extra="forbid")

        items: list[RawId] = Field(
            min_length=1,
            max_length=max_items,
            description=f"Raw item ids, oldest first (1..{max_items}).",
            examples=[["1", "2"]],
        )
        k: int = Field(10, ge=1, le=k_max, description=f"Number of items to return, 1..{k_max}.")
        user: RawId | None = Field(None, description="Optional raw user id (context models; seen-item exclusion).")
        exclude_items: bool = Field(True, description="Do not return the request's own items.")
        exclude_seen: bool = Field(True, description="With user: do not return what the user consumed in training.")
        ignore_unknown: bool = Field(False, description="Skip unknown item ids instead of answering 404.")

    return ItemsRequest


def _sentence(text: str) -> str:
    text = " ".join(str(text).split()).rstrip(".")
    return (text[:1].upper() + text[1:] + ".") if text else "Bad request."


def _validation_sentence(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "The request is malformed."
    e = errors[0]
    loc = [str(p) for p in e.get("loc", ())]
    kind = e.get("type", "")
    where = loc[0] if loc else "request"
    union = bool(loc) and loc[-1] in _UNION_TAGS
    parts = loc[1:-1] if union else loc[1:]
    name = "".join(f"[{p}]" if p.isdigit() else (f".{p}" if i else p) for i, p in enumerate(parts))
    if kind == "json_invalid":
        return "The request body is not valid JSON."
    if where == "body" and not name:
        return "The request body must be a JSON object with an 'items' list."
    what = f"field '{name}' of the request body" if where == "body" else f"{where} parameter '{name}'"
    if kind == "missing":
        return f"Missing {what}."
    if kind == "extra_forbidden":
        return f"Unknown {what}."
    if union:
        return f"Invalid {what}: raw ids must be strings or integers."
    msg = str(e.get("msg", "is invalid")).rstrip(".")
    return f"Invalid {what}: {msg[:1].lower() + msg[1:]}."


def _json(payload: dict[str, Any]) -> Response:
    """A 200 JSON response, serialised directly (the payload already has the documented shape)."""
    return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": _sentence(message)}, status_code=status)


def _score(x: float) -> float:
    return x if math.isfinite(x) else math.copysign(_FLOAT_MAX, x)


def _items(rec: Recommendations) -> list[dict[str, Any]]:
    return [{"item": str(i), "score": _score(s)} for i, s in zip(rec.items, rec.scores, strict=True)]


def create_app(model: ServingModel, *, max_k: int = MAX_K, max_items: int = MAX_ITEMS) -> FastAPI:
    """The FastAPI application answering from ``model``."""
    k_max = max(1, min(max_k, model.n_items))
    meta = model.metadata
    app = FastAPI(
        title="segue recommendations",
        version=str(meta.get("versions", {}).get("segue", "")),
        description=f"Model {meta['model']!r} trained on {meta.get('dataset')!r}. {meta.get('retrieval_note', '')}",
    )
    app.state.model = model
    errors = {
        400: {"model": ErrorBody, "description": "The model cannot answer this kind of request."},
        404: {"model": ErrorBody, "description": "Unknown user or item id."},
        422: {"model": ErrorBody, "description": "Malformed request (parameters, body, k out of range)."},
    }

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_sentence(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "Bad request"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No such endpoint {request.url.path}; see /docs"
        elif exc.status_code == 405:
            detail = f"Method {request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": _sentence(detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(SegueError)
    async def _on_segue(request: Request, exc: SegueError) -> JSONResponse:
        if isinstance(exc, UnknownIdError):
            return _error(404, str(exc))
        if isinstance(exc, UnsupportedQueryError):
            return _error(400, str(exc))
        return _error(422, str(exc))

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "Internal server error")

    ItemsRequest = _items_request(k_max, max_items)
    KParam = Annotated[int, Query(ge=1, le=k_max, description=f"Number of items, 1..{k_max}.")]
    IdParam = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)]

    @app.get("/health", response_model=HealthResponse, summary="Model and index summary")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **model.describe()}

    @app.get("/recommend", response_model=RecommendResponse, responses=errors, summary="Top-k items for a user")
    async def recommend_user(
        user: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, description="Raw user id.")],
        k: KParam = 10,
        exclude_seen: Annotated[bool, Query(description="Skip items the user consumed in training.")] = True,
    ) -> Response:
        rec = model.recommend(user, k, exclude_seen=exclude_seen)
        return _json(
            {"items": _items(rec), "k": k, "user": user, "query": rec.query, "retrieval": rec.retrieval, "ignored": []}
        )

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses=errors,
        summary="Top-k items for a playlist, session or basket",
    )
    async def recommend_items(body: Annotated[ItemsRequest, Body()]) -> Any:  # type: ignore[valid-type]
        if any(len(str(i)) > MAX_ID_LENGTH for i in [*body.items, body.user or ""]):
            return _error(422, f"Raw ids must be at most {MAX_ID_LENGTH} characters long")
        rec = model.recommend_items(
            body.items,
            body.k,
            user=body.user,
            exclude_items=body.exclude_items,
            exclude_seen=body.exclude_seen,
            ignore_unknown=body.ignore_unknown,
        )
        return _json(
            {
                "items": _items(rec),
                "k": body.k,
                "user": None if body.user is None else str(body.user),
                "query": rec.query,
                "retrieval": rec.retrieval,
                "ignored": [str(i) for i in rec.ignored],
            }
        )

    @app.get("/similar", response_model=SimilarResponse, responses=errors, summary="Nearest items of an item")
    async def similar(item: IdParam, k: KParam = 10) -> Response:
        rec = model.similar(item, k)
        return _json({"item": item, "k": k, "items": _items(rec), "query": rec.query, "retrieval": rec.retrieval})

    return app


def serve(
    model: ServingModel | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    exact: bool = False,
    ef_search: int | None = None,
    access_log: bool = False,
    log_level: str = "warning",
) -> None:
    """Serve a loaded model (or load an export directory) with uvicorn: one process, one event loop.

    uvicorn uses httptools and uvloop when they are installed (``pip install 'uvicorn[standard]'``),
    which roughly halves the per-request cost of the HTTP layer (see docs/serving.md).
    """
    import uvicorn

    if not isinstance(model, ServingModel):
        model = ServingModel.load(model, exact=exact, ef_search=ef_search, threads=1)
    uvicorn.run(create_app(model), host=host, port=port, access_log=access_log, log_level=log_level)
