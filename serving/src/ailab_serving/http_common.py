"""What every route shares: the app state, errors as ``{"error": ...}``, auth, body limits, access log."""

from __future__ import annotations

import hmac
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .detection import ParamError
from .engines import UnsupportedModelError
from .images import ImageError
from .inference import InferenceService, InferenceTimeoutError, OverloadedError
from .metrics import Metrics
from .model_store import ModelLoadError, ModelNotFoundError, ModelStore
from .runtime import RuntimePlan
from .settings import Settings

log = logging.getLogger("ailab_serving.http")


@dataclass
class AppState:
    """Everything mutable the server holds; created by the lifespan, reached via ``request.app``."""

    settings: Settings
    plan: RuntimePlan
    metrics: Metrics
    store: ModelStore
    service: InferenceService
    s3_client: Any = None
    ready: bool = False
    started_at: float = field(default_factory=time.time)


def state_of(request: Request) -> AppState:
    return request.app.state.ailab


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map every known failure to a 4xx/5xx with ``{"error": ...}``; nothing escapes as a traceback."""

    def _retry(exc: OverloadedError) -> dict[str, str]:
        return {"Retry-After": str(int(exc.retry_after_s))}

    handlers: dict[type[Exception], Any] = {
        ApiError: lambda _r, e: error_response(e.status, e.message, e.headers),
        StarletteHTTPException: lambda _r, e: error_response(e.status_code, str(e.detail), e.headers),
        RequestValidationError: lambda _r, e: error_response(422, _validation_message(e)),
        ImageError: lambda _r, e: error_response(e.status, str(e)),
        ParamError: lambda _r, e: error_response(422, str(e)),
        ModelNotFoundError: lambda _r, e: error_response(404, str(e.args[0])),
        UnsupportedModelError: lambda _r, e: error_response(422, str(e)),
        ModelLoadError: lambda _r, e: error_response(503, str(e)),
        OverloadedError: lambda _r, e: error_response(e.status, str(e), _retry(e)),
        InferenceTimeoutError: lambda _r, e: error_response(504, str(e)),
        BodyTooLargeError: lambda _r, e: error_response(413, str(e)),
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)

    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error; see the server log")

    app.add_exception_handler(Exception, _unexpected)


def require_api_key(request: Request) -> None:
    """FastAPI dependency: with an API key set, ``X-API-Key`` or ``Authorization: Bearer`` must match."""
    expected = state_of(request).settings.api_key
    if not expected:
        return
    given = request.headers.get("x-api-key")
    if given is None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    # Constant-time comparison: a key must not leak through response timing.
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401,
            "missing or wrong API key (X-API-Key or Authorization: Bearer)",
            {"WWW-Authenticate": "Bearer"},
        )


QUEUE_DELAY_HEADER = "x-max-queue-delay-ms"
QUEUE_DELAY_QUERY = "max_queue_delay_ms"


def requested_queue_delay_ms(request: Request) -> float | None:
    """The caller's queue deadline from the header or the query string, read without the body."""
    raw = request.headers.get(QUEUE_DELAY_HEADER) or request.query_params.get(QUEUE_DELAY_QUERY)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ApiError(422, f"{QUEUE_DELAY_QUERY} (or {QUEUE_DELAY_HEADER}) must be a positive number of ms")
    return value


def queue_delay_of(request: Request) -> float | None:
    """The queue deadline in seconds that applies to this request (its own, or the server's)."""
    return state_of(request).service.queue_delay_s(requested_queue_delay_ms(request))


class AdmittedRoute(APIRoute):
    """A POST route that asks the inference queue for room before FastAPI reads the body.

    FastAPI parses a multipart form before the endpoint (or any dependency) runs; a request that
    will be refused must not pay for that, nor for decoding, so the refusal happens here.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handle = super().get_route_handler()

        async def admitted(request: Request) -> Response:
            if request.method == "POST":
                state_of(request).service.gate(1, queue_delay_of(request))
            return await handle(request)

        return admitted


class BodyLimitMiddleware:
    """Refuse bodies over the limit before reading them (Content-Length) or while streaming (chunked)."""

    def __init__(self, app: ASGIApp, *, default_limit: int, video_limit: int) -> None:
        self.app = app
        self.default_limit = default_limit
        self.video_limit = video_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.video_limit if scope["path"].endswith("/video") else self.default_limit
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = error_response(
                413, f"request body of {int(length)} bytes is over the limit of {limit}"
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)


class AccessLogMiddleware:
    """One structured log line and the request metrics per HTTP request (streaming-safe, pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = (
            dict(scope.get("headers") or []).get(b"x-request-id", b"").decode() or uuid.uuid4().hex[:16]
        )
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(seconds)
            if path not in ("/v2/health/live", "/v2/health/ready", "/metrics"):
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(seconds * 1000, 2),
                        "request_id": request_id,
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )
