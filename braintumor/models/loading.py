"""Loading what runs saved: a train run's model, a k-fold ensemble (scoring them is ``engine.scorer``'s)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..config import Config, build, read_yaml
from ..data import ImageList, ImageSpec, LoadedImages, list_images, load_images
from ..decision import Doubt
from ..errors import DataError, RunError
from ..inference import Classifier
from ..ood import Gate
from ..runs import fold_complete, read_json, read_meta
from ..scanners import ScanOptions
from . import applications, customnet  # noqa: F401  (registers the custom layers for safe loading)


def stored_temperature(run_dir: Path) -> float:
    """A run's calibration temperature (1.0 when it has none: older runs, or none was fitted)."""
    path = Path(run_dir) / "calibration.json"
    return float(read_json(path)["temperature"]) if path.is_file() else 1.0


@dataclass
class LoadedRun:
    """Everything a saved train run holds that inference needs."""

    path: Path
    config: Config
    meta: dict[str, Any]
    model: Any
    members: list[Any] = field(default_factory=list)  # a k-fold ensemble's fold models, in meta["ensemble_of"] order

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def spec(self) -> ImageSpec:
        """How this run prepares an image (older runs' configs have no framing keys: none)."""
        d = self.config.data
        return ImageSpec(self.image_size, self.channels, d.crop, d.normalize, ScanOptions.from_config(d))

    @property
    def temperature(self) -> float:
        return stored_temperature(self.path)

    def gates(self) -> list[Gate]:
        """The out-of-distribution gate of the run, or of each fold of an ensemble; [] when any is missing."""
        dirs = [self.path / f for f in self.meta["ensemble_of"]] if "ensemble_of" in self.meta else [self.path]
        gates = [Gate.load(d) for d in dirs]
        return [] if any(g is None for g in gates) else gates

    @cached_property
    def classifier(self) -> Classifier:
        """The model with its temperature and gate(s): what every consumer classifies with."""
        return Classifier(self.model, self.temperature, self.gates(), self.members or [self.model],
                          modalities=self.config.eval.gate_modalities,
                          doubt=Doubt.of(self.config.eval.notumor_doubt, self.class_names))

    def with_notumor_doubt(self, threshold: float | None) -> LoadedRun:
        """This run with ``eval.notumor_doubt`` set to ``threshold`` (a site's operating point, given to predict,
        evaluate, serve or export); None keeps the run's own setting. Checked like the config key."""
        if threshold is None:
            return self
        d = self.config.to_dict()
        cfg = build(Config, {**d, "eval": {**d["eval"], "notumor_doubt": threshold}})  # validated as the key is
        Doubt.of(threshold, self.class_names)  # a run without a no-tumour class: the ConfigError now, not later
        return dataclasses.replace(self, config=cfg)


def load_run(run_dir: str | Path, with_model: bool = True) -> LoadedRun:
    """Config, metadata and (safely loaded) model of a train run directory."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta.get("command") == "kfold":
        return load_kfold_ensemble(run_dir, with_model)
    if "class_names" not in meta:
        raise RunError(f"{run_dir} is not a train run (meta.json has no class_names)")
    cfg = build(Config, read_yaml(run_dir / "config.yaml"))
    model = None
    if with_model:
        path = run_dir / "model.keras"
        if not path.is_file():
            raise RunError(f"{run_dir} has no model.keras (status: {meta.get('status', 'unknown')})")
        model = keras.models.load_model(path, safe_mode=True)
    return LoadedRun(run_dir, cfg, meta, model)


def load_kfold_ensemble(run_dir: Path, with_model: bool = True) -> LoadedRun:
    """A kfold run as one model: the mean of its complete fold models' probabilities (a Keras model of its own,
    so evaluate, serve and the benchmarks use it like a train run's model)."""
    folds = sorted((p for p in run_dir.glob("fold_*") if fold_complete(p)), key=lambda p: int(p.name[5:]))
    if not folds:
        raise RunError(f"{run_dir} has no complete fold yet; finish it with: braintumor kfold --resume {run_dir}")
    first = load_run(folds[0], with_model=False)
    meta = {**first.meta, **read_meta(run_dir), "ensemble_of": [p.name for p in folds],
            "class_names": first.class_names, "image_size": first.image_size, "channels": first.channels}
    model = None
    if with_model:
        members = [keras.models.load_model(p / "model.keras", safe_mode=True) for p in folds]
        for p, m in zip(folds, members):
            m.name = f"{p.name}_{m.name}"  # layer names must be unique inside the ensemble
        inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
        outs = [m(inputs) for m in members]
        out = keras.layers.Average(name="ensemble_mean")(outs) if len(outs) > 1 else outs[0]
        model = keras.Model(inputs, out, name="kfold_ensemble")
    return LoadedRun(run_dir, first.config, meta, model, members if with_model else [])


def load_folder(run: LoadedRun, data_dir: str | Path | Sequence[str | Path]) -> LoadedImages:
    """Decode a folder of class sub-folders (or several: each image keeps its source, see data.parse_sources)
    with the run's class mapping and image settings."""
    listing = list_images(data_dir, run.config.data.classes, require_all=False, scan_options=run.spec.scan)
    if tuple(listing.class_names) != tuple(run.class_names):
        raise DataError(f"{data_dir} classes {listing.class_names} differ from the model's {run.class_names}")
    return load_images(listing, run.spec)


def load_listing(run: LoadedRun, paths: list[str], labels: np.ndarray,
                 sources: list[str] | tuple[str, ...] = ()) -> LoadedImages:
    """Like load_folder, for an explicit list of files (a run's own validation split), with each file's
    collection name when the run trained on several (split.csv's ``source``), so reports break down by it."""
    listing = ImageList(Path("."), tuple(paths), np.asarray(labels), tuple(run.class_names), {}, run.spec.scan,
                        tuple(sources) if len(set(sources)) > 1 else ())
    return load_images(listing, run.spec)
