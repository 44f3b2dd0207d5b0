"""The one batched forward pass: (n, h, w, c) 0-255 images -> uncalibrated probabilities and the gate's features.

Every number a run reports or serves comes from ``score``: train's validation scoring and the gate's features,
kfold's out-of-fold and test-folder scoring, ``evaluate``, ``predict``, ``export``'s verification of both runtimes,
and both server backends (Keras and ONNX). A model here is anything that maps a float32 batch to its outputs: a
Keras model (``predict_on_batch``), a compiled call (``compiled``), an ONNX session or a TFLite signature; the
outputs are one array (a probabilities-only model) or a list ``[probabilities, *features]`` (a run's scoring
model), unwrapped in one place (``outputs``).

NumPy only at import: the ONNX server imports this module and must never load TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..decision import Decider, Verdict

Forward = Callable[[np.ndarray], Any]  # float32 (n, h, w, c) -> an array, or a list [probabilities, *features]
Scores = tuple[np.ndarray, list[np.ndarray]]  # (n, classes) float64 probabilities, one (n, d) array per gate


def outputs(out: Any) -> Scores:
    """(probabilities, [features, ...]) from whatever a runtime returned: one array, a list or a tuple."""
    out = out if isinstance(out, (list, tuple)) else [out]
    return np.asarray(out[0], np.float64), [np.asarray(f, np.float64) for f in out[1:]]


def forward_of(model: Any) -> Forward:
    """A Keras model's ``predict_on_batch`` (no per-call dataset set-up), or the callable itself."""
    return model.predict_on_batch if hasattr(model, "predict_on_batch") else model


def score(model: Any, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> Scores:
    """(probabilities, features per gate) of (n, h, w, c) 0-255 images, ``batch_size`` at a time (one float32
    batch in memory, not the whole set). ``tta``: probabilities averaged with the horizontally mirrored image,
    both in one call (a server's single image costs one call, not two); features always of the image as it came
    (the gate was fitted on those)."""
    forward = forward_of(model)
    probs, feats = [], []
    for start in range(0, len(images), max(1, batch_size)):
        x = np.asarray(images[start:start + batch_size], dtype=np.float32)
        if tta:
            p, f = outputs(forward(np.concatenate([x, x[:, :, ::-1]])))
            p, f = (p[:len(x)] + p[len(x):]) / 2, [a[:len(x)] for a in f]
        else:
            p, f = outputs(forward(x))
        probs.append(p)
        feats.append(f)
    if not probs:  # no images: the shapes from one blank image, then none of it
        p, f = outputs(forward(np.zeros((1, *np.shape(images)[1:]), np.float32)))
        return p[:0], [a[:0] for a in f]
    return np.concatenate(probs), [np.concatenate([f[g] for f in feats]) for g in range(len(feats[0]))]


def probabilities(model: Any, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
    """(n, classes) uncalibrated probabilities (``score`` without the features)."""
    return score(model, images, batch_size, tta)[0]


def classify(classifier: Decider, images: np.ndarray, stats: Sequence | None = None, tta: bool = False,
             batch_size: int = 64) -> list[Verdict]:
    """A verdict per image from a run's ``inference.Classifier`` (its scoring model, temperature and gate):
    one forward pass, then the decision every backend shares. ``stats``: the input checks' figures of each
    decoded image (None where only the resized array is known)."""
    probs, feats = score(classifier.model, images, batch_size, tta)
    return classifier.from_raw(probs, feats, stats)


def compiled(model: Any, size: int | None = None, channels: int | None = None) -> Forward:
    """``model(x, training=False)`` as one traced ``tf.function`` (no XLA), for every batch size: what the Keras
    server, export's reference and compare's timing call. With ``size`` and ``channels`` the input signature is
    fixed, so no batch size retraces."""
    import tensorflow as tf  # lazy: the ONNX server imports this module and never needs TensorFlow

    signature = None if size is None else [tf.TensorSpec((None, size, size, channels), tf.float32)]
    call = tf.function(lambda x: model(x, training=False), input_signature=signature, jit_compile=False,
                       reduce_retracing=True)
    if signature is None:
        return lambda x: call(np.asarray(x, np.float32))
    # the concrete function, called with a tensor, skips tf.function's per-call argument binding and cache lookup
    # (about a tenth of a 64 px call: benchmarks/serve_profile.py)
    concrete = call.get_concrete_function()
    return lambda x: concrete(tf.convert_to_tensor(np.asarray(x, np.float32)))


def median_ms(forward: Forward, x: np.ndarray, repeats: int = 30, warmup: int = 1) -> float:
    """Median milliseconds of ``score(forward, x)`` after ``warmup`` calls (tracing, session set-up): the
    timing loop of ``export`` (both runtimes) and ``compare`` (one image); the time includes getting the
    NumPy arrays back."""
    for _ in range(max(1, warmup)):
        score(forward, x, len(x))
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        score(forward, x, len(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
