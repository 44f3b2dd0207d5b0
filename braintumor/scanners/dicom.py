"""DICOM: a file's header for listing (frames, series, order), the header checks, and one frame decoded to 8 bits.

The stored value -> uint8 path of a series slice goes through a lookup table built once per series with pydicom's
own ``apply_modality_lut`` and ``apply_voi_lut`` over every stored value (``_window_lut``), and uncompressed pixels
are read straight from the bytes (``_native_frame``): hand paths kept because ``benchmarks/dicom_lut.py`` measures
the table several times cheaper per slice than calling the two pydicom functions on each slice, and
``tests/test_scanners.py`` holds both against pydicom.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..input_checks import header_facts
from .common import (
    HeaderProblem,
    ScanOptions,
    cached_volume,
    check_size,
    foreground,
    foreground_of,
    import_optional,
    select_slices,
    to_8bit,
)
from .ids import series_tag

# what listing reads from a DICOM header (stop_before_pixels: a series of 200 files lists in a fraction of a second)
_HEADER_TAGS = ["NumberOfFrames", "SeriesInstanceUID", "InstanceNumber", "ImagePositionPatient",
                "ImageOrientationPatient", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel"]


@dataclass(frozen=True)
class DicomHeader:
    """What listing needs from a DICOM file's header."""

    frames: int
    series: str  # SeriesInstanceUID, "" when the file has none
    instance: int | None  # InstanceNumber
    position: float | None  # ImagePositionPatient along the slice normal (ImageOrientationPatient's cross product)
    frame_bytes: float = 0.0  # bytes one uncompressed frame takes (rows x columns x samples x bits / 8)
    native: bool = True  # pixel data stored uncompressed (its size is known from the header)


def read_header(path: str) -> DicomHeader:
    pydicom = import_optional("pydicom")
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    try:
        instance = int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None
    except (TypeError, ValueError):
        instance = None
    position = None
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        position = float(np.dot(np.asarray(ipp, float), normal))
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return DicomHeader(int(ds.get("NumberOfFrames", 1) or 1), str(ds.get("SeriesInstanceUID", "") or ""), instance,
                   position, _frame_bytes(ds), _uncompressed(ts))


def _uncompressed(ts: Any) -> bool:
    """Pixel data stored as plain bytes (native, not deflated): its length follows from the header."""
    try:
        return ts is None or not (ts.is_encapsulated or ts.is_deflated)
    except (AttributeError, ValueError):  # not a transfer syntax pydicom knows: make no claim about its size
        return False


def _frame_bytes(ds: Any) -> float:
    return (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(ds.get("SamplesPerPixel", 1) or 1)
            * int(ds.get("BitsAllocated", 0) or 0) / 8)


def dicom_header_problem(frames: int, frame_bytes: float, file_size: int, native: bool,
                         scan_options: ScanOptions) -> str | None:
    """Why a DICOM's header cannot be believed, or None: checked before any frame is listed or read."""
    if frames > scan_options.max_slices:
        return (f"DICOM file claims {frames:,} frames, over data.max_slices={scan_options.max_slices:,}; raise "
                "data.max_slices if the file is real")
    # uncompressed: every frame's bytes are in the file; compressed: each frame is at least an 8-byte item header
    need = frames * frame_bytes if native else frames * 8
    if need > file_size:
        return (f"DICOM header claims {frames:,} frame(s) of {frame_bytes:,.0f} bytes, more than the file's "
                f"{file_size:,} bytes hold (truncated or damaged)")
    return None


def series_order(headers: Sequence[DicomHeader], names: Sequence[str]) -> list[int]:
    """Indices of a series' files in slice order: by InstanceNumber when every file has one, else by
    ImagePositionPatient along the slice normal when every file has it, else by file name."""
    n = range(len(names))
    if all(h.instance is not None for h in headers):
        return sorted(n, key=lambda i: (headers[i].instance, headers[i].position or 0.0, names[i]))
    if all(h.position is not None for h in headers):
        return sorted(n, key=lambda i: (headers[i].position, names[i]))
    return sorted(n, key=lambda i: names[i])


def series_ids(members: list[tuple[str, DicomHeader]], scan_options: ScanOptions) -> list[str]:
    """The ids of a series' chosen slices: ``<file>@<tag>#<position>``, in series order."""
    if len(members) == 1:
        return [members[0][0]]
    order = [members[i] for i in series_order([h for _, h in members], [os.path.basename(f) for f, _ in members])]
    fg = foreground_of([_series_slice(f) for f, _ in order]) if scan_options.slices.startswith("mask") else None
    tag = series_tag(order[0][1].series)
    return [f"{order[k][0]}@{tag}#{k}" for k in select_slices(len(order), scan_options.slices, fg)]


def _series_slice(path: str) -> np.ndarray | None:
    """A series file's modality values (for data.slices=mask), or None when its pixels cannot be read."""
    from pydicom.pixels import apply_modality_lut  # optional dependency: only scanner files need it

    try:
        ds = _open_dicom(path)
        return np.asarray(apply_modality_lut(_dicom_frame(ds, 0), ds), dtype=np.float32)
    except Exception:  # noqa: BLE001 - decoding it later gives the reason, in skipped.txt
        return None


def frames_kept(path: str, n: int, scan_options: ScanOptions) -> list[int]:
    """Frame indices of an ``n``-frame DICOM that data.slices keeps."""
    fg = None
    if scan_options.slices.startswith("mask"):  # mask reads every frame once
        from pydicom.pixels import apply_modality_lut  # optional dependency, as above

        ds = import_optional("pydicom").dcmread(path)
        fg = foreground(np.stack([apply_modality_lut(_dicom_frame(ds, i), ds) for i in range(n)]), 0)
    return select_slices(n, scan_options.slices, fg)


def decode_dicom(fp: str | io.BytesIO, index: int | None, scan_options: ScanOptions,
                  max_pixels: int | None) -> tuple[np.ndarray, tuple[str | None, bool | None]]:
    """(one frame as (rows, cols) uint8, the header's modality and body-part facts for the gate). The frame:
    rescale slope/intercept, then the window, then MONOCHROME1 inverted; stored values of 8 bits or fewer with
    nothing to apply are shown as stored (``_display_ready``)."""
    from pydicom.pixels import apply_modality_lut  # optional dependency: only scanner files need it

    # a frame of a multi-frame file: the parsed file is kept, so reading its n frames reads the file once, not n times
    ds = _open_dicom_cached(fp) if isinstance(fp, str) and index is not None else _open_dicom(fp)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError("DICOM file has no pixel data (a non-image object such as a report, or a file cut short)")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    problem = dicom_header_problem(n, _frame_bytes(ds), _size_of(fp), _uncompressed(ts), scan_options)
    if problem:
        raise HeaderProblem(problem)
    window = scan_options.window
    frame = n // 2 if index is None else index  # an upload: the middle frame of a multi-frame file
    if not 0 <= frame < n:
        raise DataError(f"DICOM file has {n} frame(s), no frame {frame}")
    check_size((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))), max_pixels)
    stored = _dicom_frame(ds, frame)
    if window is None and _display_ready(ds, stored):
        top = 2 ** int(ds.BitsStored) - 1  # 255 for 8 bits: the stored values are the gray levels
        gray = np.round(np.clip(stored, 0, top) * (255.0 / top)).astype(np.uint8)
    elif (table := _lut_for(ds, stored, window)) is not None:
        low, lut = table
        index = stored if low == 0 else stored.astype(np.int32) - low
        gray = lut[np.clip(index, 0, len(lut) - 1, dtype=index.dtype) if index.max(initial=0) >= len(lut) else index]
    else:
        gray = to_8bit(apply_modality_lut(stored, ds), window, _dicom_window(ds))
    gray = 255 - gray if ds.get("PhotometricInterpretation", "") == "MONOCHROME1" else gray  # low values white
    return gray, header_facts(ds.get("Modality"), ds.get("BodyPartExamined"))


def _size_of(fp: str | io.BytesIO) -> int:
    return len(fp.getbuffer()) if isinstance(fp, io.BytesIO) else os.path.getsize(fp)


def _display_ready(ds: Any, stored: np.ndarray) -> bool:
    """Unsigned gray stored values of 8 bits or fewer that nothing asks to transform (no window, no VOI or modality
    LUT, no rescale other than the identity): they are already display levels, as a PNG's are, and are shown as
    stored (a percentile window would give the same pixels another answer than the same PNG gets)."""
    if stored.ndim != 2 or stored.dtype.kind not in "iu" or int(ds.get("PixelRepresentation", 0) or 0) != 0:
        return False
    if not 1 <= int(ds.get("BitsStored", 0) or 0) <= 8:
        return False
    if any(k in ds for k in ("WindowCenter", "WindowWidth", "VOILUTSequence", "ModalityLUTSequence")):
        return False
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    return float(slope if slope not in (None, "") else 1) == 1 and float(intercept or 0) == 0


def _open_dicom(fp: str | io.BytesIO) -> Any:
    pydicom = import_optional("pydicom")
    from pydicom.errors import InvalidDicomError  # optional dependency, as above

    try:
        return pydicom.dcmread(fp)
    except InvalidDicomError:
        raise DataError("not a DICOM file (no DICM header)") from None
    except Exception as e:  # noqa: BLE001 - reader messages may quote tag values: give only the kind of failure
        raise DataError(f"not a readable DICOM file ({type(e).__name__}; truncated or damaged)") from None


def _open_dicom_cached(path: str) -> Any:
    return cached_volume(path, _open_dicom)


def _lut_for(ds: Any, stored: np.ndarray, window: tuple[float, float] | None) -> tuple[int, np.ndarray] | None:
    """A stored value -> uint8 lookup table for this file, or None where a table cannot stand in (colour or float
    pixels, modality or VOI LUT sequences, over 16 bits, or no window so percentiles of the slice decide).

    Slices of one series share their rescale and window, so the table is built once per series (cached) and a
    slice costs one indexing instead of float arithmetic over every pixel."""
    if (stored.ndim != 2 or stored.dtype.kind not in "iu" or ds.get("ModalityLUTSequence")
            or ds.get("VOILUTSequence") or not 1 <= int(ds.get("BitsStored", 0) or 0) <= 16):
        return None
    file_window = None
    if window is None:
        if "WindowCenter" not in ds or "WindowWidth" not in ds:
            return None
        file_window = (_first(ds.WindowCenter), _first(ds.WindowWidth), str(ds.get("VOILUTFunction", "LINEAR")))
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    rescale = None if slope is None or intercept is None else (float(slope), float(intercept))
    return _window_lut(int(ds.BitsStored), int(ds.get("PixelRepresentation", 0) or 0), rescale, file_window, window)


def _first(value: Any) -> float:
    """A Window Center/Width may hold several windows: pydicom's apply_voi_lut uses the first."""
    return float(value[0]) if isinstance(value, Sequence) and not isinstance(value, str) else float(value)


@functools.lru_cache(maxsize=32)
def _window_lut(bits: int, signed: int, rescale, file_window, window) -> tuple[int, np.ndarray]:
    """(lowest stored value, uint8 table over every stored value): the same apply_modality_lut and apply_voi_lut
    calls as a slice takes, made once on all 2**bits values."""
    from pydicom.dataset import Dataset  # optional dependency: only scanner files need it
    from pydicom.pixels import apply_modality_lut

    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation = bits, signed, "MONOCHROME2"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if file_window is not None:
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = file_window
    low = -(2 ** (bits - 1)) if signed else 0
    values = apply_modality_lut(np.arange(low, low + 2**bits, dtype=np.int64), ds)
    return low, to_8bit(values, window, _dicom_window(ds))


def _dicom_frame(ds: Any, frame: int) -> np.ndarray:
    """One frame's stored values; raises DataError naming the transfer syntax it cannot decode."""
    from pydicom.pixels import pixel_array  # optional dependency: only scanner files need it

    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    fast = _native_frame(ds, frame, ts)
    if fast is not None:
        return fast
    try:
        arr = pixel_array(ds, index=frame if int(ds.get("NumberOfFrames", 1) or 1) > 1 else None)
    except (NotImplementedError, RuntimeError) as e:
        name = getattr(ts, "name", "unknown")
        raise DataError(f"DICOM pixel data uses transfer syntax {name!s} ({ts!s}), which cannot be decoded here "
                        "(compressed syntaxes need a pixel-data plugin: pip install pylibjpeg pylibjpeg-libjpeg "
                        f"pylibjpeg-openjpeg; {type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - see _open_dicom: never quote a reader message
        raise DataError(f"DICOM pixel data cannot be read ({type(e).__name__}; truncated or damaged)") from None
    return arr.mean(axis=-1) if arr.ndim == 3 else arr  # colour (RGB/YBR) samples: the mean is the gray level


_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # Implicit and Explicit VR Little Endian, uncompressed


def _native_frame(ds: Any, frame: int, ts: Any) -> np.ndarray | None:
    """One frame of uncompressed little-endian gray integer pixels straight from the bytes, or None for anything
    else (pydicom decodes those). Written by hand because pydicom's pixel_array spends ~0.5 ms per call resolving
    decoder options, most of the cost of a 256-px slice of a series; the bits and sign handling mirror it."""
    if (str(ts) not in _NATIVE or "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1
            or ds.get("BitsAllocated") not in (8, 16, 32)):
        return None
    rows, cols, allocated = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    stored, signed = int(ds.get("BitsStored", allocated) or allocated), int(ds.get("PixelRepresentation", 0) or 0)
    if not 1 <= stored <= allocated:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = rows * cols
    data = ds.PixelData
    if len(data) < (frame + 1) * count * dtype.itemsize:
        raise DataError("DICOM pixel data cannot be read (shorter than its rows, columns and frames; truncated)")
    arr = np.frombuffer(data, dtype, count, frame * count * dtype.itemsize).reshape(rows, cols)
    if stored < allocated:  # bits above BitsStored are not pixel data: mask them, or sign-extend from the top bit
        shift = allocated - stored
        arr = (arr << shift) >> shift if signed else arr & ((1 << stored) - 1)
    return arr


def _dicom_window(ds: Any):
    """The file's VOI (Window Center/Width or a VOI LUT) as a function of modality values -> 0-1, or None."""
    from pydicom.pixels import apply_voi_lut  # optional dependency: only scanner files need it

    lo, hi = _voi_range(ds)
    if lo is None:
        return None
    return lambda v: (np.asarray(apply_voi_lut(v, ds), dtype=np.float64) - lo) / (hi - lo)


def _voi_range(ds: Any) -> tuple[float | None, float | None]:
    """The output range of pydicom's ``apply_voi_lut`` for this file (mirrors pydicom.pixels.processing), or
    (None, None) when the file has no window and no VOI LUT."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None, None
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return (lo, hi) if hi > lo else (None, None)
