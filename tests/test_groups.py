"""data.groups: patients from a CSV column or a file-name pattern, never split by train's validation split or
kfold's folds (issue 20, item 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, blob_image
from PIL import Image

from braintumor.config import load_config
from braintumor.errors import ConfigError, DataError
from braintumor.groups import join_patients, parse_spec, patient_keys, patients, sides_summary
from braintumor.splits import split_train_val

N_PATIENTS = 12


def patient_dataset(root: Path, per_patient: int = 3) -> Path:
    """Every patient has slices in every class folder (like the LGG volumes: tumour and clean slices of one
    head), so a split stratified by class alone puts most patients on both sides."""
    rng = np.random.default_rng(0)
    for label, folder in enumerate(CLASSES):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for p in range(N_PATIENTS):
            for s in range(per_patient):
                Image.fromarray(blob_image(label, 32, rng)).save(root / folder / f"P{p:02d}_{folder}_{s}.png")
    with (root / "slices.csv").open("w") as f:
        f.write("name,patient\n")
        for folder in CLASSES:
            for p in range(N_PATIENTS):
                for s in range(per_patient):
                    f.write(f"P{p:02d}_{folder}_{s},patient-{p}\n")
    return root


def _cfg(data: Path, groups: str | None):
    sets = [f"data.groups={groups}"] if groups else []
    return load_config("customnet", flags={"data": str(data), "image_size": 32},
                       sets=[*sets, "data.group_duplicates=exact"])


def _patient_of(path: str) -> str:
    return Path(path).name[:3]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return patient_dataset(tmp_path_factory.mktemp("patients") / "data")


@pytest.mark.parametrize("spec", [None, r"re:^(P\d+)_", "CSV"])
def test_validation_split_never_puts_one_patient_on_both_sides(data, spec):
    from braintumor.splits import prepare_data

    cfg = _cfg(data, str(data / "slices.csv") + ":patient" if spec == "CSV" else spec)
    loaded, groups = prepare_data(cfg)
    train_idx, val_idx = split_train_val(loaded.labels, groups, 0.25, cfg.seed, loaded.class_names)
    pt = np.asarray([_patient_of(p) for p in loaded.paths])
    both = set(pt[train_idx]) & set(pt[val_idx])
    if spec is None:  # the plain split: images alone, so patients straddle (the bug data.groups fixes)
        assert len(both) >= N_PATIENTS // 2
        return
    assert both == set()
    assert len(np.unique(groups)) == N_PATIENTS
    summary = sides_summary(groups, {"train": train_idx, "val": val_idx})
    assert summary["train"]["shared"] == summary["val"]["shared"] == 0
    assert summary["train"]["groups"] + summary["val"]["groups"] == N_PATIENTS


def test_kfold_folds_never_put_one_patient_in_two_folds(data, tmp_path):
    from braintumor.splits import plan_folds, write_folds

    plain = plan_folds(_cfg(data, None), 3)
    pt = np.asarray([_patient_of(p) for p in plain.loaded.paths])
    assert max(len(set(plain.folds[pt == p])) for p in set(pt)) > 1  # without groups a patient is split
    plan = plan_folds(_cfg(data, r"re:^(P\d+)_"), 3)
    for p in set(pt):
        assert len(set(plan.folds[pt == p])) == 1
    write_folds(tmp_path, plan)
    rows = (tmp_path / "folds.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["path", "label", "class", "group", "fold"]
    assert len({r.split(",")[3] for r in rows[1:]}) == N_PATIENTS


def test_patients_join_duplicates_and_unmatched_images_stay_alone():
    paths = ["a/P1_x.png", "a/P1_y.png", "a/P2_x.png", "a/other.png", "a/copy.png"]
    dup = np.array([0, 1, 2, 3, 2])  # copy.png is a duplicate of P2_x.png
    found = patients(r"re:^(P\d)_", paths)
    assert found.keys == ["P1", "P1", "P2", None, None] and found.unmatched == 2 and found.n_patients == 2
    g = join_patients(dup, found)
    assert g[0] == g[1] and g[2] == g[4] and len({g[0], g[2], g[3]}) == 3


def test_csv_rows_match_by_path_column_relative_to_the_csv(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "groups.csv").write_text("path,patient\nimg/a.png,7\nimg/b.png,7\n")
    keys = patient_keys(f"{tmp_path / 'groups.csv'}:patient", [str(tmp_path / "img" / f"{n}.png") for n in "abc"])
    assert keys == ["7", "7", None]


def test_bad_specs_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="PATH.csv:COLUMN"):
        parse_spec("slices.csv")
    with pytest.raises(ConfigError, match="data.groups"):
        _cfg(tmp_path, "re:(unclosed")
    (tmp_path / "s.csv").write_text("name,patient\nzzz,1\n")
    with pytest.raises(DataError, match="no column 'subject'"):
        patient_keys(f"{tmp_path / 's.csv'}:subject", ["x.png"])
    with pytest.raises(DataError, match="none of the 2 images"):
        patients(f"{tmp_path / 's.csv'}:patient", ["x.png", "y.png"])
