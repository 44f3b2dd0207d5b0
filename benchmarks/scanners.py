"""Is reading scanner files as fast as reading PNGs? ``load_images`` on one synthetic series, four ways.

The same N demo slices (train then test folders of demo_data, gray, resized to --size px) are written as
8-bit PNG files, as a DICOM series folder (one 16-bit file per slice sharing a SeriesInstanceUID, rescale
slope/intercept and a window, as scanners write them: listed as one volume in InstanceNumber order), as one
multi-frame DICOM file and as one NIfTI volume (.nii and .nii.gz). Each is listed and decoded by
``data.load_images`` (the path every command takes) --repeats times; the median wall time is reported against the
PNG time. The target is a DICOM series under 1.5x the PNGs.

    python benchmarks/scanners.py [--slices 200] [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cpu_model  # noqa: E402

sys.path.insert(0, str(REPO))
from braintumor.data import ImageSpec, list_images, load_images  # noqa: E402

DEMO = REPO / "demo_data" / "brain-tumor-mri-sample"
TARGET = 1.5


def demo_slices(n: int, size: int) -> list[np.ndarray]:
    files = sorted(DEMO.glob("train/*/*.jpg")) + sorted(DEMO.glob("test/*/*.jpg"))
    files = (files * (n // len(files) + 1))[:n]
    return [np.asarray(Image.open(f).convert("L").resize((size, size), Image.BILINEAR)) for f in files]


def write_dicom(path: Path, frames: list[np.ndarray], instance: int = 1, series: str | None = None) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.InstanceNumber = instance
    if series is not None:  # the files of a series folder: listed as one volume, in InstanceNumber order
        ds.SeriesInstanceUID = series
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, -100.0
    ds.WindowCenter, ds.WindowWidth = 2920.5, 2041.0  # stored 4p+1000 -> modality 8p+1900 -> p back
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = np.stack([f.astype(np.uint16) * 4 + 1000 for f in frames]).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_all(root: Path, slices: list[np.ndarray]) -> dict[str, Path]:
    import nibabel as nib

    out = {name: root / name for name in ("png", "dicom series", "multi-frame dicom", "nifti .nii", "nifti .nii.gz")}
    for folder in out.values():
        (folder / "glioma" / "series").mkdir(parents=True)
    from pydicom.uid import generate_uid

    uid = generate_uid()
    for i, s in enumerate(slices):
        Image.fromarray(s).save(out["png"] / "glioma" / "series" / f"IM{i:04d}.png")
        write_dicom(out["dicom series"] / "glioma" / "series" / f"IM{i:04d}.dcm", [s], i + 1, uid)
    write_dicom(out["multi-frame dicom"] / "glioma" / "series" / "volume.dcm", slices)
    vol = np.stack([np.rot90(s, -1) for s in slices], axis=-1).astype(np.int16)
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header["cal_min"], img.header["cal_max"] = 0, 255
    nib.save(img, str(out["nifti .nii"] / "glioma" / "series" / "volume.nii"))
    nib.save(img, str(out["nifti .nii.gz"] / "glioma" / "series" / "volume.nii.gz"))
    return out


def time_load(folder: Path, size: int) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    loaded = load_images(list_images(folder, ("glioma", "other"), require_all=False), ImageSpec(size, 1))
    return time.perf_counter() - t, loaded.images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=200)
    p.add_argument("--size", type=int, default=256, help="slice size in pixels (written)")
    p.add_argument("--image-size", type=int, default=128, help="data.image_size (decoded to)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    slices = demo_slices(args.slices, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_all(Path(tmp), slices)
        times: dict[str, list[float]] = {name: [] for name in folders}
        reference = None
        for _ in range(args.repeats):  # interleaved, so a busy neighbour slows every kind alike
            for name, folder in folders.items():
                seconds, images = time_load(folder, args.image_size)
                times[name].append(seconds)
                if reference is None:
                    reference = images
                assert images.shape == reference.shape, name
                diff = np.abs(images.astype(int) - reference.astype(int)).max()
                assert diff <= 1, f"{name} decodes differently from the PNGs (max difference {diff})"
    print(f"{args.slices} slices of {args.size} px -> {args.image_size} px, median of {args.repeats}; "
          f"{len(os.sched_getaffinity(0))} usable core(s) ({cpu_model()}), load {os.getloadavg()[0]:.1f}")
    png = statistics.median(times["png"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:18s} {med:7.3f} s  {args.slices / med:7.0f} slices/s  {med / png:5.2f}x png")
    ratio = statistics.median(times["dicom series"]) / png
    print(f"dicom series / png = {ratio:.2f} (target < {TARGET}): {'met' if ratio < TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
