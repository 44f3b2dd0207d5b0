"""NIfTI: the header checks, the slices a volume lists as, and one slice read lazily in RAS order."""

from __future__ import annotations

import gzip
import io
import os
from typing import Any

import numpy as np

from ..errors import DataError
from .common import HeaderProblem, ScanOptions, cached_volume, check_size, foreground, import_optional, select_slices

# deflate never packs more than 1032 bytes into one (RFC 1951's longest match per 2-bit code): a .nii.gz whose
# header claims more voxel bytes than this many times the file's size is damaged, whatever the voxels are
MAX_DEFLATE_RATIO = 1032


def nifti_header_problem(img: Any, file_axis: int, file_size: int, compressed: bool,
                         scan_options: ScanOptions) -> str | None:
    """Why a NIfTI header cannot be believed, or None: the claimed voxels against the file's size (a .nii.gz
    against the most deflate can pack) and the slices along the chosen axis against data.max_slices."""
    shape = tuple(int(d) for d in img.shape)
    n = shape[file_axis]
    if n > scan_options.max_slices:
        return (f"NIfTI header claims {n:,} slices along axis {scan_options.slice_axis}, over data.max_slices="
                f"{scan_options.max_slices:,}; raise data.max_slices if the volume is real")
    hdr = img.header
    voxel_bytes = float(np.prod(shape[:3], dtype=np.float64)) * int(hdr.get_data_dtype().itemsize)
    need = voxel_bytes + float(hdr.get_data_offset())
    if need > file_size * (MAX_DEFLATE_RATIO if compressed else 1):
        return (f"NIfTI header claims {' x '.join(f'{d:,}' for d in shape[:3])} voxels ({need:,.0f} bytes), more "
                f"than the file's {file_size:,} bytes {'can hold compressed' if compressed else 'hold'} "
                "(truncated or damaged)")
    return None


def nifti_slices(path: str, scan_options: ScanOptions) -> list[int]:
    nib = import_optional("nibabel")
    img = nib.load(path)  # the header only; voxels stay on disk
    axis, _ = _canonical_axis(img, scan_options.slice_axis)
    problem = nifti_header_problem(img, axis, os.path.getsize(path), path.lower().endswith(".gz"), scan_options)
    if problem:
        raise HeaderProblem(problem)
    n = img.shape[axis]
    fg = None
    if scan_options.slices.startswith("mask"):  # mask reads the whole volume once
        vol = np.asarray(img.dataobj[..., 0] if len(img.shape) > 3 else img.dataobj, dtype=np.float32)
        fg = foreground(vol, axis)
    return select_slices(n, scan_options.slices, fg)


def read_nifti(fp: str | io.BytesIO, index: int | None, scan_options: ScanOptions, max_pixels: int | None):
    """(rows, cols) values of one slice along RAS ``axis`` (anterior/superior at the top), read lazily."""
    nib = import_optional("nibabel")
    voxels = None
    try:
        if isinstance(fp, io.BytesIO):
            data = fp.getvalue()
            data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            img = nib.Nifti1Image.from_bytes(data)
        elif fp.lower().endswith(".gz") and index is not None:
            # gzip has no random access: reading slice k decompresses slices 0..k, so a listed volume is
            # decompressed once and kept while its slices are decoded (a plain .nii is memory-mapped instead)
            img, voxels = cached_volume(fp, _load_gz_volume)
        elif index is not None:  # a slice of a listed .nii: the header is parsed once, voxels stay memory-mapped
            img = cached_volume(fp, nib.load)
        else:
            img = nib.load(fp)
        axis = scan_options.slice_axis
        file_axis, flip = _canonical_axis(img, axis)
        compressed = isinstance(fp, str) and fp.lower().endswith(".gz")  # an upload is decompressed by now
        size = len(data) if isinstance(fp, io.BytesIO) else os.path.getsize(fp)
        problem = nifti_header_problem(img, file_axis, size, compressed, scan_options)
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
    check_size(values.shape, max_pixels)
    lo, hi = float(img.header.get("cal_min", 0) or 0), float(img.header.get("cal_max", 0) or 0)
    window = (lambda v: (v - lo) / (hi - lo)) if hi > lo else None  # the file's display range, when it has one
    return values, window


def _load_gz_volume(path: str) -> tuple[Any, np.ndarray]:
    """A .nii.gz image and its (first) 3-D volume in memory."""
    img = import_optional("nibabel").load(path)
    return img, np.asanyarray(img.dataobj[..., 0] if len(img.shape) > 3 else img.dataobj)


def _canonical_axis(img: Any, axis: int) -> tuple[int, bool]:
    """The file's axis that becomes RAS ``axis`` under ``nib.as_closest_canonical``, and whether it is flipped.
    Worked out from the affine rather than by calling as_closest_canonical, which would read every voxel."""
    nib = import_optional("nibabel")
    if len(img.shape) < 3:
        raise DataError(f"NIfTI image has {len(img.shape)} dimension(s); expected a 3-D volume")
    ornt = nib.orientations.io_orientation(img.affine)  # row i: (RAS axis of file axis i, +1 or -1)
    file_axis = int(np.flatnonzero(ornt[:3, 0] == axis)[0])
    return file_axis, bool(ornt[file_axis, 1] < 0)


def _as_canonical_slice(values: np.ndarray, img: Any, file_axis: int) -> np.ndarray:
    """A slice in file axis order -> RAS order, displayed with the second RAS axis upwards (rot90)."""
    nib = import_optional("nibabel")
    ornt = nib.orientations.io_orientation(img.affine)
    rest = [a for a in range(3) if a != file_axis]  # the slice's two file axes, in order
    targets = [int(ornt[a, 0]) for a in rest]
    if targets[0] > targets[1]:
        values, rest = values.T, rest[::-1]
    for i, a in enumerate(rest):
        if ornt[a, 1] < 0:
            values = np.flip(values, axis=i)
    return np.rot90(values)  # (first RAS axis, second) -> rows: second axis, top = its far end
