"""Configuration: YAML loading, flag and --set overrides, building and validating the frozen dataclasses.

Precedence, lowest first: dataclass defaults < YAML file < typed CLI flags < repeatable ``--set a.b=value``.
Everything is validated once and frozen; the resolved config is what a run directory stores. The dataclasses
themselves live in ``config_schema`` and are re-exported here, so ``from braintumor.config import Config`` works.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_schema import (
    CANONICAL_CLASSES,
    DEFAULT_FOLDS,
    DEFAULT_NEAR_THRESHOLD,
    MAX_NEAR_THRESHOLD,
    SLICES_PATTERN,
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
)
from .errors import ConfigError, did_you_mean

__all__ = [
    "CANONICAL_CLASSES", "DEFAULT_FOLDS", "DEFAULT_NEAR_THRESHOLD", "MAX_NEAR_THRESHOLD", "SLICES_PATTERN",
    "AugmentConfig", "Config", "DataConfig", "EvalConfig", "ModelConfig", "TrainConfig", "FLAG_KEYS",
    "build", "check_weights_file", "configs_dir", "load_config", "parse_set", "read_recipe", "read_yaml",
]


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
    """Range checks that types alone cannot express, by section."""
    check = _VALIDATORS.get(type(obj))
    if check is not None:
        check(obj, prefix)


def _validate_data(obj: DataConfig, prefix: str) -> None:
    """data: range checks that types alone cannot express."""
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


def _validate_augment(obj: AugmentConfig, prefix: str) -> None:
    """data.augment: range checks that types alone cannot express."""
    for name in ("rotation", "zoom", "brightness", "contrast", "erasing", "translate", "remap", "remap_monotone",
                 "invert", "noise", "skull_strip", "counterfactual_remove", "counterfactual_paste",
                 "counterfactual_lesion"):
        v = getattr(obj, name)
        _check(0.0 <= v <= 1.0, prefix + name, v, "use a fraction from 0 to 1")
    _check(2 <= obj.remap_points <= 64, prefix + "remap_points", obj.remap_points, "use 2 to 64 knots")
    _check(0.0 <= obj.bias_field <= 2.0, prefix + "bias_field", obj.bias_field,
           "use 0 (off) to 2 (a gain of exp(-2) to exp(2)); 0.3 is a strong scanner shading")
    _check(0.0 <= obj.skull_strip_margin <= 0.25, prefix + "skull_strip_margin", obj.skull_strip_margin,
           "use a fraction of the side from 0 to 0.25")


def _validate_model(obj: ModelConfig, prefix: str) -> None:
    """model: range checks that types alone cannot express."""
    _check(0.0 <= obj.dropout < 1.0, prefix + "dropout", obj.dropout, "use 0 to below 1")
    _check(len(obj.filters) >= 1 and min(obj.filters) >= 1, prefix + "filters", obj.filters, "positive counts")
    _check(obj.convs_per_block >= 1, prefix + "convs_per_block", obj.convs_per_block, "use 1 or more")
    fs = obj.feature_stride
    _check(fs == 0 or (fs >= 1 and fs & (fs - 1) == 0 and fs <= 2 ** (len(obj.filters) - 1)),
           prefix + "feature_stride", fs, f"use 0 or a power of two up to {2 ** (len(obj.filters) - 1)} "
           "(one 2x2 pool per block before the last)")
    _check(obj.freeze_backbone_epochs >= 0, prefix + "freeze_backbone_epochs", obj.freeze_backbone_epochs, ">= 0")


def _validate_train(obj: TrainConfig, prefix: str) -> None:
    """train: range checks that types alone cannot express."""
    _check(obj.epochs >= 1, prefix + "epochs", obj.epochs, "use 1 or more")
    _check(obj.batch_size >= 1, prefix + "batch_size", obj.batch_size, "use 1 or more")
    _check(obj.lr > 0, prefix + "lr", obj.lr, "use a positive learning rate")
    _check(0.0 <= obj.label_smoothing < 1.0, prefix + "label_smoothing", obj.label_smoothing, "use 0 to below 1")
    _check(obj.warmup_epochs < obj.epochs or obj.warmup_epochs == 0, prefix + "warmup_epochs",
           obj.warmup_epochs, "must be fewer than train.epochs")


def _validate_eval(obj: EvalConfig, prefix: str) -> None:
    """eval: range checks that types alone cannot express."""
    _check(obj.bootstrap >= 0, prefix + "bootstrap", obj.bootstrap, "use 0 (off) or more resamples")
    _check(0.5 <= obj.gate_acceptance <= 1.0, prefix + "gate_acceptance", obj.gate_acceptance,
           "use a share from 0.5 to 1 (0.98 accepts 98% of held-out scans)")
    _check(0.0 <= obj.gate_min_confidence < 1.0, prefix + "gate_min_confidence", obj.gate_min_confidence,
           "use 0 (off) to below 1")
    if obj.notumor_doubt is not None:
        _check(0.0 < obj.notumor_doubt < 1.0, prefix + "notumor_doubt", obj.notumor_doubt,
               "use a p(tumour) between 0 and 1 (kfold's summary suggests one), or null (off)")
    _check(0.5 <= obj.notumor_doubt_target < 1.0, prefix + "notumor_doubt_target", obj.notumor_doubt_target,
           "use a share from 0.5 to below 1 (0.9: at most 10% of tumour slices left answered notumor)")
    if obj.gate_modalities is not None:
        _check(all(re.fullmatch(r"[A-Z0-9_]{1,16}", m) for m in obj.gate_modalities), prefix + "gate_modalities",
               list(obj.gate_modalities), "list DICOM Modality codes in capitals, e.g. [MR, OT], or null (off)")


def _validate_root(obj: Config, prefix: str) -> None:
    """The top-level keys: range checks that types alone cannot express."""
    _check(obj.seed >= 0, "seed", obj.seed, "use a non-negative whole number")


_VALIDATORS = {
    DataConfig: _validate_data,
    AugmentConfig: _validate_augment,
    ModelConfig: _validate_model,
    TrainConfig: _validate_train,
    EvalConfig: _validate_eval,
    Config: _validate_root,
}
