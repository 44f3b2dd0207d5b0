"""Configuration: frozen dataclasses, YAML loading, flag and --set overrides, validation.

Precedence, lowest first: dataclass defaults < YAML file < typed CLI flags < repeatable ``--set a.b=value``.
Everything is validated once and frozen; the resolved config is what a run directory stores.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, did_you_mean

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


@dataclass(frozen=True)
class DataConfig:
    path: str | tuple[str, ...] | None = None  # a folder, or a list of them (NAME=PATH names a collection)
    classes: tuple[str, ...] | None = None  # None: the four canonical tumour classes
    image_size: int = 128
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    val_split: float = 0.2
    group_duplicates: Literal["none", "exact", "near"] = "near"
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
    boxes: str | None = None  # CSV of tumour boxes of some training images (train.guidance)
    groups: str | None = None  # patients: PATH.csv:COLUMN or re:PATTERN (groups.py); joined with duplicates, volumes
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
    # DICOM Modality values accepted (input_checks.py): another modality, or a BodyPartExamined that names no part
    # of the head, is refused as out_of_distribution before the model's answer counts; None turns the rule off
    gate_modalities: tuple[str, ...] | None = ("MR", "OT")
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


# The typed CLI flags and the config key each one sets.
FLAG_KEYS = {
    "arch": "model.arch",
    "data": "data.path",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "image_size": "data.image_size",
    "seed": "seed",
    "weights": "model.weights",
    "name": "name",
    "runs_dir": "runs_dir",
    "track": "train.track",
}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def configs_dir() -> Path:
    """Where the per-architecture YAML files live: $BRAINTUMOR_CONFIGS, ./configs, or the source checkout's."""
    candidates = [os.environ.get("BRAINTUMOR_CONFIGS"), "configs", Path(__file__).resolve().parent.parent / "configs"]
    for c in candidates:
        if c and Path(c, "customnet.yaml").is_file():
            return Path(c)
    raise ConfigError(
        "cannot find the configs/ folder (looked in $BRAINTUMOR_CONFIGS, ./configs and next to the package); "
        "run from the braintumor checkout or set BRAINTUMOR_CONFIGS"
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of sections (model:, data:, train:, ...)")
    return data


def parse_set(item: str) -> tuple[str, Any]:
    """``train.lr=3e-4`` -> ("train.lr", 0.0003); the value is read as YAML so lists and bools work."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr=3e-4")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value, not a section")
    node[parts[-1]] = value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config YAML as a tree. A top-level ``base: NAME`` starts from another config (an architecture's,
    ``configs/NAME.yaml``, or a YAML path relative to this file) and overrides only the keys this one sets:
    a recipe (configs/recipes/) says what it changes and inherits the rest."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: base: refers back to itself ({' -> '.join(p.name for p in (*_seen, path))})")
    tree = read_yaml(path)
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: must name an architecture's config (e.g. customnet) or a YAML file")
    base_path = path.parent / base if base.endswith((".yaml", ".yml")) else configs_dir() / f"{base}.yaml"
    if not base_path.is_file():
        known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
        raise ConfigError(f"{path}: base: {base!r} is not a config file{_suggest(base, known)}; known: "
                          f"{', '.join(known)}, or a YAML path relative to {path.parent}")
    return _merge(read_recipe(base_path, (*_seen, path)), tree)


def load_config(
    arch: str | None = None,
    config_path: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Resolve a Config from (in rising precedence) defaults, YAML, typed flags and --set items."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    if arch is not None:
        flags["arch"] = arch
    if config_path is None:
        stem = flags.get("arch", ModelConfig.arch)
        path = configs_dir() / f"{stem}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
            raise ConfigError(f"no config for architecture {stem!r}{_suggest(stem, known)}; known: {', '.join(known)}")
        config_path = path
    tree = read_recipe(config_path)
    for name, value in flags.items():
        if name not in FLAG_KEYS:
            raise ConfigError(f"unknown flag {name!r}")
        _set_dotted(tree, FLAG_KEYS[name], value)
    for item in sets or []:
        key, value = parse_set(item)
        _set_dotted(tree, key, value)
    cfg = build(Config, tree)
    check_weights_file(cfg.model)
    return cfg


def check_weights_file(model: ModelConfig) -> None:
    """A weights path must name a file now. Checked when a config is resolved for new work, not in ``build``:
    a finished run's config.yaml must still load after the weights file it was trained from has moved."""
    w = model.weights
    _check(w in ("imagenet", "none") or Path(w).is_file(), "model.weights", w,
           "use imagenet, none, or the path of an existing weights file")


def _suggest(word: str, options: list[str]) -> str:
    return did_you_mean(word, options, n=3, cutoff=0.5)


def build(cls: type, tree: dict[str, Any], prefix: str = ""):
    """Build dataclass ``cls`` from a nested mapping, naming the full key of anything wrong."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in tree if k not in names]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"unknown config key {prefix + str(k)!r}{_suggest(str(k), names)}; valid keys: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in tree:
            kwargs[name] = _coerce(hints[name], tree[name], prefix + name)
        elif dataclasses.is_dataclass(hints[name]):
            kwargs[name] = build(hints[name], {}, prefix + name + ".")
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_ in inner[:-1]:  # the first member type that takes the value (str | tuple: text, else a list)
            try:
                return _coerce(tp_, value, key)
            except ConfigError:
                pass
        return _coerce(inner[-1], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not valid; choose one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _check(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is not valid; {what}")


def _validate(obj: Any, prefix: str) -> None:
    """Range checks that types alone cannot express."""
    if isinstance(obj, DataConfig):
        _check(32 <= obj.image_size <= 1024, prefix + "image_size", obj.image_size, "use 32 to 1024 pixels")
        _check(0.0 < obj.val_split < 0.9, prefix + "val_split", obj.val_split, "use a fraction above 0 and below 0.9")
        _check(0 <= obj.near_threshold <= MAX_NEAR_THRESHOLD, prefix + "near_threshold", obj.near_threshold,
               f"use 0 to {MAX_NEAR_THRESHOLD} bits")
        if obj.window is not None:
            _check(len(obj.window) == 2 and obj.window[1] >= 1, prefix + "window", list(obj.window),
                   "use null (the file's own window) or [center, width] with a width of 1 or more")
        _check(bool(SLICES_PATTERN.match(obj.slices)), prefix + "slices", obj.slices,
               "use all, middle:K (the K middle slices), range:A-B (slices A to B) or mask[:F] (slices with at "
               "least a fraction F, default 0.1, of non-background voxels)")
        if obj.slices.startswith("range:"):
            first, last = (int(v) for v in obj.slices[6:].split("-"))
            _check(first <= last, prefix + "slices", obj.slices, "a range runs from its first slice to its last")
        if obj.groups is not None:
            _check(obj.groups.startswith("re:") or ":" in obj.groups, prefix + "groups", obj.groups,
                   "use PATH.csv:COLUMN (the patient column of a CSV naming the images) or re:PATTERN (a regular "
                   "expression searched in the file name; its first group is the patient)")
            if obj.groups.startswith("re:"):
                try:
                    re.compile(obj.groups[3:])
                except re.error as e:
                    _check(False, prefix + "groups", obj.groups, f"a valid regular expression after re: ({e})")
        _check(obj.slice_axis in (0, 1, 2), prefix + "slice_axis", obj.slice_axis,
               "use 0 (sagittal), 1 (coronal) or 2 (axial), axes of the volume reoriented to RAS")
        _check(obj.max_slices >= 1, prefix + "max_slices", obj.max_slices,
               "use a whole number of slices of 1 or more (1024 covers any brain MRI along one axis)")
        if obj.classes is not None:
            _check(len(obj.classes) >= 2, prefix + "classes", list(obj.classes), "list at least two classes")
            _check(len(set(obj.classes)) == len(obj.classes), prefix + "classes", list(obj.classes), "names repeat")
    elif isinstance(obj, AugmentConfig):
        for name in ("rotation", "zoom", "brightness", "contrast", "erasing", "translate", "remap", "remap_monotone",
                     "invert", "noise", "skull_strip"):
            v = getattr(obj, name)
            _check(0.0 <= v <= 1.0, prefix + name, v, "use a fraction from 0 to 1")
        _check(2 <= obj.remap_points <= 64, prefix + "remap_points", obj.remap_points, "use 2 to 64 knots")
        _check(0.0 <= obj.bias_field <= 2.0, prefix + "bias_field", obj.bias_field,
               "use 0 (off) to 2 (a gain of exp(-2) to exp(2)); 0.3 is a strong scanner shading")
        _check(0.0 <= obj.skull_strip_margin <= 0.25, prefix + "skull_strip_margin", obj.skull_strip_margin,
               "use a fraction of the side from 0 to 0.25")
    elif isinstance(obj, ModelConfig):
        _check(0.0 <= obj.dropout < 1.0, prefix + "dropout", obj.dropout, "use 0 to below 1")
        _check(len(obj.filters) >= 1 and min(obj.filters) >= 1, prefix + "filters", obj.filters, "positive counts")
        _check(obj.convs_per_block >= 1, prefix + "convs_per_block", obj.convs_per_block, "use 1 or more")
        fs = obj.feature_stride
        _check(fs == 0 or (fs >= 1 and fs & (fs - 1) == 0 and fs <= 2 ** (len(obj.filters) - 1)),
               prefix + "feature_stride", fs, f"use 0 or a power of two up to {2 ** (len(obj.filters) - 1)} "
               "(one 2x2 pool per block before the last)")
        _check(obj.freeze_backbone_epochs >= 0, prefix + "freeze_backbone_epochs", obj.freeze_backbone_epochs, ">= 0")
    elif isinstance(obj, TrainConfig):
        _check(obj.epochs >= 1, prefix + "epochs", obj.epochs, "use 1 or more")
        _check(obj.batch_size >= 1, prefix + "batch_size", obj.batch_size, "use 1 or more")
        _check(obj.lr > 0, prefix + "lr", obj.lr, "use a positive learning rate")
        _check(0.0 <= obj.label_smoothing < 1.0, prefix + "label_smoothing", obj.label_smoothing, "use 0 to below 1")
        _check(obj.warmup_epochs < obj.epochs or obj.warmup_epochs == 0, prefix + "warmup_epochs",
               obj.warmup_epochs, "must be fewer than train.epochs")
    elif isinstance(obj, EvalConfig):
        _check(obj.bootstrap >= 0, prefix + "bootstrap", obj.bootstrap, "use 0 (off) or more resamples")
        _check(0.5 <= obj.gate_acceptance <= 1.0, prefix + "gate_acceptance", obj.gate_acceptance,
               "use a share from 0.5 to 1 (0.98 accepts 98% of held-out scans)")
        _check(0.0 <= obj.gate_min_confidence < 1.0, prefix + "gate_min_confidence", obj.gate_min_confidence,
               "use 0 (off) to below 1")
        if obj.gate_modalities is not None:
            _check(all(re.fullmatch(r"[A-Z0-9_]{1,16}", m) for m in obj.gate_modalities), prefix + "gate_modalities",
                   list(obj.gate_modalities), "list DICOM Modality codes in capitals, e.g. [MR, OT], or null (off)")
    elif isinstance(obj, Config):
        _check(obj.seed >= 0, "seed", obj.seed, "use a non-negative whole number")
