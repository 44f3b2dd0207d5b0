"""Does the per-series lookup table of scanners/dicom.py pay for itself? One 16-bit slice (rescale + window, as
scanners write them) decoded to 8 bits two ways: the table (built once with pydicom's apply_modality_lut and
apply_voi_lut over every stored value, then one indexing per slice) against calling those two pydicom functions on
the slice itself. Prints the median ms per slice of each and the largest difference (0 expected).

    nice -n 10 python benchmarks/dicom_lut.py [--size 256] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.scanners import demo_slices, write_dicom  # noqa: E402
from braintumor.scanners import dicom, to_8bit  # noqa: E402


def per_slice_ms(fn, repeats: int) -> float:
    fn()  # builds the table once, as the first slice of a series does
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    import pydicom
    from pydicom.pixels import apply_modality_lut

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice.dcm"
        write_dicom(path, demo_slices(1, args.size))
        ds = pydicom.dcmread(path)
    stored = dicom._dicom_frame(ds, 0)

    def table():
        low, lut = dicom._lut_for(ds, stored, None)
        return lut[stored if low == 0 else stored.astype(np.int32) - low]

    def library():
        return to_8bit(apply_modality_lut(stored, ds), None, dicom._dicom_window(ds))

    diff = int(np.abs(table().astype(int) - library().astype(int)).max())
    print(f"{args.size} px 16-bit slice: table {per_slice_ms(table, args.repeats):.2f} ms, pydicom calls "
          f"{per_slice_ms(library, args.repeats):.2f} ms per slice; max difference {diff}")


if __name__ == "__main__":
    main()
