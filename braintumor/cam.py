"""Grad-CAM and Grad-CAM++ heatmaps (pure), overlays and panels, and the ``cam`` run that writes them.

Gradients come from a sub-model returning [feature map, input of the classifier's last layer], so the score
explained is the pre-softmax logit (a confident softmax saturates and its gradient vanishes). Our registry
models are flat, but a user's model whose backbone is a nested sub-model works too: the outer graph is cut
around the sub-model into pre/inner/post parts, and the inner part returns the feature map from inside its own
graph (KERAS-NOTES.md).
"""

from __future__ import annotations

import csv
import difflib
import io
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from .errors import ConfigError, DataError, ModelError

METHODS = ("gradcam", "gradcam++")
_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


# --- finding the layer to explain ---------------------------------------------------------------------------


def _layer_output(layer, parent):
    """The layer's output tensor in ``parent``'s graph (for a nested model: where the parent calls it)."""
    if isinstance(layer, keras.Model):
        return _one(_node(layer, parent).output_tensors)
    return layer.output


def _output_shape(layer, parent) -> tuple | None:
    """The layer's output shape in its parent's graph, or None if it has none or several (shared layer)."""
    try:
        out = _layer_output(layer, parent)
    except (AttributeError, ValueError, ModelError):
        return None
    return tuple(out.shape) if hasattr(out, "shape") else None


def _is_feature_map(layer, parent) -> bool:
    """A layer Grad-CAM can explain: a 4-D (batch, h, w, channels) output with more than one pixel."""
    if isinstance(layer, keras.layers.InputLayer):
        return False
    shape = _output_shape(layer, parent)
    if shape is None or len(shape) != 4:
        return False
    h, w = shape[1], shape[2]
    return not (h == 1 and w == 1)


def _walk(model) -> list[tuple]:
    """(layer, the model it belongs to) for every layer, a sub-model's layers right after it; graph order."""
    out = []
    for layer in model.layers:
        out.append((layer, model))
        if isinstance(layer, keras.Model):
            out += _walk(layer)
    return out


def feature_layers(model) -> list[str]:
    """Names of the layers ``--layer`` accepts (4-D feature maps), in graph order, nested ones included."""
    return [layer.name for layer, parent in _walk(model) if _is_feature_map(layer, parent)]


def _find(model, name: str) -> tuple[list, object] | None:
    """(path of models from ``model`` down to the one holding the layer, layer), or None; outer layers win."""
    for layer in model.layers:
        if layer.name == name:
            return [model], layer
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found = _find(layer, name)
            if found:
                return [model, *found[0]], found[1]
    return None


def _last_feature_layer(model) -> str | None:
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            inner = _last_feature_layer(layer)
            if inner:
                return inner
        # skip pooling: the map just before it is the same evidence at twice the resolution
        elif _is_feature_map(layer, model) and not isinstance(layer, _POOLING):
            return layer.name
    return None


def last_conv_layer(model) -> str:
    """The layer explained by default: the registry's ``last_conv`` when the model has it, else found.

    Found means the last layer with a 4-D output before global pooling (looking inside a nested backbone),
    skipping a final max/average pooling layer in favour of the finer map it pools.
    """
    from .models import available, get_spec

    spec = get_spec(model.name) if model.name in available() else None
    if spec is not None and spec.last_conv != "auto" and _find(model, spec.last_conv):
        return spec.last_conv
    name = _last_feature_layer(model)
    if name is None:
        raise ModelError(f"model {model.name!r} has no convolutional layer with a 4-D output to explain")
    return name


def _check_layer(model, name: str):
    """(model path, layer) for ``name``, or a ModelError that lists the valid names."""
    valid = feature_layers(model)
    found = _find(model, name)
    if found and _is_feature_map(found[1], found[0][-1]):
        return found
    if found:
        shape = _output_shape(found[1], found[0][-1])
        why = f"layer {name!r} has output shape {shape}, not a 4-D feature map"
    else:
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        why = f"model {model.name!r} has no layer {name!r}" + (
            f" (did you mean {' or '.join(map(repr, close))}?)" if close else "")
    shown = valid[-40:]
    more = f" (and {len(valid) - len(shown)} earlier ones)" if len(valid) > len(shown) else ""
    raise ModelError(f"{why}; valid layers (4-D outputs, the last ones explain best): "
                     f"{', '.join(shown)}{more}")


# --- the explainer: x -> (feature map, logits, probabilities) -----------------------------------------------


def _node(sub, parent) -> object:
    """The call of nested model ``sub`` inside ``parent``'s graph (it may also be called in other models)."""
    calls, seen, todo = [], set(), list(parent.outputs)
    while todo:  # walk the parent's graph back from its outputs
        history = getattr(todo.pop(), "_keras_history", None)
        if history is None or (id(history.operation), history.node_index) in seen:
            continue
        seen.add((id(history.operation), history.node_index))
        node = history.operation._inbound_nodes[history.node_index]
        if history.operation is sub:
            calls.append(node)
        else:
            todo += list(node.input_tensors)
    if len(calls) != 1:
        raise ModelError(f"sub-model {sub.name!r} is called {len(calls)} times in {parent.name!r}; Grad-CAM "
                         "needs it called once. Pass --layer with a layer of the outer model instead")
    return calls[0]


def _one(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) and len(tensors) == 1 else tensors


def _same(a, b) -> bool:
    a = list(a) if isinstance(a, (list, tuple)) else [a]
    b = list(b) if isinstance(b, (list, tuple)) else [b]
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _graph(inputs, outputs, what: str) -> Callable:
    """A callable for the part of a functional graph from ``inputs`` to ``outputs`` (identity if equal)."""
    inputs, outputs = _one(inputs), _one(outputs)
    if _same(inputs, outputs):
        return lambda x: x
    try:
        part = keras.Model(inputs, outputs)
    except ValueError as e:
        raise ModelError(f"cannot cut the classifier {what} for Grad-CAM ({e}); pass --layer with a layer of "
                         "the outer model") from e
    return lambda x: part(x, training=False)


def _split(path: list, layer, target) -> Callable:
    """x -> (layer's output, ``target``) where ``target`` is a tensor of ``path[0]``'s graph.

    One level per nested model: pre (outer input -> sub-model input), the same split inside the sub-model,
    then post (sub-model output -> target). Gradients flow through all three under one tape.
    """
    outer = path[0]
    if len(path) == 1:
        both = _graph(outer.inputs, [_layer_output(layer, outer), target], "at " + layer.name)
        return lambda x: tuple(both(x))
    sub = path[1]
    node = _node(sub, outer)
    pre = _graph(outer.inputs, node.input_tensors, f"before {sub.name!r}")
    post = _graph(node.output_tensors, target, f"after {sub.name!r}")
    inner = _split(path[1:], layer, _one(sub.outputs))

    def run(x):
        feats, y = inner(pre(x))
        return feats, post(y)

    return run


def _head(model):
    """(tensor to stop at, fn tensor -> (logits, probabilities)) for the classifier's output layer."""
    if len(model.outputs) != 1:
        raise ModelError(f"model {model.name!r} has {len(model.outputs)} outputs; Grad-CAM needs one")
    op, node_index, _ = model.outputs[0]._keras_history
    activation = keras.activations.serialize(op.activation) if getattr(op, "activation", None) else None
    if isinstance(op, keras.layers.Dense) and activation in ("softmax", "sigmoid"):
        h = _one(op._inbound_nodes[node_index].input_tensors)

        def dense(t):
            t = tf.cast(t, tf.float32)
            logits = tf.matmul(t, tf.cast(op.kernel, tf.float32))
            if op.use_bias:
                logits += tf.cast(op.bias, tf.float32)
            return logits, tf.cast(op(t, training=False), tf.float32)

        return h, dense
    if isinstance(op, (keras.layers.Activation, keras.layers.Softmax)):
        h = _one(op._inbound_nodes[node_index].input_tensors)
        return h, lambda t: (tf.cast(t, tf.float32), tf.cast(op(t), tf.float32))
    # unknown output layer: explain its output as it is
    return model.outputs[0], lambda t: (tf.cast(t, tf.float32), tf.cast(t, tf.float32))


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer name: step}
_LOCK = threading.Lock()


def _explainer(model, layer_name: str) -> Callable:
    """(x, class index or -1 for the predicted) -> (feature map, its gradients, probabilities, class index).

    Built and traced once per (model, layer) and cached: later calls run as one compiled graph.
    """
    with _LOCK:
        per_model = _CACHE.setdefault(model, {})
        if layer_name not in per_model:
            path, layer = _check_layer(model, layer_name)
            target, head = _head(model)
            features = _split(path, layer, target)

            @tf.function(reduce_retracing=True)
            def step(x, class_index):
                with tf.GradientTape() as tape:
                    feats, h = features(x)
                    logits, probs = head(h)
                    predicted = tf.argmax(probs[0], output_type=tf.int32)
                    index = tf.where(class_index < 0, predicted, class_index)
                    score = tf.gather(logits[0], index)  # the pre-softmax score of the explained class
                grads = tape.gradient(score, feats)
                if grads is None:  # (at trace time) a layer after the feature maps, or off the class path
                    raise ModelError(f"the class score does not depend on layer {layer_name!r}; choose a "
                                     "layer before the classifier head")
                return feats, grads, probs, index

            per_model[layer_name] = step
        return per_model[layer_name]


# --- heatmaps -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """One image explained: the heatmap and what the model said about the image."""

    heatmap: np.ndarray  # (h, w) float32 in [0, 1] at the input image's size
    probs: np.ndarray  # (num_classes,) float32 softmax output
    class_index: int  # the class the heatmap explains
    layer: str
    method: str

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))


def _as_model_input(model, image: np.ndarray) -> np.ndarray:
    """(1, H, W, C) float32 0-255 at the model's input size and channels (PIL bilinear, as data.to_array)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise DataError(f"expected one (h, w, channels) image, got an array of shape {image.shape}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    _, H, W, C = (None, None, None, None) if len(model.inputs[0].shape) != 4 else tuple(model.inputs[0].shape)
    needs_resize = (H is not None and H != image.shape[0]) or (W is not None and W != image.shape[1])
    needs_channels = C is not None and C != image.shape[-1]
    if needs_resize or needs_channels:
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        img = img.convert("L" if (C or image.shape[-1]) == 1 else "RGB")
        if needs_resize:
            img = img.resize((W or image.shape[1], H or image.shape[0]), Image.BILINEAR)
        image = np.asarray(img)
        image = image[..., None] if image.ndim == 2 else image
    return image.astype(np.float32)[None]


def _weights(method: str, feats: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """(channels,) importance of each feature map for the explained score."""
    if method == "gradcam":
        return tf.reduce_mean(grads, axis=(0, 1))  # global-average-pooled gradients (Selvaraju et al.)
    # Grad-CAM++ closed form for an exponential score (Chattopadhay et al. eq. 19): first-order gradients only
    g2, g3 = grads ** 2, grads ** 3
    denom = 2.0 * g2 + tf.reduce_sum(feats, axis=(0, 1)) * g3
    alpha = tf.math.divide_no_nan(g2, denom)
    return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(0, 1))


def _resize_map(cam: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a 2-D map (any range) to (h, w) float32."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam, mode="F").resize((w, h), Image.BILINEAR))
    return cam.astype(np.float32)


def explain(model, image: np.ndarray, class_index: int | None = None, layer: str | None = None,
            method: str = "gradcam") -> Explanation:
    """Heatmap and class probabilities for one (h, w, c) image of 0-255 pixels (uint8 or float).

    ``class_index`` None explains the predicted class. ``layer`` None uses ``last_conv_layer(model)``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; use one of: {', '.join(METHODS)}")
    layer = layer or last_conv_layer(model)
    step = _explainer(model, layer)
    num_classes = int(model.outputs[0].shape[-1])
    if class_index is not None and not 0 <= int(class_index) < num_classes:
        raise ConfigError(f"class index {class_index} is out of range for a model with {num_classes} classes")
    h, w = np.asarray(image).shape[:2]
    x = tf.constant(_as_model_input(model, image))
    wanted = tf.constant(-1 if class_index is None else int(class_index), tf.int32)
    feats, grads, probs, index = step(x, wanted)
    feats, grads = tf.cast(feats[0], tf.float32), tf.cast(grads[0], tf.float32)  # (h', w', channels)
    cam = tf.nn.relu(tf.reduce_sum(feats * _weights(method, feats, grads), axis=-1)).numpy()
    heatmap = _normalise(_resize_map(cam, h, w))
    return Explanation(heatmap, probs[0].numpy().astype(np.float32), int(index), layer, method)


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to a peak of 1; all zeros when nothing in the image speaks for the class."""
    top = float(cam.max()) if cam.size else 0.0
    if not (top > 0 and np.isfinite(top)):
        return np.zeros_like(cam, dtype=np.float32)
    return np.clip(cam / top, 0.0, 1.0).astype(np.float32)


def gradcam(model, image: np.ndarray, class_index: int | None = None, layer: str | None = None,
            method: str = "gradcam") -> np.ndarray:
    """The (h, w) float32 heatmap in [0, 1] of one 0-255 image, at the image's size (see ``explain``)."""
    return explain(model, image, class_index, layer, method).heatmap


# --- pictures -----------------------------------------------------------------------------------------------


def _rgb(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 from (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) 0-255 pixels."""
    image = np.clip(np.rint(np.asarray(image, dtype=np.float32)), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 'jet' colours of a [0, 1] heatmap (blue: nothing, red: most)."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The coloured heatmap blended over the image: (h, w, 3) uint8 RGB at the image's size."""
    rgb = _rgb(image)
    heat = _resize_map(np.asarray(heatmap, dtype=np.float32), *rgb.shape[:2])
    blend = (1 - alpha) * rgb.astype(np.float32) + alpha * colorize(heat).astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def panel_png(image: np.ndarray, heatmap: np.ndarray, title: str) -> bytes:
    """PNG bytes of the input, the heatmap and the overlay side by side under ``title``."""
    from . import plots

    rgb = _rgb(image)
    heat = _resize_map(np.asarray(heatmap, dtype=np.float32), *rgb.shape[:2])
    return _png(plots.cam_panel_figure(rgb, heat, overlay(rgb, heat), title))


# --- the cam run --------------------------------------------------------------------------------------------


@dataclass
class CamRow:
    """One explained image, as cam.csv lists it."""

    image: str
    predicted: str
    probability: float
    explained: str
    explained_probability: float
    png: str  # relative to the run directory
    true: str | None = None  # known in --gallery mode

    @property
    def correct(self) -> bool | None:
        return None if self.true is None else self.true == self.predicted


GalleryCell = tuple[int, str, np.ndarray, Explanation]  # (true class, path, image, explanation)


@dataclass
class CamReport:
    out_dir: Path
    layer: str
    method: str
    rows: list[CamRow] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    figures: list[str] = field(default_factory=list)  # gallery grids, relative to out_dir


def class_index_of(name: str, class_names: Sequence[str]) -> int:
    """Index of a class given by name (any spelling data.py recognises); ConfigError naming the valid ones."""
    from .data import canonical_class, class_key

    names = list(class_names)
    canon = canonical_class(name)
    for match in (lambda c: c == name, lambda c: class_key(c) == class_key(name),
                  lambda c: canon is not None and canonical_class(c) == canon):
        hits = [i for i, c in enumerate(names) if match(c)]
        if len(hits) == 1:
            return hits[0]
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise ConfigError(f"unknown class {name!r}{hint}; this model's classes are: {', '.join(names)}")


def expand_images(sources: Sequence[str | Path]) -> list[str]:
    """Image paths from files and folders (a folder contributes its image files, recursively, sorted)."""
    from .data import IMAGE_EXTENSIONS

    out = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.is_file()
                          and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        else:
            out.append(str(p))  # a missing or broken file is reported when it is read
    return out


def _png_name(path: str, taken: set[str], folder: str = "") -> str:
    """``<folder>/<stem>.png``, numbered ``-2``, ``-3``... when two inputs share a stem."""
    stem = Path(path).stem or "image"
    name, i = f"{folder}{stem}.png", 1
    while name.lower() in taken:
        i += 1
        name = f"{folder}{stem}-{i}.png"
    taken.add(name.lower())
    return name


def _title(image: str, class_names: Sequence[str], e: Explanation, true: str | None = None) -> str:
    pred = class_names[e.predicted]
    line = f"predicted {pred} ({e.probs[e.predicted]:.2f})"
    if e.class_index != e.predicted:
        line += f", explaining {class_names[e.class_index]} ({e.probs[e.class_index]:.2f})"
    if true is not None:
        line += f", true {true}"
    return f"{Path(image).name}: {line}\n{_label(e.method)} at {e.layer}"


def _label(method: str) -> str:
    return "Grad-CAM++" if method == "gradcam++" else "Grad-CAM"


def gallery_picks(folder: str | Path, class_names: Sequence[str], config_classes, per_class: int,
                  seed: int) -> dict[int, list[str]]:
    """Seeded random order of each class's images in a folder of class sub-folders: class index -> paths."""
    from .data import list_images

    if per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {per_class}")
    listing = list_images(folder, config_classes, require_all=False)
    unknown = [c for c in listing.class_names if c not in class_names]
    if unknown:
        raise DataError(f"{folder} has classes {', '.join(unknown)} that the model does not know; "
                        f"its classes are {', '.join(class_names)}")
    rng = np.random.default_rng(seed)
    order = {}
    for label, cls in enumerate(listing.class_names):
        paths = [p for p, y in zip(listing.paths, listing.labels, strict=True) if y == label]
        if paths:
            order[list(class_names).index(cls)] = [paths[i] for i in rng.permutation(len(paths))]
    return order


def run_cam(run_dir: str | Path, images: Sequence[str | Path] = (), *, gallery: str | Path | None = None,
            per_class: int = 4, class_name: str | None = None, layer: str | None = None,
            method: str = "gradcam", seed: int | None = None, runs_dir: str | Path = "runs",
            name: str | None = None, on_image: Callable[[str], None] | None = None) -> CamReport:
    """The ``cam`` command: explain images (or a seeded per-class gallery) into runs/cam/<timestamp>-<arch>/.

    Writes one panel PNG per image (named after it), cam.csv, skipped.txt for unreadable images and, with
    ``gallery``, gallery_<class>.png per class plus gallery.png. ``on_image(path)`` follows each image.
    """
    from .evaluate import load_run, write_skipped
    from .runs import new_run_dir, run_status, start_run, write_meta

    # 1. everything that can be wrong with the request fails before a run directory exists
    files = expand_images(images)
    if images and not files:
        raise DataError(f"no image files in {', '.join(map(str, images))}")
    if bool(files) == (gallery is not None):
        raise ConfigError("pass image files (or folders of images) or --gallery DIR: one of the two")
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; use one of: {', '.join(METHODS)}")
    run = load_run(run_dir)
    if "ensemble_of" in run.meta:
        raise ConfigError(f"{run_dir} is a k-fold ensemble; Grad-CAM explains one model: pass one of its folds, "
                          f"e.g. --run {Path(run_dir) / run.meta['ensemble_of'][0]}")
    classes = run.class_names
    explained = None if class_name is None else class_index_of(class_name, classes)
    layer = layer or last_conv_layer(run.model)
    _explainer(run.model, layer)  # a wrong --layer fails here, listing the valid names
    seed = run.config.seed if seed is None else seed
    picks = gallery_picks(gallery, classes, run.config.data.classes, per_class, seed) if gallery else None

    # 2. a run directory that says what was asked
    out = new_run_dir(runs_dir, "cam", run.config.model.arch, name)
    start_run(out, run.config, "cam", source_run=str(run.path), method=method, layer=layer,
              explained_class=None if explained is None else classes[explained],
              images=None if gallery else [str(p) for p in images],
              gallery=None if gallery is None else str(gallery), per_class=per_class if gallery else None)
    report = CamReport(out, layer, method)
    with run_status(out):
        # 3. one panel PNG per image; unreadable images are listed and skipped
        todo = [(p, None) for p in files] if picks is None else _gallery_todo(picks)
        cells = _explain_all(run, todo, explained, layer, method, per_class, report, on_image)
        # 4. the table, the skipped list and the gallery figures
        write_cam_csv(out / "cam.csv", report.rows)
        write_skipped(out, report.skipped)
        if picks is not None:
            report.figures = write_gallery(out, cells, classes, method, layer)
        write_meta(out, n=len(report.rows), skipped=len(report.skipped))
        if not report.rows:
            raise DataError(f"none of the {len(report.skipped)} images could be read; "
                            f"see {out / 'skipped.txt'}")
    return report


def _gallery_todo(picks: dict[int, list[str]]) -> list[tuple[str, int]]:
    return [(p, c) for c, paths in sorted(picks.items()) for p in paths]


def _explain_all(run, todo: list[tuple[str, int | None]], explained: int | None, layer: str, method: str,
                 per_class: int, report: CamReport, on_image) -> list[GalleryCell]:
    """Explain each (path, true class or None) and write its panel; gallery classes stop at ``per_class``."""
    from .data import read_image
    from .runs import atomic_write_bytes

    classes = run.class_names
    taken: set[str] = set()
    cells: list[GalleryCell] = []
    done = dict.fromkeys(range(len(classes)), 0)
    for path, true in todo:
        if true is not None and done[true] >= per_class:
            continue  # the seeded order is longer than needed, so an unreadable pick is replaced
        try:
            image = read_image(path, run.image_size, run.channels)  # exactly the training preprocessing
        except DataError as err:
            report.skipped.append((path, str(err)))
            continue
        e = explain(run.model, image, explained, layer, method)
        true_name = None if true is None else classes[true]
        png = _png_name(path, taken, "" if true is None else f"{true_name}/")
        title = _title(path, classes, e, true_name)
        atomic_write_bytes(report.out_dir / png, panel_png(image, e.heatmap, title))
        report.rows.append(CamRow(path, classes[e.predicted], float(e.probs[e.predicted]),
                                  classes[e.class_index], float(e.probs[e.class_index]), png, true_name))
        if true is not None:
            done[true] += 1
            cells.append((true, path, image, e))
        if on_image:
            on_image(path)
    return cells


def write_cam_csv(path: Path, rows: Sequence[CamRow]) -> None:
    """cam.csv: image, predicted, probability, explained, explained_probability, true, correct, png."""
    from .runs import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "predicted", "probability", "explained", "explained_probability", "true", "correct",
                "png"])
    for r in rows:
        correct = "" if r.correct is None else str(r.correct).lower()
        w.writerow([r.image, r.predicted, f"{r.probability:.6f}", r.explained,
                    f"{r.explained_probability:.6f}", r.true or "", correct, r.png])
    atomic_write_text(path, buf.getvalue())


def write_gallery(out: Path, cells: list[GalleryCell], class_names: Sequence[str], method: str,
                  layer: str) -> list[str]:
    """gallery_<class>.png (inputs over overlays, one column per image) and gallery.png (a row per class)."""
    from . import plots
    from .runs import atomic_write_bytes

    label = _label(method)
    written, overview_rows, overview_labels = [], [], []
    for c, cls in enumerate(class_names):
        mine = [(path, img, e) for true, path, img, e in cells if true == c]
        if not mine:
            continue
        tiles = [_tile(img, e, class_names, c) for _, img, e in mine]
        right = sum(t[2] for t in tiles)
        inputs = [(_rgb(img), Path(path).name, None) for path, img, _ in mine]
        fig = plots.image_grid_figure([inputs, tiles], ["input", label],
                                      f"{cls}: {right}/{len(tiles)} predicted correctly ({label} at {layer})")
        name = f"gallery_{cls}.png"
        atomic_write_bytes(out / name, _png(fig))
        written.append(name)
        overview_rows.append(tiles)
        overview_labels.append(f"true {cls}")
    if overview_rows:
        fig = plots.image_grid_figure(overview_rows, overview_labels,
                                      f"{label} at {layer}: green = correct, red = wrong")
        atomic_write_bytes(out / "gallery.png", _png(fig))
        written.append("gallery.png")
    return written


def _tile(image: np.ndarray, e: Explanation, class_names: Sequence[str], true: int) -> tuple:
    """(overlay, caption, correct) for one gallery cell."""
    ok = e.predicted == true
    caption = f"{'right' if ok else 'WRONG'}: {class_names[e.predicted]} {e.probs[e.predicted]:.2f}"
    if e.class_index != e.predicted:
        caption += f"\nmap: {class_names[e.class_index]}"
    return overlay(image, e.heatmap), caption, ok
