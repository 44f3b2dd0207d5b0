"""eda on synthetic splits with planted copies: counts, duplicates, leakage, files; evaluate's exclusion."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from braintumor import confounds, dedup
from braintumor.cli import app
from braintumor.config import DEFAULT_NEAR_THRESHOLD
from tests.conftest import CLASSES, FAST, blob_image

runner = CliRunner()

TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 4
WITHIN_TRAIN_EXACT = [("glioma", 0), ("notumor", 1)]  # byte copies under a second name, inside train
WITHIN_TRAIN_REENCODED = [("pituitary", 2)]  # the same pixels saved again at JPEG quality 80, inside train
LEAK_EXACT = [("glioma", 3), ("meningioma", 3), ("pituitary", 4)]  # train files copied into test
LEAK_REENCODED = [("meningioma", 5), ("notumor", 5)]  # train images re-encoded into test
N_TRAIN = 4 * TRAIN_PER_CLASS + len(WITHIN_TRAIN_EXACT) + len(WITHIN_TRAIN_REENCODED)
N_TEST = 4 * TEST_PER_CLASS + len(LEAK_EXACT) + len(LEAK_REENCODED)


def smooth_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random gray image with the class's bright square: distinct images sit >= 10 pHash bits apart
    (blob_image's noise leaves only the square in a pHash, so two of them can hash alike)."""
    img = np.asarray(Image.fromarray((rng.random((6, 6)) * 160).astype(np.uint8)).resize((size, size),
                                                                                         Image.BICUBIC)).copy()
    img[blob_image(label, size, rng) >= 200] = 230
    return img


def save_jpeg(path: Path, arr: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=quality)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[Path, Path]:
    """train/ and test/ folders (JPEG quality 95) with the planted copies above and one unreadable file."""
    root = tmp_path_factory.mktemp("eda")
    rng = np.random.default_rng(7)
    pixels = {}
    for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for label, c in enumerate(CLASSES):
            for i in range(n):
                pixels[split, c, i] = smooth_image(label, 48, rng)
                save_jpeg(root / split / c / f"{i:02d}.jpg", pixels[split, c, i], 95)
    train, test = root / "train", root / "test"
    for c, i in WITHIN_TRAIN_EXACT:
        shutil.copy(train / c / f"{i:02d}.jpg", train / c / f"{i:02d}_copy.jpg")
    for c, i in WITHIN_TRAIN_REENCODED:
        save_jpeg(train / c / f"{i:02d}_q80.jpg", pixels["train", c, i], 80)
    for c, i in LEAK_EXACT:
        shutil.copy(train / c / f"{i:02d}.jpg", test / c / f"leak_{i:02d}.jpg")
    for c, i in LEAK_REENCODED:
        save_jpeg(test / c / f"leak_{i:02d}_q80.jpg", pixels["train", c, i], 80)
    (train / "notumor" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return train, test


def run_eda(*args: str) -> tuple[object, Path | None]:
    r = runner.invoke(app, ["eda", *args])
    found = sorted(Path(args[args.index("--runs-dir") + 1], "eda").glob("*")) if "--runs-dir" in args else []
    return r, (found[-1] if found else None)


@pytest.fixture(scope="module")
def two_split_run(splits, tmp_path_factory):
    train, test = splits
    runs = tmp_path_factory.mktemp("runs")
    r, out = run_eda("--data", str(train), "--test", str(test), "--runs-dir", str(runs))
    assert r.exit_code == 0, r.output
    return r, out, json.loads((out / "summary.json").read_text())


def test_leakage_counts_match_what_was_planted(two_split_run):
    _, _, s = two_split_run
    assert s["images"] == {"train": N_TRAIN, "test": N_TEST}
    assert s["per_class"]["train"] == {"glioma": 7, "meningioma": 6, "notumor": 7, "pituitary": 7}
    assert s["near_threshold"] == DEFAULT_NEAR_THRESHOLD
    # test -> train: every planted copy found, no distinct image flagged
    assert s["cross_split_exact"] == len(LEAK_EXACT)
    assert s["cross_split_near"] == len(LEAK_EXACT) + len(LEAK_REENCODED)
    by = s["cross_split_by_distance"]
    assert set(by) == {"0", "2", "4", "8"}
    planted = len(LEAK_EXACT) + len(LEAK_REENCODED)
    assert len(LEAK_EXACT) <= by["0"] <= by["2"] == by["4"] == by["8"] == planted
    # train -> test: the same copies seen from the other side
    assert s["train_images_with_test_copy"] == {"exact": len(LEAK_EXACT),
                                                "near": len(LEAK_EXACT) + len(LEAK_REENCODED)}


def test_duplicate_groups_match_what_was_planted(two_split_run):
    _, _, s = two_split_run
    within_train, within_test = s["within_split"]["train"], s["within_split"]["test"]
    assert (within_train["exact_groups"], within_train["exact_images"]) == (2, 4)
    assert (within_train["near_groups"], within_train["near_images"]) == (3, 6)  # re-encoded: near, not exact
    assert within_train["by_distance"]["8"]["groups"] == 3  # distinct images are far apart
    assert (within_test["exact_groups"], within_test["near_groups"]) == (0, 0)
    exact_groups = len(WITHIN_TRAIN_EXACT) + len(LEAK_EXACT)
    near_groups = exact_groups + len(WITHIN_TRAIN_REENCODED) + len(LEAK_REENCODED)
    assert (s["exact_duplicate_groups"], s["exact_duplicate_images"]) == (exact_groups, 2 * exact_groups)
    assert (s["near_duplicate_groups"], s["near_duplicate_images"]) == (near_groups, 2 * near_groups)


def test_run_directory_holds_report_figures_and_csv(two_split_run):
    _, out, s = two_split_run
    assert out.parent.name == "eda"
    for name in ("report.md", "summary.json", "duplicates.csv", "meta.json", "class_distribution.png",
                 "mean_pixel_histogram.png", "samples.png", "near_duplicates.png",
                 "nearest_distance.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"
    rows = list(csv.DictReader((out / "duplicates.csv").open()))
    assert {"group", "path", "split", "kind"} <= set(rows[0])
    assert len(rows) == s["near_duplicate_images"]
    reencoded = [r for r in rows if "_q80" in r["path"]]
    assert len(reencoded) == len(WITHIN_TRAIN_REENCODED) + len(LEAK_REENCODED)
    assert all(r["kind"] == "near" for r in reencoded)
    assert all(r["kind"] == "exact" for r in rows if "leak_" in r["path"] and "_q80" not in r["path"])
    assert sum(r["cross_split"] == "True" for r in rows) == 2 * (len(LEAK_EXACT) + len(LEAK_REENCODED))
    report = (out / "report.md").read_text()
    figures = ("class_distribution", "mean_pixel_histogram", "samples", "near_duplicates", "nearest_distance")
    assert all(f"({figure}.png)" in report for figure in figures)
    assert "Leakage between splits" in report and "--exclude-duplicates-of" in report


def test_unreadable_file_is_listed_with_its_reason(two_split_run):
    r, _, s = two_split_run
    assert [Path(u["path"]).name for u in s["unreadable"]] == ["broken.jpg"]
    assert "not a readable image" in s["unreadable"][0]["reason"]
    assert "1 unreadable file" in r.output


def test_image_properties(two_split_run):
    _, _, s = two_split_run
    p = s["properties"]["train"]
    assert p["sizes"] == {"48x48": N_TRAIN} and p["format"] == {"JPEG": N_TRAIN}
    assert p["colour"] == {"grayscale": N_TRAIN}
    assert set(s["pixel_mean"]["train"]) == set(CLASSES)


def test_terminal_shows_leakage_loudly(two_split_run):
    r, out, _ = two_split_run
    assert "LEAKAGE: 3 of 21 test images" in r.output
    assert "--exclude-duplicates-of" in r.output
    assert str(out) in r.output.replace("\n", "")


def test_single_split_has_no_cross_split_counts(splits, tmp_path):
    train, _ = splits
    r, out = run_eda("--data", str(train), "--runs-dir", str(tmp_path / "runs"), "--near-threshold", "8")
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert list(s["images"]) == ["train"] and s["near_threshold"] == 8
    assert s["cross_split_exact"] is None and s["cross_split_by_distance"] is None
    assert s["near_duplicate_groups"] == 3
    assert "LEAKAGE" not in r.output and "duplicate groups" in r.output


def test_clean_splits_say_no_leakage(splits, tmp_path):
    _, test = splits
    clean = tmp_path / "clean"
    shutil.copytree(test, clean, ignore=shutil.ignore_patterns("leak_*"))
    r, _ = run_eda("--data", str(splits[0]), "--test", str(clean), "--runs-dir", str(tmp_path / "runs"))
    assert r.exit_code == 0, r.output
    assert "no leakage" in r.output and "LEAKAGE" not in r.output


def test_missing_folder_is_one_clear_error(tmp_path):
    r, out = run_eda("--data", str(tmp_path / "nope"), "--runs-dir", str(tmp_path / "runs"))
    assert r.exit_code == 1 and out is None
    assert "does not exist" in r.stderr and "Traceback" not in r.output


def test_near_threshold_out_of_range_is_refused(splits, tmp_path):
    r = runner.invoke(app, ["eda", "--data", str(splits[0]), "--near-threshold", "65"])
    assert r.exit_code == 2 and "--near-threshold" in r.stderr and "64" in r.stderr


def test_evaluate_excludes_copies_of_the_training_folder(splits, tmp_path):
    train, test = splits
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["train", "--data", str(train), "--runs-dir", str(runs), *FAST])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", "latest", "--data", str(test), "--exclude-duplicates-of", str(train),
                            "--runs-dir", str(runs)])
    assert r.exit_code == 0, r.output
    out = sorted((runs / "evaluate").glob("*"))[-1]
    m = json.loads((out / "metrics.json").read_text())
    planted = len(LEAK_EXACT) + len(LEAK_REENCODED)
    assert m["n"] == N_TEST - planted
    assert m["excluded_duplicates"]["total"] == planted
    assert (m["excluded_duplicates"]["exact"], m["excluded_duplicates"]["near"]) == (3, 2)
    excluded = list(csv.DictReader((out / "excluded.csv").open()))
    assert sorted(Path(x["path"]).name for x in excluded) == sorted(
        [f"leak_{i:02d}.jpg" for _, i in LEAK_EXACT] + [f"leak_{i:02d}_q80.jpg" for _, i in LEAK_REENCODED])
    assert f"left out {planted} images" in r.output


def test_nearest_and_pairs_within():
    h = np.array([0b0, 0b11, 0b1111, 0xFFFF], dtype=np.uint64)
    dist, idx = dedup.nearest(h)
    assert dist.tolist() == [2, 2, 2, 12] and idx.tolist() == [1, 0, 1, 2]
    assert dedup.nearest(h[:1])[0].tolist() == [dedup.NO_NEIGHBOUR]
    pairs, d = dedup.pairs_within(h, 4)
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 2]] and d.tolist() == [2, 4, 2]
    assert dedup.groups_from_pairs(4, pairs[d <= 2]).tolist() == [0, 0, 0, 1]
    assert dedup.exact_matches(["a", "b", "z"], ["b", "a", "a"]).tolist() == [1, 0, -1]


# ----------------------------------------------------------------------------------------------------
# Confounds: properties that should not predict the class


def phantom(contrast: str, size: int = 64, skull: bool = True, frame: bool = False, seed: int = 0,
            scale: float = 1.0) -> np.ndarray:
    """An axial head: fat-bright scalp, dark bone, brain tissue and two ventricles of CSF (dark on T1, bright on
    T2), left-right symmetric; ``skull=False`` keeps only the brain, ``frame`` draws a white border, ``scale``
    shrinks the head in the frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    c = size / 2
    r = np.sqrt(((y - c) / (0.42 * scale * size)) ** 2 + ((x - c) / (0.34 * scale * size)) ** 2)
    fat, tissue, csf = (200, 110, 30) if contrast == "T1" else (150, 90, 230)
    img = np.zeros((size, size))
    if skull:
        img[(r < 1.0) & (r >= 0.93)] = fat
        img[(r < 0.93) & (r >= 0.87)] = 15
    img[r < 0.87] = tissue
    for side in (-1, 1):
        img[((y - c) / (0.16 * size)) ** 2 + ((x - c - side * 0.07 * size) / (0.04 * size)) ** 2 < 1] = csf
    img += rng.normal(0, 4, img.shape) * (img > 0)
    if frame:
        img[:2], img[-2:], img[:, :2], img[:, -2:] = 255, 255, 255, 255
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("skull", [True, False])
@pytest.mark.parametrize("frame", [False, True])
def test_estimators_read_synthetic_phantoms(skull, frame):
    t1, t2 = confounds.measure(phantom("T1", skull=skull, frame=frame)), confounds.measure(
        phantom("T2", skull=skull, frame=frame))
    assert (t1["contrast"], t2["contrast"]) == ("T1/FLAIR-like", "T2-like")
    assert t1["csf_dark"] > 0.05 > t1["csf_bright"] and t2["csf_bright"] > 0.05 > t2["csf_dark"]
    for m in (t1, t2):
        assert m["skull"] == ("skull" if skull else "stripped")
        assert m["border"] == ("frame" if frame else "black")
        assert m["plane"] == "axial"


def test_plane_reads_asymmetry_and_the_neck():
    head = phantom("T1")
    sagittal = head.copy()
    sagittal[20:44, 34:52] = 230  # a bright face-like block on one side only: not left-right symmetric
    coronal = head.copy()
    coronal[44:62, 16:48] = 110  # skull base and neck running on to the bottom of the frame: a wide base
    assert confounds.measure(sagittal)["plane"] == "sagittal"
    assert confounds.measure(coronal)["plane"] == "coronal"


def test_cramers_v_is_bias_corrected_and_bounded():
    assert confounds.cramers_v(np.array([[50, 0], [0, 50]])) == pytest.approx(1.0, abs=0.02)
    assert confounds.cramers_v(np.array([[25, 25], [25, 25]])) == 0.0
    assert confounds.cramers_v(np.array([[10], [20]])) is None  # one value: nothing to associate
    table = np.array([[30, 10, 5], [10, 30, 5], [12, 8, 40]])
    plain = scipy_association(table)
    corrected = confounds.cramers_v(table)
    assert 0 < corrected < plain  # the correction only ever lowers V
    # by hand (Bergsma 2013): chi2 / n minus its expectation under independence, over the corrected sizes
    n, (r, k) = table.sum(), table.shape
    chi2 = ((table - table.sum(1, keepdims=True) * table.sum(0) / n) ** 2
            / (table.sum(1, keepdims=True) * table.sum(0) / n)).sum()
    phi2 = chi2 / n - (k - 1) * (r - 1) / (n - 1)
    expected = np.sqrt(phi2 / min(k - (k - 1) ** 2 / (n - 1) - 1, r - (r - 1) ** 2 / (n - 1) - 1))
    assert corrected == pytest.approx(expected)


def scipy_association(table: np.ndarray) -> float:
    from scipy.stats.contingency import association

    return float(association(table, method="cramer", correction=False))


def test_a_head_framed_smaller_in_one_class_is_a_confound_the_head_share_finds(tmp_path):
    """notumor heads fill a third of the frame less (wider margins, or slices nearer the top of the head): the
    head-share estimate sorts them into the 'small' tertile, and the table warns."""
    shares = {c: [] for c in CLASSES}
    for c in CLASSES:
        for i in range(6):
            img = phantom("T1", seed=i, scale=0.7 if c == "notumor" else 1.0)
            shares[c].append(confounds.measure(img)["head_share"])
    assert max(shares["notumor"]) < 0.6 * min(min(v) for c, v in shares.items() if c != "notumor")
    labels = [k for k, c in enumerate(CLASSES) for _ in shares[c]]
    values, _ = confounds.head_values([s for c in CLASSES for s in shares[c]])
    assert all(v.startswith("small") for v, y in zip(values, labels) if CLASSES[y] == "notumor")
    out = confounds.associate(list(CLASSES), labels, {"head": values})
    assert out["properties"]["head"]["v"] > 0.5
    assert "notumor images are 100% small" in out["warnings"][0]
    assert out["warnings"][0].endswith("a model can learn the head's share of the image instead of the tumour.")


def test_warning_names_the_class_the_value_and_the_shares():
    labels = [0] * 10 + [1] * 10 + [2] * 10
    values = {"contrast": ["T2-like"] * 7 + ["T1/FLAIR-like"] * 3 + ["T1/FLAIR-like"] * 19 + ["T2-like"],
              "frame": ["black", "frame"] * 15}
    out = confounds.associate(["notumor", "glioma", "pituitary"], labels, values)
    assert out["properties"]["contrast"]["warning"] and out["properties"]["frame"]["warning"] is None
    assert out["warnings"] == [out["properties"]["contrast"]["warning"]]
    assert "notumor images are 70% T2-like, the other classes 5%" in out["warnings"][0]
    assert confounds.value_text("contrast", out["properties"]["contrast"]["strongest"]) == (
        "88% of T2-like images are notumor")  # 7 of the 8
    src = confounds.associate(["notumor", "glioma"], [0, 0, 1, 1], {"source": ["a", "a", "b", "b"]})
    assert "notumor images are 100% from a, the other classes 0%" in src["warnings"][0]
    assert out["properties"]["frame"]["v"] == 0.0


@pytest.fixture(scope="module")
def confounded(tmp_path_factory) -> tuple[Path, Path]:
    """Two collections: in 'a' notumor is T2 and the tumours T1, every other image of every class framed; 'b'
    adds tumour images only. Contrast and source predict the class; the frame does not."""
    root = tmp_path_factory.mktemp("confounded")
    for source, classes in (("a", CLASSES), ("b", ("glioma", "pituitary"))):
        for c in classes:
            for i in range(8):
                img = phantom("T2" if c == "notumor" else "T1", frame=i % 2 == 0, seed=i)
                save_jpeg(root / source / c / f"{i:02d}.jpg", img, 95)
    runs = root / "runs"
    r, out = run_eda("--data", f"a={root / 'a'}", "--data", f"b={root / 'b'}", "--runs-dir", str(runs))
    assert r.exit_code == 0, r.output
    return r, out


def test_planted_confound_is_found_and_warned(confounded):
    r, out = confounded
    table = json.loads((out / "confounds.json").read_text())
    props = table["properties"]
    assert props["contrast"]["v"] > 0.9 and props["contrast"]["warning"]
    assert props["contrast"]["counts"]["notumor"] == {"T2-like": 8, "T1/FLAIR-like": 0}
    assert "notumor images are 100% T2-like, the other classes 0%" in props["contrast"]["warning"]
    assert props["source"]["warning"] and props["source"]["v"] > 0.3  # collection b has no notumor
    assert props["border"]["v"] == 0.0 and props["border"]["warning"] is None  # framed evenly: no warning
    assert props["plane"]["v"] is None  # all axial: nothing to say
    assert table["per_source"]["a"]["contrast"] > 0.9  # inside collection a: still the contrast
    assert table["per_source"]["b"]["contrast"] is None  # b: all T1
    assert any(w.startswith("within a: contrast") for w in table["warnings"])
    assert "confound:" in r.output and "notumor images are 100% T2-like" in r.output.replace("\n", " ")
    md = (out / "confounds.md").read_text()
    assert "notumor images are 100% T2-like" in md and "| notumor | 8 | 100% | 0% |" in md
    assert "## Confounds" in (out / "report.md").read_text()
    assert props["head"]["v"] is None  # every head the same size: one value, nothing to say
    rows = list(csv.DictReader((out / "confounds.csv").open()))
    assert len(rows) == 48 and {"path", "class", "source", "contrast", "csf_bright"} <= set(rows[0])
    for prop in props:
        png = out / f"confounds_{prop}.png"
        assert png.is_file() and png.stat().st_size > 5000, prop
