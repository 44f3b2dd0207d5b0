"""What the scanner readers share: the options (data.window, data.slices, data.slice_axis, data.max_slices),
slice selection, windowing to 8 bits, the per-file cache of an opened volume, and the optional imports."""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import DataError

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


@dataclass(frozen=True)
class ScanOptions:
    """How scanner files become 8-bit slices (the data.window, data.slices, data.slice_axis and data.max_slices
    keys)."""

    window: tuple[float, float] | None = None  # (center, width); None: the file's own window, else percentiles
    slices: str = "all"  # all | middle:K | range:A-B | mask[:F]
    slice_axis: int = 2  # NIfTI axis after reorienting to RAS: 0 sagittal, 1 coronal, 2 axial
    max_slices: int = DEFAULT_MAX_SLICES  # a file whose header claims more slices is refused as a whole

    @classmethod
    def from_config(cls, data: DataConfig) -> ScanOptions:
        window = (float(data.window[0]), float(data.window[1])) if data.window else None
        return cls(window, data.slices, data.slice_axis, data.max_slices)


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


def foreground(volume: np.ndarray, axis: int) -> np.ndarray:
    """(n,) fraction of each slice along ``axis`` above MASK_LEVEL of the volume's 99th percentile."""
    return foreground_of(list(np.moveaxis(volume, axis, 0)))


def foreground_of(slices: list[np.ndarray | None]) -> np.ndarray:
    """(n,) fraction of each slice above MASK_LEVEL of the 99th percentile of all of them; a slice that could not
    be read (None) gets infinity, so data.slices=mask keeps it and decoding it lists the reason in skipped.txt."""
    read = [np.ravel(s) for s in slices if s is not None]
    values = np.concatenate(read) if read else np.zeros(0)
    top = float(np.percentile(values, 99)) if values.size else 0.0
    low = float(values.min()) if values.size else 0.0
    level = low + MASK_LEVEL * (top - low)
    return np.array([np.inf if s is None else float((s > level).mean()) if top > low else 0.0 for s in slices])


class HeaderProblem(DataError):
    """A scanner file whose header claims more than the file holds or data.max_slices allows."""


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


def check_size(shape: tuple[int, ...], max_pixels: int | None) -> None:
    if max_pixels is not None and shape[0] * shape[1] > max_pixels:
        raise DataError(f"slice is {shape[1]}x{shape[0]} pixels, over the limit of {max_pixels:,}")


_VOLUME_LOCK = threading.Lock()


def cached_volume(path: str, load) -> Any:
    """``load(path)``, kept for the last two files asked for (keyed by path, size and modification time). Slices of
    one volume are listed next to each other, so the threads decoding them hit the file they have just opened; the
    lock makes the threads that miss wait for one read instead of each reading the whole file."""
    st = os.stat(path)
    with _VOLUME_LOCK:
        return _load_cached(path, st.st_size, st.st_mtime_ns, load)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, size: int, mtime_ns: int, load) -> Any:
    return load(path)


def import_optional(name: str):
    """pydicom or nibabel, or a DataError that says how to install them."""
    try:
        return __import__(name)
    except ImportError:
        raise DataError(f"reading scanner files needs {name}: {INSTALL_HINT}") from None
