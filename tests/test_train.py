"""train + evaluate through the CLI: every promised file and key, numbers that agree, runs never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from braintumor.cli import app
from tests.conftest import FAST, make_dataset

runner = CliRunner()

RUN_FILES = ["config.yaml", "meta.json", "history.csv", "model.keras", "metrics.json", "metrics.md",
             "plots/confusion_matrix.png", "plots/confusion_matrix_normalized.png", "plots/history.png",
             "predictions.csv", "split.csv", "skipped.txt"]
METRIC_KEYS = ["classes", "n", "accuracy", "accuracy_ci95", "loss", "auc", "macro_f1", "per_class",
               "confusion_matrix"]


def run_dir_from(output: str) -> Path:
    line = [ln for ln in output.splitlines() if ln.startswith("run directory:")][-1]
    return Path(line.split(":", 1)[1].strip())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny customnet run on data with a broken file, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("train")
    data = make_dataset(tmp / "data", per_class=10, folders=("glioma_tumor", "meningioma", "no_tumor", "pituitary"))
    (data / "glioma_tumor" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir",
                                 str(tmp / "runs"), "--epochs", "2", *FAST[2:], "--name", "t"])
    assert result.exit_code == 0, result.output
    return run_dir_from(result.output), data, tmp


def test_run_directory_has_every_file(trained):
    run, data, tmp = trained
    assert run.parent == tmp / "runs" / "train" and run.name.endswith("-customnet-t")
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    m = json.loads((run / "metrics.json").read_text())
    assert all(k in m for k in METRIC_KEYS)
    assert m["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert set(m["per_class"]) == set(m["classes"])
    assert all(set(v) >= {"precision", "recall", "f1", "support"} for v in m["per_class"].values())
    assert np.array(m["confusion_matrix"]).sum() == m["n"] == sum(v["support"] for v in m["per_class"].values())
    lo, hi = m["accuracy_ci95"]
    assert lo <= m["accuracy"] <= hi
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "complete"
    gray = yaml.safe_load((run / "config.yaml").read_text())["data"]["color_mode"] == "grayscale"
    assert meta["class_names"] == m["classes"] and meta["image_size"] == 32 and meta["channels"] == (1 if gray else 3)
    assert meta["seed"] == 42 and "tensorflow" in meta["versions"] and "caffe" not in meta["preprocessing"]
    assert meta["n_train"] + meta["n_val"] == 40 and meta["skipped"] == 1
    assert "broken.jpg" in (run / "skipped.txt").read_text()
    hist = pd.read_csv(run / "history.csv")
    assert len(hist) == meta["epochs_run"] == 2 and {"loss", "val_loss", "accuracy", "epoch_seconds"} <= set(hist)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["path"] == str(data) and cfg["train"]["epochs"] == 2 and cfg["model"]["filters"] == [8, 16]


def test_metrics_agree_with_predictions(trained):
    """metrics.json is computed from the saved predictions, not stale or hard-coded."""
    run, _, _ = trained
    m = json.loads((run / "metrics.json").read_text())
    pred = pd.read_csv(run / "predictions.csv")
    assert len(pred) == m["n"]
    assert (pred["true"] == pred["predicted"]).mean() == pytest.approx(m["accuracy"])
    probs = pred[[f"p_{c}" for c in m["classes"]]].to_numpy()
    true = pred["true"].map(m["classes"].index).to_numpy()
    assert -np.log(np.clip(probs[np.arange(len(true)), true], 1e-7, 1)).mean() == pytest.approx(m["loss"], abs=1e-4)


def test_evaluate_on_own_validation_split_reproduces_metrics(trained):
    run, _, tmp = trained
    result = runner.invoke(app, ["evaluate", str(run), "--runs-dir", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    out = run_dir_from(result.output)
    assert out.parent == tmp / "runs" / "evaluate"
    a = json.loads((run / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for key in ("n", "accuracy", "confusion_matrix", "accuracy_ci95"):
        assert a[key] == b[key], key
    for key in ("loss", "auc", "macro_f1"):
        assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_evaluate_on_a_folder_with_other_spellings(trained):
    run, _, tmp = trained
    test_dir = make_dataset(tmp / "test", per_class=3, seed=9, folders=("Glioma", "meningioma_tumor", "notumor",
                                                                         "pituitary"), fmt="jpg")
    result = runner.invoke(app, ["evaluate", "latest", "--data", str(test_dir), "--runs-dir", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    out = run_dir_from(result.output)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 12 and [v["support"] for v in m["per_class"].values()] == [3, 3, 3, 3]
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"
    for name in ("metrics.md", "predictions.csv", "plots/confusion_matrix.png"):
        assert (out / name).is_file()


def test_config_yaml_reproduces_the_run(trained):
    run, _, tmp = trained
    result = runner.invoke(app, ["train", "--config", str(run / "config.yaml"), "--runs-dir", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    again = run_dir_from(result.output)
    assert again != run and again.name.startswith(run.name[:8])  # a new directory, the old one untouched
    assert (again / "config.yaml").read_text() == (run / "config.yaml").read_text()
    a = pd.read_csv(run / "split.csv")
    b = pd.read_csv(again / "split.csv")
    assert a.equals(b)  # same seed, same split


def test_bad_config_value_is_one_line_and_exit_2(tiny_data, runs_dir):
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--runs-dir", str(runs_dir),
                                 "--set", "train.optimiser=adam"])
    assert result.exit_code == 2
    assert "unknown config key 'train.optimiser'" in result.output and "did you mean 'optimizer'" in result.output
    assert not (runs_dir / "train").exists() or not any((runs_dir / "train").iterdir())


def test_bad_data_fails_run_marked_failed(tmp_path, runs_dir):
    data = make_dataset(tmp_path / "d", per_class=2, folders=("glioma", "dogs"))
    result = runner.invoke(app, ["train", "--data", str(data), "--runs-dir", str(runs_dir), *FAST])
    assert result.exit_code == 1
    assert "'dogs'" in result.output and "data.classes" in result.output
    (run,) = list((runs_dir / "train").iterdir())
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "failed" and "dogs" in meta["error"]
    assert not (run / "metrics.json").exists()


def test_evaluate_without_runs_is_clear(tmp_path):
    result = runner.invoke(app, ["evaluate", "--runs-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no complete run" in result.output


@pytest.mark.parametrize("checkpoint", ["best", "last"])
def test_interrupt_leaves_best_model_and_marks_run(tiny_data, runs_dir, checkpoint):
    import keras

    from braintumor.commands.train import run_train
    from braintumor.config import load_config
    from braintumor.runs import read_meta

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    cfg = load_config(arch="customnet", flags={"data": str(tiny_data), "runs_dir": str(runs_dir), "epochs": 5,
                                               "image_size": 32},
                      sets=["model.filters=[8,16]", f"train.checkpoint={checkpoint}"])
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, callbacks=(CtrlC(),))
    (run,) = list((runs_dir / "train").iterdir())
    assert read_meta(run)["status"] == "interrupted"
    assert (run / "model.keras").is_file() and not (run / "metrics.json").exists()
    assert not list(run.glob(".*tmp*"))  # no half-written files left behind
    keras.models.load_model(run / "model.keras")  # the saved best model is whole


def test_help_lists_every_subcommand():
    """Each command is a row of the command list (not just a word somewhere in the text) and its own --help works."""
    import re

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    rows = set(re.findall(r"^\W*(\w+)\s{2,}\S", result.output, re.M))  # "│ cam       Class activation maps..."
    commands = {"eda", "train", "kfold", "evaluate", "predict", "cam", "compare", "serve", "export"}
    assert commands <= rows, sorted(commands - rows)
    for name in sorted(commands):
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output and name in sub.output, (name, sub.output)


def test_ema_weights_are_the_ones_saved_with_the_last_checkpoint(tiny_data, runs_dir):
    """train.ema swaps the averaged weights in after fit; checkpoint: last must save those, not the raw ones."""
    import keras

    from braintumor.commands.train import run_train
    from braintumor.config import load_config

    class RawWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.kernel = np.array(self.model.get_layer("block1_1_conv").kernel)

    raw = RawWeights()
    cfg = load_config(arch="customnet", flags={"data": str(tiny_data), "runs_dir": str(runs_dir), "epochs": 2,
                                               "image_size": 32},
                      sets=["model.filters=[8,16]", "train.checkpoint=last", "train.ema=0.5",
                            "train.lr_schedule=cosine", "train.early_stopping_patience=0", "eval.bootstrap=0"])
    run, _ = run_train(cfg, callbacks=(raw,))
    saved = np.array(keras.models.load_model(run / "model.keras").get_layer("block1_1_conv").kernel)
    assert saved.shape == raw.kernel.shape and not np.allclose(saved, raw.kernel)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["checkpoint"] == "last" and meta["epochs_run"] == 2 and meta["validation_steers_training"] is False


def test_an_empty_class_folder_is_named_with_the_minimum_needed(tmp_path):
    """A new user's folder: one class folder empty, three images in each other one (issue 16)."""
    data = make_dataset(tmp_path / "data", per_class=3)
    for f in (data / "pituitary").iterdir():
        f.unlink()
    r = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir",
                            str(tmp_path / "runs"), *FAST])
    assert r.exit_code == 1, r.output
    assert "class 'pituitary' has no readable images" in r.output
    assert "at least 5 images for a validation split of 0.2" in r.output
    assert "Traceback" not in r.output


def test_too_few_images_per_class_is_a_message_not_a_traceback(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    r = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir",
                            str(tmp_path / "runs"), *FAST])
    assert r.exit_code == 1, r.output
    assert "no class has 5" in r.output and "at least 5 images" in r.output


def test_summary_title_names_the_model_the_recipe_keeps(tmp_path):
    """CustomNet's recipe keeps the last epoch: the summary must not call it the best model (issue 16)."""
    data = make_dataset(tmp_path / "data", per_class=6)
    args = ["train", "--arch", "customnet", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), *FAST]
    r = runner.invoke(app, [*args, "--set", "train.checkpoint=last"])
    assert r.exit_code == 0, r.output
    assert "last epoch's model on the validation split" in r.output and "best model" not in r.output


def test_evaluate_a_tumour_or_not_collection(trained):
    """yes/no folders: the binary figures alone, computed from predictions.csv; the unit named."""
    run, _, tmp = trained
    yn = make_dataset(tmp / "yn", per_class=4, seed=5, folders=("glioma", "meningioma", "notumor", "pituitary"))
    (yn / "glioma").rename(yn / "yes")
    (yn / "notumor").rename(yn / "no")
    for f in ("meningioma", "pituitary"):
        for p in (yn / f).iterdir():
            p.rename(yn / "yes" / f"{f}_{p.name}")
        (yn / f).rmdir()
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(yn), "--runs-dir", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    out = run_dir_from(result.output)
    m = json.loads((out / "metrics.json").read_text())
    b = m["binary"]
    assert "accuracy" not in m and b["n"] == 16 and b["n_tumour"] == 12
    pred = pd.read_csv(out / "predictions.csv")
    tumour, said = pred["true"] == "tumour", pred["predicted"] != "notumor"
    assert b["sensitivity"] == pytest.approx((said & tumour).sum() / tumour.sum())
    assert b["specificity"] == pytest.approx((~said & ~tumour).sum() / (~tumour).sum())
    ok = pred["status"] == "ok"
    if (tumour & ok).any():
        assert b["missed_accepted"] == pytest.approx((~said & tumour & ok).sum() / (tumour & ok).sum())
    assert "resampling 16 images" in (out / "metrics.md").read_text() and "tumour or not" in result.output
    # a 4-class folder gets the same figures beside its classes
    four = make_dataset(tmp / "four", per_class=3, seed=7)
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(four), "--runs-dir", str(tmp / "runs")])
    m = json.loads((run_dir_from(result.output) / "metrics.json").read_text())
    assert m["binary"]["n_tumour"] == 9 and "accuracy" in m and "per_patient" not in m["binary"]
    # with the patients named (img_000 of every class folder is one patient: 3 tumour slices, 1 clean), the
    # per-patient figures follow from predictions.csv
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(four), "--groups", r"re:^img_(\d+)",
                                 "--runs-dir", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    out = run_dir_from(result.output)
    pp = json.loads((out / "metrics.json").read_text())["binary"]["per_patient"]
    pred = pd.read_csv(out / "predictions.csv")
    pred["patient"] = pred["path"].str.extract(r"img_(\d+)")[0]
    pred["said"], pred["tumour"] = pred["predicted"] != "notumor", pred["true"] != "notumor"
    rate = pred[pred.tumour].groupby("patient")["said"].mean()
    alarm = pred[~pred.tumour].groupby("patient")["said"].any()
    assert pp["patients"] == 3 and pp["with_tumour"] == 3 and pp["with_clean_slices"] == 3
    assert pp["found"] == int((rate > 0).sum()) and pp["missed"] == int((rate == 0).sum())
    assert pp["slice_sensitivity_lowest"] == pytest.approx(rate.min())
    assert pp["slice_sensitivity_median"] == pytest.approx(rate.median())
    assert pp["raised_an_alarm"] == int(alarm.sum())
    assert f"{pp['found']} of 3" in (out / "metrics.md").read_text() and "per patient" in result.output
