"""The FastAPI wiring: lifespan loading, endpoints, limits, error mapping and request logging."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import BraintumorError
from ..runs import resolve_run
from .predictor import Predictor, UploadTooLarge, check_bytes, check_pixels, human_bytes
from .schemas import BatchItem, BatchPrediction, Health, ModelInfo, Prediction, Problem
from .settings import MiB, ServeSettings

log = logging.getLogger("braintumor.serve")
STATIC = Path(__file__).parent / "static"
# The page loads nothing from anywhere else; /docs keeps FastAPI's defaults (Swagger UI from its CDN).
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Not a readable image (not an image, empty, truncated)."},
    413: {"model": Problem, "description": "Over the upload limit in bytes, pixels or files."},
    422: {"model": Problem, "description": "Missing `file` field, or an unknown class."},
    503: {"model": Problem, "description": "Still loading, or every slot busy past the queue timeout."},
}
# Module constants: with postponed annotations, endpoint signatures resolve against module globals only.
IMAGE_FILE = File(description="An MRI slice: JPEG, PNG, BMP, TIFF, GIF or WebP, any size within the limits.")
CLASS_QUERY = Query(alias="class", description="Class to explain, by name or index; default: the predicted "
                    "class.", examples=["glioma"])
IMAGE_FILES = File(description="Several images, each in a multipart field `files`; /model gives the limit.")


def create_app(settings: ServeSettings, predictor: Predictor | None = None) -> FastAPI:
    """The service for one train run. Pass ``predictor`` to reuse a loaded model (tests); else lifespan loads
    ``settings.run`` (or the latest complete run) and warms it up before /health says ready."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        if state.predictor is None:
            state.predictor = await anyio.to_thread.run_sync(_load, settings)
        elif not state.predictor.ready:
            await anyio.to_thread.run_sync(state.predictor.warm_up)
        state.slots = anyio.Semaphore(settings.concurrency)
        log.info("serving %s (%s) with %d inference slot(s)", Path(state.predictor.run.path).name,
                 state.predictor.run.meta.get("arch"), settings.concurrency)
        yield

    app = FastAPI(
        title="braintumor",
        version=__version__,
        summary="Brain-tumour MRI classification: class probabilities and Grad-CAM heatmaps from one run.",
        description="Upload an MRI slice as multipart field `file`: `curl -F file=@scan.jpg "
                    "http://127.0.0.1:8000/predict`. Research software, not a medical device.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.slots = None
    _add_error_handlers(app)
    _add_routes(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Outermost last: the log sees every response, the body limit runs before any multipart parsing.
    app.add_middleware(BodyLimit, settings=settings)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"],
                           expose_headers=["X-Class", "X-Class-Index", "X-Probability", "X-Latency-Ms"])
    app.add_middleware(AccessLog)
    return app


def _load(settings: ServeSettings) -> Predictor:
    run_dir = resolve_run(settings.run, settings.runs_dir)
    predictor = Predictor.load(run_dir, settings.max_pixels)
    try:
        predictor.warm_up_cam()
    except Exception as e:  # noqa: BLE001  /predict must not depend on Grad-CAM working for this model
        log.warning("Grad-CAM warm-up failed (/cam may fail too): %s: %s", type(e).__name__, e)
    return predictor


# --- endpoints ---------------------------------------------------------------------------------------------


def _add_routes(app: FastAPI, settings: ServeSettings) -> None:
    def predictor_of(request: Request) -> Predictor:
        p = request.app.state.predictor
        if p is None or not p.ready or request.app.state.slots is None:
            raise HTTPException(503, "the model is still loading; retry when GET /health says ready")
        return p

    async def bounded(request: Request, fn, *args):
        """Run blocking work in a thread once one of ``concurrency`` slots is free (503 past the timeout)."""
        slots: anyio.Semaphore = request.app.state.slots
        try:
            with anyio.fail_after(settings.queue_timeout):
                await slots.acquire()
        except TimeoutError:
            raise HTTPException(503, f"every inference slot is busy (waited {settings.queue_timeout:g} s); "
                                     "retry later", headers={"Retry-After": "1"}) from None
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            slots.release()

    async def read_upload(upload: UploadFile, what: str = "file") -> bytes:
        data = await upload.read(settings.max_upload_bytes + 1)
        check_bytes(data, settings.max_upload_bytes, what)
        try:
            check_pixels(data, settings.max_pixels)  # the header only: microseconds, fine on the event loop
        except UploadTooLarge as e:
            raise UploadTooLarge(f"{what}: {e}" if what != "file" else str(e)) from None
        return data

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health(request: Request):
        """`ready` (200) once the model is loaded and warmed up; `loading` (503) before."""
        p = request.app.state.predictor
        if p is None or not p.ready or request.app.state.slots is None:
            return JSONResponse({"status": "loading", "model": None}, status_code=503)
        return Health(status="ready", model=p.run.meta.get("arch"))

    @app.get("/model", response_model=ModelInfo, responses={503: ERRORS[503]})
    async def model_info(request: Request):
        """Architecture, classes, input size, preprocessing, validation metrics and versions of the run."""
        return {**predictor_of(request).info(), "limits": settings.public()}

    @app.post("/predict", response_model=Prediction, responses=ERRORS)
    async def predict(request: Request, file: Annotated[UploadFile, IMAGE_FILE]):
        """Class probabilities for one image (multipart field `file`)."""
        p = predictor_of(request)
        data = await read_upload(file)
        t0 = time.perf_counter()
        index, probs = await bounded(request, p.predict, data)
        return Prediction(class_=p.class_names[index], probabilities=probs, latency_ms=_ms(t0))

    @app.post("/predict/batch", response_model=BatchPrediction, responses=ERRORS)
    async def predict_batch(request: Request, files: Annotated[list[UploadFile], IMAGE_FILES]):
        """Class probabilities for several images in one model call (repeat the multipart field `files`)."""
        p = predictor_of(request)
        if len(files) > settings.max_batch_files:
            raise UploadTooLarge(f"{len(files)} files is over the limit of {settings.max_batch_files} per "
                                 "request; split them, or raise --max-batch-files")
        blobs = [await read_upload(f, f"file {i} of {len(files)}") for i, f in enumerate(files, start=1)]
        t0 = time.perf_counter()
        results = await bounded(request, p.predict_many, blobs)
        return BatchPrediction(results=[
            BatchItem(filename=f.filename, class_=p.class_names[i], probabilities=probs)
            for f, (i, probs) in zip(files, results, strict=True)], latency_ms=_ms(t0))

    @app.post("/cam", response_class=Response, responses={
        200: {"content": {"image/png": {}}, "description": "Grad-CAM overlay at the model's input size. "
              "Headers X-Class, X-Class-Index and X-Probability name the class explained."}, **ERRORS})
    async def cam(request: Request, file: Annotated[UploadFile, IMAGE_FILE],
                  class_: Annotated[str | None, CLASS_QUERY] = None):
        """Grad-CAM overlay PNG: where the model looked for `class` (default: its prediction)."""
        p = predictor_of(request)
        p.class_index(class_)  # a bad class= is refused before any decoding or inference
        data = await read_upload(file)
        t0 = time.perf_counter()
        png, index, prob = await bounded(request, p.cam, data, class_)
        return Response(png, media_type="image/png", headers={
            "X-Class": p.class_names[index], "X-Class-Index": str(index), "X-Probability": f"{prob:.6f}",
            "X-Latency-Ms": f"{_ms(t0):.1f}", "Cache-Control": "no-store"})


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


# --- errors: a plain sentence to the client, the traceback only in the server log -------------------------


def _add_error_handlers(app: FastAPI) -> None:
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


# --- middleware (plain ASGI: no per-request task overhead) -------------------------------------------------


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


class AccessLog:
    """One log line per request (method, path, status, time, size, client), never the query or image content;
    also tells browsers not to sniff content types."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info("%s %s %d %.1fms %sB %s", scope["method"], scope["path"], status[0],
                     (time.perf_counter() - t0) * 1000, _header(scope, b"content-length") or "-", client[0])


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1").strip()
    return None
