"""--track: TensorBoard event files in the run directory; MLflow runs with the resolved config, per-epoch and final
metrics and the run's files (kfold: a parent run with one nested run per fold); a missing package is a clear error
before any run directory exists. mlflow and tensorboard come with the dev extra, so these run for real."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.config import configs_dir, load_config
from braintumor.tracking import final_metrics, flatten, safe_uri, tracking_uri
from tests.conftest import FAST, make_dataset

runner = CliRunner()


def only(folder: Path) -> Path:
    (found,) = [p for p in folder.iterdir() if p.is_dir()]
    return found


def scalars(event_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of one scalar in the TensorBoard event files of ``event_dir``, read back with TensorFlow."""
    import tensorflow as tf
    from tensorflow.python.summary.summary_iterator import summary_iterator

    out = {}
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for event in summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


@pytest.fixture
def no_mlflow_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_train_tracks_to_tensorboard_and_to_the_mlflow_store_the_environment_names(tmp_path, no_mlflow_env):
    store = tmp_path / "elsewhere" / "tracking.db"
    store.parent.mkdir()
    no_mlflow_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    no_mlflow_env.chdir(tmp_path)  # a store named by the environment keeps MLflow's artifact default, ./mlruns
    data = make_dataset(tmp_path / "data", per_class=6)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir", str(runs),
                                 *FAST, "--epochs", "2", "--track", "tensorboard", "--track", "mlflow"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = only(runs / "train")
    history = pd.read_csv(run / "history.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "meta.json").read_text())

    # TensorBoard: per-epoch scalars in <run>/tensorboard, the same numbers as history.csv
    train_loss = scalars(run / "tensorboard" / "train", "epoch_loss")
    val_loss = scalars(run / "tensorboard" / "validation", "epoch_loss")
    assert sorted(train_loss) == sorted(val_loss) == [0, 1]
    assert [train_loss[0], train_loss[1]] == pytest.approx(history["loss"].tolist(), rel=1e-5)
    assert [val_loss[0], val_loss[1]] == pytest.approx(history["val_loss"].tolist(), rel=1e-5)

    # MLflow: the store the environment names, not one in runs_dir
    assert not (runs / "mlflow.db").exists() and store.is_file()
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    tracked = client.get_run(meta["mlflow"]["run_id"])
    assert meta["mlflow"]["tracking_uri"] == f"sqlite:///{store}"
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == run.name
    assert client.get_experiment(tracked.info.experiment_id).name == "braintumor"
    params = tracked.data.params
    assert params["model.arch"] == "customnet" and params["model.filters"] == "[8, 16]"
    assert params["train.epochs"] == "2" and params["train.track"] == "[tensorboard, mlflow]"
    assert params["data.path"] == str(data)
    epochs = client.get_metric_history(tracked.info.run_id, "val_loss")
    assert [m.step for m in sorted(epochs, key=lambda m: m.step)] == [0, 1]
    assert [m.value for m in sorted(epochs, key=lambda m: m.step)] == pytest.approx(history["val_loss"].tolist())
    assert tracked.data.metrics["final/accuracy"] == pytest.approx(metrics["accuracy"])
    assert tracked.data.metrics["final/auc"] == pytest.approx(metrics["auc"])
    assert tracked.data.metrics["final/recall_glioma"] == pytest.approx(metrics["per_class"]["glioma"]["recall"])
    files = artifacts(client, tracked.info.run_id)
    assert {"config.yaml", "meta.json", "metrics.json", "history.csv", "model.keras", "plots", "tensorboard"} <= files
    assert "plots/history.png" in artifacts(client, tracked.info.run_id, "plots")
    assert (tmp_path / "mlruns").is_dir() and any((tmp_path / "mlruns").rglob("metrics.json"))
    logged_meta = client.download_artifacts(tracked.info.run_id, "meta.json", str(tmp_path))
    assert json.loads(Path(logged_meta).read_text())["status"] == "complete"  # logged after run_status
    assert "TensorBoard: tensorboard --logdir" in result.output and tracked.info.run_id in result.output


def test_kfold_jobs_track_one_parent_run_with_a_nested_run_per_fold_in_the_default_store(tmp_path, no_mlflow_env):
    """Planned, then each fold as its own job (--resume --only-fold): every job continues the one parent run."""
    data = make_dataset(tmp_path / "data", per_class=6)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["kfold", "--arch", "customnet", *FAST, "--data", str(data), "--folds", "2",
                                 "--runs-dir", str(runs), "--track", "mlflow,tensorboard", "--plan-only"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.rstrip().splitlines()[-1].startswith("run directory:")  # the job-array script reads it
    run = only(runs / "kfold")
    for fold in ("1", "2"):
        result = runner.invoke(app, ["kfold", "--resume", str(run), "--only-fold", fold])
        assert result.exit_code == 0, result.output + repr(result.exception)
    for fold in (1, 2):
        assert scalars(run / f"fold_{fold}" / "tensorboard" / "validation", "epoch_loss")

    # the default store: a SQLite database and the artifacts beside the run directories
    assert (runs / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri(runs))
    parent = client.get_run(json.loads((run / "meta.json").read_text())["mlflow"]["run_id"])
    assert parent.info.artifact_uri.startswith((runs / "mlruns").resolve().as_uri())
    assert parent.info.status == "FINISHED" and parent.data.tags["braintumor.command"] == "kfold"
    summary = json.loads((run / "summary.json").read_text())
    assert parent.data.metrics["val/mean/accuracy"] == pytest.approx(summary["val"]["mean"]["accuracy"])
    assert parent.data.metrics["val/pooled_oof/auc"] == pytest.approx(summary["val"]["pooled_oof"]["auc"])
    files = artifacts(client, parent.info.run_id)
    assert {"summary.json", "summary.md", "folds.csv", "meta.json"} <= files
    assert not any(f.startswith("fold_") for f in files)  # each fold's files are in its own run

    assert len(client.search_runs([parent.info.experiment_id], "tags.`braintumor.command` = 'kfold'")) == 1
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["braintumor.fold"] for c in children) == ["1", "2"]
    for child in children:
        fold_dir = run / f"fold_{child.data.tags['braintumor.fold']}"
        fold_metrics = json.loads((fold_dir / "metrics.json").read_text())
        assert child.info.status == "FINISHED" and child.data.params["model.arch"] == "customnet"
        assert child.data.metrics["final/accuracy"] == pytest.approx(fold_metrics["accuracy"])
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [0]
        assert {"model.keras", "predictions.csv", "tensorboard"} <= artifacts(client, child.info.run_id)
        assert json.loads((fold_dir / "meta.json").read_text())["mlflow"]["run_id"] == child.info.run_id


def test_a_failed_run_ends_its_mlflow_run_failed_with_the_files_so_far(tmp_path, no_mlflow_env):
    data = make_dataset(tmp_path / "data", per_class=3, folders=("glioma", "meningioma", "notumor"))  # one short
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir", str(runs),
                                 *FAST, "--track", "mlflow"])
    assert result.exit_code == 1, result.output
    run = only(runs / "train")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "failed"
    client = mlflow.MlflowClient(tracking_uri(runs))
    tracked = client.get_run(meta["mlflow"]["run_id"])
    assert tracked.info.status == "FAILED"
    assert {"config.yaml", "meta.json"} <= artifacts(client, tracked.info.run_id)


@pytest.mark.parametrize("command", ["train", "kfold"])
@pytest.mark.parametrize("tracker, package, says", [
    ("mlflow", "mlflow", "--track mlflow needs MLflow: pip install 'braintumor[track]'"),
    ("tensorboard", "tensorboard",
     "--track tensorboard needs the tensorboard package: pip install 'braintumor[track]'"),
    ("mlflow", "sqlalchemy", "needs SQLAlchemy and Alembic: pip install 'braintumor[track]'"),
])
def test_a_missing_package_is_a_clear_error_before_any_run_directory(tmp_path, no_mlflow_env, command, tracker,
                                                                      package, says):
    no_mlflow_env.setitem(sys.modules, package, None)  # `import <package>` now fails as if not installed
    data = make_dataset(tmp_path / "data", per_class=3)
    runs = tmp_path / "runs"
    result = runner.invoke(app, [command, "--arch", "customnet", "--data", str(data), "--runs-dir", str(runs),
                                 *FAST, "--track", tracker])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split())
    assert not (runs / command).exists()


def test_an_unknown_tracker_is_refused_by_name(tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(tmp_path), "--runs-dir", str(runs),
                                 "--track", "tensorboard,wandb"])
    assert result.exit_code == 2
    assert "train.track[1]: 'wandb' is not valid; choose one of tensorboard, mlflow" in " ".join(result.output.split())
    assert not runs.exists()


def test_tracking_is_off_by_default_in_every_config():
    for path in configs_dir().glob("*.yaml"):
        assert load_config(config_path=path).train.track == ()
    assert load_config(arch="customnet", flags={"track": ["mlflow"]}).train.track == ("mlflow",)


def test_flatten_writes_config_values_as_config_yaml_does():
    assert flatten({"model": {"arch": "x", "filters": [8, 16], "weights": None}, "train": {"jit": False},
                    "seed": 1}) == {"model.arch": "x", "model.filters": "[8, 16]", "model.weights": "null",
                                    "train.jit": "false", "seed": "1"}
    cfg = load_config(arch="customnet")
    params = flatten(cfg.to_dict())
    assert params["model.arch"] == "customnet" and params["data.augment.zoom"] == str(cfg.data.augment.zoom)
    assert len(params) == len(set(params)) > 50


def test_final_metrics_read_metrics_and_summary_files_and_leave_out_nan(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({
        "accuracy": 0.9, "loss": 0.3, "auc": 0.95, "macro_f1": 0.88, "accuracy_ci95": [0.8, 0.97],
        "per_class": {"no tumor": {"recall": 0.5}, "glioma": {"recall": float("nan")}}}))
    (tmp_path / "summary.json").write_text(json.dumps({
        "metrics": ["accuracy", "auc"], "val": {"mean": {"accuracy": 0.91, "auc": 0.96}, "std": {"accuracy": None}},
        "test": {"ensemble": {"accuracy": 0.93, "auc": 0.97}}}))
    got = final_metrics(tmp_path)
    assert got["final/accuracy"] == 0.9 and got["final/accuracy_ci_high"] == 0.97
    assert got["final/recall_no tumor"] == 0.5 and "final/recall_glioma" not in got
    assert got["val/mean/accuracy"] == 0.91 and got["test/ensemble/auc"] == 0.97
    assert "val/std/accuracy" not in got and all(math.isfinite(v) for v in got.values())
    assert final_metrics(tmp_path / "nothing-here") == {}


def test_tracking_uri_and_what_is_printed(tmp_path, no_mlflow_env):
    assert tracking_uri(tmp_path / "runs") == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"
    no_mlflow_env.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert tracking_uri(tmp_path / "runs") == "http://tracker:5000"
    assert safe_uri("https://ann:secret@tracker.example:5000/path") == "https://tracker.example:5000/path"
    assert safe_uri("sqlite:////tmp/runs/mlflow.db") == "sqlite:////tmp/runs/mlflow.db"
