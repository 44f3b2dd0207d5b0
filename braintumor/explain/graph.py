"""Cutting Keras graphs for Grad-CAM: find the layer to explain and a callable x -> (feature map, head input)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from ..errors import ModelError, did_you_mean
from ..models import available, get_spec

_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


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
    spec = get_spec(model.name) if model.name in available() else None
    if spec is not None and spec.last_conv != "auto" and _find(model, spec.last_conv):
        return spec.last_conv
    name = _last_feature_layer(model)
    if name is None:
        raise ModelError(f"model {model.name!r} has no convolutional layer with a 4-D output to explain")
    return name


def check_layer(model, name: str):
    """(model path, layer) for ``name``, or a ModelError that lists the valid names."""
    valid = feature_layers(model)
    found = _find(model, name)
    if found and _is_feature_map(found[1], found[0][-1]):
        return found
    if found:
        shape = _output_shape(found[1], found[0][-1])
        why = f"layer {name!r} has output shape {shape}, not a 4-D feature map"
    else:
        why = f"model {model.name!r} has no layer {name!r}" + did_you_mean(name, valid, n=3, cutoff=0.6)
    shown = valid[-40:]
    more = f" (and {len(valid) - len(shown)} earlier ones)" if len(valid) > len(shown) else ""
    raise ModelError(f"{why}; valid layers (4-D outputs, the last ones explain best): "
                     f"{', '.join(shown)}{more}")


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


def split_at(path: list, layer, target) -> Callable:
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
    inner = split_at(path[1:], layer, _one(sub.outputs))

    def run(x):
        feats, y = inner(pre(x))
        return feats, post(y)

    return run


def head_of(model):
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
