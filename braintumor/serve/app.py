"""The FastAPI wiring: lifespan loading, routes, limits, error mapping and request logging."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from .. import __version__
from ..runs import resolve_run
from .metrics import Metrics
from .middleware import AccessLog, ApiKey, BodyLimit, add_error_handlers, log
from .predictor import Predictor
from .routes import STATIC, metrics_router, router
from .settings import ServeSettings


def create_app(settings: ServeSettings, predictor: Predictor | None = None) -> FastAPI:
    """The service for one train run or exported model. Pass ``predictor`` to reuse a loaded model (tests); else
    lifespan loads ``settings.model`` (an exported ONNX file), ``settings.run`` or the latest complete run, and
    warms it up before /health says ready."""
    key = settings.key()  # a missing or empty key file fails here, before anything is served

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        t0 = time.perf_counter()
        if state.predictor is None:
            state.predictor = await anyio.to_thread.run_sync(_load, settings)
        elif not state.predictor.ready:
            await anyio.to_thread.run_sync(state.predictor.warm_up)
        p = state.predictor
        state.metrics.loaded(time.perf_counter() - t0, {"arch": str(p.run.meta.get("arch")),
                                                        "runtime": p.backend.kind, "run": Path(p.run.path).name,
                                                        "gate": str(p.decider.has_gate).lower()})
        state.slots = anyio.Semaphore(settings.concurrency)
        log.info("serving %s (%s, %s) with %d inference slot(s)%s", Path(p.run.path).name, p.run.meta.get("arch"),
                 p.backend.kind, settings.concurrency, "; an API key is required" if key else "")
        yield

    # Swagger UI and ReDoc from the package's own copies: /docs works with no network (FastAPI's default loads
    # them from a CDN, and the page is blank offline).
    app = FastAPIOffline(
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
    add_error_handlers(app)
    app.include_router(router)
    if settings.metrics:
        app.include_router(metrics_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.metrics = Metrics({*(r.path for r in router.routes), *(r.path for r in metrics_router.routes),
                                 "/docs", "/redoc", "/openapi.json"})
    # Outermost last: the log (and its request id) sees every response, CORS headers reach even a 401, the key
    # is checked before the body limit reads anything, the body limit runs before any multipart parsing.
    app.add_middleware(BodyLimit, settings=settings)
    if key:
        app.add_middleware(ApiKey, key=key)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"],
                           expose_headers=["X-Class", "X-Class-Index", "X-Probability", "X-Latency-Ms",
                                           "X-Request-ID"])
    app.add_middleware(AccessLog, metrics=app.state.metrics)
    return app


def _load(settings: ServeSettings) -> Predictor:
    if settings.model:
        return Predictor.load_exported(settings.model, settings.max_pixels, notumor_doubt=settings.notumor_doubt)
    run_dir = resolve_run(settings.run, settings.runs_dir)
    predictor = Predictor.load(run_dir, settings.max_pixels, notumor_doubt=settings.notumor_doubt)
    try:
        predictor.warm_up_cam()
    except Exception as e:  # noqa: BLE001  /predict must not depend on Grad-CAM working for this model
        log.warning("Grad-CAM warm-up failed (/cam may fail too): %s: %s", type(e).__name__, e)
    return predictor
