"""The two entry points: ``expand`` lists files as image ids, ``decode_scanner`` decodes one id or upload."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import DataError
from ..input_checks import HEADER_INFO
from .common import HeaderProblem, ScanOptions, to_8bit
from .dicom import DicomHeader, decode_dicom, dicom_header_problem, frames_kept, read_header, series_ids
from .ids import bytes_kind, file_kind, split_id
from .nifti import nifti_slices, read_nifti


def expand(files: Sequence[str | Path], scan_options: ScanOptions = ScanOptions()) -> list[str]:
    """The image ids of ``files`` (in listing order), the one listing step behind list_images and find_images.

    An image file lists as its path. A NIfTI volume or a multi-frame DICOM lists the ids of the slices ``scan_options``
    keeps. Single-frame DICOM files of one folder that share a SeriesInstanceUID are one series: its chosen slices
    are listed in series order where its first file stood (one file alone, or without a series UID, stays a plain
    path). A scanner file whose header cannot be read lists as its plain path, so that decoding it later gives
    the reason and it lands in skipped.txt like any unreadable image."""
    entries: list[list[str] | tuple[str, str]] = []  # ids, or the key of a series filled in below
    series: dict[tuple[str, str], list[tuple[str, DicomHeader]]] = {}
    for f in map(str, files):
        kind = file_kind(f)
        if kind is None:
            entries.append([f])
            continue
        try:
            if kind == "nifti":
                entries.append([f"{f}#{i}" for i in nifti_slices(f, scan_options)])
                continue
            header = read_header(f)
            if header.frames > 1:
                if dicom_header_problem(header.frames, header.frame_bytes, os.path.getsize(f), header.native,
                                        scan_options):
                    entries.append([f])  # one id: decoding it gives the reason, one line in skipped.txt
                    continue
                entries.append([f"{f}#{i}" for i in frames_kept(f, header.frames, scan_options)])
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
    return [i for e in entries for i in (e if isinstance(e, list) else series_ids(series[e], scan_options))]


def decode_scanner(source: str | Path | bytes, scan_options: ScanOptions = ScanOptions(),
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
        gray, facts = decode_dicom(fp, index, scan_options, max_pixels)
    elif kind == "nifti":
        values, file_window = read_nifti(fp, index, scan_options, max_pixels)
        gray = to_8bit(values, scan_options.window, file_window)
    else:
        raise DataError("not a DICOM or NIfTI file")
    img = Image.fromarray(gray)
    if facts is not None:  # what the header says the image is, for the gate (input_checks.header_refusal)
        img.info[HEADER_INFO] = facts
    return img
