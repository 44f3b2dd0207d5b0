"""Scanner files (DICOM, NIfTI) as 2-D slices: which slices a file lists as, and one slice decoded to 8-bit.

A file that holds one 2-D image (a single-frame DICOM) is listed by its plain path, like a JPEG. A file that holds
several slices (a multi-frame DICOM, a NIfTI volume) lists one id per chosen slice, ``<file path>#<slice index>``;
the part before ``#`` names the volume. The single-frame DICOM files of one folder that share a SeriesInstanceUID
are one volume too (a series): ordered by InstanceNumber (else by ImagePositionPatient along the slice normal, else
by file name), each chosen slice is listed as ``<file path>@<series tag>#<position in the series>``, and the volume
is ``<folder>@<series tag>``. The tag is the first 8 hex digits of the SHA-1 of the SeriesInstanceUID: it tells two
series of one folder apart without writing the UID itself (de-identification replaces UIDs, PS3.15 Annex E).
``parse_id`` reads all three forms back; ``volumes.py`` pools per-slice predictions per volume.

A header is checked against the file's size and ``data.max_slices`` before any slice is listed, so a damaged or
hostile header is one unreadable file, not thousands of slices.

Nothing read from a file's tags reaches a message: errors and ids carry only the path and the slice index, so a
patient's name or ID can never land in a log line, a CSV, a plot title or an HTTP response.

pydicom and nibabel are an optional extra (``pip install 'braintumor[scanners]'``): they are imported inside the
functions that need them, so installs without scanner files do not pay for them.

The rooms: ``ids`` (the id grammar and file kinds), ``common`` (options, slice selection, windowing, the cache),
``dicom``, ``nifti``, and ``files`` (``expand`` and ``decode_scanner``, the entry points).
"""

from .common import (
    DEFAULT_MAX_SLICES,
    INSTALL_HINT,
    PERCENTILE_WINDOW,
    HeaderProblem,
    ScanOptions,
    select_slices,
    to_8bit,
)
from .dicom import series_order
from .files import decode_scanner, expand
from .ids import (
    DICOM_EXTENSIONS,
    NIFTI_EXTENSIONS,
    SCANNER_EXTENSIONS,
    SliceRef,
    bytes_kind,
    file_kind,
    has_dicom_magic,
    parse_id,
    series_tag,
    source_kind,
    split_id,
)

__all__ = ["DEFAULT_MAX_SLICES", "DICOM_EXTENSIONS", "INSTALL_HINT", "NIFTI_EXTENSIONS", "PERCENTILE_WINDOW",
           "SCANNER_EXTENSIONS", "HeaderProblem", "ScanOptions", "SliceRef", "bytes_kind", "decode_scanner", "expand",
           "file_kind", "has_dicom_magic", "parse_id", "select_slices", "series_order", "series_tag", "source_kind",
           "split_id", "to_8bit"]
