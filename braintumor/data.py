"""Find images and classes and decode them once (splits: ``splits.py``).

Classes and collections (folder spellings, ``--data NAME=PATH``), listing (scanner files list one id per slice),
and the loader: every listed image decoded once (``images.py``) into one uint8 array, the cache. tf.data only
batches, casts, augments and prefetches it, so a broken file is found and listed before training starts and can
never crash an epoch. Decoding and framing live in ``images.py``; their names are importable from here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import CANONICAL_CLASSES
from .errors import DataError
from .images import ImageSpec, PixelBox, decode, is_gray, pixel_digest, read_image, to_array, unframe
from .input_checks import InputStats
from .progress import Reporter
from .scanners import SCANNER_EXTENSIONS, ScanOptions, expand, file_kind

# decoding and framing moved to images.py; callers and tests still import these names from here
__all__ = ["IMAGE_EXTENSIONS", "PixelBox", "ImageList", "ImageSpec", "LoadedImages", "Source", "canonical_class",
           "class_key", "decode", "find_class", "find_images", "is_gray", "list_images", "load_images", "map_images",
           "match_folders", "parse_sources", "pixel_digest", "read_image", "to_array", "unframe"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# Spellings seen in public MRI datasets, reduced to lower-case letters only.
_CLASS_ALIASES = {
    "glioma": "glioma",
    "meningioma": "meningioma",
    "pituitary": "pituitary",
    "notumor": "notumor",
    "no": "notumor",
    "none": "notumor",
    "normal": "notumor",
    "healthy": "notumor",
    "negative": "notumor",
}


def class_key(name: str) -> str:
    """Reduce a folder or class name to the letters that identify it: 'Glioma_Tumour' -> 'glioma'."""
    key = re.sub(r"[^a-z]", "", name.lower())
    return re.sub(r"tumou?rs?$", "", key) or key


def canonical_class(name: str) -> str | None:
    """The canonical tumour class a folder name means, or None: 'no_tumor' -> 'notumor'."""
    key = class_key(name)
    return _CLASS_ALIASES.get(key)


def find_class(name: str, class_names: Sequence[str]) -> int | None:
    """Index of the class ``name`` means (exactly, ignoring case and punctuation, or as a canonical tumour class
    spelling), or None when no single class matches."""
    canon = canonical_class(name)
    for match in (lambda c: c == name, lambda c: class_key(c) == class_key(name),
                  lambda c: canon is not None and canonical_class(c) == canon):
        hits = [i for i, c in enumerate(class_names) if match(c)]
        if len(hits) == 1:
            return hits[0]
    return None


@dataclass(frozen=True)
class ImageList:
    """Image files and integer labels, in a stable order (class, then file name)."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray  # (n,) int
    class_names: tuple[str, ...]
    folders: dict[str, str]  # folder name -> class name
    scan_options: ScanOptions = ScanOptions()  # how scanner files (DICOM, NIfTI) became the slices listed in paths
    sources: tuple[str, ...] = ()  # per image: the name of the collection (--data folder) it came from

    def source_of(self, i: int) -> str:
        return self.sources[i] if self.sources else self.root.name


@dataclass(frozen=True)
class Source:
    """One collection: a folder of class sub-folders and the name reports use for it."""

    name: str
    path: Path


_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_sources(spec: str | Path | Sequence[str | Path]) -> list[Source]:
    """``--data`` values (one, or a list) as named collections: ``NAME=PATH`` names one; a plain path is named
    after its folder (and its parent's name when two folders share a name). Names must be distinct."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not items:
        raise DataError("no data folder: pass --data DIR (a folder with one sub-folder per class)")
    named: list[tuple[str | None, Path]] = []
    for item in items:
        text = str(item)
        name, sep, rest = text.partition("=")
        if sep and _SOURCE_NAME.match(name) and rest and not Path(text).exists():
            named.append((name, Path(rest)))
        else:
            named.append((None, Path(text)))
    auto = [(p.resolve().name or str(p)) if n is None else None for n, p in named]
    out = []
    for (name, path), base in zip(named, auto, strict=True):
        if name is None and auto.count(base) > 1:
            base = f"{path.resolve().parent.name}-{base}"
        out.append(Source(name or base, path))
    names = [s.name for s in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DataError(f"two --data folders are both called {clash[0]!r}; name them: --data NAME=PATH")
    return out


def match_folders(folders: list[str], classes: tuple[str, ...] | None) -> dict[str, str]:
    """Map class folders to class names, canonical (classes=None) or as the config lists them."""
    if classes is None:
        mapping = {f: canonical_class(f) for f in folders}
        unknown = [f for f, c in mapping.items() if c is None]
        if unknown:
            raise DataError(
                f"folder(s) {', '.join(map(repr, unknown))} are not one of the tumour classes "
                f"{', '.join(CANONICAL_CLASSES)} under any spelling we know; if your dataset has other classes, "
                "list them in the config (data.classes, e.g. --set 'data.classes=[cat,dog]')"
            )
    else:
        wanted = {class_key(c): c for c in classes}
        mapping = {}
        for f in folders:
            c = wanted.get(class_key(f))
            if c is None:
                canon = canonical_class(f)
                c = next((w for w in classes if canonical_class(w) == canon), None) if canon else None
            if c is None:
                raise DataError(f"folder {f!r} matches none of the configured classes: {', '.join(classes)}")
            mapping[f] = c
    clash = {c for c in mapping.values() if list(mapping.values()).count(c) > 1}
    if clash:
        both = [f for f, c in mapping.items() if c in clash]
        raise DataError(f"folders {', '.join(map(repr, both))} all mean class {sorted(clash)[0]!r}; keep one")
    return mapping


def list_images(root: str | Path | Sequence[str | Path], classes: tuple[str, ...] | None = None,
                require_all: bool = True, scan_options: ScanOptions = ScanOptions()) -> ImageList:
    """List the images of a folder of class sub-folders, or of several (``root`` a list; see parse_sources):
    every image keeps the name of the collection it came from in ``sources``.

    ``classes=None`` means the four canonical tumour classes in their fixed order. ``require_all=False`` lets an
    evaluation folder hold only some of the classes; with several folders, each may hold some of them as long as
    together they hold all. Scanner files list one entry per 2-D slice that ``scan_options.slices`` keeps
    (``<file>#<slice index>``, or ``<file>@<series tag>#<position>`` for the files of a DICOM series; see
    scanners/).
    """
    sources = parse_sources(root)
    parts = [_list_folder(s.path, classes, scan_options) for s in sources]
    class_names = tuple(classes) if classes is not None else CANONICAL_CLASSES
    found = {c for _, mapping, _ in parts for c in mapping.values()}
    missing = [c for c in class_names if c not in found]
    if missing and require_all:
        verb = " together have" if len(sources) > 1 else " has"
        folders = sorted({f for _, mapping, _ in parts for f in mapping})
        raise DataError(
            f"{', '.join(str(s.path) for s in sources)}{verb} no folder for class(es) {', '.join(missing)}; "
            f"found folders {', '.join(folders)}. Add them, or list the classes you have in data.classes"
        )
    paths = tuple(p for ids, _, _ in parts for p in ids)
    labels = np.concatenate([lab for _, _, lab in parts]).astype(np.int64)
    names = tuple(s.name for s, (ids, _, _) in zip(sources, parts, strict=True) for _ in ids)
    mapping = {f: c for _, m, _ in parts for f, c in m.items()}
    return ImageList(sources[0].path, paths, labels, class_names, mapping, scan_options, names)


def _list_folder(root: Path, classes: tuple[str, ...] | None,
                 scan_options: ScanOptions) -> tuple[list[str], dict[str, str], np.ndarray]:
    """(image ids, folder -> class, labels) of one folder of class sub-folders."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass --data DIR, a folder with one sub-folder per class")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class sub-folders; expected e.g. {root}/glioma/*.jpg, {root}/notumor/*.jpg")
    mapping = match_folders(folders, classes)
    class_names = tuple(classes) if classes is not None else CANONICAL_CLASSES
    paths, labels = [], []
    for folder in folders:
        ids = expand(_image_files(root / folder), scan_options)
        paths += ids
        labels += [class_names.index(mapping[folder])] * len(ids)
    if not paths:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS) + list(SCANNER_EXTENSIONS))
        raise DataError(f"no image files ({kinds}) under {root}")
    return paths, mapping, np.asarray(labels, dtype=np.int64)


def find_images(sources: Sequence[str | Path], scan_options: ScanOptions = ScanOptions()) -> list[str]:
    """Image ids from files and folders (a folder contributes its image files, recursively, sorted); a scanner
    file or a DICOM series contributes the ids of the slices ``scan_options`` keeps (scanners.expand)."""
    files = []
    for s in sources:
        p = Path(s)
        files += _image_files(p) if p.is_dir() else [p]  # a missing or broken file is reported when it is read
    return expand(files, scan_options)  # together: a series given file by file (series/*) is still one volume


def _image_files(folder: Path) -> list[Path]:
    """The image and scanner files under ``folder``, recursively, sorted by path."""
    return sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")
                  and (f.suffix.lower() in IMAGE_EXTENSIONS or file_kind(f)))




@dataclass
class LoadedImages:
    """Decoded images ready for training: the in-memory uint8 cache plus what was skipped."""

    paths: list[str]
    labels: np.ndarray  # (n,) int
    images: np.ndarray  # (n, size, size, channels) uint8
    digests: list[str]  # pixel hash per image, for exact-duplicate groups
    class_names: tuple[str, ...]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    stats: list[InputStats] = field(default_factory=list)  # per image, for the gate's input checks
    sources: list[str] = field(default_factory=list)  # per image: its collection's name (ImageList.sources)

    def subset(self, idx: np.ndarray) -> LoadedImages:
        return LoadedImages(
            [self.paths[i] for i in idx], self.labels[idx], self.images[idx],
            [self.digests[i] for i in idx], self.class_names, [],
            [self.stats[i] for i in idx] if self.stats else [],
            [self.sources[i] for i in idx] if self.sources else [],
        )

    @property
    def source_names(self) -> list[str]:
        """The collections, in the order they were given."""
        return list(dict.fromkeys(self.sources))


def map_images(paths: Sequence[str], read: Callable[[str], Any], workers: int | None = None,
               reporter: Reporter | None = None) -> list[Any]:
    """``read(path)`` for every path, in order, on threads (Pillow's decoder releases the GIL): the one loop
    that decodes a folder. A file ``read`` refuses with a DataError gives its reason (a str) instead of a result.
    ``reporter.advance`` hears every 64 images and the rest at the end (the caller ``start``s the stage)."""

    def work(path: str):
        try:
            return read(path)
        except DataError as e:
            return str(e)

    results: list[Any] = []
    reported = 0
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        for i, r in enumerate(pool.map(work, paths), 1):
            results.append(r)
            if reporter is not None and (i % 64 == 0 or i == len(paths)):
                reporter.advance(i - reported)
                reported = i
    return results


def load_images(listing: ImageList, spec: ImageSpec, workers: int | None = None) -> LoadedImages:
    """Decode every listed image once, skipping unreadable files."""

    def read(path: str):
        img = decode(path, scan_options=listing.scan_options)
        return spec.prepare(img)[0], pixel_digest(img), InputStats.of(img)

    results = map_images(listing.paths, read, workers)
    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    skipped = [(listing.paths[i], r) for i, r in enumerate(results) if isinstance(r, str)]
    if not keep:
        raise DataError(f"none of the {len(listing.paths)} image files under {listing.root} could be read")
    images = np.stack([results[i][0] for i in keep])
    return LoadedImages(
        [listing.paths[i] for i in keep], listing.labels[keep], images,
        [results[i][1] for i in keep], listing.class_names, skipped, [results[i][2] for i in keep],
        [listing.sources[i] for i in keep] if listing.sources else [],
    )
