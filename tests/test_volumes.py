"""DICOM series folders as volumes (slice order, data.slices, a broken file) and one pooled answer per volume in
predict and evaluate."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom  # the [scanners] extra: make install installs it, so a missing one fails, never skips
import pytest
import yaml
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.commands.predict import run_predict
from braintumor.data import ImageSpec, find_images, list_images, load_images
from braintumor.decision import Verdict
from braintumor.scanners import ScanOptions, parse_id, series_tag, split_id
from braintumor.volumes import group, has_volumes, pool, pool_verdicts, volume_labels, volume_metrics
from tests.conftest import FAST, make_dataset
from tests.test_scanners import demo_slices, gray, no_patient, write_dicom, write_nifti

runner = CliRunner()
# file i holds demo slice i and says it is the INSTANCE[i]-th slice: file names and slice order disagree
INSTANCE = [3, 1, 5, 2, 6, 4]


def write_series(folder: Path, srcs: list[np.ndarray], instance=INSTANCE, uid: str | None = None,
                 name: str = "IM{:04d}", **tags) -> tuple[str, list[Path]]:
    """A series of single-frame files, file i holding srcs[i] with InstanceNumber instance[i] (None: no
    InstanceNumber); returns (SeriesInstanceUID, files)."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    files = []
    for i, s in enumerate(srcs):
        extra = dict(tags) if instance is None else {**tags, "InstanceNumber": instance[i]}
        files.append(write_dicom(folder / name.format(i), [s], SeriesInstanceUID=uid, **extra))
    return uid, files


def in_series_order(srcs, instance=INSTANCE):
    return [srcs[i] for i in np.argsort(instance)]


# ----------------------------------------------------------------------------------------------------
# Listing a series


def test_series_lists_in_instance_number_order_with_its_volume(tmp_path: Path):
    srcs = demo_slices(n=6)
    uid, files = write_series(tmp_path / "glioma" / "s1", srcs)
    listing = list_images(tmp_path, ("glioma", "x"), require_all=False)
    order = list(np.argsort(INSTANCE))  # file indices by InstanceNumber: 1, 3, 0, 5, 2, 4
    tag = series_tag(uid)
    assert listing.paths == tuple(f"{files[i]}@{tag}#{k}" for k, i in enumerate(order))
    assert uid not in "".join(listing.paths)  # the UID itself is never written
    for p, s in zip(listing.paths, in_series_order(srcs), strict=True):
        ref = parse_id(p)
        assert ref.volume == f"{tmp_path / 'glioma' / 's1'}@{tag}" and ref.frame is None
        assert split_id(p) == (ref.file, None)
        assert np.abs(gray(p) - s).max() <= 1  # the id decodes to the slice it names
    assert list(group(listing.paths)) == [f"{tmp_path / 'glioma' / 's1'}@{tag}"]


def test_middle_and_range_pick_slices_in_series_order(tmp_path: Path):
    srcs = demo_slices(n=6)
    _, files = write_series(tmp_path / "glioma" / "s1", srcs)
    order = list(np.argsort(INSTANCE))
    middle = list_images(tmp_path, ("glioma", "x"), False, ScanOptions(slices="middle:2")).paths
    assert [(Path(split_id(p)[0]), parse_id(p).position) for p in middle] == [(files[order[2]], 2),
                                                                                (files[order[3]], 3)]
    assert [Path(split_id(p)[0]).name for p in middle] == ["IM0000", "IM0005"]  # instance numbers 3 and 4
    ranged = list_images(tmp_path, ("glioma", "x"), False, ScanOptions(slices="range:4-9")).paths
    assert [parse_id(p).position for p in ranged] == [4, 5]
    assert [Path(split_id(p)[0]) for p in ranged] == [files[order[4]], files[order[5]]]


def test_mask_keeps_the_series_slices_with_brain(tmp_path: Path):
    empty = np.zeros((48, 48), np.uint8)
    srcs = [empty, *demo_slices(n=3), empty]
    _, files = write_series(tmp_path / "glioma" / "s1", srcs, instance=[1, 2, 3, 4, 5], window=False)
    kept = list_images(tmp_path, ("glioma", "x"), False, ScanOptions(slices="mask")).paths
    assert [parse_id(p).position for p in kept] == [1, 2, 3]


def test_without_instance_numbers_position_then_file_name_order(tmp_path: Path):
    srcs = demo_slices(n=4)
    z = [2.0, -5.0, 7.5, 0.0]  # slice positions along the normal, not in file order
    folder = tmp_path / "by_position"
    folder.mkdir()
    uid = generate_uid()
    for i, s in enumerate(srcs):  # oblique-free axial slices: the normal is +z
        write_dicom(folder / f"IM{i}", [s], SeriesInstanceUID=uid, ImagePositionPatient=[0.0, 0.0, z[i]],
                    ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    ids = find_images([folder])
    assert [Path(split_id(p)[0]).name for p in ids] == ["IM1", "IM3", "IM0", "IM2"]
    _, files = write_series(tmp_path / "by_name", srcs, instance=None, name="{}.dcm")
    assert [Path(split_id(p)[0]) for p in find_images([tmp_path / "by_name"])] == files


def test_two_series_in_one_folder_and_a_series_given_file_by_file(tmp_path: Path):
    srcs = demo_slices(n=6)
    folder = tmp_path / "mixed"
    uid_a, files_a = write_series(folder, srcs[:3], instance=[2, 1, 3], name="a{}.dcm")
    uid_b, _ = write_series(folder, srcs[3:], instance=[1, 2, 3], name="b{}.dcm")
    write_dicom(folder / "lone.dcm", [srcs[0]])  # no series UID: an image of its own
    ids = find_images([folder])
    assert len(group(ids)) == 3 and has_volumes(ids)
    assert {parse_id(i).volume for i in ids} == {f"{folder}@{series_tag(uid_a)}", f"{folder}@{series_tag(uid_b)}",
                                                 str(folder / "lone.dcm")}
    assert [Path(split_id(i)[0]).name for i in ids[:3]] == ["a1.dcm", "a0.dcm", "a2.dcm"]
    # predict series/a* (a shell glob): the files still make one volume, in slice order
    assert find_images(files_a) == ids[:3]
    assert not has_volumes([str(folder / "lone.dcm"), "x.png"])


def test_a_broken_file_of_a_series_is_skipped_and_the_rest_decode(tmp_path: Path):
    srcs = demo_slices(n=4)
    uid, files = write_series(tmp_path / "glioma" / "s1", srcs, instance=[1, 2, 3, 4])
    write_dicom(files[2], [srcs[2]], pixels=False, SeriesInstanceUID=uid, InstanceNumber=3)
    (tmp_path / "glioma" / "s1" / "IM0009").write_bytes(files[0].read_bytes()[:300])  # header cut short
    loaded = load_images(list_images(tmp_path, ("glioma", "x"), require_all=False), ImageSpec(32, 1))
    reasons = {Path(split_id(p)[0]).name: r for p, r in loaded.skipped}
    assert set(reasons) == {"IM0002", "IM0009"} and "no pixel data" in reasons["IM0002"]
    assert "@" in next(p for p, _ in loaded.skipped if "IM0002" in p)  # the line names the file and its series
    assert len(loaded.paths) == 3 and len(group(loaded.paths)) == 1
    assert all(no_patient(r) for r in reasons.values())


def test_a_200_slice_series_lists_fast(tmp_path: Path):
    src = demo_slices(n=1, size=16)[0]
    uid = generate_uid()
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, inst in enumerate(rng.permutation(200) + 1):
        write_dicom(folder / f"IM{i:04d}", [src], SeriesInstanceUID=uid, InstanceNumber=int(inst))
    start = time.perf_counter()
    ids = find_images([folder])
    seconds = time.perf_counter() - start
    assert [parse_id(i).position for i in ids] == list(range(200))
    numbers = [int(pydicom.dcmread(split_id(i)[0], stop_before_pixels=True).InstanceNumber) for i in ids[:20]]
    assert numbers == list(range(1, 21))
    assert seconds < 2.0, f"listing 200 series files took {seconds:.2f} s"  # about 0.1 s when the CPU is free


# ----------------------------------------------------------------------------------------------------
# Pooling


def verdict(status: str, probs) -> Verdict:
    return Verdict(status, f"slice {status}", np.asarray(probs, dtype=np.float64), None)


def test_pooling_averages_the_accepted_slices():
    vs = [verdict("ok", [0.8, 0.1, 0.1]), verdict("ok", [0.6, 0.3, 0.1]), verdict("uncertain", [0.1, 0.8, 0.1]),
          verdict("out_of_distribution", [0.0, 0.0, 1.0])]
    status, reason, probs, used = pool_verdicts(vs, 0.5)
    assert (status, used) == ("ok", 2) and "2 of 4" in reason
    np.testing.assert_allclose(probs, [0.7, 0.2, 0.1])
    # accepted slices that disagree: a flat mean is uncertain, as a low-confidence slice is
    status, reason, probs, used = pool_verdicts([verdict("ok", [0.9, 0.1, 0.0]), verdict("ok", [0.0, 0.1, 0.9])],
                                                0.5)
    assert (status, used) == ("uncertain", 2) and "0.45 < 0.50" in reason
    np.testing.assert_allclose(probs, [0.45, 0.1, 0.45])
    assert pool_verdicts([verdict("ok", [0.9, 0.1, 0.0]), verdict("ok", [0.0, 0.1, 0.9])], None)[0] == "ok"


def test_a_volume_without_an_accepted_slice_is_not_answered():
    vs = [verdict("uncertain", [0.2, 0.8, 0.0]), verdict("out_of_distribution", [0.6, 0.2, 0.2])]
    status, reason, probs, used = pool_verdicts(vs, 0.5)
    assert (status, used) == ("uncertain", 0) and "1 uncertain, 1 out_of_distribution of 2" in reason
    np.testing.assert_allclose(probs, [0.4, 0.5, 0.1])  # shown for information: the mean of all
    assert pool_verdicts([verdict("out_of_distribution", [1, 0, 0])] * 3, 0.5)[0] == "out_of_distribution"
    one = pool_verdicts([verdict("uncertain", [0.4, 0.3, 0.3])], 0.5)  # a plain image keeps its own answer
    assert one[:2] == ("uncertain", "slice uncertain")


def test_pool_groups_ids_by_volume_and_scores_volumes():
    ids = ["a/v.nii.gz#0", "a/v.nii.gz#1", "a/v.nii.gz#2", "b/s/IM1@0123abcd#0", "b/s/IM7@0123abcd#1", "c.png"]
    vs = [verdict("ok", [0.9, 0.1]), verdict("ok", [0.7, 0.3]), verdict("uncertain", [0.0, 1.0]),
          verdict("ok", [0.2, 0.8]), verdict("out_of_distribution", [0.9, 0.1]), verdict("ok", [0.4, 0.6])]
    answers = pool(ids, vs)
    assert [(a.volume, a.n_slices, a.n_used, a.status) for a in answers] == [
        ("a/v.nii.gz", 3, 2, "ok"), ("b/s@0123abcd", 2, 1, "ok"), ("c.png", 1, 1, "ok")]
    np.testing.assert_allclose(answers[0].probs, [0.8, 0.2])
    labels = volume_labels(ids, np.array([0, 0, 0, 1, 1, 0]))
    assert labels.tolist() == [0, 1, 0]
    m = volume_metrics(answers, labels, ["a", "b"])
    assert m["n"] == 3 and m["n_multi_slice"] == 2 and m["n_slices"] == 6 and m["n_used"] == 4
    assert m["accuracy"] == pytest.approx(2 / 3)  # c.png (true a) is called b
    assert m["per_class_recall"] == {"a": 0.5, "b": 1.0} and m["confusion_matrix"] == [[1, 1], [0, 1]]


# ----------------------------------------------------------------------------------------------------
# predict and evaluate


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory) -> Path:
    """A one-epoch CustomNet on synthetic PNGs (the volumes below are demo slices: what the gate says of them
    does not matter here, only that every slice is counted and pooled by the rule)."""
    from tests.test_train import run_dir_from

    tmp = tmp_path_factory.mktemp("vol")
    data = make_dataset(tmp / "data", per_class=6, size=32)
    r = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir", str(tmp / "runs"),
                            *FAST])
    assert r.exit_code == 0, r.output
    return run_dir_from(r.output)


def scan_folder(root: Path) -> tuple[Path, Path, Path]:
    """glioma/vol.nii.gz (5 slices) and meningioma/s1 (a 4-file series, one file without pixel data)."""
    (root / "glioma").mkdir(parents=True)
    vol = write_nifti(root / "glioma" / "vol.nii.gz", demo_slices("glioma", n=5, size=32))
    srcs = demo_slices("meningioma", n=4, size=32)
    uid, files = write_series(root / "meningioma" / "s1", srcs, instance=[4, 3, 2, 1])
    write_dicom(files[1], [srcs[1]], pixels=False, SeriesInstanceUID=uid, InstanceNumber=3)
    return vol, root / "meningioma" / "s1", files[1]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def assert_pooled_from(volumes: list[dict[str, str]], slices: list[dict[str, str]], classes, run: Path) -> None:
    """Every volumes.csv row is the module's rule applied to its predictions.csv rows."""
    min_confidence = json.loads((run / "gate.json").read_text())["min_confidence"]
    for row in volumes:
        mine = [r for r in slices if parse_id(r["path"]).volume == row["volume"]]
        vs = [verdict(r["status"], [float(r[f"p_{c}"]) for c in classes]) for r in mine]
        status, _, probs, used = pool_verdicts(vs, min_confidence)
        assert (int(row["n_slices"]), int(row["n_used"]), row["status"]) == (len(mine), used, status)
        np.testing.assert_allclose([float(row[f"p_{c}"]) for c in classes], probs, atol=2e-6)


def test_predict_writes_one_row_per_volume(blob_run, tmp_path: Path):
    vol, series, broken = scan_folder(tmp_path / "in")
    r = runner.invoke(app, ["predict", str(tmp_path / "in"), "--run", str(blob_run), "--runs-dir",
                            str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    out = next((tmp_path / "runs" / "predict").iterdir())
    volumes, slices = read_csv(out / "volumes.csv"), read_csv(out / "predictions.csv")
    assert list(volumes[0])[:6] == ["volume", "n_slices", "n_used", "status", "reason", "class"]
    tag = series_tag(pydicom.dcmread(broken, stop_before_pixels=True).SeriesInstanceUID)
    assert [(v["volume"], v["n_slices"]) for v in volumes] == [(str(vol), "5"), (f"{series}@{tag}", "3")]
    assert len(slices) == 8
    assert "IM0001@" in (out / "skipped.txt").read_text() and "no pixel data" in (out / "skipped.txt").read_text()
    classes = [c[2:] for c in volumes[0] if c.startswith("p_")]
    assert_pooled_from(volumes, slices, classes, blob_run)
    assert "volumes: the mean of the slices" in r.output and f"s1@{tag}" in r.output
    assert json.loads((out / "meta.json").read_text())["volumes"] == 2


class Recorder:
    """A braintumor.progress.Reporter that keeps the stage lengths and the advances it hears."""

    def __init__(self, totals: list, advances: list) -> None:
        self.totals, self.advances = totals, advances

    def start(self, total, label):
        self.totals.append(total)

    def advance(self, n=1):
        self.advances.append(n)

    def log(self, message):
        pass


def test_predict_counts_the_slices_the_run_keeps(blob_run, tmp_path: Path):
    """The progress total is what predict will classify: with data.slices: middle:2 a 5-slice volume is 2 images."""
    run = tmp_path / "run"
    shutil.copytree(blob_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["slices"] = "middle:2"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "in").mkdir()
    write_nifti(tmp_path / "in" / "vol.nii.gz", demo_slices("glioma", n=5, size=32))
    totals, batches = [], []
    report = run_predict(run, [tmp_path / "in"], runs_dir=tmp_path / "runs", reporter=Recorder(totals, batches))
    assert totals == [2] and sum(batches) == 2 and len(report.rows) == 2


def test_predict_without_volumes_writes_no_volumes_csv(blob_run, tmp_path: Path):
    pngs = make_dataset(tmp_path / "pngs", per_class=1, size=32)
    r = runner.invoke(app, ["predict", str(pngs), "--run", str(blob_run), "--runs-dir", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    out = next((tmp_path / "runs" / "predict").iterdir())
    assert (out / "predictions.csv").is_file() and not (out / "volumes.csv").exists()
    assert "volumes:" not in r.output


def test_evaluate_scores_volumes_beside_slices(blob_run, tmp_path: Path):
    scan_folder(tmp_path / "data")
    r = runner.invoke(app, ["evaluate", str(blob_run), "--data", str(tmp_path / "data"), "--runs-dir",
                            str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    out = next((tmp_path / "runs" / "evaluate").iterdir())
    m = json.loads((out / "metrics.json").read_text())
    v = m["volumes"]
    assert m["n"] == 8 and v["n"] == 2 and v["n_multi_slice"] == 2 and v["n_slices"] == 8
    volumes = read_csv(out / "volumes.csv")
    assert [(Path(row["volume"]).name.split("@")[0], row["true"], row["n_slices"]) for row in volumes] == [
        ("vol.nii.gz", "glioma", "5"), ("s1", "meningioma", "3")]
    correct = [row["true"] == row["predicted"] for row in volumes]
    assert v["accuracy"] == pytest.approx(np.mean(correct))
    assert v["per_class_recall"]["glioma"] == float(correct[0]) and v["per_class_recall"]["notumor"] is None
    assert_pooled_from(volumes, read_csv(out / "predictions.csv"), m["classes"], blob_run)
    assert "Per volume" in (out / "metrics.md").read_text() and "per volume: 2 volumes" in r.output
