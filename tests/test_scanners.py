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
from braintumor.data import ImageSpec, decode, find_images, list_images, load_images
from braintumor.engine import scorer
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
                pixels: bool = True, syntax=ExplicitVRLittleEndian, bits: int = 16, **tags) -> Path:
    """A 16-bit MR DICOM (Explicit VR Little Endian) holding ``frames`` (one or several), with rescale slope and
    intercept, an identifying PatientName and PatientID, and (optionally) a Window Center/Width. ``tags`` are
    more attributes (SeriesInstanceUID, InstanceNumber, ImagePositionPatient...). ``bits=8``: the frames' own
    8-bit values stored as they are, with no rescale and no window."""
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
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    if window and bits != 8:
        ds.WindowCenter, ds.WindowWidth = WINDOW
    for name, value in tags.items():
        setattr(ds, name, value)
    if pixels:
        src = [255 - f if mono1 else f for f in frames]  # MONOCHROME1 stores white as low values
        stored = np.stack([f.astype(np.uint8) if bits == 8 else f.astype(np.uint16) * 4 + 1000 for f in src])
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


def gray(source, scan_options=ScanOptions()) -> np.ndarray:
    img = decode(source, scan_options=scan_options)
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
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    f = write_dicom(tmp_path / "s.dcm", [np.zeros((40, 40), np.uint8)])
    ds = pydicom.dcmread(f)
    stored = np.random.default_rng(0).integers(-3000, 3000, (40, 40)).astype(np.int16)
    ds.PixelRepresentation, ds.PixelData = 1, stored.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 0.5, 10.0, [150.0, 40.0], [900.0, 80.0]
    ds.save_as(f)
    from braintumor.scanners import dicom

    ds = pydicom.dcmread(f)
    native = dicom._native_frame(ds, 0, ds.file_meta.TransferSyntaxUID)  # the bytes read by hand, as pydicom does
    assert native is not None and np.array_equal(native, pixel_array(ds)) and np.array_equal(native, stored)
    windowed = apply_voi_lut(apply_modality_lut(stored, ds), ds)  # the first of the two windows
    lo, hi = -32768 * 0.5 + 10, 32767 * 0.5 + 10  # apply_voi_lut's output range for signed 16-bit, rescaled
    expected = np.round((windowed - lo) / (hi - lo) * 255)
    assert np.abs(gray(f) - expected).max() <= 1
    assert 0 < (gray(f) == 0).mean() < 1 and 0 < (gray(f) == 255).mean() < 1  # the window clips both ends


def test_same_pixels_as_png_and_as_dicom_give_the_same_answer(scanner_run, tmp_path: Path):
    """8-bit stored values with nothing to apply are display levels (issue 22): no percentile re-windowing, so a
    PNG and a DICOM of the same pixels decode alike and get the same probabilities."""
    from braintumor.models.loading import load_run

    src = demo_slices("meningioma", n=1, size=48, start=5)[0]
    src = np.clip(src.astype(np.int16) * 3 // 4 + 20, 0, 255).astype(np.uint8)  # 1st-99th pct != 0-255
    Image.fromarray(src).save(tmp_path / "a.png")
    forms = {"8bit": write_dicom(tmp_path / "a8.dcm", [src], bits=8),
             "16bit window": write_dicom(tmp_path / "a16.dcm", [src]),
             "monochrome1": write_dicom(tmp_path / "m1.dcm", [src], bits=8, mono1=True),
             "no extension": write_dicom(tmp_path / "IM0001", [src], bits=8)}
    png = gray(tmp_path / "a.png")
    assert np.array_equal(png, src)
    for name, f in forms.items():
        assert np.array_equal(gray(f), png), name
        assert np.array_equal(gray(f.read_bytes()), png), name  # an upload's bytes too
    run = load_run(scanner_run[0])
    read = [run.spec.read(f) for f in [tmp_path / "a.png", *forms.values()]]
    verdicts = scorer.classify(run.classifier, np.stack([r[0] for r in read]), [r[1] for r in read])
    probs = np.stack([v.probs for v in verdicts])
    assert np.abs(probs - probs[0]).max() < 1e-6
    assert len({int(p.argmax()) for p in probs}) == 1


def hostile_nifti(path: Path, shape=(30000, 30000, 30000)) -> Path:
    """A few-KB NIfTI whose header claims ``shape`` int16 voxels (54 TB for 30,000^3)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape(shape)
    hdr.set_data_offset(352)
    blob = hdr.binaryblock + b"\0" * 4 + b"\0" * 4096
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def test_hostile_headers_are_one_skipped_line_decided_from_the_header(tmp_path: Path):
    import time
    import tracemalloc

    d = tmp_path / "in"
    d.mkdir()
    hostile_nifti(d / "big.nii")
    hostile_nifti(d / "wide.nii.gz", (4000, 4000, 800))  # under max_slices, but 25 GB from a few KB of gzip
    write_dicom(d / "frames.dcm", [demo_slices(n=1, size=16)[0]], NumberOfFrames=900)  # 900 frames, bytes for 1
    write_nifti(d / "ok.nii.gz", demo_slices(n=4, size=32))
    tracemalloc.start()
    start = time.perf_counter()
    ids = find_images([d])
    reasons = {}
    for i in ids:
        try:
            decode(i)
        except DataError as e:
            reasons[Path(i).name] = str(e)
    seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sorted(Path(i).name for i in ids if "ok.nii" not in i) == ["big.nii", "frames.dcm", "wide.nii.gz"]
    assert sum("ok.nii.gz#" in i for i in ids) == 4 and set(reasons) == {"big.nii", "frames.dcm", "wide.nii.gz"}
    assert "30,000 slices" in reasons["big.nii"] and "data.max_slices=1,024" in reasons["big.nii"]
    assert "4,000 x 4,000 x 800" in reasons["wide.nii.gz"] and "compressed" in reasons["wide.nii.gz"]
    assert "900 frame(s)" in reasons["frames.dcm"] and no_patient(reasons["frames.dcm"])
    assert seconds < 1.0 and peak < 100e6, (seconds, peak)
    # data.max_slices: a real 4-slice volume is refused as a whole under a cap of 3, and the cap is validated
    assert find_images([d / "ok.nii.gz"], ScanOptions(max_slices=3)) == [str(d / "ok.nii.gz")]
    with pytest.raises(DataError, match="4 slices along axis 2, over data.max_slices=3"):
        decode(d / "ok.nii.gz", scan_options=ScanOptions(max_slices=3))
    with pytest.raises(ConfigError, match="data.max_slices"):
        load_config("customnet", sets=["data.max_slices=0"])


def test_predict_lists_a_hostile_volume_once_and_summarises_skipped_files(scanner_run, tmp_path: Path):
    run, _, tmp = scanner_run
    d = tmp_path / "in"
    d.mkdir()
    hostile_nifti(d / "big.nii")
    for i in range(7):
        (d / f"broken{i}.png").write_bytes(b"not a png")
    Image.fromarray(demo_slices(n=1)[0]).save(d / "good.png")
    r = runner.invoke(app, ["predict", str(d), "--run", str(run), "--runs-dir", str(tmp / "predict-runs")])
    assert r.exit_code == 0, r.output
    (out,) = (tmp / "predict-runs" / "predict").iterdir()
    lines = (out / "skipped.txt").read_text().splitlines()
    assert len(lines) == 8 and sum("big.nii" in line for line in lines) == 1
    shown = [line for line in r.output.splitlines() if line.startswith("skipped ")]
    assert len(shown) == 6 and "3 more unreadable file(s)" in shown[-1]


def test_a_dicom_that_says_ct_or_knee_is_refused_everywhere_naming_no_tag_value(scanner_run, tmp_path: Path):
    """Issue 21: the header rule acts the same in predict, evaluate and serve (the exported path shares Decider:
    test_input_checks), and its reason names no tag value."""
    from fastapi.testclient import TestClient  # the [serve] extra: make install installs it, so never a skip

    from braintumor.serve.app import create_app
    from braintumor.serve.predictor import Predictor
    from braintumor.serve.settings import ServeSettings

    run, _, tmp = scanner_run
    src = demo_slices("glioma", n=1, size=40)[0]
    d = tmp_path / "in" / "glioma"
    d.mkdir(parents=True)
    write_dicom(d / "ct.dcm", [src], Modality="CT")
    write_dicom(d / "knee.dcm", [src], BodyPartExamined="KNEE")
    write_dicom(d / "head.dcm", [src], BodyPartExamined="BRAIN")
    header_rule = "DICOM header names"

    def rows(csv_path: Path) -> dict[str, dict]:
        return {Path(r["path"]).name: r for r in csv.DictReader(csv_path.open())}

    r = runner.invoke(app, ["predict", str(d), "--run", str(run), "--runs-dir", str(tmp / "rule-runs")])
    assert r.exit_code == 0, r.output
    (out,) = (tmp / "rule-runs" / "predict").iterdir()
    evaluated = runner.invoke(app, ["evaluate", str(run), "--data", str(d.parent), "--runs-dir",
                                    str(tmp / "rule-runs")])
    assert evaluated.exit_code == 0, evaluated.output
    (ev,) = (tmp / "rule-runs" / "evaluate").iterdir()
    for table in (rows(out / "predictions.csv"), rows(ev / "predictions.csv")):
        for name in ("ct.dcm", "knee.dcm"):
            assert table[name]["status"] == "out_of_distribution" and header_rule in table[name]["reason"]
        assert header_rule not in table["head.dcm"]["reason"]
        assert not any(v in table["ct.dcm"]["reason"] + table["knee.dcm"]["reason"] for v in ("CT", "KNEE", "Knee"))
    with TestClient(create_app(ServeSettings(concurrency=1), Predictor.load(run))) as client:
        answer = client.post("/predict", files={"file": ("x.dcm", (d / "ct.dcm").read_bytes())}).json()
        assert answer["status"] == "out_of_distribution" and answer["class"] is None and "CT" not in answer["reason"]
        assert client.get("/model").json()["decision"]["gate_modalities"] == ["MR", "OT"]
