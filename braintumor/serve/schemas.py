"""The API's request and response shapes, with the examples /docs shows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_PROBS = {"glioma": 0.912, "meningioma": 0.051, "notumor": 0.021, "pituitary": 0.016}


class Prediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={
        "examples": [{"class": "glioma", "probabilities": _PROBS, "latency_ms": 7.4}]})

    class_: str = Field(alias="class", description="The most probable class.")
    probabilities: dict[str, float] = Field(description="Softmax probability per class, in model order.")
    latency_ms: float = Field(description="Server time for decoding and inference, including any wait for a "
                                          "free inference slot; excludes the upload.")


class BatchItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    filename: str | None = Field(description="The name the client gave the file, to match results up.")
    class_: str = Field(alias="class")
    probabilities: dict[str, float]


class BatchPrediction(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "results": [{"filename": "scan1.jpg", "class": "glioma", "probabilities": _PROBS},
                    {"filename": "scan2.jpg", "class": "notumor",
                     "probabilities": {"glioma": 0.02, "meningioma": 0.03, "notumor": 0.93,
                                       "pituitary": 0.02}}],
        "latency_ms": 11.8}]})

    results: list[BatchItem] = Field(description="One result per uploaded file, in upload order.")
    latency_ms: float = Field(description="Server time for decoding and one batched inference call.")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready", "model": "customnet"}]})

    status: str = Field(description="'ready' once the model is loaded and warmed up, else 'loading'.")
    model: str | None = Field(None, description="Architecture being served.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [{
        "arch": "customnet", "classes": ["glioma", "meningioma", "notumor", "pituitary"],
        "input": {"height": 128, "width": 128, "channels": 3, "dtype": "uint8 0-255 (resized, squashed)"},
        "preprocessing": "unit: scaled to [0, 1] (input 0-255)",
        "metrics": {"accuracy": 0.94, "loss": 0.18, "auc": 0.99, "macro_f1": 0.93, "n": 1311},
        "run": "20260101-120000-customnet", "trained": "2026-01-01T12:40:00+00:00",
        "version": {"braintumor": "0.1.0", "trained_with": {"tensorflow": "2.21.0", "keras": "3.15.1"}},
        "limits": {"max_upload_bytes": 20971520, "max_pixels": 40000000, "max_batch_files": 16}}]})

    arch: str
    classes: list[str]
    input: dict[str, Any] = Field(description="Size and channels every upload is resized to.")
    preprocessing: str = Field(description="What the model does to 0-255 pixels inside itself.")
    metrics: dict[str, Any] = Field(description="Validation metrics of the best epoch (from metrics.json).")
    run: str = Field(description="Name of the run directory served.")
    trained: str | None = None
    version: dict[str, Any] = Field(description="braintumor version serving; library versions at training.")
    limits: dict[str, int] = Field(description="Upload limits this server enforces.")


class Problem(BaseModel):
    """Every error: a plain sentence, never a stack trace."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"detail": "not a readable image (UnidentifiedImageError: cannot identify image file)"}]})

    detail: str
