"""Scanner files (DICOM, NIfTI) as 2-D slices: which slices a file lists as, and one slice decoded to 8-bit.

A file that holds one 2-D image (a single-frame DICOM) is listed by its plain path, like a JPEG. A file that holds
several slices (a multi-frame DICOM, a NIfTI volume) lists one id per chosen slice, ``<file path>#<slice index>``;
the part before ``#`` names the volume. The single-frame DICOM files of one folder that share a SeriesInstanceUID
are one volume too (a series): ordered by InstanceNumber (else by ImagePositionPatient along the slice normal, else
by file name), each chosen slice is listed as ``<file path>@<series tag>#<position in the series>``, and the volume
is ``<folder>@<series tag>``. The tag is the first 8 hex digits of the SHA-1 of the SeriesInstanceUID: it tells two
series of one folder apart without writing the UID itself (de-identification replaces UIDs, PS3.15 Annex E).
``parse_id`` reads all three forms back; ``volumes.py`` pools per-slice predictions per volume.

Nothing read from a file's tags reaches a message: errors and ids carry only the path and the slice index, so a
patient's name or ID can never land in a log line, a CSV, a plot title or an HTTP response.

pydicom and nibabel are an optional extra (``pip install 'braintumor[scanners]'``): they are imported inside the
functions that need them, so installs without scanner files do not pay for them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import DataConfig
from .errors import DataError
from .input_checks import HEADER_INFO, header_facts

DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SCANNER_EXTENSIONS = DICOM_EXTENSIONS + NIFTI_EXTENSIONS
INSTALL_HINT = "pip install 'braintumor[scanners]'"
# Percentiles of a slice's intensities mapped to black and white when neither the file nor data.window gives a
# window: robust to a few hot voxels, and (per slice) what the 2-D JPEG datasets' exporters did.
PERCENTILE_WINDOW = (1.0, 99.0)
# data.slices: mask keeps a slice when at least this fraction of it is foreground, a voxel being foreground when it
# is above MASK_LEVEL of the volume's 99th percentile (the black background of an MRI sits far below it).
DEFAULT_MASK_FRACTION = 0.1
MASK_LEVEL = 0.1
# data.max_slices' default: no brain MRI has over 1024 slices along one axis (0.2 mm over a 20 cm head), while a
# damaged or hostile header can claim millions, each of which would be listed, decoded and reported
DEFAULT_MAX_SLICES = 1024
# deflate never packs more than 1032 bytes into one (RFC 1951's longest match per 2-bit code): a .nii.gz whose
# header claims more voxel bytes than this many times the file's size is damaged, whatever the voxels are
MAX_DEFLATE_RATIO = 1032

_ID = re.compile(r"^(.*)#(\d+)$")
_SERIES_ID = re.compile(r"^(.*)@([0-9a-f]{8})#(\d+)$")
# what listing reads from a DICOM header (stop_before_pixels: a series of 200 files lists in a fraction of a second)
_HEADER_TAGS = ["NumberOfFrames", "SeriesInstanceUID", "InstanceNumber", "ImagePositionPatient",
                "ImageOrientationPatient", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel"]


@dataclass(frozen=True)
class ScanOptions:
    """How scanner files become 8-bit slices (the data.window, data.slices and data.slice_axis keys)."""

    window: tuple[float, float] | None = None  # (center, width); None: the file's own window, else percentiles
    slices: str = "all"  # all | middle:K | range:A-B | mask[:F]
    slice_axis: int = 2  # NIfTI axis after reorienting to RAS: 0 sagittal, 1 coronal, 2 axial
    max_slices: int = DEFAULT_MAX_SLICES  # a file whose header claims more slices is refused as a whole

    @classmethod
    def from_config(cls, data: DataConfig) -> ScanOptions:
        window = (float(data.window[0]), float(data.window[1])) if data.window else None
        return cls(window, data.slices, data.slice_axis, data.max_slices)


# ----------------------------------------------------------------------------------------------------
# What a path or an upload is


@dataclass(frozen=True)
class SliceRef:
    """What an image id names: the file to decode, the frame inside it, and the volume the slice belongs to."""

    file: str
    frame: int | None  # slice of a multi-frame DICOM or NIfTI volume; None: the file's one image
    volume: str  # the file, or '<folder>@<series tag>' for a slice of a DICOM series
    position: int  # the slice's place in its volume (0 for a plain file)


def parse_id(source: str) -> SliceRef:
    """``'a/v.nii.gz#12'`` -> slice 12 of volume a/v.nii.gz; ``'a/s1/IM7@1a2b3c4d#3'`` -> file a/s1/IM7, the 4th
    slice of series a/s1@1a2b3c4d; a plain path (or an existing file whose name has a '#') is its own volume."""
    if not Path(source).exists():
        m = _SERIES_ID.match(source)
        if m:
            file = m.group(1)
            return SliceRef(file, None, f"{os.path.dirname(file) or '.'}@{m.group(2)}", int(m.group(3)))
        m = _ID.match(source)
        if m:
            return SliceRef(m.group(1), int(m.group(2)), m.group(1), int(m.group(2)))
    return SliceRef(source, None, source, 0)


def split_id(source: str) -> tuple[str, int | None]:
    """``'a/b.nii.gz#12'`` -> ``('a/b.nii.gz', 12)``; a series slice or a plain path -> (its file, None)."""
    ref = parse_id(source)
    return ref.file, ref.frame


def has_dicom_magic(path: str | Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble (series files often have no extension)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def file_kind(path: str | Path) -> str | None:
    """'dicom', 'nifti' or None from a file's name (and, for a name without extension, its first bytes)."""
    name = str(path).lower()
    if name.endswith(NIFTI_EXTENSIONS):
        return "nifti"
    if name.endswith(DICOM_EXTENSIONS):
        return "dicom"
    if not Path(path).suffix and Path(path).is_file() and has_dicom_magic(path):
        return "dicom"
    return None


def bytes_kind(data: bytes) -> str | None:
    """'dicom', 'nifti' or None for an upload's content (by magic numbers, not by name)."""
    if data[128:132] == b"DICM":
        return "dicom"
    head = data[:352]
    if head[:2] == b"\x1f\x8b":  # gzip: look at the start of what it holds (Pillow reads no gzip format)
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:65536], 352)
        except zlib.error:
            return None
    if len(head) >= 348 and 348 in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")):
        return "nifti"
    return None


def source_kind(source: str | Path | bytes) -> str | None:
    """'dicom', 'nifti' or None for anything ``data.decode`` accepts (a path, a slice id, or bytes)."""
    if isinstance(source, (bytes, bytearray)):
        return bytes_kind(bytes(source))
    return file_kind(split_id(str(source))[0])


# ----------------------------------------------------------------------------------------------------
# Listing: one id per chosen slice


def select_slices(n: int, slices: str, foreground: np.ndarray | None = None) -> list[int]:
    """Indices of the slices ``data.slices`` keeps out of ``n``; ``foreground`` is (n,) fractions, for mask."""
    if slices == "all":
        return list(range(n))
    kind, _, arg = slices.partition(":")
    if kind == "middle":
        k = min(int(arg), n)
        start = max(0, n // 2 - k // 2)
        return list(range(start, min(n, start + k)))
    if kind == "range":
        a, b = (int(v) for v in arg.split("-"))
        return list(range(max(0, a), min(n, b + 1)))  # inclusive, clipped to the volume
    fraction = float(arg) if arg else DEFAULT_MASK_FRACTION
    assert foreground is not None
    return [i for i in range(n) if foreground[i] >= fraction]


def _foreground(volume: np.ndarray, axis: int) -> np.ndarray:
    """(n,) fraction of each slice along ``axis`` above MASK_LEVEL of the volume's 99th percentile."""
    return _foreground_of(list(np.moveaxis(volume, axis, 0)))


def _foreground_of(slices: list[np.ndarray | None]) -> np.ndarray:
    """(n,) fraction of each slice above MASK_LEVEL of the 99th percentile of all of them; a slice that could not
    be read (None) gets infinity, so data.slices=mask keeps it and decoding it lists the reason in skipped.txt."""
    read = [np.ravel(s) for s in slices if s is not None]
    values = np.concatenate(read) if read else np.zeros(0)
    top = float(np.percentile(values, 99)) if values.size else 0.0
    low = float(values.min()) if values.size else 0.0
    level = low + MASK_LEVEL * (top - low)
    return np.array([np.inf if s is None else float((s > level).mean()) if top > low else 0.0 for s in slices])


@dataclass(frozen=True)
class _Header:
    """What listing needs from a DICOM file's header."""

    frames: int
    series: str  # SeriesInstanceUID, "" when the file has none
    instance: int | None  # InstanceNumber
    position: float | None  # ImagePositionPatient along the slice normal (ImageOrientationPatient's cross product)
    frame_bytes: float = 0.0  # bytes one uncompressed frame takes (rows x columns x samples x bits / 8)
    native: bool = True  # pixel data stored uncompressed (its size is known from the header)


def expand(files: Sequence[str | Path], scan: ScanOptions = ScanOptions()) -> list[str]:
    """The image ids of ``files`` (in listing order), the one listing step behind list_images and find_images.

    An image file lists as its path. A NIfTI volume or a multi-frame DICOM lists the ids of the slices ``scan``
    keeps. Single-frame DICOM files of one folder that share a SeriesInstanceUID are one series: its chosen slices
    are listed in series order where its first file stood (one file alone, or without a series UID, stays a plain
    path). A scanner file whose header cannot be read lists as its plain path, so that decoding it later gives
    the reason and it lands in skipped.txt like any unreadable image."""
    entries: list[list[str] | tuple[str, str]] = []  # ids, or the key of a series filled in below
    series: dict[tuple[str, str], list[tuple[str, _Header]]] = {}
    for f in map(str, files):
        kind = file_kind(f)
        if kind is None:
            entries.append([f])
            continue
        try:
            if kind == "nifti":
                entries.append([f"{f}#{i}" for i in _nifti_slices(f, scan)])
                continue
            header = _dicom_header(f)
            if header.frames > 1:
                if dicom_header_problem(header.frames, header.frame_bytes, os.path.getsize(f), header.native, scan):
                    entries.append([f])  # one id: decoding it gives the reason, one line in skipped.txt
                    continue
                entries.append([f"{f}#{i}" for i in _dicom_frames(f, header.frames, scan)])
                continue
        except HeaderProblem:
            entries.append([f])  # as above: one line in skipped.txt, not one per claimed slice
            continue
        except DataError:
            raise
        except Exception:  # noqa: BLE001 - any reader failure: decode() says why, file by file
            entries.append([f])
            continue
        if not header.series:
            entries.append([f])
            continue
        key = (os.path.dirname(f), header.series)
        if key not in series:
            series[key] = []
            entries.append(key)
        series[key].append((f, header))
    return [i for e in entries for i in (e if isinstance(e, list) else _series_ids(series[e], scan))]


def _dicom_header(path: str) -> _Header:
    pydicom = _import("pydicom")
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
    return _Header(int(ds.get("NumberOfFrames", 1) or 1), str(ds.get("SeriesInstanceUID", "") or ""), instance,
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


class HeaderProblem(DataError):
    """A scanner file whose header claims more than the file holds or data.max_slices allows."""


def dicom_header_problem(frames: int, frame_bytes: float, file_size: int, native: bool,
                         scan: ScanOptions) -> str | None:
    """Why a DICOM's header cannot be believed, or None: checked before any frame is listed or read."""
    if frames > scan.max_slices:
        return (f"DICOM file claims {frames:,} frames, over data.max_slices={scan.max_slices:,}; raise "
                "data.max_slices if the file is real")
    # uncompressed: every frame's bytes are in the file; compressed: each frame is at least an 8-byte item header
    need = frames * frame_bytes if native else frames * 8
    if need > file_size:
        return (f"DICOM header claims {frames:,} frame(s) of {frame_bytes:,.0f} bytes, more than the file's "
                f"{file_size:,} bytes hold (truncated or damaged)")
    return None


def nifti_header_problem(img: Any, file_axis: int, file_size: int, compressed: bool,
                         scan: ScanOptions) -> str | None:
    """Why a NIfTI header cannot be believed, or None: the claimed voxels against the file's size (a .nii.gz
    against the most deflate can pack) and the slices along the chosen axis against data.max_slices."""
    shape = tuple(int(d) for d in img.shape)
    n = shape[file_axis]
    if n > scan.max_slices:
        return (f"NIfTI header claims {n:,} slices along axis {scan.slice_axis}, over data.max_slices="
                f"{scan.max_slices:,}; raise data.max_slices if the volume is real")
    hdr = img.header
    voxel_bytes = float(np.prod(shape[:3], dtype=np.float64)) * int(hdr.get_data_dtype().itemsize)
    need = voxel_bytes + float(hdr.get_data_offset())
    if need > file_size * (MAX_DEFLATE_RATIO if compressed else 1):
        return (f"NIfTI header claims {' x '.join(f'{d:,}' for d in shape[:3])} voxels ({need:,.0f} bytes), more "
                f"than the file's {file_size:,} bytes {'can hold compressed' if compressed else 'hold'} "
                "(truncated or damaged)")
    return None


def series_order(headers: Sequence[_Header], names: Sequence[str]) -> list[int]:
    """Indices of a series' files in slice order: by InstanceNumber when every file has one, else by
    ImagePositionPatient along the slice normal when every file has it, else by file name."""
    n = range(len(names))
    if all(h.instance is not None for h in headers):
        return sorted(n, key=lambda i: (headers[i].instance, headers[i].position or 0.0, names[i]))
    if all(h.position is not None for h in headers):
        return sorted(n, key=lambda i: (headers[i].position, names[i]))
    return sorted(n, key=lambda i: names[i])


def series_tag(uid: str) -> str:
    """8 hex digits that tell series apart without writing the SeriesInstanceUID anywhere."""
    return hashlib.sha1(uid.encode()).hexdigest()[:8]


def _series_ids(members: list[tuple[str, _Header]], scan: ScanOptions) -> list[str]:
    """The ids of a series' chosen slices: ``<file>@<tag>#<position>``, in series order."""
    if len(members) == 1:
        return [members[0][0]]
    order = [members[i] for i in series_order([h for _, h in members], [os.path.basename(f) for f, _ in members])]
    fg = _foreground_of([_series_slice(f) for f, _ in order]) if scan.slices.startswith("mask") else None
    tag = series_tag(order[0][1].series)
    return [f"{order[k][0]}@{tag}#{k}" for k in select_slices(len(order), scan.slices, fg)]


def _series_slice(path: str) -> np.ndarray | None:
    """A series file's modality values (for data.slices=mask), or None when its pixels cannot be read."""
    from pydicom.pixels import apply_modality_lut  # optional dependency: only scanner files need it

    try:
        ds = _open_dicom(path)
        return np.asarray(apply_modality_lut(_dicom_frame(ds, 0), ds), dtype=np.float32)
    except Exception:  # noqa: BLE001 - decoding it later gives the reason, in skipped.txt
        return None


def _dicom_frames(path: str, n: int, scan: ScanOptions) -> list[int]:
    """Frame indices of an ``n``-frame DICOM that data.slices keeps."""
    fg = None
    if scan.slices.startswith("mask"):  # mask reads every frame once
        from pydicom.pixels import apply_modality_lut  # optional dependency, as above

        ds = _import("pydicom").dcmread(path)
        fg = _foreground(np.stack([apply_modality_lut(_dicom_frame(ds, i), ds) for i in range(n)]), 0)
    return select_slices(n, scan.slices, fg)


def _nifti_slices(path: str, scan: ScanOptions) -> list[int]:
    nib = _import("nibabel")
    img = nib.load(path)  # the header only; voxels stay on disk
    axis, _ = _canonical_axis(img, scan.slice_axis)
    problem = nifti_header_problem(img, axis, os.path.getsize(path), path.lower().endswith(".gz"), scan)
    if problem:
        raise HeaderProblem(problem)
    n = img.shape[axis]
    fg = None
    if scan.slices.startswith("mask"):  # mask reads the whole volume once
        vol = np.asarray(img.dataobj[..., 0] if len(img.shape) > 3 else img.dataobj, dtype=np.float32)
        fg = _foreground(vol, axis)
    return select_slices(n, scan.slices, fg)


# ----------------------------------------------------------------------------------------------------
# Decoding one slice


def decode_scanner(source: str | Path | bytes, scan: ScanOptions = ScanOptions(),
                   max_pixels: int | None = None) -> Image.Image:
    """One slice of a DICOM or NIfTI file (a path, a ``path#index`` id, or an upload's bytes) as an 8-bit mode 'L'
    image. An upload gives its one slice, or the middle slice of a multi-frame file or volume."""
    if isinstance(source, (bytes, bytearray)):
        kind, fp, index = bytes_kind(bytes(source)), io.BytesIO(bytes(source)), None
    else:
        fp, index = split_id(str(source))
        kind = file_kind(fp)
    facts = None
    if kind == "dicom":
        gray, facts = _decode_dicom(fp, index, scan, max_pixels)
    elif kind == "nifti":
        values, file_window = _read_nifti(fp, index, scan, max_pixels)
        gray = to_8bit(values, scan.window, file_window)
    else:
        raise DataError("not a DICOM or NIfTI file")
    img = Image.fromarray(gray)
    if facts is not None:  # what the header says the image is, for the gate (input_checks.header_refusal)
        img.info[HEADER_INFO] = facts
    return img


def to_8bit(values: np.ndarray, window: tuple[float, float] | None, file_window=None) -> np.ndarray:
    """Scanner values -> uint8. ``window`` (center, width) from the config wins; else ``file_window`` (a function
    that maps values to 0-1 the way the file asks); else the slice's 1st-99th percentiles span black to white."""
    v = np.asarray(values, dtype=np.float64)
    if window is not None:
        c, w = window  # DICOM PS3.3 C.11.2.1.2 linear window
        unit = (v - (c - 0.5)) / max(w - 1.0, 1e-9) + 0.5
    elif file_window is not None:
        unit = file_window(v)
    else:
        lo, hi = np.percentile(v, PERCENTILE_WINDOW) if v.size else (0.0, 0.0)
        unit = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_size(shape: tuple[int, ...], max_pixels: int | None) -> None:
    if max_pixels is not None and shape[0] * shape[1] > max_pixels:
        raise DataError(f"slice is {shape[1]}x{shape[0]} pixels, over the limit of {max_pixels:,}")


def _decode_dicom(fp: str | io.BytesIO, index: int | None, scan: ScanOptions,
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
    problem = dicom_header_problem(n, _frame_bytes(ds), _size_of(fp), _uncompressed(ts), scan)
    if problem:
        raise HeaderProblem(problem)
    window = scan.window
    frame = n // 2 if index is None else index  # an upload: the middle frame of a multi-frame file
    if not 0 <= frame < n:
        raise DataError(f"DICOM file has {n} frame(s), no frame {frame}")
    _check_size((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))), max_pixels)
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
    pydicom = _import("pydicom")
    from pydicom.errors import InvalidDicomError  # optional dependency, as above

    try:
        return pydicom.dcmread(fp)
    except InvalidDicomError:
        raise DataError("not a DICOM file (no DICM header)") from None
    except Exception as e:  # noqa: BLE001 - reader messages may quote tag values: give only the kind of failure
        raise DataError(f"not a readable DICOM file ({type(e).__name__}; truncated or damaged)") from None


def _open_dicom_cached(path: str) -> Any:
    return _cached_volume(path, _open_dicom)


_VOLUME_LOCK = threading.Lock()


def _cached_volume(path: str, load) -> Any:
    """``load(path)``, kept for the last two files asked for (keyed by path, size and modification time). Slices of
    one volume are listed next to each other, so the threads decoding them hit the file they have just opened; the
    lock makes the threads that miss wait for one read instead of each reading the whole file."""
    st = os.stat(path)
    with _VOLUME_LOCK:
        return _load_cached(path, st.st_size, st.st_mtime_ns, load)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, size: int, mtime_ns: int, load) -> Any:
    return load(path)


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


def _read_nifti(fp: str | io.BytesIO, index: int | None, scan: ScanOptions, max_pixels: int | None):
    """(rows, cols) values of one slice along RAS ``axis`` (anterior/superior at the top), read lazily."""
    nib = _import("nibabel")
    voxels = None
    try:
        if isinstance(fp, io.BytesIO):
            data = fp.getvalue()
            data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            img = nib.Nifti1Image.from_bytes(data)
        elif fp.lower().endswith(".gz") and index is not None:
            # gzip has no random access: reading slice k decompresses slices 0..k, so a listed volume is
            # decompressed once and kept while its slices are decoded (a plain .nii is memory-mapped instead)
            img, voxels = _cached_volume(fp, _load_gz_volume)
        elif index is not None:  # a slice of a listed .nii: the header is parsed once, voxels stay memory-mapped
            img = _cached_volume(fp, nib.load)
        else:
            img = nib.load(fp)
        axis = scan.slice_axis
        file_axis, flip = _canonical_axis(img, axis)
        compressed = isinstance(fp, str) and fp.lower().endswith(".gz")  # an upload is decompressed by now
        size = len(data) if isinstance(fp, io.BytesIO) else os.path.getsize(fp)
        problem = nifti_header_problem(img, file_axis, size, compressed, scan)
        if problem:
            raise HeaderProblem(problem)
        n = img.shape[file_axis]
        k = n // 2 if index is None else index  # an upload: the middle slice
        if not 0 <= k < n:
            raise DataError(f"NIfTI volume has {n} slices along axis {axis}, no slice {k}")
        slicer: list[Any] = [slice(None)] * len(img.shape)
        slicer[file_axis] = n - 1 - k if flip else k
        if len(img.shape) > 3:
            slicer[3:] = [0] * (len(img.shape) - 3)  # a 4-D series: its first volume
        if voxels is not None:
            values = np.asarray(voxels[tuple(slicer[:3])], dtype=np.float64)
        else:
            values = np.asarray(img.dataobj[tuple(slicer)], dtype=np.float64)  # reads this slice only
        values = _as_canonical_slice(values, img, file_axis)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - header text is the user's; name only the kind of failure
        raise DataError(f"not a readable NIfTI file ({type(e).__name__}; truncated or damaged)") from None
    _check_size(values.shape, max_pixels)
    lo, hi = float(img.header.get("cal_min", 0) or 0), float(img.header.get("cal_max", 0) or 0)
    window = (lambda v: (v - lo) / (hi - lo)) if hi > lo else None  # the file's display range, when it has one
    return values, window


def _load_gz_volume(path: str) -> tuple[Any, np.ndarray]:
    """A .nii.gz image and its (first) 3-D volume in memory."""
    img = _import("nibabel").load(path)
    return img, np.asanyarray(img.dataobj[..., 0] if len(img.shape) > 3 else img.dataobj)


def _canonical_axis(img: Any, axis: int) -> tuple[int, bool]:
    """The file's axis that becomes RAS ``axis`` under ``nib.as_closest_canonical``, and whether it is flipped.
    Worked out from the affine rather than by calling as_closest_canonical, which would read every voxel."""
    nib = _import("nibabel")
    if len(img.shape) < 3:
        raise DataError(f"NIfTI image has {len(img.shape)} dimension(s); expected a 3-D volume")
    ornt = nib.orientations.io_orientation(img.affine)  # row i: (RAS axis of file axis i, +1 or -1)
    file_axis = int(np.flatnonzero(ornt[:3, 0] == axis)[0])
    return file_axis, bool(ornt[file_axis, 1] < 0)


def _as_canonical_slice(values: np.ndarray, img: Any, file_axis: int) -> np.ndarray:
    """A slice in file axis order -> RAS order, displayed with the second RAS axis upwards (rot90)."""
    nib = _import("nibabel")
    ornt = nib.orientations.io_orientation(img.affine)
    rest = [a for a in range(3) if a != file_axis]  # the slice's two file axes, in order
    targets = [int(ornt[a, 0]) for a in rest]
    if targets[0] > targets[1]:
        values, rest = values.T, rest[::-1]
    for i, a in enumerate(rest):
        if ornt[a, 1] < 0:
            values = np.flip(values, axis=i)
    return np.rot90(values)  # (first RAS axis, second) -> rows: second axis, top = its far end


def _import(name: str):
    """pydicom or nibabel, or a DataError that says how to install them."""
    try:
        return __import__(name)
    except ImportError:
        raise DataError(f"reading scanner files needs {name}: {INSTALL_HINT}") from None
