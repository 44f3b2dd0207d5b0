"""Several collections at once (issue 14): --data repeated, a source per image, reports per source, and
leave-one-collection-out cross-validation (kfold --by source)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, FAST, make_dataset
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.config import load_config
from braintumor.data import list_images, parse_sources
from braintumor.errors import ConfigError, DataError
from braintumor.metrics import per_source_metrics

runner = CliRunner()


def two_sources(tmp_path: Path, per_class: int = 6, b_classes=CLASSES) -> tuple[Path, Path]:
    """Collection 'a' (all four classes) and collection 'b' (``b_classes``), different pixels (seeds)."""
    a = make_dataset(tmp_path / "hospital_a", per_class=per_class, seed=1)
    b = make_dataset(tmp_path / "hospital_b", per_class=per_class, seed=2, folders=b_classes)
    return a, b


# --- naming and listing -----------------------------------------------------------------------------------

def test_parse_sources_names_and_clashes(tmp_path):
    x, y = tmp_path / "one" / "data", tmp_path / "two" / "data"
    x.mkdir(parents=True), y.mkdir(parents=True)
    assert [(s.name, s.path) for s in parse_sources([f"kaggle={x}", str(y)])] == [("kaggle", x), ("data", y)]
    # two folders with one name get their parent's name too
    assert [s.name for s in parse_sources([str(x), str(y)])] == ["one-data", "two-data"]
    assert parse_sources(str(x))[0].name == "data"
    with pytest.raises(DataError, match="both called 'same'.*NAME=PATH"):
        parse_sources([f"same={x}", f"same={y}"])
    # a real folder whose name holds '=' is a path, not NAME=PATH
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_sources(str(odd))[0].path == odd


def test_list_images_keeps_each_images_source_and_needs_classes_only_together(tmp_path):
    a, b = two_sources(tmp_path, per_class=2, b_classes=("glioma", "meningioma", "pituitary"))
    listing = list_images([f"A={a}", f"B={b}"])
    assert listing.sources.count("A") == 8 and listing.sources.count("B") == 6
    assert all(("hospital_a" in p) == (s == "A") for p, s in zip(listing.paths, listing.sources))
    # B alone lacks notumor: refused for training, with the folder named
    with pytest.raises(DataError, match="has no folder for class.*notumor"):
        list_images([str(b)])
    c = make_dataset(tmp_path / "c", per_class=1, folders=("glioma",))
    with pytest.raises(DataError, match="together have no folder for class.*meningioma"):
        list_images([str(b), str(c)], classes=("glioma", "meningioma", "notumor", "pituitary"))


def test_data_path_is_a_folder_or_a_list(tmp_path):
    cfg = load_config("customnet", sets=["data.path=[a=/x, /y]"])
    assert cfg.data.path == ("a=/x", "/y") and cfg.data_paths == ("a=/x", "/y")
    cfg = load_config("customnet", flags={"data": "/only"})
    assert cfg.data.path == "/only" and cfg.data_paths == ("/only",)
    with pytest.raises(ConfigError, match="data.path"):
        load_config("customnet", sets=["data.path={a: 1}"])


def test_per_source_metrics_by_hand():
    y = np.array([0, 1, 0, 1, 2, 2])
    probs = np.array([[.9, .1, 0], [.2, .8, 0], [.4, .6, 0], [.3, .7, 0], [.1, .1, .8], [.6, .2, .2]])
    got = per_source_metrics(y, probs, ["a", "a", "a", "a", "b", "b"], ["x", "y", "z"])
    assert list(got) == ["a", "b"]
    assert got["a"]["n"] == 4 and got["a"]["accuracy"] == pytest.approx(0.75)
    assert got["a"]["recall"] == {"x": 0.5, "y": 1.0, "z": None}  # no z image in a: None, not 0
    assert got["a"]["auc"] == pytest.approx(1.0)  # x vs y ranked perfectly by p_x and by p_y
    assert got["b"]["accuracy"] == pytest.approx(0.5) and got["b"]["auc"] is None  # one class: no AUC


# --- train, evaluate, eda -----------------------------------------------------------------------------------

def test_train_on_two_sources_reports_per_source_and_groups_copies_across_them(tmp_path):
    a, b = two_sources(tmp_path)
    shutil.copy(a / "glioma" / "img_000.png", b / "glioma" / "copy_of_a.png")  # one image in both collections
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["train", "--arch", "customnet", "--data", f"A={a}", "--data", f"B={b}",
                            "--runs-dir", str(runs), *FAST, "--set", "data.group_duplicates=exact"])
    assert r.exit_code == 0, r.output
    (run,) = (runs / "train").iterdir()
    split = pd.read_csv(run / "split.csv")
    assert set(split["source"]) == {"A", "B"} and len(split) == 49
    copies = split[split["path"].str.endswith(("hospital_a/glioma/img_000.png", "copy_of_a.png"))]
    assert len(copies) == 2 and copies["split"].nunique() == 1  # one group: same side of the split
    m = json.loads((run / "metrics.json").read_text())
    val = split[split["split"] == "val"]
    assert {k: v["n"] for k, v in m["per_source"].items()} == val["source"].value_counts().to_dict()
    assert sum(v["n"] for v in m["per_source"].values()) == m["n"]
    preds = pd.read_csv(run / "predictions.csv")
    assert preds["source"].tolist() == val["source"].tolist()
    assert "Per source" in (run / "metrics.md").read_text()
    cfg = (run / "config.yaml").read_text()
    assert f"A={a}" in cfg and f"B={b}" in cfg

    # evaluate on the two collections: per-source rows that add up, and a source column
    r = runner.invoke(app, ["evaluate", str(run), "--data", f"A={a}", "--data", f"B={b}", "--runs-dir", str(runs)])
    assert r.exit_code == 0, r.output
    assert "per source" in r.output
    (ev,) = (runs / "evaluate").iterdir()
    m = json.loads((ev / "metrics.json").read_text())
    assert {k: v["n"] for k, v in m["per_source"].items()} == {"A": 24, "B": 25}
    preds = pd.read_csv(ev / "predictions.csv")
    for name, v in m["per_source"].items():
        part = preds[preds["source"] == name]
        assert v["accuracy"] == pytest.approx((part["true"] == part["predicted"]).mean())

    # evaluate on the run's own validation split: the collections come from split.csv, with the gate's status
    r = runner.invoke(app, ["evaluate", str(run), "--runs-dir", str(runs), "--name", "own"])
    assert r.exit_code == 0, r.output
    (own,) = (runs / "evaluate").glob("*own")
    m = json.loads((own / "metrics.json").read_text())
    assert {k: v["n"] for k, v in m["per_source"].items()} == val["source"].value_counts().to_dict()
    preds = pd.read_csv(own / "predictions.csv")
    assert preds["source"].tolist() == val["source"].tolist() and preds["status"].notna().all()


def test_eda_reports_each_source(tmp_path):
    a, b = two_sources(tmp_path, per_class=3, b_classes=("glioma", "meningioma", "pituitary"))
    shutil.copy(a / "pituitary" / "img_001.png", b / "pituitary" / "dup.png")
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["eda", "--data", f"A={a}", "--data", f"B={b}", "--runs-dir", str(runs)])
    assert r.exit_code == 0, r.output
    (out,) = (runs / "eda").iterdir()
    s = json.loads((out / "summary.json").read_text())
    assert s["sources"]["A"]["per_class"] == {c: 3 for c in CLASSES}
    assert s["sources"]["B"]["per_class"] == {"glioma": 3, "meningioma": 3, "notumor": 0, "pituitary": 4}
    assert s["sources"]["A"]["copies_in_other_sources"] == 1 and s["sources"]["B"]["copies_in_other_sources"] == 1
    assert s["sources"]["B"]["pixel_mean"]["notumor"]["mean"] is None
    for png in ("class_distribution_by_source.png", "mean_pixel_histogram_by_source.png"):
        assert (out / png).stat().st_size > 5000
    assert "## Per source" in (out / "report.md").read_text()


# --- leave one collection out -------------------------------------------------------------------------------

def test_kfold_by_source_holds_out_each_collection(tmp_path):
    a, b = two_sources(tmp_path, per_class=5, b_classes=("glioma", "meningioma", "pituitary"))
    shutil.copy(b / "meningioma" / "img_002.png", a / "meningioma" / "also_in_b.png")
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["kfold", "--by", "source", "--arch", "customnet", "--data", f"A={a}",
                            "--data", f"B={b}", "--runs-dir", str(runs), *FAST,
                            "--set", "data.group_duplicates=exact"])
    assert r.exit_code == 0, r.output
    assert "no training image of class notumor" in r.output  # holding A out leaves B: it has no notumor
    (run,) = (runs / "kfold").iterdir()
    folds = pd.read_csv(run / "folds.csv")
    assert (folds["fold"] == folds["source"].map({"A": 1, "B": 2})).all()
    # fold 2 holds B out: A's copy of a B image is left out of its training
    split = pd.read_csv(run / "fold_2" / "split.csv")
    assert not split["path"].str.endswith("also_in_b.png").any()
    assert set(split.loc[split["split"] == "val", "path"]) == set(folds.loc[folds["source"] == "B", "path"])
    meta = json.loads((run / "fold_2" / "meta.json").read_text())
    assert meta["held_out"] == "B" and meta["copies_of_held_out_left_out"] == 1
    s = json.loads((run / "summary.json").read_text())
    assert s["by"] == "source" and set(s["val"]) >= {"A", "B", "mean", "std", "pooled_oof"}
    assert {k: v["n"] for k, v in s["per_source"].items()} == {"A": 21, "B": 15}
    # each collection's row is its fold model's score on it
    for i, name in ((1, "A"), (2, "B")):
        fold_m = json.loads((run / f"fold_{i}" / "metrics.json").read_text())
        assert s["per_source"][name]["accuracy"] == pytest.approx(fold_m["accuracy"])
    md = (run / "summary.md").read_text()
    assert "Leave-one-collection-out" in md and "## Per source" in md
    assert not (run / "calibration.json").exists() and "No temperature is fitted" in md


def test_kfold_by_source_refusals(tmp_path):
    a, b = two_sources(tmp_path, per_class=2)
    r = runner.invoke(app, ["kfold", "--by", "source", "--data", str(a), "--runs-dir", str(tmp_path / "r"), *FAST])
    assert r.exit_code != 0 and "needs at least two" in r.output
    r = runner.invoke(app, ["kfold", "--by", "source", "--folds", "3", "--data", str(a), "--data", str(b),
                            "--runs-dir", str(tmp_path / "r"), *FAST])
    assert r.exit_code != 0 and "one fold per collection (2" in r.output
    assert not (tmp_path / "r").exists()  # refused before any run directory
