"""The endpoints: /, /health, /model, /predict, /predict/batch and /cam."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from .deps import LoadedPredictor, Settings, bounded, read_upload
from .metrics import CONTENT_TYPE
from .predictor import UploadTooLarge
from .schemas import BatchItem, BatchPrediction, Health, ModelInfo, Prediction, Problem

STATIC = Path(__file__).parent / "static"
# The page loads nothing from anywhere else; nor does /docs (fastapi-offline serves Swagger UI and ReDoc).
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Not a readable image (not an image, empty, truncated)."},
    413: {"model": Problem, "description": "Over the upload limit in bytes, pixels or files."},
    422: {"model": Problem, "description": "Missing `file` field, or an unknown class."},
    503: {"model": Problem, "description": "Still loading, or every slot busy past the queue timeout."},
}
CAM_ERRORS = {**ERRORS, 501: {"model": Problem, "description": "An exported (ONNX) model: Grad-CAM needs the "
                                                               "Keras model."}}
# Module constants: with postponed annotations, endpoint signatures resolve against module globals only.
IMAGE_FILE = File(description="An MRI slice: JPEG, PNG, BMP, TIFF, GIF or WebP, any size within the limits.")
CLASS_QUERY = Query(alias="class", description="Class to explain, by name or index; default: the predicted "
                    "class.", examples=["glioma"])
IMAGE_FILES = File(description="Several images, each in a multipart field `files`; /model gives the limit.")

router = APIRouter()
metrics_router = APIRouter()  # included only with --metrics


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request):
    """`ready` (200) once the model is loaded and warmed up; `loading` (503) before."""
    p = request.app.state.predictor
    if p is None or not p.ready or request.app.state.slots is None:
        return JSONResponse({"status": "loading", "model": None}, status_code=503)
    return Health(status="ready", model=p.run.meta.get("arch"))

@router.get("/model", response_model=ModelInfo, responses={503: ERRORS[503]})
async def model_info(p: LoadedPredictor, settings: Settings):
    """Architecture, classes, input size, preprocessing, validation metrics and versions of the run."""
    return {**p.info(), "limits": settings.public()}

@router.post("/predict", response_model=Prediction, responses=ERRORS)
async def predict(request: Request, p: LoadedPredictor, settings: Settings,
                  file: Annotated[UploadFile, IMAGE_FILE]):
    """The verdict on one image (multipart field `file`): status, reason, and the class only when status is ok."""
    data = await read_upload(settings, file)
    t0 = time.perf_counter()
    verdict = await bounded(request, p.predict, data)
    request.app.state.metrics.verdict(verdict.status)
    return Prediction(**p.answer(verdict), latency_ms=_ms(t0))

@router.post("/predict/batch", response_model=BatchPrediction, responses=ERRORS)
async def predict_batch(request: Request, p: LoadedPredictor, settings: Settings,
                        files: Annotated[list[UploadFile], IMAGE_FILES]):
    """Verdicts for several images in one model call (repeat the multipart field `files`)."""
    if len(files) > settings.max_batch_files:
        raise UploadTooLarge(f"{len(files)} files is over the limit of {settings.max_batch_files} per "
                             "request; split them, or raise --max-batch-files")
    blobs = [await read_upload(settings, f, f"file {i} of {len(files)}") for i, f in enumerate(files, start=1)]
    t0 = time.perf_counter()
    verdicts = await bounded(request, p.predict_many, blobs)
    for v in verdicts:
        request.app.state.metrics.verdict(v.status)
    return BatchPrediction(results=[BatchItem(filename=f.filename, **p.answer(v))
                                    for f, v in zip(files, verdicts, strict=True)], latency_ms=_ms(t0))

@router.post("/cam", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "Grad-CAM overlay at the model's input size. "
          "Headers X-Class, X-Class-Index and X-Probability name the class explained."}, **CAM_ERRORS})
async def cam(request: Request, p: LoadedPredictor, settings: Settings, file: Annotated[UploadFile, IMAGE_FILE],
              class_: Annotated[str | None, CLASS_QUERY] = None):
    """Grad-CAM overlay PNG: where the model looked for `class` (default: its prediction). Needs the Keras model:
    a server of an exported ONNX model answers 501."""
    p.backend.check_cam()
    p.class_index(class_)  # a bad class= is refused before any decoding or inference
    data = await read_upload(settings, file)
    t0 = time.perf_counter()
    png, index, prob = await bounded(request, p.cam, data, class_)
    return Response(png, media_type="image/png", headers={
        "X-Class": p.class_names[index], "X-Class-Index": str(index), "X-Probability": f"{prob:.6f}",
        "X-Latency-Ms": f"{_ms(t0):.1f}", "Cache-Control": "no-store"})


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request):
    """Prometheus text format: request counts, latency histograms, refusals, verdicts, model load time."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
