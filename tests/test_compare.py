"""compare: one row per run from run directories made by the CLI; cohorts flag runs not comparable."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.engine.results import read_summary
from tests.conftest import FAST, assert_png_figure, make_dataset

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two tiny train runs and an evaluation of one on another folder, all made through the CLI."""
    root = tmp_path_factory.mktemp("compare")
    data, test = make_dataset(root / "data"), make_dataset(root / "test", per_class=5, seed=7)
    runs = root / "runs"
    for name, lr in (("a", "0.001"), ("b", "0.003")):
        # same seed, so both are scored on the same validation images; a different rate, so different numbers
        r = invoke("train", "--arch", "customnet", "--data", data, "--runs-dir", runs, "--name", name, *FAST,
                   "--set", f"train.lr={lr}")
        assert r.exit_code == 0, r.output
    a, b = sorted((runs / "train").iterdir())
    r = invoke("evaluate", a, "--data", test, "--runs-dir", runs)
    assert r.exit_code == 0, r.output
    (evaluated,) = list((runs / "evaluate").iterdir())
    return SimpleNamespace(root=root, data=data, test=test, runs=runs, a=a, b=b, evaluated=evaluated)


def compare(made, *args):
    """Run compare into a fresh runs dir; returns (result, output dir or None)."""
    out_root = made.root / f"out{len(list(made.root.glob('out*')))}"
    r = invoke("compare", *args, "--runs-dir", out_root)
    found = list((out_root / "compare").glob("*")) if (out_root / "compare").is_dir() else []
    return r, (found[0] if found else None)


def table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "comparison.csv")


def copy_run(src: Path, dst: Path, **meta_changes) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta.update(meta_changes)
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


def test_compare_train_runs_writes_table_files_and_measures_inference(made):
    r, out = compare(made, made.a, made.b, "--repeats", "5")
    assert r.exit_code == 0, r.output
    df = table(out)
    assert list(df["run"]) == [made.a.name, made.b.name]  # the order given when not sorted
    for _, row in df.iterrows():
        run = made.a if row["run"] == made.a.name else made.b
        metrics = json.loads((run / "metrics.json").read_text())
        meta = json.loads((run / "meta.json").read_text())
        assert row["accuracy"] == pytest.approx(metrics["accuracy"])
        ci = (row["accuracy_ci_low"], row["accuracy_ci_high"])
        assert ci == pytest.approx(tuple(metrics["accuracy_ci95"]))
        assert row["auc"] == pytest.approx(metrics["auc"], nan_ok=True)
        assert row["loss"] == pytest.approx(metrics["loss"])
        assert row["macro_f1"] == pytest.approx(metrics["macro_f1"])
        assert row["params"] == meta["params"] and row["image_size"] == 32 and row["epochs_run"] == 1
        assert row["arch"] == "customnet" and row["kind"] == "train"
        assert row["train_seconds"] == pytest.approx(meta["train_seconds"])
        assert row["inference_source"] == "measured" and 0 < row["inference_ms"] < 5000
    assert set(df["cohort"]) == {"A"}  # same classes, same validation images: comparable
    assert "not all comparable" not in r.output
    assert_png_figure(out / "comparison.png")  # drawn, not blank
    md = (out / "comparison.md").read_text()
    assert "accuracy (95% CI)" in md and made.a.name in md and "median of a compiled single-image call" in md
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["runs"] == 2 and meta["skipped"] == 0
    assert made.a.name in r.stdout and "run comparison" in r.stdout


def test_markdown_to_stdout_and_sort_best_first(made):
    r, out = compare(made, made.a, made.b, "--sort", "loss", "--format", "md", "--no-measure")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("# Run comparison")
    # stdout holds the table only; the output path goes to stderr
    assert r.stdout == (out / "comparison.md").read_text()
    df = table(out)
    assert list(df["loss"]) == sorted(df["loss"])
    assert set(df["inference_source"]) == {"not measured"}
    r, out = compare(made, made.a, made.b, "--sort", "accuracy", "--format", "csv", "--no-measure")
    assert r.exit_code == 0
    df = pd.read_csv(__import__("io").StringIO(r.stdout))
    assert list(df["accuracy"]) == sorted(df["accuracy"], reverse=True)


def test_without_arguments_it_compares_every_train_and_kfold_run(made, tmp_path):
    r = invoke("compare", "--runs-dir", made.runs, "--no-measure", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert sorted(pd.read_csv(__import__("io").StringIO(r.stdout))["run"]) == [made.a.name, made.b.name]
    r = invoke("compare", "--runs-dir", tmp_path / "empty")
    assert r.exit_code == 1 and "no runs under" in r.stderr


def test_bad_sort_key_is_a_usage_error(made):
    r, out = compare(made, made.a, "--sort", "acuracy")
    assert r.exit_code == 2 and out is None
    assert "--sort 'acuracy' is not a column" in r.stderr and "did you mean 'accuracy'" in r.stderr


def test_incomplete_run_and_non_run_folders_are_skipped_with_the_reason(made, tmp_path):
    running = copy_run(made.a, tmp_path / "running", status="running")
    (running / "metrics.json").unlink()
    failed = copy_run(made.b, tmp_path / "failed", status="failed", error="DataError: no images")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a run")
    r, out = compare(made, made.a, running, failed, plain, tmp_path / "missing", "--no-measure")
    assert r.exit_code == 0, r.output
    assert list(table(out)["run"]) == [made.a.name]
    err = r.stderr
    assert f"{running} is incomplete (status: running)" in err
    assert "status: failed: DataError: no images" in err
    assert f"{plain} is not a run directory (no meta.json)" in err
    assert f"{tmp_path / 'missing'} does not exist" in err
    skipped = json.loads((out / "skipped.json").read_text())
    assert len(skipped) == 4
    assert "Skipped:" in (out / "comparison.md").read_text()


def test_nothing_comparable_is_an_error_and_writes_nothing(made, tmp_path):
    (tmp_path / "plain").mkdir()
    r, out = compare(made, tmp_path / "plain")
    assert r.exit_code == 1 and out is None
    assert "nothing to compare" in r.stderr and "no meta.json" in r.stderr


def test_other_command_runs_are_skipped(made):
    r, first = compare(made, made.a, "--no-measure")
    r, out = compare(made, made.a, first, "--no-measure")
    assert r.exit_code == 0
    assert "is a compare run; compare reads train, evaluate and kfold runs" in r.stderr


def test_different_test_folder_is_flagged_as_another_cohort(made):
    r, out = compare(made, made.a, made.evaluated, "--no-measure")
    assert r.exit_code == 0, r.output
    df = table(out)
    assert list(df["cohort"]) == ["A", "B"]
    ev = df[df["kind"] == "evaluate"].iloc[0]
    assert ev["arch"] == "customnet" and str(made.test) in ev["eval_set"]
    metrics = json.loads((made.evaluated / "metrics.json").read_text())
    assert ev["accuracy"] == pytest.approx(metrics["accuracy"])
    assert ev["n_eval"] == 20  # the test folder, not the training run's validation split
    assert "not all comparable" in r.stderr and "evaluation data" in r.stderr and "class sets" not in r.stderr
    md = (out / "comparison.md").read_text()
    assert "**Warning:**" in md and "- **B**:" in md


def test_different_class_set_is_flagged(made, tmp_path):
    other = copy_run(made.b, tmp_path / "two-class", class_names=["tumour", "healthy", "x", "y"])
    m = json.loads((other / "metrics.json").read_text())
    m["classes"] = ["tumour", "healthy", "x", "y"]
    (other / "metrics.json").write_text(json.dumps(m))
    r, out = compare(made, made.a, other, "--no-measure")
    assert r.exit_code == 0
    assert list(table(out)["cohort"]) == ["A", "B"]
    assert "differ in class sets" in r.stderr


def test_recorded_inference_time_is_used_instead_of_measuring(made, tmp_path):
    recorded = copy_run(made.a, tmp_path / "recorded", inference_ms=1.234)
    (recorded / "model.keras").unlink()  # would fail if compare tried to load and time it
    r, out = compare(made, recorded)
    assert r.exit_code == 0, r.output
    row = table(out).iloc[0]
    assert row["inference_source"] == "recorded" and row["inference_ms"] == pytest.approx(1.234)


def fake_kfold(root: Path, folds: list[Path], summary: str | None, config_from: Path | None = None) -> Path:
    """A kfold run directory laid out as kfold.py writes it, from finished train runs used as folds."""
    run = root / "20260101-000000-customnet"
    run.mkdir(parents=True)
    for i, src in enumerate(folds, start=1):
        shutil.copytree(src, run / f"fold_{i}")
    (run / "config.yaml").write_text(((config_from or folds[0]) / "config.yaml").read_text())
    meta = {"command": "kfold", "status": "complete", "n_folds": len(folds),
            "class_names": ["glioma", "meningioma", "notumor", "pituitary"]}
    (run / "meta.json").write_text(json.dumps(meta))
    if summary is not None:
        (run / "summary.csv").write_text(summary)
    return run


def test_kfold_without_summary_averages_the_fold_runs(made, tmp_path):
    run = fake_kfold(tmp_path, [made.a, made.b], summary=None)
    for fold, acc in (("fold_1", 0.70), ("fold_2", 0.72)):  # fold accuracies that differ, so the interval is made
        metrics = json.loads((run / fold / "metrics.json").read_text())
        (run / fold / "metrics.json").write_text(json.dumps({**metrics, "accuracy": acc}))
    r, out = compare(made, run, "--no-measure")
    assert r.exit_code == 0, r.output
    row = table(out).iloc[0]
    folds = [json.loads((run / f / "metrics.json").read_text()) for f in ("fold_1", "fold_2")]
    metas = [json.loads((p / "meta.json").read_text()) for p in (made.a, made.b)]
    for key in ("accuracy", "loss", "macro_f1"):
        assert row[key] == pytest.approx(np.mean([f[key] for f in folds]))
    assert row["kind"] == "kfold" and row["arch"] == "customnet" and row["params"] == metas[0]["params"]
    assert row["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in metas), abs=0.01)
    assert "2 folds (fold metrics)" in row["ci_method"]
    # the 95% t-interval over 2 folds: 0.71 +- t(0.975, 1) * sd / sqrt(2) = 0.71 +- 12.706 * 0.01414 / 1.414
    half = 12.7062 * np.std([0.70, 0.72], ddof=1) / np.sqrt(2)
    assert row["accuracy"] == pytest.approx(0.71)
    assert (row["accuracy_ci_low"], row["accuracy_ci_high"]) == pytest.approx((0.71 - half, 0.71 + half), abs=1e-3)


def test_kfold_summary_csv_is_preferred(made, tmp_path):
    summary = ("model,data,n,loss,accuracy,auc,macro_f1,accuracy_ci_low,accuracy_ci_high\n"
               "fold_1,val,8,0.9,0.5,0.6,0.45,0.2,0.8\n"
               "fold_2,val,8,0.7,0.7,0.8,0.65,0.4,0.9\n"
               "mean,val,,0.8,0.6,0.7,0.55,,\n"
               "std,val,,0.1414,0.1414,0.1414,0.1414,,\n"
               "pooled_oof,val,16,0.8,0.6,0.7,0.55,0.3,0.85\n"
               "fold_1,test,20,0.1,0.99,0.99,0.99,0.9,1.0\n"
               "mean,test,,0.1,0.99,0.99,0.99,,\n")
    run = fake_kfold(tmp_path, [made.a, made.b], summary)
    r, out = compare(made, run, "--no-measure")
    assert r.exit_code == 0, r.output
    row = table(out).iloc[0]
    assert (row["accuracy"], row["loss"], row["auc"], row["macro_f1"]) == pytest.approx((0.6, 0.8, 0.7, 0.55))
    half = 12.706 * 0.1414 / math.sqrt(2)  # t(0.975, 1 dof)
    ci = (row["accuracy_ci_low"], row["accuracy_ci_high"])
    assert ci == pytest.approx((0.6 - half, 0.6 + half), abs=1e-3)
    assert "2 folds (summary.csv)" in row["ci_method"]


def test_kfold_summary_json_is_read_before_summary_csv(made, tmp_path):
    run = fake_kfold(tmp_path, [made.a, made.b], "model,data,accuracy\nmean,val,0.1\nstd,val,0.0\n")
    stats = {"loss": 0.8, "accuracy": 0.6, "auc": 0.7, "macro_f1": 0.55}
    spread = dict.fromkeys(stats, 0.1414)
    (run / "summary.json").write_text(json.dumps({"n_folds": 2, "val": {"mean": stats, "std": spread}}))
    r, out = compare(made, run, "--no-measure")
    assert r.exit_code == 0, r.output
    row = table(out).iloc[0]
    assert (row["accuracy"], row["loss"], row["auc"], row["macro_f1"]) == pytest.approx((0.6, 0.8, 0.7, 0.55))
    assert "2 folds (summary.json)" in row["ci_method"]


def test_kfold_with_no_finished_fold_is_skipped(made, tmp_path):
    run = fake_kfold(tmp_path, [], summary=None, config_from=made.a)
    r, out = compare(made, made.a, run, "--no-measure")
    assert r.exit_code == 0
    assert "kfold run with no summary.csv and no finished fold" in r.stderr


def test_read_summary_ignores_rows_it_does_not_understand(tmp_path):
    p = tmp_path / "summary.csv"
    p.write_text("fold,accuracy,loss\n1,0.5,1.0\n2,0.7,0.8\nmean,0.6,0.9\nstd,0.14,0.14\n")
    s = read_summary(p)
    assert s["k"] == 2 and s["mean"] == {"accuracy": 0.6, "loss": 0.9} and s["std"]["accuracy"] == 0.14
    p.write_text("a,b\n1,2\n")
    assert read_summary(p) is None


def test_real_kfold_run_compares_by_its_fold_means(made):
    """A kfold run made by the kfold command."""
    runs = made.root / "kfold-runs"
    r = invoke("kfold", "--arch", "customnet", "--folds", "2", "--data", made.data, "--runs-dir", runs, *FAST)
    assert r.exit_code == 0, r.output
    (run,) = list((runs / "kfold").iterdir())
    r, out = compare(made, run, made.a, "--no-measure")
    assert r.exit_code == 0, r.output
    row = table(out).iloc[0]
    summary = pd.read_csv(run / "summary.csv")
    mean = summary[(summary["model"] == "mean") & (summary["data"] == "val")].iloc[0]
    assert row["kind"] == "kfold" and row["accuracy"] == pytest.approx(mean["accuracy"])
    assert row["n_eval"] == len(list(made.data.rglob("*.png")))
    # fold means over the whole folder vs one validation split: not the same images, so flagged
    assert list(table(out)["cohort"]) == ["A", "B"]
