"""The configuration's shape: frozen dataclasses, one per section, and the constants their defaults use.

``braintumor.config`` builds these from YAML, flags and ``--set`` and validates them; callers import the names
from there (it re-exports everything here).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

# pHash bits up to which two images count as copies. Measured on the shared training folder (see
# near_duplicates.png): pairs at 0-2 bits are the same slice re-encoded, rescaled or re-windowed (median pixel
# correlation 0.996 at 2 bits); at 4 bits most pairs are neighbouring slices of one patient (median 0.97) and
# pairs of different classes, which cannot be copies, appear (2.4% of pairs, against 0.1% at 2; 11% at 6).
DEFAULT_NEAR_THRESHOLD = 2
MAX_NEAR_THRESHOLD = 64  # bits in a pHash: every pair is within 64

CANONICAL_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
DEFAULT_FOLDS = 5  # kfold --folds when not given

# data.slices: which 2-D slices of a scanner volume are images (scanners.select_slices reads it)
SLICES_PATTERN = re.compile(r"^(all|middle:[1-9]\d*|range:\d+-\d+|mask(:(0(\.\d+)?|1(\.0+)?))?)$")


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation, applied after the uint8 cache, on float batches."""

    flip_horizontal: bool = True
    flip_vertical: bool = False
    rotation: float = 0.03  # fraction of a full turn: 0.03 = +-11 degrees
    zoom: float = 0.1
    brightness: float = 0.1  # fraction of the 0-255 range
    contrast: float = 0.1
    erasing: float = 0.0  # probability of blanking one random rectangle per image
    translate: float = 0.0  # max shift as a fraction of the side, each axis
    mixup: float = 0.0  # MixUp Beta(alpha, alpha) concentration; 0 = off
    # shift levers (issue 20; shifts.py), all off by default: the sequence and collection must stop predicting
    remap: float = 0.0  # share of images whose gray levels inside the head follow a random piecewise-linear curve
    remap_points: int = 6  # knots of that curve, equally spaced over 0-255
    remap_monotone: float = 0.5  # share of the curves that rise (keep the tissue order); the rest are free
    invert: float = 0.0  # share of images inverted inside the head (background stays black)
    bias_field: float = 0.0  # max strength a of a smooth multiplicative field exp(a * g), g in [-1, 1]
    noise: float = 0.0  # max Rician noise sigma, as a fraction of 255
    skull_strip: float = 0.0  # share of images with everything outside an estimated brain mask zeroed
    skull_strip_margin: float = 0.06  # that mask: the head mask eroded by this fraction of the side
    # counterfactual levers (issue 20; counterfactual.py), need data.boxes: the tumour region decides the label
    counterfactual_remove: float = 0.0  # share of boxed tumour images whose box is filled with tissue -> notumor
    counterfactual_paste: float = 0.0  # share of notumor images given a boxed tumour of the batch -> its class
    counterfactual_lesion: float = 0.0  # share of notumor images left clean given a synthetic lesion -> glioma


@dataclass(frozen=True)
class DataConfig:
    path: str | tuple[str, ...] | None = None  # a folder, or a list of them (NAME=PATH names a collection)
    classes: tuple[str, ...] | None = None  # None: the four canonical tumour classes
    image_size: int = 128
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    val_split: float = 0.2
    group_duplicates: Literal["none", "exact", "near"] = "near"  # near: pHash links, never across named patients
    near_threshold: int = DEFAULT_NEAR_THRESHOLD
    class_weight: Literal["none", "balanced"] = "none"
    oversample: bool = False
    balance: Literal["none", "source", "source_class"] = "none"  # draw collections (and their classes) evenly
    crop: Literal["none", "brain"] = "none"  # brain: crop to the square around the head before resizing
    normalize: Literal["none", "percentile"] = "none"  # percentile: stretch each image's 0.5-99.5 percentiles
    # scanner files (DICOM, NIfTI): see scanners/
    window: tuple[float, ...] | None = None  # [center, width]; None: the file's own window, else 1-99 percentiles
    slices: str = "all"  # all | middle:K | range:A-B | mask[:F]
    slice_axis: int = 2  # NIfTI axis after reorienting to RAS: 0 sagittal, 1 coronal, 2 axial
    max_slices: int = 1024  # a scanner file claiming more slices (NIfTI along slice_axis, DICOM frames) is skipped
    boxes: str | tuple[str, ...] | None = None  # tumour boxes CSV(s) and/or folder(s) of mask PNGs (<image stem>.png)
    groups: str | None = None  # patients: PATH.csv:COLUMN or re:PATTERN (groups.py); joined with duplicates, volumes
    # a train run (its directory or split.csv): images it lists keep their side, so a lever that adds a collection
    # is judged on the control's validation images; the rest join their group's side or are split as usual
    split_from: str | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "customnet"
    weights: str = "none"  # imagenet | none | path to a weights file
    dropout: float = 0.3
    freeze_backbone_epochs: int = 0
    fine_tune_lr_factor: float = 0.1
    # CustomNet only
    filters: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_block: int = 2
    dense_units: tuple[int, ...] = (128,)
    leaky_alpha: float = 0.1
    residual: bool = False
    squeeze_excite: bool = False
    separable: bool = False
    feature_stride: int = 0  # input size / last block's map size; 0 = one 2x2 pool per block (2 ** blocks / 2)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    warmup_epochs: int = 0
    early_stopping_patience: int = 8  # 0 = off
    checkpoint: Literal["best", "last"] = "best"  # best: lowest validation loss; last: the final epoch
    ema: float = 0.0  # momentum of an exponential moving average of the weights, swapped in after fit; 0 = off
    reduce_lr_patience: int = 3
    reduce_lr_factor: float = 0.3
    min_lr: float = 1e-6
    strategy: Literal["auto", "none", "mirrored", "multiworker"] = "auto"
    lr_scaling: Literal["none", "linear"] = "none"
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    jit_compile: bool = False
    guidance: float = 0.0  # weight of the annotation-guidance penalty (guidance.py); 0 = off
    guidance_grow: float = 0.05  # boxes grown on every side by this fraction of the image side
    guidance_power: float = 8.0  # the activation map raised to this power before its outside share is taken
    guidance_layers: tuple[str, ...] = ()  # layers whose activation is kept in the box; () = the one `cam` explains
    track: tuple[Literal["tensorboard", "mlflow"], ...] = ()  # experiment trackers (tracking.py); () = off


@dataclass(frozen=True)
class EvalConfig:
    bootstrap: int = 1000  # resamples for the confidence intervals (they resample groups: groups.py)
    binary_labels: tuple[str, ...] = ()  # FOLDER=tumour|no_tumour for tumour-or-not collections (binary.py)
    tta: bool = False  # average predictions over horizontal flips
    calibrate: bool = True  # fit a temperature on predictions the model did not train on
    gate: bool = True  # fit the out-of-distribution gate at train time
    gate_acceptance: float = 0.98  # share of held-out real scans the gate's threshold accepts
    gate_min_confidence: float = 0.5  # calibrated top probability below which an answer is 'uncertain'
    gate_layers: tuple[str, ...] = ()  # layers the gate reads, pooled and concatenated; () = the last feature map
    # the brain-MRI-or-not head (gate_head.py): none, or oe (outlier exposure on the pooled features of
    # gate_head_layers, fitted against package-built non-brain images); () = every block end the registry knows
    gate_head: Literal["none", "oe"] = "oe"
    gate_head_layers: tuple[str, ...] = ()
    # DICOM Modality values accepted (input_checks.py): another modality, or a BodyPartExamined that names no part
    # of the head, is refused as out_of_distribution before the model's answer counts; None turns the rule off
    gate_modalities: tuple[str, ...] | None = ("MR", "OT")
    # a `notumor` answer whose p(tumour) = 1 - p(notumor) is at or above this is said `uncertain` (decision.Doubt):
    # a site's operating point, set on its own labelled patients (kfold's summary suggests one); None: off
    notumor_doubt: float | None = None
    # kfold's suggested notumor_doubt keeps this share of each collection's tumour slices from a notumor answer
    notumor_doubt_target: float = 0.9
    # how `cam`, `cam --boxes` and the server's /cam explain this run's model when not told; None and () = the
    # architecture's choice (models registry: CustomNet LayerCAM at the end of block 2)
    cam_method: Literal["gradcam", "gradcam++", "layercam"] | None = None
    cam_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 42
    runs_dir: str = "runs"
    name: str | None = None

    @property
    def data_paths(self) -> tuple[str, ...]:
        """data.path as a list: one folder or several."""
        p = self.data.path
        return () if p is None else (p,) if isinstance(p, str) else tuple(p)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.data.classes or CANONICAL_CLASSES

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
