"""The HTTP API (FastAPI) over an export directory, and the uvicorn server that runs it.

Endpoints (raw ids in and out; item ids are returned as strings, the form in which the id
maps compare them):

* ``GET /health``: the model, dataset, retrieval mode and sizes (open even with an API key).
* ``GET /recommend?user=RAW_ID&k=10&exclude_seen=true``: top-k for a known user.
* ``POST /recommend``: top-k for a playlist / session / basket, ``{"items": [...], "k": 10}``
  (see :meth:`segue.serving.export.ServingModel.recommend_items` for the behaviour per model).
* ``GET /similar?item=RAW_ID&k=10``: the nearest items of an item.
* ``GET /openapi.json`` (the schema); ``GET /docs`` only with ``docs=True`` (the page loads
  Swagger UI from a CDN). Every GET endpoint answers HEAD as well.

Every client error is a 4xx with a one-sentence JSON body ``{"error": "..."}``: 400 for a Host
header outside the allow-list or a request this model cannot answer, 401 for a missing or wrong
API key, 403 for ``exclude_seen=false`` on a server without a key, 404 for an unknown item id or path (an unknown user gets the popular items, flagged
``query=popular-fallback``, unless ``unknown=error``),
405 for a wrong method (with an ``Allow`` header), 408 for a body that does not arrive in time,
413 for a body over the size limit and 422 for anything malformed (bad ``k``, bad JSON, loose
types such as ``k=true`` or ``"k": 10.0``, too many items, ``k`` × items over the bound). A 500
means a fault of the server or its model (a bug, NaN scores); its body is one sentence too.

Limits and safety (:class:`ServerSettings`): a Host-header allow-list (Starlette's
``TrustedHostMiddleware``; loopback names by default, which defeats DNS rebinding), an optional
API key (``X-API-Key``, compared in constant time), a body-size limit (Starlette's
``RequestBodyLimitMiddleware`` counts bytes as they stream; a too-large ``Content-Length`` is
refused before anything is read), a deadline for the request head and for the body (slow
clients are disconnected; :class:`GuardedH11Protocol` / :class:`GuardedHttpToolsProtocol`
and :class:`_BodyDeadline`), and bounds on items, ``k`` and ``k`` × items. No CORS headers.
The handlers are plain functions, which FastAPI runs in its threadpool, so one expensive request
does not stall the event loop (faiss and numpy release the GIL while they search).
"""

import asyncio
import hmac
import json
import logging
import math
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any, Literal

import anyio
from fastapi import Body, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segue.errors import ConfigError, DataError, SegueError, UnknownIdError
from segue.serving.export import Recommendations, ServingModel, UnsupportedQueryError

log = logging.getLogger("segue.serving")

#: Largest k an HTTP request may ask for (also capped by the catalogue size).
MAX_K = 1000
#: Largest number of items in a POST /recommend body.
MAX_ITEMS = 1000
#: Largest k × number of items of a POST /recommend body (the cost of context and re-scoring models grows with both).
MAX_WORK = 100_000
#: Longest raw id accepted in a request.
MAX_ID_LENGTH = 256
#: Largest request body in bytes (1,000 ids of 256 characters fit in about 260 KB).
MAX_BODY_BYTES = 1 << 20
#: Seconds a client has to send a request head (from connecting, or after the idle keep-alive time) and, separately,
#: its body.
REQUEST_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE = 5.0
#: Host names accepted by default: loopback.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
API_KEY_ENV = "SEGUE_API_KEY"
API_KEY_HEADER = "X-API-Key"
#: Paths that need no API key.
OPEN_PATHS = frozenset({"/health"})
_WORKER_ENV = "SEGUE_SERVE_WORKER"
_FLOAT_MAX = 3.4028234663852886e38
_HOST_OK = "segue.host_ok"


@dataclass(frozen=True)
class ServerSettings:
    """The limits and safety options of the HTTP API (see the module docstring and docs/serving.md)."""

    api_key: str | None = field(default=None, repr=False)  # never in logs
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    docs: bool = False
    max_k: int = MAX_K
    max_items: int = MAX_ITEMS
    max_work: int = MAX_WORK
    max_body_bytes: int = MAX_BODY_BYTES
    timeout: float = REQUEST_TIMEOUT
    keep_alive: float = KEEP_ALIVE

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError(f"The API key is empty; give a non-empty --api-key (or {API_KEY_ENV}) or none.")
        for name in ("max_k", "max_items", "max_work", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")
        for name in ("timeout", "keep_alive"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 3600 seconds, got {value!r}.")
        if not self.allowed_hosts:
            raise ConfigError("The Host allow-list is empty; give --allowed-host NAME (or '*' for any).")
        for h in self.allowed_hosts:
            if (
                not h
                or any(c.isspace() for c in h)
                or "*" in h[1:]
                or (h.startswith("*") and h != "*" and h[:2] != "*.")
            ):
                raise ConfigError(f"--allowed-host {h!r} is not a host name, an address, '*.domain' or '*'.")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServerSettings":
        d = json.loads(text)
        d["allowed_hosts"] = tuple(d["allowed_hosts"])
        return cls(**d)


def allowed_hosts_for(host: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The Host allow-list of a server bound to ``host``: loopback names, ``host`` itself (unless a wildcard
    address) and ``extra``."""
    names = [*LOOPBACK_HOSTS]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    names += list(extra)
    return tuple(dict.fromkeys(h.strip().lower() for h in names))


# -- request and response schemas --------------------------------------------------------------
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


RawId = StrictStr | StrictInt
_UNION_TAGS = frozenset({"str", "int"})
_DIGITS = re.compile(r"[1-9][0-9]{0,8}|0")


def _query_int(v: Any) -> Any:
    """Strict integers in a query string: digits only (no sign, spaces, decimals or words)."""
    if isinstance(v, str) and not _DIGITS.fullmatch(v):
        raise ValueError("must be a whole number written in digits, such as 10")
    return v


def _query_bool(v: Any) -> Any:
    """Strict booleans in a query string: true or false."""
    if isinstance(v, str) and v not in ("true", "false"):
        raise ValueError("must be true or false")
    return v


QueryInt = Annotated[int, BeforeValidator(_query_int)]
QueryBool = Annotated[bool, BeforeValidator(_query_bool)]


def _items_request(k_max: int, max_items: int) -> type[BaseModel]:
    """The POST /recommend body, with the bounds of this model in its schema; strict JSON types."""

    class ItemsRequest(BaseModel):
        """A playlist, session or basket given as raw item ids (oldest first)."""

        model_config = ConfigDict(extra="forbid", strict=True)

        items: list[RawId] = Field(
            min_length=1,
            max_length=max_items,
            description=f"Raw item ids (strings or integers), oldest first (1..{max_items}).",
            examples=[["1", "2"]],
        )
        k: int = Field(10, ge=1, le=k_max, description=f"Number of items to return, 1..{k_max}.")
        user: RawId | None = Field(None, description="Optional raw user id (context models; seen-item exclusion).")
        exclude_items: bool = Field(True, description="Do not return the request's own items.")
        exclude_seen: bool = Field(
            True,
            description="With user: do not return what the user consumed in training. "
            "false needs the API key (403 on a server without one).",
        )
        ignore_unknown: bool = Field(False, description="Skip unknown item ids instead of answering 404.")

    return ItemsRequest


# -- errors -----------------------------------------------------------------------------------
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
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    return f"Invalid {what}: {msg[:1].lower() + msg[1:]}."


def _json(payload: dict[str, Any]) -> Response:
    """A 200 JSON response, serialised directly (the payload already has the documented shape)."""
    return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": _sentence(message)}, status_code=status, headers=headers)


class ServerFault(SegueError):
    """The server or its model could not answer a valid request (HTTP 500)."""


def _score(x: float) -> float:
    if math.isnan(x):
        raise ServerFault("The model produced a NaN score")
    return x if math.isfinite(x) else math.copysign(_FLOAT_MAX, x)


def _items(rec: Recommendations) -> list[dict[str, Any]]:
    return [{"item": str(i), "score": _score(s)} for i, s in zip(rec.items, rec.scores, strict=True)]


# -- middleware -------------------------------------------------------------------------------
def _plain_json_error(status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> list[Message]:
    body = json.dumps({"error": _sentence(message)}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    return [
        {"type": "http.response.start", "status": status, "headers": head},
        {"type": "http.response.body", "body": body},
    ]


class HostAllowList(TrustedHostMiddleware):
    """Starlette's ``TrustedHostMiddleware`` (the Host header must name an allowed host), answering a refusal with
    the API's one-sentence JSON error instead of plain text."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        # TrustedHostMiddleware compares the host as parse_host_header gives it: IPv6 addresses in brackets
        hosts = [f"[{h}]" if ":" in h and not h.startswith("[") else h for h in allowed_hosts]
        super().__init__(app, allowed_hosts=hosts, www_redirect=False)
        inner = self.app

        async def passed(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_HOST_OK] = True
            await inner(scope, receive, send)

        self.app = passed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allow_any:
            await self.app(scope, receive, send)
            return

        async def send_or_refuse(message: Message) -> None:
            if scope.get(_HOST_OK):
                await send(message)
            elif message["type"] == "http.response.start":  # the middleware's own plain-text 400
                host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")[:100]
                for m in _plain_json_error(
                    400, f"Host header {host!r} is not allowed; start the server with --allowed-host to accept it"
                ):
                    await send(m)

        await super().__call__(scope, receive, send_or_refuse)


class ApiKeyCheck:
    """Every request except ``OPEN_PATHS`` must carry the API key in the ``X-API-Key`` header (constant-time
    comparison); checked before the body is read."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()
        self.header = API_KEY_HEADER.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == self.header:
                given = value
        if hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        msg = f"This server needs an API key: send it in the {API_KEY_HEADER} header"
        if given:
            msg = f"The API key in the {API_KEY_HEADER} header is wrong"
        for m in _plain_json_error(401, msg, [(b"www-authenticate", f'ApiKey header="{API_KEY_HEADER}"'.encode())]):
            await send(m)


class _BodyDeadline:
    """Refuse a declared ``Content-Length`` over the limit before reading anything (413), and give the body
    ``timeout`` seconds to arrive from the moment the request head is complete (408, connection closed).

    The bytes themselves are counted as they stream by Starlette's ``RequestBodyLimitMiddleware`` (inside this one).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                for m in _plain_json_error(413, _too_large(self.max_body_bytes), [(b"connection", b"close")]):
                    await send(m)
                return
        deadline = anyio.current_time() + self.timeout
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise HTTPException(
                    408,
                    f"The request body did not arrive within {self.timeout:g} seconds",
                    headers={"connection": "close"},
                )
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, receive_in_time, send)


def _too_large(limit: int) -> str:
    return f"The request body is larger than this server's limit of {limit:,} bytes"


# -- the app ----------------------------------------------------------------------------------
def create_app(
    model: ServingModel,
    settings: ServerSettings | None = None,
    *,
    max_k: int | None = None,
    max_items: int | None = None,
) -> FastAPI:
    """The FastAPI application answering from ``model`` under ``settings`` (defaults: no key, loopback Host names,
    no /docs page, the limits above). ``max_k`` / ``max_items`` override those of ``settings``."""
    s = settings or ServerSettings()
    if max_k is not None or max_items is not None:
        s = replace(s, max_k=max_k or s.max_k, max_items=max_items or s.max_items)
    k_max = max(1, min(s.max_k, model.n_items))
    meta = model.metadata
    app = FastAPI(
        title="segue recommendations",
        version=str(meta.get("versions", {}).get("segue", "")),
        description=f"Model {meta['model']!r} trained on {meta.get('dataset')!r}. {meta.get('retrieval_note', '')}",
        docs_url="/docs" if s.docs else None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url="/docs/oauth2-redirect" if s.docs else None,
    )
    app.state.model = model
    app.state.settings = s
    keyed = s.api_key is not None

    def doc(description: str) -> dict[str, Any]:
        return {"model": ErrorBody, "description": description}

    errors: dict[int | str, dict[str, Any]] = {
        400: doc("Host header not allowed, or a request this model cannot answer."),
        404: doc("Unknown user or item id."),
        422: doc("Malformed request (parameters, body, types, k out of range)."),
        500: doc("A fault of the server or its model (one sentence, no details)."),
    }
    if keyed:
        errors[401] = doc(f"Missing or wrong API key ({API_KEY_HEADER} header).")
    gated = {**errors, 403: doc("exclude_seen=false on a server without an API key.")}
    posted = {
        **gated,
        408: doc("The request body did not arrive in time."),
        413: doc("The request body is over the size limit."),
    }
    # the key is checked by ApiKeyCheck; this only documents it in the OpenAPI schema
    key_scheme = [Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if keyed else []

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_sentence(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "Bad request"
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No such endpoint {request.url.path}; see /openapi.json"
        elif exc.status_code == 405:
            detail = f"Method {request.method} is not allowed on {request.url.path}"
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        elif exc.status_code == 413:
            detail = _too_large(s.max_body_bytes)
            headers["connection"] = "close"
        return _error(exc.status_code, detail, headers)

    @app.exception_handler(SegueError)
    async def _on_segue(request: Request, exc: SegueError) -> JSONResponse:
        if isinstance(exc, UnknownIdError):
            return _error(404, str(exc))
        if isinstance(exc, UnsupportedQueryError):
            return _error(400, str(exc))
        # every client error is caught above or by validation: anything else is the server's (NaN scores, ...)
        log.error("server fault on %s %s: %s", request.method, request.url.path, exc)
        return _error(500, f"The server could not answer this request: {_sentence(str(exc)).rstrip('.')}")

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "Internal server error")

    ItemsRequest = _items_request(k_max, s.max_items)
    KParam = Annotated[QueryInt, Query(ge=1, le=k_max, description=f"Number of items, 1..{k_max}.")]
    IdParam = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)]

    def seen_gate(exclude_seen: bool) -> None:
        if not exclude_seen and not keyed:
            raise HTTPException(
                403,
                "Asking for exclude_seen=false would reveal what the user consumed in training; it is allowed only on a "
                f"server started with an API key (--api-key or {API_KEY_ENV})",
            )

    # plain `def` handlers: FastAPI runs them in its threadpool, so an expensive request does not block the loop
    def health() -> dict[str, Any]:
        return {"status": "ok", **model.describe()}

    def recommend_user(
        user: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, description="Raw user id.")],
        k: KParam = 10,
        exclude_seen: Annotated[
            QueryBool,
            Query(description="Skip items the user consumed in training (false needs the API key)."),
        ] = True,
        unknown: Annotated[
            Literal["popular", "error"],
            Query(description="An unknown user gets the popular items (query popular-fallback) or a 404."),
        ] = "popular",
    ) -> Response:
        seen_gate(exclude_seen)
        rec = model.recommend(user, k, exclude_seen=exclude_seen, unknown=unknown)
        return _json(
            {"items": _items(rec), "k": k, "user": user, "query": rec.query, "retrieval": rec.retrieval, "ignored": []}
        )

    def recommend_items(body: Annotated[ItemsRequest, Body()]) -> Any:  # type: ignore[valid-type]
        if any(len(str(i)) > MAX_ID_LENGTH for i in [*body.items, body.user or ""]):
            return _error(422, f"Raw ids must be at most {MAX_ID_LENGTH} characters long")
        if body.k * len(body.items) > s.max_work:
            return _error(
                422,
                f"The request asks for k × items = {body.k * len(body.items):,} ({body.k} × {len(body.items)}); this "
                f"server answers at most {s.max_work:,}, so ask for a smaller k or send fewer items",
            )
        seen_gate(body.exclude_seen or body.user is None)
        try:
            rec = model.recommend_items(
                body.items,
                body.k,
                user=body.user,
                exclude_items=body.exclude_items,
                exclude_seen=body.exclude_seen,
                ignore_unknown=body.ignore_unknown,
            )
        except DataError as e:
            if body.ignore_unknown and not (model.item_map.to_internal(body.items, missing="zero") > 0).any():
                return _error(422, "None of the request's items occur in the training data")
            raise ServerFault(str(e)) from e
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

    def similar(item: IdParam, k: KParam = 10) -> Response:
        rec = model.similar(item, k)
        return _json({"item": item, "k": k, "items": _items(rec), "query": rec.query, "retrieval": rec.retrieval})

    app.get("/health", response_model=HealthResponse, summary="Model and index summary")(health)
    app.get(
        "/recommend",
        response_model=RecommendResponse,
        responses=gated,
        dependencies=key_scheme,
        summary="Top-k items for a user",
    )(recommend_user)
    app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses=posted,
        dependencies=key_scheme,
        summary="Top-k items for a playlist, session or basket",
    )(recommend_items)
    app.get(
        "/similar", response_model=SimilarResponse, responses=errors, dependencies=key_scheme, summary="Nearest items"
    )(similar)
    # HEAD answers like GET (uvicorn sends no body); kept out of the schema
    for path, fn in (("/health", health), ("/recommend", recommend_user), ("/similar", similar)):
        app.head(path, include_in_schema=False)(fn)

    # middleware, innermost first: streamed-body count, Content-Length and body deadline, API key, Host allow-list
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=s.max_body_bytes)
    app.add_middleware(_BodyDeadline, max_body_bytes=s.max_body_bytes, timeout=s.timeout)
    if keyed:
        assert s.api_key is not None
        app.add_middleware(ApiKeyCheck, api_key=s.api_key)
    app.add_middleware(HostAllowList, allowed_hosts=s.allowed_hosts)
    return app


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route accepts on the request's path (for the 405 ``Allow`` header)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


# -- the server -------------------------------------------------------------------------------
class _HeadDeadline:
    """For uvicorn's HTTP protocols: close a connection whose request head is not complete ``timeout`` seconds after
    it opened (or ``keep_alive + timeout`` after the previous answer). uvicorn itself only times out idle keep-alive
    connections, so a client sending its headers a byte at a time would hold a connection for ever."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = kwargs["config"] if "config" in kwargs else args[0]
        self._head_timeout = float(getattr(config, "segue_head_timeout", REQUEST_TIMEOUT))
        self._head_after_answer = float(config.timeout_keep_alive) + self._head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        inner = self.app  # type: ignore[has-type]

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            self._disarm_head()  # the head is complete: the body deadline (_BodyDeadline) takes over
            await inner(scope, receive, send)

        self.app = app

    def _arm_head(self, seconds: float) -> None:
        self._disarm_head()
        self._head_timer = self.loop.call_later(seconds, self._head_expired)  # type: ignore[attr-defined]

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if not transport.is_closing():
            transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head(self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._arm_head(self._head_after_answer)


from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402


class GuardedH11Protocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional (uvicorn[standard])
    GuardedHttpToolsProtocol: type | None = None
else:

    class GuardedHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):  # type: ignore[no-redef]
        """uvicorn's httptools protocol with a request-head deadline."""


def http_protocol() -> type:
    """The guarded protocol uvicorn's ``auto`` would pick: httptools when installed, else h11."""
    return GuardedHttpToolsProtocol or GuardedH11Protocol


def uvicorn_config(app: Any, settings: ServerSettings, **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` with this module's timeouts and protocol (no websockets, no lifespan)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        http=http_protocol(),
        ws="none",
        lifespan="off",
        timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]
        server_header=False,
        **kwargs,
    )
    config.segue_head_timeout = settings.timeout  # type: ignore[attr-defined]
    return config


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind ``host:port`` as uvicorn would, or fail in one sentence (a taken port, a privileged port, a foreign
    address) before any work starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        import errno

        if e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} on {host} is already in use; stop the other server or choose another --port."
            ) from None
        if e.errno == errno.EACCES:
            raise ConfigError(
                f"Listening on port {port} of {host} is not permitted; choose a port above 1023."
            ) from None
        if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"Cannot listen on {host}: it is not an address of this machine.") from None
        raise ConfigError(f"Cannot listen on {host}:{port} ({e.strerror or e}).") from None
    sock.set_inheritable(True)
    return sock


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process (a uvicorn factory): the export and settings come from the parent."""
    spec = json.loads(os.environ[_WORKER_ENV])
    settings = ServerSettings.from_json(spec["settings"])
    model = ServingModel.load(spec["path"], exact=spec["exact"], ef_search=spec["ef_search"], threads=1)
    return create_app(model, settings)


def serve(
    model: ServingModel | str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    exact: bool = False,
    ef_search: int | None = None,
    settings: ServerSettings | None = None,
    access_log: bool = False,
    log_level: str = "warning",
    sock: socket.socket | None = None,
) -> None:
    """Serve a loaded model (or load an export directory) with uvicorn, on loopback by default.

    ``workers > 1`` starts that many processes (each loads the export; ``model`` must then be a path or a model
    loaded from one). The port is bound first (or ``sock``, bound by :func:`bind_socket`, is used), so a taken port
    fails in one sentence. uvicorn uses httptools and
    uvloop when they are installed (``pip install 'uvicorn[standard]'``), about 2x faster (docs/serving.md).
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    s = settings or ServerSettings(allowed_hosts=allowed_hosts_for(host))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}.")
    own = sock is None
    sock = bind_socket(host, port) if sock is None else sock
    try:
        common = {"host": host, "port": port, "access_log": access_log, "log_level": log_level}
        if workers == 1:
            if not isinstance(model, ServingModel):
                model = ServingModel.load(model, exact=exact, ef_search=ef_search, threads=1)
            config = uvicorn_config(create_app(model, s), s, **common)
            uvicorn.Server(config).run(sockets=[sock])
            return
        path = model.path if isinstance(model, ServingModel) else model
        if isinstance(model, ServingModel):
            exact = model.exact
        os.environ[_WORKER_ENV] = json.dumps(
            {"path": str(path), "exact": exact, "ef_search": ef_search, "settings": s.to_json()}
        )
        config = uvicorn_config(f"{__name__}:worker_app", s, factory=True, workers=workers, **common)
        Multiprocess(config, sockets=[sock]).run()
    finally:
        if own:
            sock.close()
