"""The API's request and response shapes, with the examples /docs shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_PROBS = {"glioma": 0.912, "meningioma": 0.051, "notumor": 0.021, "pituitary": 0.016}
_OK = {"status": "ok", "reason": "like the training scans", "answered": True, "class": "glioma",
       "probabilities": _PROBS, "distance_ratio": 0.62}
_OOD = {"status": "out_of_distribution", "answered": False, "class": None, "distance_ratio": 1.3,
        "reason": "a colour image (colourfulness 61.2; training scans at most 9.8): MRI slices are gray",
        "probabilities": {"glioma": 0.41, "meningioma": 0.33, "notumor": 0.16, "pituitary": 0.10}}
Status = Literal["ok", "uncertain", "out_of_distribution"]


class Verdict(BaseModel):
    """The decision on one image (issue 13): a class only when the out-of-distribution gate lets it through."""

    model_config = ConfigDict(populate_by_name=True)

    status: Status = Field(description="ok: like the training scans and confident; uncertain: at the edge of "
                                       "the training scans or not confident; out_of_distribution: not a scan "
                                       "like those the model learnt from (or an input check failed).")
    reason: str = Field(description="One sentence saying why; also says when the run has no gate to check.")
    answered: bool = Field(description="True only for status ok: the class is the answer.")
    class_: str | None = Field(alias="class", description="The most probable class when status is ok; null "
                                                          "otherwise: no class is presented as the answer.")
    probabilities: dict[str, float] = Field(description="Calibrated (temperature-scaled) probability per "
                                                        "class, in model order; when answered is false they "
                                                        "are the model's numbers, not an answer.")
    distance_ratio: float | None = Field(description="The gate's feature distance over its threshold (above 1: "
                                                     "unlike the brain MRI it was trained on); null without a "
                                                     "gate.")
    head_margin: float | None = Field(default=None, description="The brain-MRI-or-not head's score past its "
                                      "threshold (above 0: not a brain MRI; eval.gate_head: oe); null without one.")


class Prediction(Verdict):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={
        "examples": [{**_OK, "latency_ms": 7.4}, {**_OOD, "latency_ms": 7.9}]})

    latency_ms: float = Field(description="Server time for decoding and inference, including any wait for a "
                                          "free inference slot; excludes the upload.")


class BatchItem(Verdict):
    model_config = ConfigDict(populate_by_name=True)

    filename: str | None = Field(description="The name the client gave the file, to match results up.")


class BatchPrediction(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "results": [{"filename": "scan1.jpg", **_OK}, {"filename": "photo.jpg", **_OOD}],
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
        "decision": {"temperature": 1.31, "has_gate": True, "gate": [{"layers": ["block4_2_act"],
                                                                       "threshold": 11.2, "far": 11.2}],
                     "gate_modalities": ["MR", "OT"], "notumor_doubt": None},
        "runtime": "keras", "explanation": {"method": "layercam", "layers": ["block2_2_act"]},
        "metrics": {"accuracy": 0.94, "loss": 0.18, "auc": 0.99, "macro_f1": 0.93, "n": 1311},
        "run": "20260101-120000-customnet", "trained": "2026-01-01T12:40:00+00:00",
        "version": {"braintumor": "0.1.0", "trained_with": {"tensorflow": "2.21.0", "keras": "3.15.1"}},
        "limits": {"max_upload_bytes": 20971520, "max_pixels": 40000000, "max_batch_files": 16}}]})

    arch: str
    classes: list[str]
    input: dict[str, Any] = Field(description="Size and channels every upload is resized to.")
    preprocessing: str = Field(description="What the model does to 0-255 pixels inside itself.")
    decision: dict[str, Any] = Field(description="The calibration temperature, whether the run has an "
                                                 "out-of-distribution gate (older runs do not), its summary, and "
                                                 "the DICOM modalities accepted (null: the header rule is off) "
                                                 "and the no-tumour doubt's p(tumour) threshold (null: off).")
    runtime: str = Field(description="What runs the model: keras, or onnx (an exported model; no /cam).")
    explanation: dict[str, Any] | None = Field(None, description="What /cam draws: the method and the layers "
                                               "(the run's eval.cam_* choice, else the architecture's); null "
                                               "where there is no /cam (onnx, a k-fold ensemble).")
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
