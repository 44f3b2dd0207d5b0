"""Every registry entry builds and trains a step; weights options behave as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from braintumor.config import ModelConfig
from braintumor.errors import ModelError
from braintumor.explain.graph import check_layer, last_conv_layer
from braintumor.models import available, build_model, get_spec


@pytest.mark.parametrize("arch", available())
def test_builds_and_takes_a_training_step(arch):
    import keras

    model = build_model(ModelConfig(arch=arch, weights="none", filters=(8, 16), dense_units=(8,)), 4, (32, 32, 3))
    # eager: one step needs no traced graph (tracing DenseNet121's training step took 47 s of the test's 63 on CPU)
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 3], 4)
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))
    probs = model(x, training=False).numpy()
    assert probs.shape == (4, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # the layer Grad-CAM explains by default: the registry's own when it names one (not a silent fall-back to the
    # search), else a feature map the search found
    layer = last_conv_layer(model)
    if get_spec(arch).last_conv != "auto":
        assert layer == get_spec(arch).last_conv  # the model has it (at 32 px some maps are 1x1: fine here)
    else:
        check_layer(model, layer)  # what the search found is a feature map with more than one position


@pytest.mark.parametrize("arch", ["resnet50", "customnet"])
def test_grayscale_input(arch):
    model = build_model(ModelConfig(arch=arch, weights="none", filters=(8, 16)), 4, (32, 32, 1))
    assert model(np.zeros((1, 32, 32, 1), "float32")).shape == (1, 4)


def test_preprocessing_lives_inside_the_model():
    """EfficientNet gets raw 0-255 (no 1/255 in front of it: the study's double-scaling bug)."""
    from braintumor.models.layers import Preprocess

    x = np.full((1, 2, 2, 3), 255.0, "float32")
    assert np.allclose(Preprocess("raw")(x), 255.0)
    assert np.allclose(Preprocess("tf")(x), 1.0)
    assert np.allclose(Preprocess("unit")(x), 1.0)
    assert np.allclose(Preprocess("caffe")(x)[0, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68], atol=1e-3)
    eff = build_model(ModelConfig(arch="efficientnet", weights="none"), 4, (32, 32, 3))
    assert eff.get_layer("preprocess").mode == "raw"


def test_offline_imagenet_gives_one_clear_message(monkeypatch, tmp_path):
    import keras.src.utils.file_utils as fu

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/weights_notop.h5: None -- no network")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(fu, "get_file", offline)
    import keras.src.applications.mobilenet_v2 as mv2

    monkeypatch.setattr(mv2.file_utils, "get_file", offline)
    with pytest.raises(ModelError, match=r"could not download the ImageNet weights for mobilenet.*--weights none"):
        build_model(ModelConfig(arch="mobilenet", weights="imagenet"), 4, (32, 32, 3))


def test_customnet_has_no_imagenet_weights():
    with pytest.raises(ModelError, match="customnet has no ImageNet weights"):
        build_model(ModelConfig(arch="customnet", weights="imagenet"), 4, (32, 32, 3))


def test_local_weights_file(tmp_path: Path):
    cfg = ModelConfig(arch="customnet", filters=(8, 16), dense_units=(8,))
    a = build_model(cfg, 4, (32, 32, 3))
    path = tmp_path / "w.weights.h5"
    a.save_weights(path)
    b = build_model(ModelConfig(arch="customnet", filters=(8, 16), dense_units=(8,), weights=str(path)), 4,
                    (32, 32, 3))
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32") * 255
    assert np.allclose(a(x, training=False), b(x, training=False), atol=1e-6)
    wrong = ModelConfig(arch="customnet", filters=(4, 8), dense_units=(8,), weights=str(path))
    with pytest.raises(ModelError, match="could not load"):
        build_model(wrong, 4, (32, 32, 3))
    mob = ModelConfig(arch="mobilenet", weights=str(path))
    with pytest.raises(ModelError, match="include_top=False"):
        build_model(mob, 4, (32, 32, 3))


def test_unknown_arch_suggests():
    with pytest.raises(ModelError, match=r"did you mean 'densenet'"):
        get_spec("densnet")


def test_the_registry_says_which_layers_are_the_backbone():
    """train freezes spec.backbone(model) for model.freeze_backbone_epochs; CustomNet has none to freeze."""
    assert get_spec("customnet").backbone is None
    assert all(get_spec(a).backbone is not None for a in ("resnet50", "mobilenet", "densenet", "efficientnet"))
    model = build_model(ModelConfig(arch="mobilenet", weights="none"), 4, (32, 32, 3))
    names = {layer.name for layer in get_spec("mobilenet").backbone(model)}
    assert names and not names & {"image", "preprocess", "predictions"}
    assert len(names) < len(model.layers)
