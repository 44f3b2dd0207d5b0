"""FastAPI dependencies: the loaded predictor, the settings, bounded inference slots and checked uploads."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Request, UploadFile

from .predictor import Predictor, UploadTooLarge, check_bytes, check_pixels
from .settings import ServeSettings


def settings_of(request: Request) -> ServeSettings:
    return request.app.state.settings


def predictor_of(request: Request) -> Predictor:
    """The run's predictor, or 503 while it is still loading."""
    p = request.app.state.predictor
    if p is None or not p.ready or request.app.state.slots is None:
        raise HTTPException(503, "the model is still loading; retry when GET /health says ready")
    return p


Settings = Annotated[ServeSettings, Depends(settings_of)]
LoadedPredictor = Annotated[Predictor, Depends(predictor_of)]


async def bounded(request: Request, fn, *args):
    """Run blocking work in a thread once one of ``concurrency`` slots is free (503 past the timeout)."""
    settings: ServeSettings = request.app.state.settings
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


async def read_upload(settings: ServeSettings, upload: UploadFile, what: str = "file") -> bytes:
    """The upload's bytes, refused (413) over the byte or pixel limit before any decoding."""
    data = await upload.read(settings.max_upload_bytes + 1)
    check_bytes(data, settings.max_upload_bytes, what)
    try:
        check_pixels(data, settings.max_pixels)  # the header only: microseconds, fine on the event loop
    except UploadTooLarge as e:
        raise UploadTooLarge(f"{what}: {e}" if what != "file" else str(e)) from None
    return data
