"""An exported run (``braintumor export``) read back without TensorFlow: its description and an ONNX scorer.

An export directory holds the model file (``model.onnx``, ``model.tflite`` or ``saved_model/``), ``export.json``
(format, converter, image spec, class names, temperature, verification figures), the source run's ``meta.json``,
``config.yaml`` and ``metrics.json``, and the gate of each model (``gates/<i>/gate.json``, ``gate.npz``). The
exported graph is the run's scoring model: outputs ``[probabilities, *gate features]``, so the temperature and
the gate are applied here in NumPy (``decision.Decider``) exactly as the Keras path applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import ImageSpec
from .decision import Decider, Doubt
from .errors import RunError
from .input_checks import DEFAULT_MODALITIES
from .ood import Gate
from .runs import read_json
from .scanners import ScanOptions

EXPORT_JSON = "export.json"
MODEL_FILES = {"onnx": "model.onnx", "tflite": "model.tflite", "savedmodel": "saved_model"}


@dataclass
class ExportedRun:
    """What a server needs from an export directory (the same attributes ``LoadedRun`` offers)."""

    path: Path  # the export directory
    model_file: Path
    export: dict[str, Any]  # export.json
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.export["class_names"])

    @property
    def spec(self) -> ImageSpec:
        spec = dict(self.export["spec"])
        scan = spec.pop("scan", None) or {}
        if scan.get("window") is not None:
            scan["window"] = tuple(scan["window"])
        return ImageSpec(**spec, scan=ScanOptions(**scan))  # the run's window and slices for scanner uploads

    @property
    def image_size(self) -> int:
        return self.spec.size

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def tta(self) -> bool:
        """The source run's eval.tta (flip averaging); exports written before it was recorded served without."""
        return bool(self.export.get("tta", False))

    @property
    def temperature(self) -> float:
        return float(self.export.get("temperature", 1.0))

    def gates(self) -> list[Gate]:
        gates = [Gate.load(self.path / "gates" / str(i)) for i in range(int(self.export.get("gates", 0)))]
        return [] if any(g is None for g in gates) else gates

    def decider(self, notumor_doubt: float | None = None) -> Decider:
        """The export's decision; ``notumor_doubt`` overrides the stored ``eval.notumor_doubt`` (None keeps it)."""
        # exports written before the header rule existed have no gate_modalities: the default (on) applies
        modalities = self.export.get("gate_modalities", DEFAULT_MODALITIES)
        threshold = self.export.get("notumor_doubt") if notumor_doubt is None else notumor_doubt
        return Decider(self.temperature, self.gates(), None if modalities is None else tuple(modalities),
                       None if threshold is None else Doubt.of(threshold, self.class_names))


def load_exported(model_file: str | Path) -> ExportedRun:
    """The export a model file belongs to (``export.json`` beside it), checked to be complete."""
    model_file = Path(model_file)
    if not model_file.exists():
        raise RunError(f"exported model {model_file} does not exist; make one with: braintumor export RUN "
                       "--format onnx")
    export_dir = model_file.parent
    info = read_json(export_dir / EXPORT_JSON, f"{export_dir} has no {EXPORT_JSON} beside {model_file.name}: "
                                               "serve a file written by braintumor export")
    for key in ("class_names", "spec", "format"):
        if key not in info:
            raise RunError(f"{export_dir / EXPORT_JSON} has no {key!r}; export the run again")
    meta_path = export_dir / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    meta.setdefault("arch", info.get("arch"))
    return ExportedRun(export_dir, model_file, info, meta)


class OnnxScorer:
    """An ONNX model in ONNX Runtime as a forward pass: a float32 batch -> [probabilities, *features per gate]
    (``engine.scorer.score`` batches and unwraps it). Thread-safe (one session, ``run`` may be called from
    several threads)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort  # lazy: the onnx extra; importing this module must not need it

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # warnings about unused initialisers are noise to a user
        # No busy-waiting between calls: ORT's idle threads otherwise spin on the cores the server needs for
        # decoding and framing the next upload (measured: single-image p50 twice as slow on 2 shared cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: np.asarray(images, dtype=np.float32)})
