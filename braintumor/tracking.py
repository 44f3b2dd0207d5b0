"""Opt-in experiment tracking (``train.track``): TensorBoard event files inside the run directory, and MLflow runs
holding the resolved config as params, per-epoch metrics, the final metrics and the run directory's files.

Both packages are an optional extra (``pip install 'braintumor[track]'``): they are imported only when a tracker is
asked for, and ``prepare`` checks them before any run directory exists or any image is decoded. Only the config,
metrics and the run's own files are logged, never image content or scanner headers.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import keras

from .config import Config
from .distribute import cluster_spec, is_chief
from .errors import ConfigError, RunError
from .runs import read_json, read_meta, write_meta

INSTALL_HINT = "pip install 'braintumor[track]'"
TENSORBOARD_DIR = "tensorboard"  # <run>/tensorboard/{train,validation}/events.out.tfevents.*
EXPERIMENT = "braintumor"  # the MLflow experiment, unless MLFLOW_EXPERIMENT_NAME names another
# MLflow stores kept in a database: MLflow reaches them through SQLAlchemy and migrates them with Alembic
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


# --- before a run ----------------------------------------------------------------------------------------

def prepare(cfg: Config, runs_dir: str | Path) -> None:
    """Check that every tracker in ``train.track`` can run, before any run directory exists or training starts.

    A missing package is a ConfigError naming the extra to install. For MLflow the store is opened (and the
    experiment created) now, so a wrong ``MLFLOW_TRACKING_URI`` fails here too; the tracking URI and experiment
    are then set for this process (MLflow's fluent API is process-wide). ``runs_dir`` is the folder that holds
    the run directories: the default MLflow store lives in it.
    """
    track = cfg.train.track
    if "tensorboard" in track:  # Keras' callback writes through tf.summary, whose ops TensorBoard provides
        _need("tensorboard", "--track tensorboard needs the tensorboard package")
    if "mlflow" in track and _writes_results(cfg):
        mlflow = _need("mlflow", "--track mlflow needs MLflow")
        uri = tracking_uri(runs_dir)
        if _scheme(uri) in DATABASE_SCHEMES:
            for module in ("sqlalchemy", "alembic"):
                _need(module, f"--track mlflow with the database store {safe_uri(uri)} needs SQLAlchemy and Alembic")
        _set_experiment(mlflow, uri, None if os.environ.get("MLFLOW_TRACKING_URI") else Path(runs_dir))


def tracking_uri(runs_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite database beside the run directories, ``<runs_dir>/mlflow.db``.

    MLflow 3's own default is ``sqlite:///mlflow.db`` in the working directory; its ``./mlruns`` file store is in
    maintenance mode and refused unless ``MLFLOW_ALLOW_FILE_STORE=true``. Keeping the database in ``runs_dir`` puts
    tracking next to the runs it describes, whatever the working directory.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(runs_dir) / 'mlflow.db').resolve()}"


def safe_uri(uri: str) -> str:
    """The tracking URI without a user name or password (it goes into meta.json and onto the terminal)."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def _need(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what}: {INSTALL_HINT}") from None


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""


def _writes_results(cfg: Config) -> bool:
    """False on a non-chief worker of train.strategy: multiworker (its run goes to a temporary folder)."""
    return cfg.train.strategy != "multiworker" or is_chief(cluster_spec())


def _set_experiment(mlflow, uri: str, runs_dir: Path | None) -> None:
    """Open the store and make the experiment current; with the default store (``runs_dir`` given) a new
    experiment keeps its artifacts in ``<runs_dir>/mlruns`` (MLflow would pick ./mlruns in the working directory)."""
    from mlflow.exceptions import MlflowException  # optional dependency, present once _need("mlflow") passed

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    try:
        if runs_dir is not None:
            runs_dir.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = (runs_dir / "mlruns").resolve().as_uri() if runs_dir is not None else None
            try:
                client.create_experiment(name, artifact_location=location)
            except MlflowException:  # created meanwhile by another job of the same array
                pass
            experiment = client.get_experiment_by_name(name)
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
    except MlflowException as e:
        raise RunError(f"MLflow tracking store {safe_uri(uri)}: {e.message}") from None


# --- during a run ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def tracked(cfg: Config, run_dir: Path, command: str) -> Iterator[tuple]:
    """Track ``run_dir`` while the body runs; yields the Keras callbacks to add to its fit.

    ``command`` "train" (a train run or one kfold fold): a TensorBoard callback writing into
    ``<run_dir>/tensorboard`` and an MLflow run (nested under the kfold run's when one is active) logging every
    epoch. "kfold": no callbacks; an MLflow parent run for the folds (a resumed kfold run continues the one its
    meta.json names). On exit MLflow gets the final metrics and the run directory's files, and the run ends
    FINISHED, FAILED or KILLED (Ctrl-C). Enter it after ``runs.start_run`` and outside ``runs.run_status``, so
    the logged meta.json carries the final status. Call ``prepare`` first.
    """
    track, callbacks, mlflow = cfg.train.track, [], None
    if "tensorboard" in track and command == "train":
        # scalars per epoch only: graphs and profiles cost time and a model's graph is in model.keras anyway
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / TENSORBOARD_DIR), write_graph=False,
                                                     profile_batch=0))
    if "mlflow" in track and _writes_results(cfg):
        mlflow = importlib.import_module("mlflow")  # optional dependency, checked by prepare
        run_id = _start_mlflow(mlflow, cfg, run_dir, command)
        if command == "train":
            callbacks.append(MlflowEpochLogger(mlflow, run_id))
    try:
        yield tuple(callbacks)
    except BaseException as e:
        if mlflow is not None:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                _finish_mlflow(mlflow, run_dir, command, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    if mlflow is not None:
        _finish_mlflow(mlflow, run_dir, command, "FINISHED")


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs each epoch's Keras logs (loss, accuracy, auc, their val_ twins, learning_rate, epoch_seconds) to an
    MLflow run, step = the 0-based epoch (as TensorBoard's). MLflow ships a Keras autologger, but it logs its own
    parameter set and saves a model of its own; ours logs the resolved config and the run's own files instead."""

    def __init__(self, mlflow, run_id: str):
        super().__init__()
        self.mlflow, self.run_id = mlflow, run_id

    def on_epoch_end(self, epoch, logs=None):
        values = _numbers(logs or {})
        if values:
            self.mlflow.log_metrics(values, step=int(epoch), run_id=self.run_id)


def _numbers(logs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in logs.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _start_mlflow(mlflow, cfg: Config, run_dir: Path, command: str) -> str:
    """Start (or, for a resumed kfold run, continue) the MLflow run of ``run_dir``; meta.json records it."""
    meta = read_meta(run_dir)
    previous = (meta.get("mlflow") or {}).get("run_id")
    if previous and _run_exists(mlflow, previous):
        run = mlflow.start_run(run_id=previous)
    else:
        tags = {"braintumor.command": command, "braintumor.run_dir": str(run_dir.resolve())}
        tags.update({f"braintumor.{k}": str(meta[k]) for k in ("fold", "n_folds") if k in meta})
        run = mlflow.start_run(run_name=run_dir.name, nested=mlflow.active_run() is not None, tags=tags)
        mlflow.log_params(flatten(cfg.to_dict()))
    write_meta(run_dir, mlflow={"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                                "tracking_uri": safe_uri(mlflow.get_tracking_uri())})
    return run.info.run_id


def _run_exists(mlflow, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException  # optional dependency

    try:
        mlflow.MlflowClient().get_run(run_id)
        return True
    except MlflowException:  # another store, or deleted
        return False


def _finish_mlflow(mlflow, run_dir: Path, command: str, status: str) -> None:
    metrics = final_metrics(run_dir)
    if metrics:
        mlflow.log_metrics(metrics)
    for path in sorted(run_dir.iterdir()):
        if command == "kfold" and path.is_dir() and path.name.startswith("fold_"):
            continue  # each fold's own (nested) run holds its files
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        else:
            mlflow.log_artifact(str(path))
    mlflow.end_run(status)


# --- pure helpers ----------------------------------------------------------------------------------------

def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Config sections as MLflow params with dotted keys: ``{"model": {"arch": "x"}}`` -> ``{"model.arch": "x"}``.

    Values are written as YAML writes them in config.yaml (``null``, ``true``, ``[8, 16]``)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _text(value)
    return out


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def final_metrics(run_dir: Path) -> dict[str, float]:
    """A run's scored numbers under MLflow metric names: a train run's (or fold's) metrics.json as ``final/...``
    (accuracy, its 95% interval, loss, auc, macro_f1, recall per class), a kfold run's summary.json as
    ``<data>/<model>/<metric>`` (``val/mean/accuracy``, ``val/pooled_oof/auc``, ``test/ensemble/accuracy``).
    Missing files give nothing; NaN and null are left out."""
    out: dict[str, Any] = {}
    m = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    if m:
        out.update({f"final/{k}": m.get(k) for k in ("accuracy", "loss", "auc", "macro_f1")})
        if m.get("accuracy_ci95"):
            out["final/accuracy_ci_low"], out["final/accuracy_ci_high"] = m["accuracy_ci95"]
        out.update({f"final/recall_{_metric_name(c)}": v.get("recall") for c, v in m.get("per_class", {}).items()})
        out.update(_per_source("final/source_", m.get("per_source", {})))
    s = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    for part in ("val", "test"):
        for model, row in s.get(part, {}).items():
            out.update({f"{part}/{_metric_name(model)}/{k}": row.get(k) for k in s.get("metrics", [])})
    out.update(_per_source("oof/source_", s.get("per_source", {})))
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _per_source(prefix: str, per_source: dict[str, Any]) -> dict[str, Any]:
    """Accuracy and AUC per source (collection), e.g. ``final/source_kaggle/accuracy``."""
    return {f"{prefix}{_metric_name(name)}/{k}": v.get(k) for name, v in per_source.items()
            for k in ("accuracy", "auc")}


def _metric_name(text: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", text)  # the characters MLflow accepts in a metric name


def describe(cfg: Config, run_dir: Path) -> list[str]:
    """One line per tracker that recorded ``run_dir``, saying where to look (printed by the CLI)."""
    lines = []
    if "tensorboard" in cfg.train.track:
        lines.append(f"TensorBoard: tensorboard --logdir {run_dir}")
    recorded = read_meta(run_dir).get("mlflow")
    if "mlflow" in cfg.train.track and recorded:
        lines.append(f"MLflow: run {recorded['run_id']} (experiment {recorded['experiment_id']}) in "
                     f"{recorded['tracking_uri']}")
    return lines
