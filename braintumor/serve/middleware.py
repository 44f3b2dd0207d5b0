"""Error mapping (a plain sentence to the client, the traceback only in the server log) and the plain ASGI
middleware (no per-request task overhead): the body limit, the API key, the access log with its request id and
the Prometheus metrics."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from contextvars import ContextVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import BraintumorError
from .predictor import human_bytes
from .settings import MiB, ServeSettings

log = logging.getLogger("braintumor.serve")
request_id: ContextVar[str] = ContextVar("braintumor_request_id", default="-")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a caller's own X-Request-ID is kept only when it is this tame


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (``%(request_id)s``; '-' outside a request). Context
    variables follow a request into the worker threads anyio runs inference in."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


log.addFilter(RequestIdFilter())  # the server's own lines, whatever handler (uvicorn's config, pytest) shows them


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BraintumorError)
    async def library_error(request: Request, exc: BraintumorError):
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status_code", 400))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": plain_validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error; the server log has the details"},
                            status_code=500)


def plain_validation_message(errors) -> str:
    """FastAPI's list of validation errors as one sentence (a wrong field name is the usual one)."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query")]
        name = ".".join(loc) or "request"
        if e.get("type") == "missing" and name in ("file", "files"):
            parts.append(f"no multipart field '{name}': send the image as form field '{name}' "
                         f"(curl -F {name}=@scan.jpg)")
        elif name in ("file", "files"):
            parts.append(f"field '{name}' must be an uploaded file (curl -F {name}=@scan.jpg), not text")
        else:
            parts.append(f"{name}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class BodyLimit:
    """413 for a request body over the limit, before parsing; counts bytes when there is no Content-Length."""

    def __init__(self, app, settings: ServeSettings):
        self.app = app
        self.batch_cap = settings.max_request_bytes
        self.single_cap = settings.max_upload_bytes + MiB  # one file plus multipart overhead

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        cap = self.batch_cap if scope["path"].rstrip("/") == "/predict/batch" else self.single_cap
        detail = f"request body is over the limit of {human_bytes(cap)}"
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            status, detail = (413, detail) if length.isdigit() else (400, "invalid Content-Length header")
            return await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise HTTPException(413, detail)  # FastAPI re-raises it from form parsing
            return message

        await self.app(scope, counted, send)


class ApiKey:
    """401 on every route but /health without the key (header ``X-API-Key`` or ``Authorization: Bearer``).
    Compared in constant time; neither the key nor what a client sent is ever logged."""

    OPEN = ("/health",)

    def __init__(self, app, key: bytes):
        self.app = app
        self.key = key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.OPEN or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        given = _header(scope, b"x-api-key")
        if given is None:
            auth = _header(scope, b"authorization") or ""
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if hmac.compare_digest(given.encode("latin-1"), self.key):
            return await self.app(scope, receive, send)
        detail = ("this server needs an API key: send it as header X-API-Key (curl -H 'X-API-Key: ...') or "
                  "Authorization: Bearer" if not given else "the API key is wrong")
        await JSONResponse({"detail": detail}, status_code=401,
                           headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


class AccessLog:
    """One log line per request (request id, method, path, status, time, size, client), never the query or
    image content; the request id (the caller's X-Request-ID when it is plain, else a new one) goes back in the
    X-Request-ID header and on every log line written while the request runs; also tells browsers not to sniff
    content types. Counts every request in ``metrics`` (when given)."""

    def __init__(self, app, metrics=None):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]
        theirs = _header(scope, b"x-request-id")
        rid = theirs if theirs and _CLIENT_ID.fullmatch(theirs) else uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff"),
                                      (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            seconds = time.perf_counter() - t0
            client = scope.get("client") or ("-", 0)
            log.info("%s %s %d %.1fms %sB %s", scope["method"], scope["path"], status[0], seconds * 1000,
                     _header(scope, b"content-length") or "-", client[0])
            if self.metrics is not None:
                self.metrics.request(scope, status[0], seconds)
            request_id.reset(token)


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1").strip()
    return None
