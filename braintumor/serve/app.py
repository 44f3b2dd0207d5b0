"""The FastAPI wiring: lifespan loading, routes, limits, error mapping and request logging."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..runs import resolve_run
from .middleware import AccessLog, BodyLimit, add_error_handlers, log
from .predictor import Predictor
from .routes import STATIC, router
from .settings import ServeSettings


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
    add_error_handlers(app)
    app.include_router(router)
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
