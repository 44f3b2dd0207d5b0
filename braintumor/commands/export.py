"""`braintumor export`: a run's scoring model as ONNX, TFLite or a SavedModel, verified against ``model.keras``.

The exported graph is the run's scoring model (``Classifier.model``): probabilities and the gate's pooled features
from one forward pass, preprocessing inside, so any runtime that feeds 0-255 pixels reaches the same verdict once
``decision.Decider`` applies the stored temperature and gate (``exported.py`` reads it back without TensorFlow).

Converters, the ones the ecosystem keeps: Keras' own ``model.export(format="onnx")`` (tf2onnx underneath, on the
traced TF graph: the route Keras maintains for Keras 3, where ``tf2onnx.convert.from_keras`` is not), and the
TFLite converter from a SavedModel written by ``model.export`` (``from_keras_model`` breaks on Keras 3; the
SavedModel route is the one that takes quantisation options).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data import ImageList, list_images, load_images
from ..decision import Decider
from ..engine import scorer
from ..engine.run import Run
from ..engine.scorer import Forward
from ..errors import ConfigError, DataError
from ..exported import EXPORT_JSON, MODEL_FILES, OnnxScorer
from ..models.loading import LoadedRun, load_run
from ..runs import now, versions
from .evaluate import read_split

FORMATS = tuple(MODEL_FILES)
QUANTIZE = ("float16", "int8")
CONVERTERS = {"onnx": "keras Model.export(format='onnx') (tf2onnx)",
              "tflite": "tf.lite.TFLiteConverter.from_saved_model (SavedModel from keras Model.export)",
              "savedmodel": "keras Model.export(format='tf_saved_model')"}
# What a float export must meet on the verification images (issue 15); int8 is allowed 1% disagreement.
TARGETS = {"max_abs_prob_diff": 1e-4, "top1_agreement": 1.0, "int8_top1_agreement": 0.99}


def run_export(run_dir: str | Path, fmt: str, *, quantize: str | None = None, data: str | Path | None = None,
               runs_dir: str | Path = "runs", name: str | None = None, max_images: int = 256,
               calibration_images: int = 200, notumor_doubt: float | None = None) -> tuple[Path, dict[str, Any]]:
    """Export and verify; returns (the export directory, what export.json holds). ``notumor_doubt`` overrides the
    run's ``eval.notumor_doubt`` in export.json (a server of the export applies it)."""
    _check_options(fmt, quantize)
    # 1. the run, its scoring model (probabilities + gate features) and the images to verify on
    run = load_run(run_dir).with_notumor_doubt(notumor_doubt)
    scoring = run.classifier.model
    images, where = verification_images(run, data, max_images)
    out = Run.create(runs_dir, "export", run.meta.get("arch"), name or "-".join(filter(None, [fmt, quantize])),
                     exported_from=str(run.path))
    with out.marking():  # a failed conversion leaves a directory whose meta.json says failed, and why
        # 2. convert
        model_path = out / MODEL_FILES[fmt]
        calibration = training_images(run, calibration_images) if quantize == "int8" else None
        t0 = time.perf_counter()
        convert(scoring, fmt, model_path, quantize, calibration)
        seconds = time.perf_counter() - t0
        # 3. verify against model.keras on real images, and time both runtimes
        keras_run, exported_run = keras_scorer(scoring), load_scorer(fmt, model_path)
        verification = verify(keras_run, exported_run, images, run.classifier, where)
        verification["latency_ms"] = {"keras": latency(keras_run, images), fmt: latency(exported_run, images)}
        # 4. what a server needs beside the model: spec, classes, temperature, gates, the source run's files
        info = describe(run, fmt, quantize, model_path, seconds, verification)
        copy_run_files(run, out)
        out.write_json(EXPORT_JSON, info)
    return out.path, info


def _check_options(fmt: str, quantize: str | None) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZE)}")
    if quantize is not None and fmt != "tflite":
        raise ConfigError(f"--quantize is for --format tflite (the TFLite converter quantises); {fmt} exports "
                          "are float32")


def verification_images(run: LoadedRun, data: str | Path | None, limit: int) -> tuple[np.ndarray, str]:
    """(n, size, size, channels) uint8 real images: ``data``, else the run's validation split (a k-fold run:
    its first fold's; agreement between runtimes needs real images, not held-out ones)."""
    if data is not None:
        listing = list_images(data, run.config.data.classes, require_all=False)
        where = str(data)
    else:
        split_dir = run.path / run.meta["ensemble_of"][0] if "ensemble_of" in run.meta else run.path
        paths, labels, _ = read_split(split_dir, "val")
        listing = ImageList(Path("."), tuple(paths), np.asarray(labels), tuple(run.class_names), {})
        where = f"the validation split of {split_dir.name}"
    images = _subsample(load_images(listing, run.spec).images, limit)
    if not len(images):
        raise DataError(f"no readable images in {where} to verify the export on; pass --data DIR")
    return images, f"{len(images)} images from {where}"


def training_images(run: LoadedRun, limit: int) -> np.ndarray:
    """Training images for int8 calibration (the run's own training split)."""
    split_dir = run.path / run.meta["ensemble_of"][0] if "ensemble_of" in run.meta else run.path
    paths, labels, _ = read_split(split_dir, "train")
    listing = ImageList(Path("."), tuple(paths), np.asarray(labels), tuple(run.class_names), {})
    return _subsample(load_images(listing, run.spec).images, limit)


def _subsample(images: np.ndarray, limit: int) -> np.ndarray:
    if len(images) <= limit:
        return images
    return images[np.random.default_rng(0).choice(len(images), limit, replace=False)]


# --- converters ---------------------------------------------------------------------------------------------

def convert(model, fmt: str, path: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    model([np.zeros((1, *model.inputs[0].shape[1:]), np.float32)])  # Keras' ONNX export wants a called model
    if fmt == "onnx":
        model.export(str(path), format="onnx", verbose=False)
    elif fmt == "savedmodel":
        model.export(str(path), format="tf_saved_model", verbose=False)
    else:
        path.write_bytes(tflite_bytes(model, quantize, calibration))


def tflite_bytes(model, quantize: str | None, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf  # lazy: the export command is the only one that needs the converter

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":  # int8 weights and activations, calibrated on training images; float in and out
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calibration)
        return converter.convert()


# --- runtimes ----------------------------------------------------------------------------------------------

def keras_scorer(model) -> Forward:
    """The Keras scoring model as the Keras server runs it: one compiled call."""
    return scorer.compiled(model)


def load_scorer(fmt: str, path: Path) -> Forward:
    """The exported file in its own runtime, as a forward pass (``engine.scorer`` batches and unwraps it)."""
    if fmt == "onnx":
        return OnnxScorer(path)
    import tensorflow as tf  # lazy: the TFLite and SavedModel runtimes; ONNX needs no TensorFlow

    if fmt == "savedmodel":
        loaded = tf.saved_model.load(str(path))  # held by the closure: its variables die with it
        return lambda images: loaded.serve([tf.constant(np.asarray(images, np.float32))])  # Keras: a list of inputs
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner()

    def run(images):
        (key,) = runner.get_input_details()
        out = runner(**{key: np.asarray(images, np.float32)})
        names = sorted(out, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 0)
        return [out[k] for k in names]
    return run


def verify(reference: Forward, exported: Forward, images: np.ndarray, decider: Decider, where: str,
           batch: int = 32) -> dict[str, Any]:
    """Agreement of the exported model with model.keras on ``images``: probabilities, top-1, the gate's
    features and the final verdict (temperature and gate applied to each)."""
    ref_p, ref_feats = scorer.score(reference, images, batch)
    exp_p, exp_feats = scorer.score(exported, images, batch)
    ref_v, exp_v = decider.from_raw(ref_p, ref_feats), decider.from_raw(exp_p, exp_feats)
    feature_diff = max((float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
                        for a, b in zip(ref_feats, exp_feats, strict=True)), default=None)
    return {"on": where, "n": int(len(images)),
            "max_abs_prob_diff": float(np.abs(ref_p - exp_p).max()),
            "top1_agreement": float(np.mean(ref_p.argmax(1) == exp_p.argmax(1))),
            "max_rel_feature_diff": feature_diff,
            "verdict_agreement": float(np.mean([a.status == b.status for a, b in zip(ref_v, exp_v, strict=True)]))}


def latency(forward: Forward, images: np.ndarray, repeats: int = 30, batch: int = 32) -> dict[str, float]:
    """Median milliseconds for one image and for one batch (after a warm-up call each)."""
    one, many = images[:1], images[:batch]
    return {"single_ms": round(scorer.median_ms(forward, one, repeats), 3),
            "batch_ms": round(scorer.median_ms(forward, many, max(3, repeats // 6)), 3),
            "batch_size": int(len(many))}


# --- the export directory ----------------------------------------------------------------------------------

def file_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(run: LoadedRun, fmt: str, quantize: str | None, model_path: Path, seconds: float,
             verification: dict[str, Any]) -> dict[str, Any]:
    spec = run.spec
    v = verification
    if quantize == "int8":
        meets = v["top1_agreement"] >= TARGETS["int8_top1_agreement"]
    elif quantize == "float16":
        meets = v["top1_agreement"] >= TARGETS["top1_agreement"]
    else:
        meets = (v["max_abs_prob_diff"] <= TARGETS["max_abs_prob_diff"]
                 and v["top1_agreement"] >= TARGETS["top1_agreement"])
    return {
        "format": fmt, "quantize": quantize, "file": model_path.name, "size_bytes": file_size(model_path),
        "converter": CONVERTERS[fmt], "convert_seconds": round(seconds, 2),
        "source_run": run.path.name, "arch": run.meta.get("arch"), "class_names": run.class_names,
        "spec": {"size": spec.size, "channels": spec.channels, "crop": spec.crop, "normalize": spec.normalize,
                 "scan": {"window": spec.scan.window, "slices": spec.scan.slices,
                          "slice_axis": spec.scan.slice_axis, "max_slices": spec.scan.max_slices}},
        "input": "float32 (n, size, size, channels), pixels 0-255 (preprocessing is inside the model)",
        "outputs": ["probabilities (uncalibrated)", *[f"gate {i} features" for i in range(len(run.classifier.gates))]],
        "temperature": run.classifier.temperature, "gates": len(run.classifier.gates),
        "tta": bool(run.config.eval.tta),
        "gate_modalities": run.classifier.describe()["gate_modalities"],
        "notumor_doubt": run.classifier.describe()["notumor_doubt"],
        "verification": v, "targets": TARGETS, "meets_targets": bool(meets), "versions": versions(),
        "exported": now(),
    }


def copy_run_files(run: LoadedRun, out: Run) -> None:
    """The source run's description (meta, config, metrics, calibration) and each model's gate. Its meta.json
    fields join the export's (what it was trained with: versions, commit, classes), all but the export's own
    command, status and times."""
    for name in ("config.yaml", "metrics.json", "calibration.json"):
        if (run.path / name).is_file():
            shutil.copy2(run.path / name, out / name)
    own = ("command", "status", "started", "finished", "error")
    out.update(**{**{k: v for k, v in run.meta.items() if k not in own}, "class_names": run.class_names})
    for i, gate in enumerate(run.classifier.gates):
        (out / "gates" / str(i)).mkdir(parents=True, exist_ok=True)
        gate.save(out / "gates" / str(i))
