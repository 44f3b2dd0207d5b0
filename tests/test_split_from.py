"""data.split_from: a lever that adds images is judged on its control's validation images (a previous train run's
split.csv reused, extended to the new images without cutting a group)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST, make_dataset
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.errors import ConfigError, DataError
from braintumor.splits import split_like


def _previous(tmp_path: Path, paths: list[str], sides: list[str]) -> Path:
    csv = tmp_path / "split.csv"
    pd.DataFrame({"path": paths, "label": 0, "class": "glioma", "split": sides}).to_csv(csv, index=False)
    return csv


def test_listed_images_keep_their_side_and_new_ones_are_split_with_groups_whole(tmp_path):
    old = [str(tmp_path / f"old_{i}.png") for i in range(20)]
    old_sides = ["val" if i % 4 == 0 else "train" for i in range(20)]
    _previous(tmp_path, old, old_sides)  # passed below as the run directory that holds split.csv
    new = [str(tmp_path / f"new_{i}.png") for i in range(40)]
    paths = old + [str(tmp_path / "copy_of_old_0.png")] + new
    labels = np.r_[np.zeros(20), 0, np.arange(40) % 2].astype(int)
    # old_0 and its copy are one group; the new images come in pairs (two slices of one patient)
    groups = np.r_[np.arange(20), 0, 100 + np.arange(40) // 2]
    train_idx, val_idx, counts = split_like(tmp_path, paths, labels, groups, 0.25, seed=3)
    side = np.full(len(paths), "", dtype=object)
    side[train_idx], side[val_idx] = "train", "val"
    assert list(side[:20]) == old_sides
    assert side[20] == "val"  # the copy followed old_0
    assert counts == {"reused": 20, "joined_their_group": 1, "new": 40}
    new_side = side[21:]
    assert set(new_side) == {"train", "val"}
    assert 0.15 <= np.mean(new_side == "val") <= 0.35
    assert all(new_side[2 * k] == new_side[2 * k + 1] for k in range(20))  # no patient cut


def test_a_group_on_both_sides_before_and_foreign_tables_are_refused(tmp_path):
    paths = [str(tmp_path / f"img_{i}.png") for i in range(8)]
    csv = _previous(tmp_path, paths, ["train", "val"] * 4)
    with pytest.raises(DataError, match="grouping changed.*data.group_duplicates: none to keep"):
        split_like(csv, paths, np.zeros(8, int), np.r_[0, 0, np.arange(2, 8)], 0.25, seed=0)
    with pytest.raises(DataError, match="none of the 2 images"):
        split_like(csv, ["/elsewhere/a.png", "/elsewhere/b.png"], np.zeros(2, int), np.arange(2), 0.25, seed=0)
    (tmp_path / "k").mkdir()
    kfold = _previous(tmp_path / "k", paths, ["train", "tune"] * 4)
    with pytest.raises(ConfigError, match="kfold run's split cannot be reused"):
        split_like(kfold, paths, np.zeros(8, int), np.arange(8), 0.25, seed=0)
    with pytest.raises(ConfigError, match="not found"):
        split_like(tmp_path / "missing", paths, np.zeros(8, int), np.arange(8), 0.25, seed=0)


def test_train_with_a_collection_added_keeps_the_controls_validation_images(tmp_path):
    first = make_dataset(tmp_path / "first", per_class=6)
    added = make_dataset(tmp_path / "added", per_class=4, seed=5)
    runs = tmp_path / "runs"
    ok = CliRunner().invoke(app, ["train", "--arch", "customnet", "--data", f"a={first}", "--runs-dir", str(runs),
                                  "--name", "control", *FAST])
    assert ok.exit_code == 0, ok.output
    (control,) = (runs / "train").iterdir()
    ok = CliRunner().invoke(app, ["train", "--arch", "customnet", "--data", f"a={first}", "--data", f"b={added}",
                                  "--runs-dir", str(runs), "--name", "lever", *FAST,
                                  "--set", f"data.split_from={control}"])
    assert ok.exit_code == 0, ok.output
    (lever,) = [p for p in (runs / "train").iterdir() if p != control]
    before = pd.read_csv(control / "split.csv").set_index("path")["split"]
    after = pd.read_csv(lever / "split.csv").set_index("path")["split"]
    assert after.loc[before.index].tolist() == before.tolist()
    assert len(after) == len(before) + 16
    meta = json.loads((lever / "meta.json").read_text())
    assert meta["split_from"]["reused"] == len(before)
    assert meta["split_from"]["new"] + meta["split_from"]["joined_their_group"] == 16
