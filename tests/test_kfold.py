"""kfold: leakage-free folds, the out-of-fold file, summaries recomputed from the fold runs, resume, test."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.metrics import scale
from braintumor.models.loading import stored_temperature
from tests.conftest import CLASSES, FAST, assert_png_figure, make_dataset

runner = CliRunner()
METRICS = ["loss", "accuracy", "auc", "macro_f1"]


def plant_copies(root: Path) -> dict[str, list[str]]:
    """Identical copies of a few images: byte copies, a re-encoded copy and one filed under another class."""
    copies = {
        "glioma/img_000.png": ["glioma/img_000_copy.png", "glioma/zz_resaved.png"],
        "meningioma/img_001.png": ["meningioma/img_001_copy.png"],
        "glioma/img_002.png": ["notumor/from_glioma.png"],
    }
    for src, dsts in copies.items():
        for dst in dsts:
            if "resaved" in dst:  # same pixels, different bytes
                Image.open(root / src).save(root / dst, compress_level=1)
            else:
                shutil.copy(root / src, root / dst)
    return copies


def pixel_hash(path: str) -> str:
    return hashlib.sha1(np.asarray(Image.open(path)).tobytes()).hexdigest()


def all_images(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.png"))


def kfold(*args: str):
    return runner.invoke(app, ["kfold", "--arch", "customnet", *FAST, *args])


def only_run(runs: Path) -> Path:
    found = [p for p in (runs / "kfold").iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One complete 3-fold run with a test folder (shared by the read-only tests below)."""
    tmp = tmp_path_factory.mktemp("kfold")
    data = make_dataset(tmp / "data", per_class=8)
    copies = plant_copies(data)
    test = make_dataset(tmp / "test", per_class=3, seed=1)
    shutil.copy(data / "pituitary" / "img_004.png", test / "pituitary" / "leaked.png")
    result = kfold("--data", str(data), "--folds", "3", "--test", str(test), "--runs-dir", str(tmp / "runs"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {"run": only_run(tmp / "runs"), "data": data, "copies": copies, "output": result.output}


def test_no_group_straddles_folds(done):
    run, data = done["run"], done["data"]
    folds = pd.read_csv(run / "folds.csv")
    assert folds.groupby("group")["fold"].nunique().max() == 1
    fold_of = dict(zip(folds["path"], folds["fold"], strict=True))
    for src, dsts in done["copies"].items():
        assert {fold_of[str(data / p)] for p in [src, *dsts]} == {fold_of[str(data / src)]}
    # independently of the code under test: no training image has the pixels of a held-out one
    for i in (1, 2, 3):
        split = pd.read_csv(run / f"fold_{i}" / "split.csv")
        assert set(split.loc[split["split"] == "val", "path"]) == set(folds.loc[folds["fold"] == i, "path"])
        seen = {pixel_hash(p) for p in split.loc[split["split"] == "train", "path"]}
        assert not seen & {pixel_hash(p) for p in split.loc[split["split"] == "val", "path"]}
        # the shipped recipe keeps the last epoch of a fixed schedule: it trains on every other fold, no tune split
        assert "tune" not in set(split["split"])
        assert set(split.loc[split["split"] == "train", "path"]) == set(folds.loc[folds["fold"] != i, "path"])
        assert json.loads((run / f"fold_{i}" / "meta.json").read_text())["validation_steers_training"] is False
    assert "keeps the last epoch of a fixed schedule" in (run / "summary.md").read_text()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["duplicate_groups"] == 3  # the three planted groups
    assert meta["images_in_duplicate_groups"] == 7
    assert "3 duplicate groups" in done["output"]


def test_oof_holds_every_image_exactly_once(done):
    run, data = done["run"], done["data"]
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert sorted(oof["path"]) == all_images(data)
    assert oof["path"].is_unique
    folds = pd.read_csv(run / "folds.csv")
    assert oof["fold"].tolist() == folds["fold"].tolist()
    probs = oof[[c for c in oof.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    for figure in ("confusion_matrix_oof.png", "fold_accuracy.png"):
        assert_png_figure(run / "plots" / figure)  # drawn at a readable size, not blank


def test_summary_equals_numbers_recomputed_from_fold_runs(done):
    run = done["run"]
    summary = pd.read_csv(run / "summary.csv")
    val = summary[summary["data"] == "val"].set_index("model")
    per_fold = {m: [] for m in METRICS}
    for i in (1, 2, 3):
        fold = run / f"fold_{i}"
        assert json.loads((fold / "meta.json").read_text())["status"] == "complete"
        assert {"model.keras", "history.csv", "metrics.md", "predictions.csv", "config.yaml"} <= {
            p.name for p in fold.iterdir()}
        m = json.loads((fold / "metrics.json").read_text())
        for k in METRICS:
            assert val.loc[f"fold_{i}", k] == pytest.approx(m[k], abs=1e-12)
            per_fold[k].append(m[k])
    for k in METRICS:
        assert val.loc["mean", k] == pytest.approx(np.mean(per_fold[k]), abs=1e-12)
        assert val.loc["std", k] == pytest.approx(np.std(per_fold[k], ddof=1), abs=1e-12)
    structured = json.loads((run / "summary.json").read_text())  # what compare reads
    assert structured["n_folds"] == 3 and set(structured) >= {"val", "test"}
    for model in ("fold_1", "fold_2", "fold_3", "mean", "std", "pooled_oof"):
        for k in METRICS:
            assert structured["val"][model][k] == val.loc[model, k]
    assert structured["val"]["mean"]["accuracy_ci_low"] is None  # NaN is written as null
    md = (run / "summary.md").read_text()
    assert "**mean**" in md and "**std**" in md and "fold_3" in md
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["fold_status"] == {"1": "complete", "2": "complete", "3": "complete"}
    assert "fold 3/3" in done["output"]


def test_test_folder_gives_fold_and_ensemble_rows_with_intervals(done):
    run = done["run"]
    summary = pd.read_csv(run / "summary.csv")
    test = summary[summary["data"] == "test"].set_index("model")
    assert {"fold_1", "fold_2", "fold_3", "mean", "std", "ensemble"} <= set(test.index)
    for model in ("fold_1", "ensemble"):
        lo, acc, hi = test.loc[model, ["accuracy_ci_low", "accuracy", "accuracy_ci_high"]]
        assert 0 <= lo <= acc <= hi <= 1
        assert test.loc[model, "n"] == 13
    # the ensemble is the mean of the fold models' probabilities, calibrated by the kfold run's temperature
    # (each fold's own rows by the fold's temperature: undo it to get the raw probabilities back)
    cols = [f"p_{c}" for c in ("glioma", "meningioma", "notumor", "pituitary")]
    folds = [scale(pd.read_csv(run / f"fold_{i}" / "test" / "predictions.csv")[cols].to_numpy(),
                   1 / stored_temperature(run / f"fold_{i}")) for i in (1, 2, 3)]
    ensemble = pd.read_csv(run / "ensemble_test" / "predictions.csv")[cols].to_numpy()
    assert stored_temperature(run) != 1.0  # fitted on the pooled out-of-fold predictions
    assert np.allclose(ensemble, scale(np.mean(folds, axis=0), stored_temperature(run)), atol=1e-4)
    assert "| ensemble |" in (run / "summary.md").read_text()
    assert json.loads((run / "meta.json").read_text())["test_images_in_training_folder"] == 1


def test_resume_rejects_changed_settings(done):
    run = str(done["run"])
    result = runner.invoke(app, ["kfold", "--resume", run, "--epochs", "3"])
    assert result.exit_code == 2 and "drop --epochs" in result.output
    result = runner.invoke(app, ["kfold", "--resume", run, "--folds", "4"])
    assert result.exit_code == 2 and "started with 3 folds" in result.output


def test_resume_retrains_only_folds_without_complete_marker(tmp_path, monkeypatch):
    from braintumor.engine import trainer as train

    data = make_dataset(tmp_path / "data", per_class=6)
    plant_copies(data)
    runs = tmp_path / "runs"
    real = train.fit_and_report
    calls: list[str] = []

    def crash_on_second_fold(cfg, run_dir, *args, **kw):
        calls.append(run_dir.name)
        if run_dir.name == "fold_2":
            raise RuntimeError("simulated crash in fold 2")
        return real(cfg, run_dir, *args, **kw)

    monkeypatch.setattr(train, "fit_and_report", crash_on_second_fold)
    result = kfold("--data", str(data), "--folds", "3", "--runs-dir", str(runs))
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    run = only_run(runs)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["fold_status"] == {"1": "complete", "2": "failed"}
    assert json.loads((run / "fold_2" / "meta.json").read_text())["status"] == "failed"
    fold1_model = (run / "fold_1" / "model.keras").stat().st_mtime_ns
    folds_csv = (run / "folds.csv").read_text()

    def counted(cfg, run_dir, *args, **kw):
        calls.append(run_dir.name)
        return real(cfg, run_dir, *args, **kw)

    calls.clear()
    monkeypatch.setattr(train, "fit_and_report", counted)
    result = runner.invoke(app, ["kfold", "--resume", str(run)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert calls == ["fold_2", "fold_3"]
    assert (run / "fold_1" / "model.keras").stat().st_mtime_ns == fold1_model
    assert (run / "folds.csv").read_text() == folds_csv
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "complete" and len(meta["resumed"]) == 1
    assert len(pd.read_csv(run / "oof_predictions.csv")) == len(all_images(data))
    assert "reused complete folds: 1" in result.output

    # a data folder that changed since the run started cannot reuse its folds
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(data / "glioma" / "new.png")
    result = runner.invoke(app, ["kfold", "--resume", str(run)])
    assert result.exit_code == 1 and "data folder changed" in result.output


@pytest.fixture
def no_training(monkeypatch):
    from braintumor.engine import trainer as train

    def refuse(*a, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(train, "fit_and_report", refuse)


def test_too_few_folds_is_an_error_before_training(tmp_path, no_training):
    data = make_dataset(tmp_path / "data", per_class=4)
    result = kfold("--data", str(data), "--folds", "1", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "--folds 1: cross-validation needs at least 2 folds" in result.output
    assert not (tmp_path / "runs").exists()


def test_more_folds_than_the_smallest_class_is_an_error_before_training(tmp_path, no_training):
    data = make_dataset(tmp_path / "data", per_class=5)
    for i in (3, 4):
        (data / "meningioma" / f"img_{i:03d}.png").unlink()
    shutil.copy(data / "meningioma" / "img_000.png", data / "meningioma" / "copy.png")  # 4 files, 3 distinct
    result = kfold("--data", str(data), "--folds", "4", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "class 'meningioma' has only 3 distinct images (4 files; identical copies count once)" in out
    assert "use --folds 3 or fewer" in out
    assert not (tmp_path / "runs" / "kfold").exists() or not any((tmp_path / "runs" / "kfold").iterdir())


def test_folds_are_seeded_stratified_and_respect_groups():
    from braintumor.splits import assign_folds

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    groups = np.arange(90)
    groups[rng.choice(90, 20, replace=False)] = rng.integers(0, 5, 20)  # a few large duplicate groups
    a = assign_folds(labels, groups, 5, seed=1)
    assert np.array_equal(a, assign_folds(labels, groups, 5, seed=1))
    assert not np.array_equal(a, assign_folds(labels, groups, 5, seed=2))
    assert set(a) == {1, 2, 3, 4, 5}
    for g in np.unique(groups):
        assert len(set(a[groups == g])) == 1


def test_near_grouping_keeps_perceptual_neighbours_in_one_fold(tmp_path):
    from braintumor.config import load_config
    from braintumor.splits import plan_folds

    data = make_dataset(tmp_path / "data", per_class=6)
    arr = np.asarray(Image.open(data / "glioma" / "img_000.png")).copy()
    arr[0, 0] = arr[0, 0] + 1  # not identical, perceptually the same
    Image.fromarray(arr).save(data / "glioma" / "near.png")
    near_path, orig = str(data / "glioma" / "near.png"), str(data / "glioma" / "img_000.png")

    def plan(mode: str):
        cfg = load_config("customnet", flags={"data": str(data), "image_size": 32},
                          sets=[f"data.group_duplicates={mode}"])
        p = plan_folds(cfg, 3)
        idx = {q: i for i, q in enumerate(p.loaded.paths)}
        return p, idx[near_path], idx[orig]

    p, i, j = plan("exact")
    assert p.groups[i] != p.groups[j]
    p, i, j = plan("near")
    assert p.groups[i] == p.groups[j] and p.folds[i] == p.folds[j]


def test_a_recipe_that_uses_validation_gets_an_inner_split_never_the_held_out_fold(tmp_path):
    """best checkpoint + plateau + early stopping: an inner split of the training folds steers, never the fold."""
    data = make_dataset(tmp_path / "data", per_class=8)
    plant_copies(data)
    result = kfold("--data", str(data), "--folds", "2", "--epochs", "2", "--runs-dir", str(tmp_path / "runs"),
                   "--set", "train.lr_schedule=plateau", "--set", "train.checkpoint=best",
                   "--set", "train.early_stopping_patience=3")
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = only_run(tmp_path / "runs")
    folds = pd.read_csv(run / "folds.csv")
    for i in (1, 2):
        split = pd.read_csv(run / f"fold_{i}" / "split.csv")
        held_out = split.loc[split["split"] == "val", "path"]
        tune = split.loc[split["split"] == "tune", "path"]
        assert set(held_out) == set(folds.loc[folds["fold"] == i, "path"])
        assert len(tune) > 0 and set(tune) <= set(folds.loc[folds["fold"] != i, "path"])
        train_side = set(split.loc[split["split"] == "train", "path"])
        assert not train_side & set(tune) and train_side | set(tune) == set(folds.loc[folds["fold"] != i, "path"])
        assert not {pixel_hash(p) for p in tune} & {pixel_hash(p) for p in held_out}
        assert not {pixel_hash(p) for p in tune} & {pixel_hash(p) for p in train_side}  # groups kept together
        meta = json.loads((run / f"fold_{i}" / "meta.json").read_text())
        assert meta["validation_steers_training"] is True and meta["checkpoint"] == "best"
        assert meta["n_tune"] == len(tune) and meta["n_scored"] == len(held_out)
        assert "best model on the held-out fold" in (run / f"fold_{i}" / "metrics.md").read_text()
    assert "an inner split" in (run / "summary.md").read_text()


def test_evaluate_a_kfold_run_scores_the_ensemble_of_its_folds(done, tmp_path):
    """`evaluate runs/kfold/<run> --data TEST` = the mean of the fold models, as kfold --test computed it."""
    run = done["run"]
    test_dir = json.loads((run / "meta.json").read_text())["test_dir"]
    result = runner.invoke(app, ["evaluate", str(run), "--data", test_dir, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    (out,) = list((tmp_path / "runs" / "evaluate").iterdir())
    cols = [f"p_{c}" for c in ("glioma", "meningioma", "notumor", "pituitary")]
    ours = pd.read_csv(out / "predictions.csv").sort_values("path")
    theirs = pd.read_csv(run / "ensemble_test" / "predictions.csv").sort_values("path")
    assert ours["path"].tolist() == theirs["path"].tolist()
    assert np.allclose(ours[cols].to_numpy(), theirs[cols].to_numpy(), atol=1e-5)
    assert json.loads((out / "metrics.json").read_text())["n"] == 13


def test_a_kfold_ensemble_needs_a_test_folder_and_cannot_be_explained(done, tmp_path):
    run = done["run"]
    result = runner.invoke(app, ["evaluate", str(run), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "pass --data TEST_DIR" in result.output
    image = next(done["data"].rglob("*.png"))
    result = runner.invoke(app, ["cam", str(image), "--run", str(run), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "fold_1" in result.output
    assert not (tmp_path / "runs" / "cam").exists() or not any((tmp_path / "runs" / "cam").iterdir())


def test_folds_as_separate_jobs_plan_train_one_each_then_assemble(tmp_path):
    """--plan-only writes the plan; each --only-fold job trains its fold; the summary appears with the last one."""
    data = make_dataset(tmp_path / "data", per_class=6)
    result = kfold("--data", str(data), "--folds", "2", "--runs-dir", str(tmp_path / "runs"), "--plan-only")
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = only_run(tmp_path / "runs")
    assert (run / "folds.csv").is_file() and not (run / "fold_1").exists()
    assert json.loads((run / "meta.json").read_text())["status"] == "planned"

    result = runner.invoke(app, ["kfold", "--resume", str(run), "--only-fold", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "partial" and meta["folds_missing"] == [1]
    assert (run / "fold_2" / "model.keras").is_file() and not (run / "fold_1").exists()
    assert not (run / "summary.csv").exists() and "once all 2 folds are complete" in result.output

    result = runner.invoke(app, ["kfold", "--resume", str(run), "--only-fold", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["folds_missing"] == []
    summary = pd.read_csv(run / "summary.csv")
    assert {"fold_1", "fold_2", "pooled_oof"} <= set(summary["model"])

    bad = runner.invoke(app, ["kfold", "--resume", str(run), "--only-fold", "3"])
    assert bad.exit_code == 2 and "has folds 1 to 2" in bad.output
    alone = runner.invoke(app, ["kfold", "--only-fold", "1", "--data", str(data)])
    assert alone.exit_code == 2 and "--plan-only" in alone.output


def test_kfold_says_that_it_does_not_reuse_a_train_split(tmp_path, no_training):
    data = make_dataset(tmp_path / "data", per_class=4)
    result = kfold("--data", str(data), "--folds", "2", "--runs-dir", str(tmp_path / "runs"),
                   "--set", f"data.split_from={tmp_path / 'some_run'}")
    out = " ".join(result.output.split())
    assert "data.split_from" in out and "kfold draws its own folds" in out


def test_kfold_suggests_a_notumor_doubt_that_meets_its_target_on_the_out_of_fold_answers(done):
    run = done["run"]
    oof = pd.read_csv(run / "oof_predictions.csv")
    (name, point), = json.loads((run / "oof_metrics.json").read_text())["notumor_doubt"].items()
    tumour = (oof["true"] != "notumor").to_numpy()
    temperature = json.loads((run / "calibration.json").read_text())["temperature"]
    calibrated = scale(oof[[f"p_{c}" for c in CLASSES]].to_numpy(), temperature)  # what the ensemble answers with
    p = 1 - calibrated[:, CLASSES.index("notumor")]
    said = (oof["predicted"] == "notumor").to_numpy()
    assert name == "data" and point["target"] == 0.9 and point["n_tumour"] == tumour.sum()

    def left(t: float) -> float:  # tumour slices still answered notumor under threshold t
        return float((said & (p < t))[tumour].mean())

    t = point["suggested"]
    if t is None:  # argmax alone leaves at most 10% of the tumour slices answered notumor
        assert said[tumour].mean() <= 0.1
    else:  # the largest threshold meeting the target: any larger one leaves more than 10%
        assert left(t) <= 0.1 < left(np.nextafter(t, 1))
    c = point["cross_fitted"]
    assert set(c["thresholds"]) == {"1", "2", "3"}
    assert c["tumour_said_notumor"]["argmax"] == pytest.approx(said[tumour].mean())
    assert c["tumour_said_notumor"]["doubt"] <= c["tumour_said_notumor"]["argmax"]
    md = (run / "summary.md").read_text()
    assert "## A site's operating point (`eval.notumor_doubt`)" in md
    assert ("none needed" in md) == (t is None) and (t is None or f"--notumor-doubt {t:.4g}" in md)
    said = done["output"].replace("\n", " ")  # the terminal names it too
    assert "--notumor-doubt" not in said if t is None else f"--notumor-doubt {t:.4g} for data" in said
