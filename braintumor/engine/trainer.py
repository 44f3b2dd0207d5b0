"""The fit engine of ``train`` and every ``kfold`` fold: pipelines, the model, ``model.fit`` with our callbacks
(an atomic best checkpoint, epoch timing, warm-up), scoring the kept model, its temperature and its gate.

One recipe for both commands, so a fold is trained exactly as a train run is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .. import plots
from ..config import Config
from ..data import LoadedImages
from ..decision import Doubt
from ..distribute import configure_precision, even_for_replicas, make_strategy, scaled_lr, synchronize_batch_norm
from ..groups import unit_name
from ..guidance import GuidedTrainer, box_masks, clean_class, guided_layers, lesion_class, uses_boxes
from ..inference import Classifier, gate_layers, gate_report, head_layers, layer_widths, scoring_model
from ..metrics import (
    ECE_BINS,
    calibration_figures,
    calibration_report,
    compute_metrics,
    per_source_metrics,
    reliability,
    scale,
)
from ..models import ModelSpec, build_model, get_spec
from ..ood import fit_gate
from ..pipeline import class_weights, make_dataset, oversample
from ..plots import atomic_save_figure
from ..report import write_metrics, write_predictions
from ..runs import atomic_save_model, atomic_write_json, write_meta
from . import scorer
from .gate_fit import fit_oe_head


def validation_steers(cfg: Config) -> bool:
    """Whether validation data influences the fitted model (checkpoint choice, plateau LR, early stopping).

    When it does not (cosine schedule, last checkpoint, no early stopping), the validation split is an unseen
    hold-out and its score an honest estimate; when it does, kfold steers on an inner split instead.
    """
    t = cfg.train
    return t.checkpoint == "best" or t.lr_schedule == "plateau" or t.early_stopping_patience > 0


@dataclass(frozen=True)
class FitParts:
    """Which images a fit trains on, which it validates on, and which its kept model is scored on."""

    train: np.ndarray
    val: np.ndarray  # validation data: steers training when the recipe lets it (validation_steers)
    score: np.ndarray | None = None  # None: the validation part (kfold: the held-out fold)
    scored_on: str = "validation split"
    groups: np.ndarray | None = None  # (n,) group per image of ``loaded``: the unit the intervals resample


def fit_and_report(cfg: Config, run_dir: Path, loaded: LoadedImages, parts: FitParts,
                   callbacks: tuple = ()) -> dict[str, Any]:
    """Fit a fresh model on ``parts.train`` with ``parts.val`` as validation data, keep the best (by validation
    loss) or the last model as ``train.checkpoint`` says, and write its metrics on ``parts.score``.

    Shared by ``train`` and each ``kfold`` fold, so both follow exactly the same recipe.
    """
    # 1. a clean, seeded slate (kfold calls this once per fold)
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    policy = configure_precision(cfg.train)
    strategy = make_strategy(cfg.train)
    replicas = strategy.num_replicas_in_sync

    # 2. pipelines: class weights come from this training part only
    fit_idx, train_ds, val_ds, weights = _pipelines(cfg, loaded, parts, replicas, run_dir)

    # 3. model
    input_shape = loaded.images.shape[1:]
    with strategy.scope():
        model = build_model(cfg.model, len(loaded.class_names), input_shape)
    synchronize_batch_norm(model, replicas)  # several replicas: one set of batch statistics, not one each
    write_meta(run_dir, arch=cfg.model.arch, class_names=list(loaded.class_names), image_size=cfg.data.image_size,
               channels=int(input_shape[-1]), color_mode=cfg.data.color_mode,
               preprocessing=get_spec(cfg.model.arch).preprocessing, params=int(model.count_params()),
               n_train=int(len(parts.train)), n_val=int(len(parts.val)), class_weight=weights,
               dtype_policy=policy, replicas=int(replicas))

    # 4. fit (optionally in two phases: frozen backbone, then fine-tuning)
    checkpoint, timer = BestCheckpoint(run_dir / "model.keras", keep=cfg.train.checkpoint), EpochTimer()
    started = time.perf_counter()
    history = _fit(cfg, run_dir, model, strategy, (train_ds, val_ds, weights),
                   math.ceil(len(fit_idx) / cfg.train.batch_size),
         [checkpoint, timer], callbacks)
    train_seconds = time.perf_counter() - started

    # 5. the kept model, scored on the validation (or, in kfold, held-out) part
    metrics = _score(cfg, run_dir, loaded, parts)
    atomic_save_figure(plots.history_figure(history, f"{cfg.model.arch} training"), run_dir / "plots" / "history.png")
    write_meta(run_dir, epochs_run=len(history.get("loss", [])), checkpoint=cfg.train.checkpoint,
               best_epoch=checkpoint.best_epoch, best_val_loss=checkpoint.best,
               validation_steers_training=validation_steers(cfg), n_scored=int(metrics["n"]),
               train_seconds=round(train_seconds, 2),
               train_images_per_second=timer.images_per_second(len(fit_idx)))
    return metrics


def _pipelines(cfg: Config, loaded: LoadedImages, parts: FitParts, replicas: int, run_dir: Path):
    """(the training indices after oversampling, training and validation datasets, class weights or None)."""
    k, labels, tcfg = len(loaded.class_names), loaded.labels, cfg.train
    fit_idx = oversample(parts.train, labels, cfg.seed) if cfg.data.oversample else parts.train
    # several replicas: every batch must split evenly over them (a no-op on one device; see even_for_replicas)
    fit_idx = even_for_replicas(fit_idx, replicas, cfg.seed)
    fit_val_idx = even_for_replicas(parts.val, replicas, cfg.seed)
    masks = None
    if uses_boxes(cfg):  # train.guidance, the counterfactual edits: the training images' box masks (all ones: no box)
        fit_paths = [loaded.paths[i] for i in fit_idx]
        masks, boxed = box_masks(cfg.data.boxes, fit_paths, loaded.images.shape[1], tcfg.guidance_grow)
        write_meta(run_dir, guided_images=boxed)
    fit_sources = [loaded.sources[i] for i in fit_idx] if loaded.sources else None  # data.balance draws by these
    train_ds = make_dataset(loaded.images[fit_idx], labels[fit_idx], k, tcfg.batch_size, training=True,
                            augment=cfg.data.augment, seed=cfg.seed, masks=masks, sources=fit_sources,
                            balance=cfg.data.balance, guided=tcfg.guidance > 0,
                            clean_class=clean_class(loaded.class_names),
                            lesion_class=lesion_class(loaded.class_names))
    val_ds = make_dataset(loaded.images[fit_val_idx], labels[fit_val_idx], k, tcfg.batch_size)
    weights = class_weights(labels[parts.train], k) if cfg.data.class_weight == "balanced" else None
    return fit_idx, train_ds, val_ds, weights


def _fit(cfg: Config, run_dir: Path, model, strategy, data: tuple, steps: int, ours: list,
         callbacks: tuple) -> dict[str, list[float]]:
    """``model.fit`` in one phase, or two (frozen backbone, then fine-tuning); model.keras holds the kept model.
    Returns the epochs' logs over both phases (what history.csv holds).

    ``data`` is (training dataset, validation dataset, class weights); ``ours`` is [BestCheckpoint, EpochTimer].
    """
    tcfg, (train_ds, val_ds, weights), (checkpoint, timer) = cfg.train, data, ours
    lr = scaled_lr(tcfg, strategy.num_replicas_in_sync)
    freeze = _freeze_epochs(cfg)
    phases = [(0, freeze, lr, True), (freeze, tcfg.epochs, lr * cfg.model.fine_tune_lr_factor, False)] \
        if freeze else [(0, tcfg.epochs, lr, False)]
    stopped, history = False, {}
    fitted = _guided(cfg, model, strategy) if tcfg.guidance > 0 else model
    checkpoint.target = model  # the classifier is what is saved, also when a guided trainer wraps it
    for first, last, phase_lr, frozen in phases:
        if stopped or first >= last:
            continue
        _set_backbone_trainable(model, get_spec(cfg.model.arch), not frozen)
        with strategy.scope():
            fitted.compile(optimizer=_optimizer(tcfg, phase_lr, steps, last - first),
                           loss=keras.losses.CategoricalCrossentropy(label_smoothing=tcfg.label_smoothing),
                           metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                                    keras.metrics.AUC(name="auc")],
                           jit_compile=tcfg.jit_compile)
        cbs = _callbacks(cfg, run_dir, phase_lr, checkpoint, timer, append=first > 0) + list(callbacks)
        hist = fitted.fit(train_ds, validation_data=val_ds, epochs=last, initial_epoch=first, class_weight=weights,
                          callbacks=cbs, verbose=0, shuffle=False)  # tf.data shuffles itself
        stopped = len(hist.epoch) < last - first  # early stopping ends both phases
        for key, values in hist.history.items():
            history.setdefault(key, []).extend(values)
    best_path = run_dir / "model.keras"
    if tcfg.checkpoint == "last":  # the final weights (with train.ema, the averaged ones)
        atomic_save_model(model, best_path)
    if not best_path.is_file():  # validation loss never finite: keep the last model rather than nothing
        atomic_save_model(model, best_path)
    return history


def _guided(cfg: Config, model, strategy):
    """train.guidance: a trainer that adds the outside-the-box penalty at train.guidance_layers (default: the
    layer ``cam`` explains)."""
    layers = guided_layers(cfg, model)
    with strategy.scope():
        return GuidedTrainer(model, layers, cfg.train.guidance, cfg.train.guidance_power)


def _score(cfg: Config, run_dir: Path, loaded: LoadedImages, parts: FitParts) -> dict[str, Any]:
    """The kept model's metrics.json, metrics.md, confusion plots and predictions.csv on the scored part."""
    steered_by_scored = parts.score is None  # the scored images are the validation data
    score_idx = parts.val if parts.score is None else parts.score
    best = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    probs = scorer.probabilities(best, loaded.images[score_idx], cfg.train.batch_size, cfg.eval.tta)
    labels = loaded.labels[score_idx]
    groups = None if parts.groups is None else parts.groups[score_idx]  # intervals resample these, not slices
    metrics = compute_metrics(labels, probs, loaded.class_names, cfg.eval.bootstrap, cfg.seed, groups,
                              unit_name(cfg.data, [loaded.paths[i] for i in score_idx]))
    sources = [loaded.sources[i] for i in score_idx] if len(loaded.source_names) > 1 else None
    if sources is not None:
        metrics["per_source"] = per_source_metrics(labels, probs, sources, loaded.class_names)
    honest = not (validation_steers(cfg) and steered_by_scored)  # nothing was chosen on the scored images
    metrics.update(calibrate_and_gate(cfg, run_dir, best, loaded, parts.train, score_idx, probs, honest))
    write_metrics(run_dir, metrics, f"{cfg.model.arch}: {cfg.train.checkpoint} model on the {parts.scored_on}"
                  + (" (it also steered training)" if validation_steers(cfg) and steered_by_scored else ""))
    write_predictions(run_dir / "predictions.csv", [loaded.paths[i] for i in score_idx], labels, probs,
                      loaded.class_names, sources=sources)
    return metrics


def pooled_features(model, images: np.ndarray, batch_size: int = 64, layer: str | list[str] | None = None
                    ) -> np.ndarray:
    """(n, d) the gate's features (see ``inference.feature_layer``) of (n, h, w, c) uint8 images."""
    return scorer.score(scoring_model(model, layer), images, batch_size)[1][0]


def calibrate_and_gate(cfg: Config, run_dir: Path, model, loaded: LoadedImages, train_idx: np.ndarray,
                       held_idx: np.ndarray, held_probs: np.ndarray, honest: bool) -> dict[str, Any]:
    """calibration.json (a temperature fitted on the held-out images, when nothing was chosen on them) and the
    out-of-distribution gate (features of the training images, threshold on the held-out ones); returns the
    ``calibration`` and ``gate`` entries of metrics.json and draws plots/reliability.png."""
    out: dict[str, Any] = {}
    labels = loaded.labels[held_idx]
    temperature = 1.0
    if cfg.eval.calibrate and honest and len(held_idx) >= 20:
        temperature, out["calibration"] = calibration_report(labels, held_probs, f"{len(held_idx)} held-out images")
        atomic_write_json(run_dir / "calibration.json", out["calibration"])
        after = scale(held_probs, temperature)
        atomic_save_figure(plots.reliability_figure({"before": reliability(labels, held_probs)["bins"],
                                                     "after": reliability(labels, after)["bins"]},
                                                    f"{cfg.model.arch}: reliability on the {len(held_idx)} held-out "
                                                    f"images (T = {temperature:.2f})"),
                           run_dir / "plots" / "reliability.png")
    elif cfg.eval.calibrate:
        out["calibration"] = {"temperature": 1.0, "fitted_on": None, "ece_bins": ECE_BINS,
                              "before": calibration_figures(labels, held_probs), "after_is": "not fitted",
                              "why": "the validation split steered training; calibrate on other images"}
    if cfg.eval.gate:
        n = len(train_idx)
        layers = gate_layers(cfg, model)
        extra = head_layers(cfg, model, layers) if cfg.eval.gate_head == "oe" else []
        widths = layer_widths(model, layers)
        features = pooled_features(model, loaded.images[np.concatenate([train_idx, held_idx])],
                                   cfg.train.batch_size, [*layers, *extra])  # the distance's columns first
        calibrated = scale(held_probs, temperature)
        sources = [loaded.sources[i] for i in held_idx] if loaded.sources else None
        gate = fit_gate(features[:, :sum(widths)], np.concatenate([loaded.labels[train_idx], labels]),
                        len(loaded.class_names), np.arange(n), np.arange(n, len(features)), calibrated.max(axis=1),
                        [loaded.stats[i] for i in train_idx], layers, cfg.eval.gate_acceptance,
                        cfg.eval.gate_min_confidence, widths=widths, held_sources=sources)
        if cfg.eval.gate_head == "oe":
            gate.head = fit_oe_head(cfg, loaded.images[train_idx], features[:n], features[n:], sources, lambda x:
                                    pooled_features(model, x, cfg.train.batch_size, [*layers, *extra]))
            gate.head_layers, gate.head_widths = extra, layer_widths(model, extra)
        gate.save(run_dir)
        classifier = Classifier(model, temperature, [gate], modalities=cfg.eval.gate_modalities,
                                doubt=Doubt.of(cfg.eval.notumor_doubt, loaded.class_names))
        verdicts = classifier.verdicts(calibrated, [features[n:]], [loaded.stats[i] for i in held_idx])
        out["gate"] = gate_report(verdicts, labels, "the held-out images its threshold was chosen on")
    return out


def _freeze_epochs(cfg: Config) -> int:
    # freezing only makes sense for a pretrained backbone: random features are not worth a warm-up
    pretrained = get_spec(cfg.model.arch).imagenet and cfg.model.weights != "none"
    return cfg.model.freeze_backbone_epochs if pretrained else 0


def _set_backbone_trainable(model, spec: ModelSpec, trainable: bool) -> None:
    """Freeze or unfreeze the pretrained backbone the registry names; its BatchNorm layers stay frozen
    (inference mode) when tuning."""
    if spec.backbone is None:
        return
    for layer in spec.backbone(model):
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


def _optimizer(tcfg, lr: float, steps_per_epoch: int, epochs: int):
    rate: Any = lr
    if tcfg.lr_schedule == "cosine":
        warm = tcfg.warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr * 0.01 if warm else lr, decay_steps=max(1, epochs * steps_per_epoch - warm),
            alpha=min(1.0, tcfg.min_lr / lr), warmup_target=lr if warm else None, warmup_steps=warm)
    ema = dict(use_ema=True, ema_momentum=tcfg.ema) if tcfg.ema > 0 else {}
    if tcfg.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=tcfg.weight_decay or 1e-4, **ema)
    if tcfg.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=tcfg.weight_decay or None,
                                    **ema)
    return keras.optimizers.Adam(rate, weight_decay=tcfg.weight_decay or None, **ema)


def _callbacks(cfg: Config, run_dir: Path, lr: float, checkpoint, timer, append: bool) -> list:
    t = cfg.train
    cbs = [timer, checkpoint]
    if t.lr_schedule == "plateau":
        if t.warmup_epochs and not append:
            cbs.append(LinearWarmup(lr, t.warmup_epochs))
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=t.reduce_lr_factor,
                                                     patience=t.reduce_lr_patience, min_lr=t.min_lr, verbose=0))
    if t.early_stopping_patience > 0:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=t.early_stopping_patience,
                                                 verbose=0))
    cbs.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=append))  # one line per epoch
    return cbs


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever validation loss improves (``keep="best"``) or after every epoch (``"last"``),
    atomically: Keras' ModelCheckpoint writes in place, so a Ctrl-C mid-save could leave a broken file; this keeps
    the previous one intact, and an interrupted run always has a whole model."""

    def __init__(self, path: Path, monitor: str = "val_loss", keep: str = "best"):
        super().__init__()
        self.path, self.monitor, self.keep = path, monitor, keep
        self.best, self.best_epoch = math.inf, None
        self.target = None  # the model to save; None: the model being fitted

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(value) and value < self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            if self.keep == "best":
                atomic_save_model(self.target or self.model, self.path)
        if self.keep == "last":
            atomic_save_model(self.target or self.model, self.path)


class EpochTimer(keras.callbacks.Callback):
    """Adds epoch_seconds (with validation), train_seconds (without) and the learning rate to each epoch's logs
    (so CSVLogger records them); throughput uses the training part only."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t, self._train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._train_end is None:  # validation starts: the training part of the epoch is over
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = self._train_end or time.perf_counter()
        self.seconds.append(end - self._t)
        if logs is not None:
            logs["epoch_seconds"] = round(time.perf_counter() - self._t, 3)
            logs["train_seconds"] = round(self.seconds[-1], 3)
            logs.setdefault("learning_rate", float(np.asarray(self.model.optimizer.learning_rate)))

    def images_per_second(self, n: int) -> float | None:
        """Training throughput from the median epoch, leaving out the first (it traces and warms caches)."""
        steady = self.seconds[1:] or self.seconds
        return round(n / float(np.median(steady)), 2) if steady else None


class LinearWarmup(keras.callbacks.Callback):
    """Raises the learning rate linearly over the first epochs (plateau schedule only)."""

    def __init__(self, lr: float, epochs: int):
        super().__init__()
        self.lr, self.epochs = lr, epochs

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.epochs:
            self.model.optimizer.learning_rate = self.lr * (epoch + 1) / (self.epochs + 1)
        elif epoch == self.epochs:
            self.model.optimizer.learning_rate = self.lr
