"""data.groups: patients from a CSV column or a file-name pattern, never split by train's validation split or
kfold's folds (issue 20, item 2)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import CLASSES, blob_image
from PIL import Image

from braintumor import dedup
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
    from braintumor.engine.crossval import _groups_line, groups_per_fold
    from braintumor.groups import describe

    cfg = _cfg(data, r"re:^(P\d+)_")
    line = _groups_line(describe(cfg.data, plan.loaded.paths, plan.groups, plan.grouping), groups_per_fold(plan))[0]
    assert line.startswith(f"- groups: {N_PATIENTS} ({N_PATIENTS} patients from `data.groups: re:^(P\\d+)_`")


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


# --- near links never join two patients; a chained group is warned about (issue 20, "patients stay together")

def _grouping(paths, images, digests, spec, threshold=2):
    from braintumor.groups import grouping

    data_cfg = SimpleNamespace(group_duplicates="near", near_threshold=threshold, groups=spec)
    loaded = SimpleNamespace(paths=paths, images=np.stack(images)[..., None], digests=digests)
    return grouping(data_cfg, loaded)


def test_near_slices_of_two_named_patients_stay_apart_but_join_without_names():
    rng = np.random.default_rng(3)
    a = blob_image(0, 64, rng)
    b, x = a.copy(), a.copy()
    b[0, 0], x[5, 5] = a[0, 0] + 1, a[5, 5] + 1  # other pixels, pHash neighbours of a
    h = dedup.phashes(np.stack([a, b, x])[..., None])
    assert dedup.hamming(h[:1], h).max() <= 2
    paths = ["d/PA_0.png", "d/PA_1.png", "d/PB_0.png", "d/PB_1.png", "d/other.png"]
    images = [a, blob_image(1, 64, rng), b, blob_image(2, 64, rng), x]
    digests = ["a", "a1", "b", "b1", "x"]
    plain = _grouping(paths, images, digests, None).groups
    assert plain[0] == plain[2] == plain[4]  # without names a near link joins the two patients' slices
    named = _grouping(paths, images, digests, r"re:^(P[AB])_")
    g = named.groups
    assert g[0] == g[1] and g[2] == g[3] and g[0] != g[2]  # each patient whole, the two apart
    assert g[4] in (g[0], g[2])  # the unnamed near copy joins one of them, never bridging both
    assert named.warnings(paths) == [] and len(np.unique(g)) == 2


def test_a_chain_through_unnamed_images_never_joins_two_patients_but_identical_pixels_do():
    pairs = np.array([[0, 1], [1, 2], [2, 3]])  # A ~ unnamed ~ unnamed ~ B
    owners = ["A", None, None, "B"]
    assert dedup.groups_from_pairs(4, pairs).tolist() == [0, 0, 0, 0]
    g = dedup.owned_groups(4, pairs, owners)
    assert g[0] == g[1] == g[2] and g[3] != g[0]
    exact = np.array([0, 1, 2, 0])  # images 0 and 3 have identical pixels: one image filed under two patients
    assert len(set(dedup.owned_groups(4, pairs, owners, exact).tolist())) == 1
    blank = np.array([True, False, False, True])  # ... unless they are blank: empty slices of two heads
    assert dedup.owned_groups(4, np.zeros((0, 2), np.int64), owners, exact, blank).tolist() == [0, 1, 2, 3]
    assert dedup.copies_across_owners(exact, owners) == [[0, 3]]
    assert dedup.copies_across_owners(exact, owners, blank) == []


def test_identical_pixels_across_patients_are_joined_and_warned_about():
    rng = np.random.default_rng(4)
    a = blob_image(0, 64, rng)
    paths = ["d/PA_0.png", "d/PB_0.png", "d/PC_0.png"]
    made = _grouping(paths, [a, a, blob_image(3, 64, rng)], ["same", "same", "c"], r"re:^(P[A-C])_")
    assert made.groups[0] == made.groups[1] != made.groups[2]
    (warning,) = made.warnings(paths)
    assert "PA_0.png and PB_0.png" in warning and "different patients" in warning


def _chain(n: int) -> np.ndarray:
    """n pHashes, each 2 bits from the one before (a walk), far from random hashes."""
    h, out = 0, []
    for i in range(n):
        h ^= (1 << (i % 64)) ^ (1 << ((i + 7) % 64))
        out.append(h)
    return np.asarray(out, dtype=np.uint64)


def test_the_chain_guard_fires_on_a_planted_chain_and_names_what_to_change():
    rng = np.random.default_rng(5)
    chain = _chain(60)
    assert (dedup.hamming(chain[1:], chain[:-1]).diagonal() == 2).all()
    for others, fires in ((2000, True), (4000, False)):  # 60 images: 2.9% of 2,060, 1.5% of 4,060
        hashes = np.concatenate([chain, rng.integers(0, 2**63, others, dtype=np.uint64)])
        groups = dedup.near_groups(hashes, 2)
        assert dedup.largest_group(groups)[1] == 60
        warning = dedup.chain_warning(groups)
        assert (warning is not None) == fires
    assert dedup.chain_warning(dedup.near_groups(chain[:50], 2)) is None  # 50 images: at most the floor
    warning = dedup.chain_warning(dedup.near_groups(np.concatenate([chain, chain[:1] ^ np.uint64(2**63 - 1)]), 2))
    assert "60 of the 61 images" in warning and "data.near_threshold" in warning
    assert "data.group_duplicates: exact" in warning


def test_meta_grouping_carries_the_chain_warning_and_the_largest_group():
    from braintumor.groups import Grouping, describe

    groups = np.r_[np.zeros(60, np.int64), np.arange(1, 41)]
    made = Grouping(groups, None, groups, [])
    info = describe(SimpleNamespace(groups=None), [f"x{i}.png" for i in range(100)], groups, made)
    assert info["largest_group"] == {"images": 60, "patients": 0} and info["largest_duplicate_group"] == 60
    assert len(info["warnings"]) == 1 and "one duplicate group holds 60 of the 100 images" in info["warnings"][0]


def test_the_unit_says_when_only_some_images_have_a_patient():
    """An interval over a Kaggle folder (no patient names) beside LGG (named) resamples patients and duplicate groups,
    and says so; all named: patients; none: duplicate/volume groups."""
    from types import SimpleNamespace

    from braintumor.groups import unit_name

    cfg = SimpleNamespace(groups=r"re:^(P[0-9]+)_")
    assert unit_name(cfg, ["a/P1_0.png", "a/P2_3.png"]) == "patients"
    assert unit_name(cfg, ["a/P1_0.png", "b/Tr-gl_0001.jpg"]) == "patients and duplicate/volume groups"
    assert unit_name(cfg, ["b/Tr-gl_0001.jpg"]) == "duplicate/volume groups"
    assert unit_name(SimpleNamespace(groups=None), ["a/P1_0.png"]) == "duplicate/volume groups"
