"""Annotation guidance ("right for the right reasons"), opt-in: on training slices that have a tumour box, penalise
the share of the explained feature map's activation that lies outside the box.

``train.guidance: W`` (0 = off) with ``data.boxes`` (the ``path,class,x_center,y_center,width,height`` CSV
that ``cam --boxes`` reads, and/or a folder of mask PNGs named like the images; box_masks). The penalty, per
annotated image, is

    outside share = sum over the map of s * (1 - m) / sum of s,   s = (mean over channels of relu(A)) ** p

where A is the activation of a layer in ``train.guidance_layers`` (default: the layer ``cam`` explains by default,
CustomNet's end of block 2; the guided recipe, configs/recipes/customnet-guided.yaml, guides the ends of blocks 2,
3 and 4 and takes the mean of their shares), m the box (grown by ``train.guidance_grow`` of the side) at the map's
resolution and p ``train.guidance_power`` (the map scaled to a peak of 1 first when p > 1); the loss adds W x its
mean over the annotated images of the batch. Images without a box get m = 1 everywhere, so nothing of theirs is outside.
As measured (every guided figure in benchmarks/localisation.md and external.md): rotation and zoom fill the corners of
an unboxed image's mask with zeros, so outside_share counts about 87% of the unboxed images as annotated (the guided
recipe's augmentation, 256 all-ones masks), each with a near-zero share (background corners); the mean then runs over
most of the batch and W acts as about W x the boxed share per boxed image. Counting only images boxed before the
affine step (as the counterfactual edits do) would change the recipe; it is left for a round that re-measures it.
It is a cheap, single-pass relative of Ross et al. (2017), who penalise input gradients outside the region, and of
attention-mining losses (GAIN, Li et al. 2018): a CAM is a positive mix of exactly these activations, so activation
kept inside the box keeps the heatmap there; guiding only the explained layer left the deeper ones unmoved
(benchmarks/localisation.md).

Boxes travel through augmentation with their image: the box mask rides as an extra channel through the flips,
rotation, zoom and shift (pipeline.make_dataset), and photometric changes touch the image only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .binary import NO_TUMOUR_CLASS
from .data import find_class
from .errors import ConfigError, DataError
from .explain.gradcam import default_explanation
from .explain.localisation import Region, read_boxes_csv
from .models import build_model
from .scanners import split_id


def _regions(entry: str | Path, paths: list[str]) -> dict[str, Region]:
    """Regions by resolved image path from one data.boxes entry: a boxes CSV, or a folder of mask PNGs whose
    ``<stem>.png`` / ``<stem>_mask.png`` names an image of ``paths`` by its file stem (every image of that stem:
    the FLAIR and T1c slices of one scan share one mask)."""
    entry = Path(entry)
    if entry.is_file() and entry.suffix.lower() == ".csv":
        return {str(Path(p).resolve()): r for p, r in read_boxes_csv(entry).regions.items()}
    if not entry.is_dir():
        raise DataError(f"data.boxes {entry} does not exist; pass the path,class,x_center,y_center,width,height "
                        "CSV of your tumour boxes or a folder of mask PNGs named like the images (<stem>.png)")
    masks = {}
    for m in sorted(entry.rglob("*.png")):
        masks.setdefault(m.stem[:-5] if m.stem.endswith("_mask") else m.stem, str(m))
    out = {}
    for p in paths:
        found = masks.get(Path(split_id(p)[0]).stem)
        if found is not None:
            out[str(Path(p).resolve())] = Region(mask_path=found)
    return out


def box_masks(boxes, paths: list[str], size: int, grow: float) -> tuple[np.ndarray, int]:
    """(n, size, size) uint8 masks, 1 inside an image's boxes or mask (grown by ``grow`` of the side) and 0 outside;
    all ones for an image without one. ``boxes`` is data.boxes: one entry or several (boxes CSVs, mask folders;
    the first entry naming an image wins). Returns the masks and how many images have a region."""
    entries = [boxes] if isinstance(boxes, (str, Path)) else list(boxes)
    regions: dict[str, Region] = {}
    for entry in entries:
        for key, region in _regions(entry, paths).items():
            regions.setdefault(key, region)
    masks = np.ones((len(paths), size, size), np.uint8)
    found = 0
    for i, p in enumerate(paths):
        region = regions.get(str(Path(p).resolve()))
        if region is not None:
            masks[i] = region.mask(size, size, grow)
            found += 1
    if not found:
        raise DataError(f"none of the {len(regions)} annotated images in data.boxes ({', '.join(map(str, entries))}) "
                        "is among the training images; a CSV's paths (relative to the CSV's folder) must name files "
                        "under a --data folder, a mask folder's PNGs must be named like the images")
    return masks, found


def counterfactual_on(cfg) -> bool:
    """Whether data.augment edits boxed images (counterfactual.py): it needs the box masks, as guidance does."""
    aug = cfg.data.augment
    return aug.counterfactual_remove > 0 or aug.counterfactual_paste > 0 or aug.counterfactual_lesion > 0


def uses_boxes(cfg) -> bool:
    """Whether training reads data.boxes: for guidance, for the counterfactual edits, or both."""
    return cfg.train.guidance > 0 or counterfactual_on(cfg)


def clean_class(class_names) -> int | None:
    """The index of the no-tumour class (notumor, no_tumor, normal, ...) among ``class_names``, or None."""
    return find_class(NO_TUMOUR_CLASS, class_names)


def lesion_class(class_names) -> int | None:
    """The index of the class a synthetic lesion takes (counterfactual.lesion): glioma (glioma_tumor, ...), or None."""
    return find_class("glioma", class_names)


def _check_counterfactual(cfg) -> None:
    if not counterfactual_on(cfg):
        return
    what = "data.augment.counterfactual_remove / counterfactual_paste / counterfactual_lesion"
    if not cfg.data.boxes:
        raise ConfigError(f"{what} need data.boxes, the CSV of tumour boxes of (some of) the training images: pass "
                          "--set data.boxes=FILE, or set both to 0")
    if cfg.data.crop != "none":
        raise ConfigError(f"{what} need data.crop: none (boxes are fractions of the uncropped image)")
    if cfg.data.augment.mixup > 0:
        raise ConfigError(f"{what} cannot be combined with data.augment.mixup (a blend has no one box or label)")
    if clean_class(cfg.class_names) is None:
        raise ConfigError(f"{what} need a no-tumour class (notumor, no_tumor, normal) among the classes "
                          f"{list(cfg.class_names)}: a removed tumour is labelled with it, a pasted one moves an "
                          "image out of it")
    if cfg.data.augment.counterfactual_lesion > 0 and lesion_class(cfg.class_names) is None:
        raise ConfigError("data.augment.counterfactual_lesion needs a glioma class among the classes "
                          f"{list(cfg.class_names)}: a synthetic lesion is labelled with it (or set it to 0)")


def check(cfg) -> None:
    """Refuse settings that guidance or the counterfactual edits cannot honour, before any work."""
    _check_counterfactual(cfg)
    if cfg.train.guidance <= 0:
        return
    if not cfg.data.boxes:
        raise ConfigError("train.guidance needs data.boxes, the CSV of tumour boxes of (some of) the training images: "
                          "pass --set data.boxes=FILE, or train without guidance (--arch customnet)")
    if cfg.data.crop != "none":
        raise ConfigError("train.guidance needs data.crop: none (boxes are fractions of the uncropped image)")
    if cfg.data.augment.mixup > 0:
        raise ConfigError("train.guidance cannot be combined with data.augment.mixup (a blend has no one box)")
    if cfg.data.class_weight != "none":
        raise ConfigError("train.guidance cannot be combined with data.class_weight (both use the sample slot)")
    channels = 1 if cfg.data.color_mode == "grayscale" else 3
    model = build_model(replace(cfg.model, weights="none"), len(cfg.class_names),
                        (cfg.data.image_size, cfg.data.image_size, channels))
    guided_layers(cfg, model)  # a throwaway build (no weights) names the layers before any run directory


def guided_layers(cfg, model) -> list[str]:
    """The layers whose activation guidance keeps in the box: ``train.guidance_layers``, else the one ``cam``
    explains by default. Each must be at the model's top level (the trainer probes it there)."""
    layers = list(cfg.train.guidance_layers) or default_explanation(model)[1][:1]
    top = {layer.name for layer in model.layers}
    for name in layers:
        if name in top:
            continue
        if cfg.train.guidance_layers:
            valid = ", ".join(layer.name for layer in model.layers if layer.name.endswith("_act"))
            raise ConfigError(f"train.guidance_layers: {model.name} has no top-level layer {name!r}; "
                              f"activations it has: {valid or 'none'}")
        raise ConfigError(f"train.guidance needs the explained layer at the model's top level; {cfg.model.arch} "
                          "explains a layer inside its backbone (use customnet)")
    return layers


def outside_share(features, masks, power: float = 1.0):
    """(mean outside share over annotated images, number of annotated images) for feature maps (b, h, w, c) and
    masks (b, H, W, 1) at the input's resolution (area-resized to the map's). ``power`` > 1 sharpens the map
    before the share is taken, so that a few strong spots outside the box (the heatmap's peak) weigh more."""
    s = tf.reduce_mean(tf.nn.relu(tf.cast(features, tf.float32)), axis=-1)  # (b, h, w)
    if power != 1.0:
        s = tf.pow(s / (tf.reduce_max(s, axis=[1, 2], keepdims=True) + 1e-6), power)
    m = tf.image.resize(tf.cast(masks, tf.float32), tf.shape(s)[1:3], method="area")[..., 0]
    annotated = tf.cast(tf.reduce_min(m, axis=[1, 2]) < 0.999, tf.float32)  # all ones: no box
    share = tf.reduce_sum(s * (1.0 - m), axis=[1, 2]) / (tf.reduce_sum(s, axis=[1, 2]) + 1e-6)
    n = tf.reduce_sum(annotated)
    return tf.math.divide_no_nan(tf.reduce_sum(share * annotated), n), n


class GuidedTrainer(keras.Model):
    """Trains ``classifier`` (whose layers and weights it shares) with the compiled loss plus ``weight`` x the
    outside share, averaged over ``layers`` (one name or several). Batches are (images, one-hot labels, box masks);
    validation batches have no masks and are scored as the plain classifier would be. Save ``classifier``, not
    this wrapper."""

    def __init__(self, classifier: keras.Model, layers: str | list[str], weight: float, power: float = 1.0):
        super().__init__(name="guided_trainer")
        self.classifier = classifier
        names = [layers] if isinstance(layers, str) else list(layers)
        self.probe = keras.Model(classifier.inputs,
                                 [classifier.outputs[0]] + [classifier.get_layer(n).output for n in names])
        self.weight, self.power = float(weight), float(power)
        self.share_tracker = keras.metrics.Mean(name="outside_share")

    def call(self, x, training=False):
        return self.classifier(x, training=training)

    def train_step(self, data):
        x, y, masks = data
        with tf.GradientTape() as tape:
            y_pred, *features = self.probe(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
            share = tf.add_n([outside_share(f, masks, self.power)[0] for f in features]) / len(features)
            total = loss + self.weight * share
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(total, variables), variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            elif metric is self.share_tracker:
                metric.update_state(share)
            else:
                metric.update_state(y, y_pred)
        return self.get_metrics_result()

    def test_step(self, data):
        logs = super().test_step(data)
        logs.pop("outside_share", None)  # validation batches carry no boxes
        return logs
