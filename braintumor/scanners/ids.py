"""The id grammar: what a path, a ``<file>#<slice>`` id, a ``<file>@<series tag>#<position>`` id or an upload's
bytes names, and which kind of scanner file (if any) it is. No reader is imported here."""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SCANNER_EXTENSIONS = DICOM_EXTENSIONS + NIFTI_EXTENSIONS

_ID = re.compile(r"^(.*)#(\d+)$")
_SERIES_ID = re.compile(r"^(.*)@([0-9a-f]{8})#(\d+)$")


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


def series_tag(uid: str) -> str:
    """8 hex digits that tell series apart without writing the SeriesInstanceUID anywhere."""
    return hashlib.sha1(uid.encode()).hexdigest()[:8]
