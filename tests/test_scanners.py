"""DICOM and NIfTI in: slices decode to the source pixels, volumes list as slice ids, bad files are skipped with a
reason, and a patient's name never reaches a run directory or the CLI output."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import nibabel as nib  # the [scanners] extra: make install installs it, so a missing one fails, never skips
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, generate_uid
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.config import load_config
from braintumor.data import ImageSpec, decode, list_images, load_images
from braintumor.errors import ConfigError, DataError
from braintumor.scanners import ScanOptions, select_slices, split_id
from tests.conftest import FAST

runner = CliRunner()


DEMO = Path(__file__).resolve().parents[1] / "demo_data" / "brain-tumor-mri-sample" / "train"
PATIENT = "Doe^Jane"
PATIENT_ID = "PID-73519-SECRET"
SLOPE, INTERCEPT = 2.0, -100.0
# stored = 4 * pixel + 1000, so modality = 8 * pixel + 1900: this window maps pixel 0 -> black, 255 -> white
WINDOW = (2920.5, 2041.0)


def demo_slices(cls: str = "glioma", n: int = 4, size: int = 48, start: int = 0) -> list[np.ndarray]:
    """``n`` real demo slices of a class, gray, resized to ``size`` px: (size, size) uint8 each."""
    files = sorted((DEMO / cls).glob("*.jpg"))[start:start + n]
    return [np.asarray(Image.open(f).convert("L").resize((size, size), Image.BILINEAR)) for f in files]


def write_dicom(path: Path, frames: list[np.ndarray], *, window: bool = True, mono1: bool = False,
                pixels: bool = True, syntax=ExplicitVRLittleEndian, **tags) -> Path:
    """A 16-bit MR DICOM (Explicit VR Little Endian) holding ``frames`` (one or several), with rescale slope and
    intercept, an identifying PatientName and PatientID, and (optionally) a Window Center/Width. ``tags`` are
    more attributes (SeriesInstanceUID, InstanceNumber, ImagePositionPatient...)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT, PATIENT_ID, "MR"
    ds.StudyDescription = f"brain of {PATIENT}"
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    if window:
        ds.WindowCenter, ds.WindowWidth = WINDOW
    for name, value in tags.items():
        setattr(ds, name, value)
    if pixels:
        src = [255 - f if mono1 else f for f in frames]  # MONOCHROME1 stores white as low values
        stored = np.stack([f.astype(np.uint16) * 4 + 1000 for f in src])
        if syntax == ExplicitVRLittleEndian:
            ds.PixelData = stored.tobytes()
        else:
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a real codestream"])
            ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, slices: list[np.ndarray], affine=None, display=(0, 255)) -> Path:
    """A volume whose axial (RAS axis 2) slice k, displayed anterior-up, is ``slices[k]``."""
    vol = np.stack([np.rot90(s, -1) for s in slices], axis=-1).astype(np.int16)  # (x, y, z)
    affine = np.eye(4) if affine is None else affine
    if affine[0, 0] < 0:  # stored left-to-right: flip x so that the RAS picture stays the same
        vol = vol[::-1]
    img = nib.Nifti1Image(vol, affine)
    if display:
        img.header["cal_min"], img.header["cal_max"] = display
    nib.save(img, str(path))
    return path


def gray(source, scan=ScanOptions()) -> np.ndarray:
    img = decode(source, scan=scan)
    assert img.mode == "L"
    return np.asarray(img, dtype=np.int16)


# ----------------------------------------------------------------------------------------------------
# DICOM


def test_dicom_rescale_and_file_window_give_back_the_source(tmp_path: Path):
    src = demo_slices(n=1)[0]
    f = write_dicom(tmp_path / "a.dcm", [src])
    assert np.abs(gray(f) - src).max() <= 1
    assert np.abs(gray(f.read_bytes()) - src).max() <= 1  # an upload's bytes read the same


def test_dicom_monochrome1_is_inverted(tmp_path: Path):
    src = demo_slices(n=1)[0]
    f = write_dicom(tmp_path / "m1.dcm", [src], mono1=True)
    assert np.abs(gray(f) - src).max() <= 1


def test_dicom_without_window_uses_percentiles_and_config_window_wins(tmp_path: Path):
    src = demo_slices(n=1)[0].astype(np.float64)
    f = write_dicom(tmp_path / "nowin.dcm", [src.astype(np.uint8)], window=False)
    out = gray(f)
    assert np.corrcoef(out.ravel(), src.ravel())[0, 1] > 0.99
    lo, hi = np.percentile(src, (1, 99))
    assert np.abs(out - np.clip((src - lo) / (hi - lo) * 255, 0, 255)).max() <= 1
    # [center, width] from the config: only the upper half of the source range, stretched
    half = gray(f, ScanOptions(window=(1900 + 8 * 191.5, 8 * 128 + 1)))
    expected = np.clip((src - 128) * 2, 0, 255)
    assert np.abs(half - expected).max() <= 2


def test_multiframe_dicom_lists_one_id_per_frame(tmp_path: Path):
    srcs = demo_slices(n=3)
    (tmp_path / "glioma").mkdir()
    f = write_dicom(tmp_path / "glioma" / "mf.dcm", srcs)
    listing = list_images(tmp_path, classes=("glioma", "other"), require_all=False)
    assert listing.paths == tuple(f"{f}#{i}" for i in range(3))
    for i, src in enumerate(srcs):
        assert np.abs(gray(listing.paths[i]) - src).max() <= 1
    assert np.abs(gray(f.read_bytes()) - srcs[1]).max() <= 1  # an upload: the middle frame
    middle = list_images(tmp_path, ("glioma", "other"), False, ScanOptions(slices="middle:1"))
    assert middle.paths == (f"{f}#1",)


def test_bad_dicom_files_are_skipped_with_reasons(tmp_path: Path):
    d = tmp_path / "glioma"
    d.mkdir()
    src = demo_slices(n=2)
    write_dicom(d / "good.dcm", [src[0]])
    write_dicom(d / "nopixels.dcm", [src[0]], pixels=False)
    whole = write_dicom(tmp_path / "whole.dcm", [src[1]]).read_bytes()
    (d / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
    write_dicom(d / "jpeg2000.dcm", [src[0]], syntax=JPEG2000Lossless)
    (d / "junk.dcm").write_bytes(b"not dicom at all")
    loaded = load_images(list_images(tmp_path, ("glioma", "x"), require_all=False), ImageSpec(32, 1))
    assert [Path(p).name for p in loaded.paths] == ["good.dcm"]
    reasons = {Path(p).name: r for p, r in loaded.skipped}
    assert set(reasons) == {"nopixels.dcm", "truncated.dcm", "jpeg2000.dcm", "junk.dcm"}
    assert "no pixel data" in reasons["nopixels.dcm"]
    assert "truncated" in reasons["truncated.dcm"]
    assert "JPEG 2000" in reasons["jpeg2000.dcm"] and "pylibjpeg" in reasons["jpeg2000.dcm"]
    assert "not a DICOM file" in reasons["junk.dcm"]
    assert not any(PATIENT in r or PATIENT_ID in r or "Doe" in r for r in reasons.values())


def test_series_folder_and_extensionless_files(tmp_path: Path):
    """Files without a SeriesInstanceUID are separate images in path order (test_volumes.py has real series)."""
    series = tmp_path / "glioma" / "series1"
    series.mkdir(parents=True)
    srcs = demo_slices(n=3)
    for i, s in enumerate(srcs):
        write_dicom(series / (f"IM{i:04d}" if i else "IM0000.dcm"), [s])  # scanners often write no extension
    listing = list_images(tmp_path, ("glioma", "x"), require_all=False)
    assert [Path(p).name for p in listing.paths] == ["IM0000.dcm", "IM0001", "IM0002"]
    for p, s in zip(listing.paths, srcs, strict=True):
        assert np.abs(gray(p) - s).max() <= 1


# ----------------------------------------------------------------------------------------------------
# NIfTI


def test_nifti_slices_decode_lazily_in_ras_order(tmp_path: Path):
    srcs = demo_slices(n=4)
    f = write_nifti(tmp_path / "v.nii.gz", srcs)
    flipped = write_nifti(tmp_path / "flipped.nii", srcs, affine=np.diag([-1.0, 1, 1, 1]))
    for k, s in enumerate(srcs):
        assert np.abs(gray(f"{f}#{k}") - s).max() <= 1
        assert np.abs(gray(f"{flipped}#{k}") - s).max() <= 1  # reoriented to RAS first
    assert np.abs(gray(f.read_bytes()) - srcs[2]).max() <= 1  # upload (.nii.gz bytes): the middle slice
    assert np.abs(gray(flipped.read_bytes()) - srcs[2]).max() <= 1
    no_range = write_nifti(tmp_path / "raw.nii", srcs, display=None)  # no cal_min/cal_max: percentiles
    assert np.corrcoef(gray(f"{no_range}#0").ravel(), srcs[0].ravel())[0, 1] > 0.99


@pytest.mark.parametrize("slices, expected", [
    ("all", [0, 1, 2, 3, 4, 5]), ("middle:2", [2, 3]), ("middle:9", [0, 1, 2, 3, 4, 5]), ("range:1-2", [1, 2]),
    ("range:4-40", [4, 5]), ("mask", [1, 2, 3, 4]),
])
def test_nifti_slice_selection(tmp_path: Path, slices, expected):
    empty = np.zeros((48, 48), np.uint8)
    d = tmp_path / "glioma"
    d.mkdir()
    f = write_nifti(d / "vol.nii.gz", [empty, *demo_slices(n=4), empty])
    listing = list_images(tmp_path, ("glioma", "x"), False, ScanOptions(slices=slices))
    assert listing.paths == tuple(f"{f}#{k}" for k in expected)
    assert split_id(listing.paths[0]) == (str(f), expected[0])  # the volume stays recoverable, for pooling


def test_select_slices_and_config_errors():
    assert select_slices(10, "mask:0.5", np.linspace(0, 1, 10)) == [5, 6, 7, 8, 9]
    for bad, key in [("data.slices=middle", "data.slices"), ("data.slices=range:5-2", "data.slices"),
                     ("data.window=[40]", "data.window"), ("data.slice_axis=3", "data.slice_axis")]:
        with pytest.raises(ConfigError, match=key):
            load_config("customnet", sets=[bad])
    cfg = load_config("customnet", sets=["data.window=[40, 80]", "data.slices=middle:5", "data.slice_axis=1"])
    assert ScanOptions.from_config(cfg.data) == ScanOptions((40.0, 80.0), "middle:5", 1)


def test_missing_package_names_the_extra(tmp_path: Path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pydicom(name, *a, **k):
        if name == "pydicom":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    (tmp_path / "x.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DataError, match=r"pip install 'braintumor\[scanners\]'"):
        decode(tmp_path / "x.dcm")


def test_gzip_upload_that_is_not_nifti_is_refused():
    with pytest.raises(DataError, match="not a readable image"):
        decode(gzip.compress(b"hello"))


# ----------------------------------------------------------------------------------------------------
# Everywhere an image goes: train on a folder of scanner files


def scanner_dataset(root: Path) -> Path:
    """Four class folders of DICOM slices (single-frame files, a series folder, a multi-frame file), a NIfTI
    volume, and two broken files; every file names the patient."""
    for c, cls in enumerate(("glioma", "meningioma", "notumor", "pituitary")):
        d = root / cls
        d.mkdir(parents=True)
        srcs = demo_slices(cls, n=8, size=40)
        for i, s in enumerate(srcs[:4]):
            write_dicom(d / f"s{i}.dcm", [s], window=i % 2 == 0, mono1=i == 3)
        if c == 0:
            write_dicom(d / "multi.dcm", srcs[4:])
            write_dicom(d / "empty.dcm", [srcs[0]], pixels=False)
            (d / "cut.dcm").write_bytes((d / "s0.dcm").read_bytes()[:600])
        elif c == 1:
            uid = generate_uid()
            for i, s in enumerate(srcs[4:]):
                (d / "series").mkdir(exist_ok=True)
                write_dicom(d / "series" / f"IM{i}", [s], SeriesInstanceUID=uid, InstanceNumber=i + 1)
        else:
            write_nifti(d / "vol.nii.gz", srcs[4:])
    return root


def no_patient(text: str | bytes) -> bool:
    blob = text.encode() if isinstance(text, str) else text
    return not any(t in blob for t in (PATIENT.encode(), PATIENT_ID.encode(), b"Doe"))


def assert_no_patient_in(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            assert no_patient(f.read_bytes()), f


@pytest.fixture(scope="module")
def scanner_run(tmp_path_factory):
    """One tiny train run on a folder of scanner files, shared by the tests below."""
    from tests.test_train import run_dir_from

    tmp = tmp_path_factory.mktemp("scanners")
    data = scanner_dataset(tmp / "data")
    result = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir",
                                 str(tmp / "runs"), *FAST])
    assert result.exit_code == 0, result.output
    assert no_patient(result.output)
    return run_dir_from(result.output), data, tmp


def test_train_on_scanner_files_writes_a_complete_run_and_never_the_patient(scanner_run):
    from tests.test_train import RUN_FILES

    run, _, _ = scanner_run
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    skipped = (run / "skipped.txt").read_text()
    assert "empty.dcm" in skipped and "no pixel data" in skipped and "cut.dcm" in skipped
    split = (run / "split.csv").read_text()
    assert "multi.dcm#3" in split and "vol.nii.gz#0" in split and "series/IM2" in split
    assert split.count("\n") - 1 == 4 * 8
    assert_no_patient_in(run)


def test_evaluate_cam_and_eda_read_scanner_files(scanner_run):
    run, data, tmp = scanner_run
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--runs-dir", str(tmp / "runs")])
    assert r.exit_code == 0 and no_patient(r.output), r.output
    (ev,) = (tmp / "runs" / "evaluate").iterdir()
    assert "multi.dcm#1" in (ev / "predictions.csv").read_text() and "empty.dcm" in (ev / "skipped.txt").read_text()
    rows = list(csv.DictReader((ev / "volumes.csv").open()))  # one per volume: 16 files, multi, series, 2 NIfTI
    assert len(rows) == len({r["volume"] for r in rows}) == 4 * 4 + 1 + 1 + 2
    vols = {Path(r["volume"]).name: r for r in rows}
    assert vols["multi.dcm"]["n_slices"] == "4" and vols["vol.nii.gz"]["n_slices"] == "4"
    assert vols["s0.dcm"]["n_slices"] == "1" and "empty.dcm" not in vols  # unreadable: in skipped.txt only
    (series,) = [k for k in vols if k.startswith("series@")]
    assert (vols[series]["true"], vols[series]["n_slices"]) == ("meningioma", "4")
    m = json.loads((ev / "metrics.json").read_text())
    assert m["volumes"]["n"] == len(rows) and m["volumes"]["n_multi_slice"] == 4
    assert "Per volume" in (ev / "metrics.md").read_text()
    r = runner.invoke(app, ["cam", str(data / "glioma" / "multi.dcm"), str(data / "notumor" / "vol.nii.gz"),
                            "--run", str(run), "--runs-dir", str(tmp / "runs")])
    assert r.exit_code == 0 and no_patient(r.output), r.output
    (cam,) = (tmp / "runs" / "cam").iterdir()
    assert {"multi-slice0.png", "multi-slice3.png", "vol-slice2.png"} <= {p.name for p in cam.glob("*.png")}
    r = runner.invoke(app, ["eda", "--data", str(data), "--runs-dir", str(tmp / "runs")])
    assert r.exit_code == 0 and no_patient(r.output), r.output
    for out in (ev, cam, *(tmp / "runs" / "eda").iterdir()):
        assert_no_patient_in(out)


def test_serve_reads_a_dicom_upload(scanner_run, tmp_path: Path):
    from fastapi.testclient import TestClient

    from braintumor.serve.app import create_app
    from braintumor.serve.predictor import Predictor
    from braintumor.serve.settings import ServeSettings

    run, data, _ = scanner_run
    predictor = Predictor.load(run)
    multi = (data / "glioma" / "multi.dcm").read_bytes()
    with TestClient(create_app(ServeSettings(concurrency=1), predictor)) as client:
        r = client.post("/predict", files={"file": ("scan.dcm", multi, "application/dicom")})
        assert r.status_code == 200 and no_patient(r.content), r.text
        middle = predictor.infer(predictor.image(multi)[0][None])[0]  # the middle frame, as documented
        assert r.json()["probabilities"] == pytest.approx(predictor.probabilities(middle), abs=1e-4)
        r = client.post("/predict", files={"file": ("x.dcm", (data / "glioma" / "empty.dcm").read_bytes())})
        assert r.status_code == 400 and "no pixel data" in r.text and no_patient(r.content)


def test_kfold_on_scanner_files(scanner_run):
    _, data, tmp = scanner_run
    runs = tmp / "kfold-runs"
    r = runner.invoke(app, ["kfold", "--arch", "customnet", *FAST, "--folds", "2", "--data", str(data),
                            "--runs-dir", str(runs)])
    assert r.exit_code == 0 and no_patient(r.output), r.output
    (run,) = (runs / "kfold").iterdir()
    folds = (run / "folds.csv").read_text()
    assert "multi.dcm#2" in folds and "vol.nii.gz#3" in folds and (run / "oof_metrics.json").is_file()
    assert_no_patient_in(run)


def test_lookup_table_matches_pydicom_on_signed_pixels(tmp_path: Path):
    """The per-series lookup table gives what apply_modality_lut + apply_voi_lut give on the pixels themselves."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    f = write_dicom(tmp_path / "s.dcm", [np.zeros((40, 40), np.uint8)])
    ds = pydicom.dcmread(f)
    stored = np.random.default_rng(0).integers(-3000, 3000, (40, 40)).astype(np.int16)
    ds.PixelRepresentation, ds.PixelData = 1, stored.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 0.5, 10.0, [150.0, 40.0], [900.0, 80.0]
    ds.save_as(f)
    windowed = apply_voi_lut(apply_modality_lut(stored, ds), ds)  # the first of the two windows
    lo, hi = -32768 * 0.5 + 10, 32767 * 0.5 + 10  # apply_voi_lut's output range for signed 16-bit, rescaled
    expected = np.round((windowed - lo) / (hi - lo) * 255)
    assert np.abs(gray(f) - expected).max() <= 1
    assert 0 < (gray(f) == 0).mean() < 1 and 0 < (gray(f) == 255).mean() < 1  # the window clips both ends
