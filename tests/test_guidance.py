"""Annotation guidance (issue 12, lever 3 opt-in): box masks follow their images through augmentation, the
penalty is what guidance.py documents, and a guided training keeps activation inside the boxes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import FAST
from PIL import Image
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.config import AugmentConfig, load_config
from braintumor.data import ImageSpec, list_images, load_images
from braintumor.errors import ConfigError
from braintumor.guidance import box_masks, check, outside_share
from braintumor.pipeline import make_dataset

runner = CliRunner()


def boxed_dataset(root: Path, per_class: int = 8, size: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Four classes; each image a dim background with one bright square somewhere random, and a second, class
    coded cue (a bar along the top edge, its length by class) outside the square. boxes.csv boxes the square."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, cls in enumerate(("glioma", "meningioma", "notumor", "pituitary")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = (rng.random((size, size)) * 40).astype(np.uint8)
            side = size // 4
            y0, x0 = (int(v) for v in rng.integers(4, size - side, 2))
            img[y0:y0 + side, x0:x0 + side] = 120 + 40 * label
            img[0:2, 0:4 + 7 * label] = 255
            name = f"{cls}/img_{i:02d}.png"
            Image.fromarray(img).save(root / name)
            rows.append([name, cls, (x0 + side / 2) / size, (y0 + side / 2) / size, side / size, side / size])
    with (root / "boxes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "x_center", "y_center", "width", "height"])
        w.writerows(rows)
    return root, root / "boxes.csv"


def test_masks_follow_their_images_through_flips_rotation_and_zoom(tmp_path):
    data, boxes = boxed_dataset(tmp_path / "d", per_class=4)
    listing = list_images(data)
    loaded = load_images(listing, ImageSpec(32, 1))
    masks, found = box_masks(boxes, loaded.paths, 32, 0.0)
    assert found == 16 and masks.shape == (16, 32, 32)
    aug = AugmentConfig(flip_horizontal=True, flip_vertical=True, rotation=0.05, zoom=0.1, brightness=0.2,
                        contrast=0.2)
    ds = make_dataset(loaded.images, loaded.labels, 4, 16, training=True, augment=aug, seed=3, masks=masks)
    x, y, m = next(iter(ds))
    x, m = x.numpy()[..., 0], m.numpy()[..., 0]
    assert m.shape == (16, 32, 32) and set(np.unique(np.round(m, 3))) - {0.0, 1.0}  # resampled edges blend
    for img, mask in zip(x, m, strict=True):  # the bright square moved with its box
        body = img[2:]  # below the class bar
        inside, outside = body[mask[2:] > 0.9], body[mask[2:] < 0.1]
        assert inside.mean() > outside.mean() + 40


def test_outside_share_by_hand():
    masks = np.zeros((3, 8, 8, 1), np.float32)
    masks[:, 2:4, 2:4] = 1.0
    masks[2] = 1.0  # no box: not counted
    feats = np.zeros((3, 8, 8, 2), np.float32)
    feats[0, 2:4, 2:4] = 1.0  # all inside
    feats[1] = 1.0  # uniform: outside share = 1 - 4/64
    feats[2] = 5.0
    share, n = outside_share(tf.constant(feats), tf.constant(masks))
    assert float(n) == 2 and float(share) == pytest.approx((0 + 60 / 64) / 2, abs=1e-5)
    # power > 1: one strong spot outside outweighs a weaker box; power 1 barely notices it
    one = np.full((1, 8, 8, 1), 0.1, np.float32)
    one[0, 2:4, 2:4], one[0, 7, 7] = 0.5, 1.0
    plain, _ = outside_share(tf.constant(one), tf.constant(masks[:1]))
    sharp, _ = outside_share(tf.constant(one), tf.constant(masks[:1]), power=4.0)
    assert float(plain) == pytest.approx((59 * 0.1 + 1.0) / (59 * 0.1 + 1.0 + 4 * 0.5), abs=1e-4)
    assert float(sharp) == pytest.approx((59 * 0.1 ** 4 + 1.0) / (59 * 0.1 ** 4 + 1.0 + 4 * 0.5 ** 4), abs=1e-4)


def test_guidance_refuses_what_it_cannot_honour(tmp_path):
    with pytest.raises(ConfigError, match="data.boxes"):
        check(load_config("customnet", sets=["train.guidance=1"]))
    with pytest.raises(ConfigError, match="crop: none"):
        check(load_config("customnet", sets=["train.guidance=1", "data.boxes=x.csv", "data.crop=brain"]))
    with pytest.raises(ConfigError, match="mixup"):
        check(load_config("customnet", sets=["train.guidance=1", "data.boxes=x.csv", "data.augment.mixup=0.2"]))


def _mean_outside(run: Path, data: Path, boxes: Path) -> float:
    model = keras.models.load_model(run / "model.keras")
    from braintumor.explain.gradcam import default_explanation

    _, layers = default_explanation(model)
    probe = keras.Model(model.inputs, model.get_layer(layers[0]).output)
    loaded = load_images(list_images(data), ImageSpec(32, 1))
    masks, _ = box_masks(boxes, loaded.paths, 32, 0.0)
    share, _ = outside_share(probe(loaded.images.astype("float32")), tf.constant(masks[..., None], tf.float32))
    return float(share)


def test_guided_training_keeps_activation_inside_the_boxes(tmp_path):
    data, boxes = boxed_dataset(tmp_path / "d", per_class=10)
    base = ["--arch", "customnet", "--data", str(data), *FAST, "--epochs", "6", "--set",
            "model.filters=[8,16,16]", "--set", "eval.gate=false"]
    shares = {}
    for name, extra in (("plain", []), ("guided", ["--set", "train.guidance=5", "--set", "train.guidance_power=2",
                                                 "--set", f"data.boxes={boxes}"])):
        runs = tmp_path / name
        r = runner.invoke(app, ["train", *base, "--runs-dir", str(runs), *extra])
        assert r.exit_code == 0, r.output
        (run,) = (runs / "train").iterdir()
        shares[name] = _mean_outside(run, data, boxes)
        history = pd.read_csv(run / "history.csv")
        if name == "guided":
            meta = json.loads((run / "meta.json").read_text())
            n_train = len(pd.read_csv(run / "split.csv").query("split == 'train'"))
            assert meta["guided_images"] == n_train  # every training image has a box here
            assert f"annotation guidance: {n_train} training images had a box" in r.output
            assert "outside_share" in history and "val_outside_share" not in history
            assert history["outside_share"].iloc[-1] < history["outside_share"].iloc[0]
    assert shares["guided"] < shares["plain"] - 0.1, shares


def test_the_penalty_averages_the_outside_share_over_every_guided_layer():
    from braintumor.guidance import GuidedTrainer
    from braintumor.models import build_model

    cfg = load_config("customnet", sets=["data.image_size=32", "model.filters=[4,8,8]", "model.weights=none"])
    model = build_model(cfg.model, 4, (32, 32, 1))
    names = ["block1_2_act", "block2_2_act"]
    trainer = GuidedTrainer(model, names, weight=1.0, power=2.0)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype("float32") * 255
    y = np.eye(4, dtype="float32")
    masks = np.zeros((4, 32, 32, 1), np.float32)
    masks[:, 8:16, 8:24] = 1.0
    _, *feats = trainer.probe(x, training=True)
    per_layer = [float(outside_share(f, tf.constant(masks), 2.0)[0]) for f in feats]
    assert len(per_layer) == 2 and abs(per_layer[0] - per_layer[1]) > 1e-3  # two layers, two different shares
    logs = trainer.train_on_batch(x, y, sample_weight=masks, return_dict=True)
    assert logs["outside_share"] == pytest.approx(np.mean(per_layer), abs=1e-4)


def test_a_guided_layer_that_does_not_exist_is_named_before_any_run(tmp_path):
    data, boxes = boxed_dataset(tmp_path / "d", per_class=8)
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), *FAST, "--runs-dir", str(runs),
                            "--set", "train.guidance=1", "--set", f"data.boxes={boxes}",
                            "--set", "train.guidance_layers=[block2_2_act,block9_act]"])
    assert r.exit_code != 0 and "block9_act" in r.output and "block2_2_act" in r.output
    assert not (runs / "train").exists() or not any((runs / "train").iterdir())
