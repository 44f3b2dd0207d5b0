"""Duplicate images: exact (same decoded pixels) and near (perceptual hash within a Hamming distance).

Groups feed the validation split and k-fold folds (copies of one image never straddle a boundary) and `eda`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image
from scipy.cluster.hierarchy import DisjointSet
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .config import DEFAULT_NEAR_THRESHOLD
from .data import ImageList, decode, is_gray, list_images, map_images, pixel_digest
from .progress import Reporter
from .scanners import ScanOptions, file_kind, split_id


def exact_groups(digests: Sequence[str]) -> np.ndarray:
    """Group id per image: images with the same pixel digest share an id (ids number first appearances)."""
    ids: dict[str, int] = {}
    return np.asarray([ids.setdefault(d, len(ids)) for d in digests], dtype=np.int64)


# A pHash sets the 32 of its 64 bits that lie above their median (barring ties), so the distance between two
# hashes is almost always even: thresholds 1, 3, 5 ... behave like the even number below them.
NO_NEIGHBOUR = 255  # distance reported for an image with nothing to compare against


def phash64(img) -> np.uint64:
    """imagehash.phash of a PIL image (DCT of a 32x32 gray thumbnail) as one unsigned 64-bit integer."""
    return np.packbits(imagehash.phash(img).hash.flatten()).view(">u8")[0].astype(np.uint64)


def phashes(images: np.ndarray) -> np.ndarray:
    """64-bit perceptual hash (imagehash.phash via phash64) per (n, h, w, c) uint8 image."""
    out = np.empty(len(images), dtype=np.uint64)
    for i, img in enumerate(images):
        out[i] = phash64(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img))
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two uint64 hash vectors: (len(a), len(b)) uint8."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.uint8)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected component per image of the graph whose edges are ``pairs`` (scipy), numbered by their
    lowest member: the group of image 0 is 0, the next image not in it starts group 1, and so on."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs), dtype=bool), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def pairs_within(hashes: np.ndarray, threshold: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(m, 2) index pairs i < j whose hashes are within ``threshold`` bits, and their (m,) distances.

    Computed in blocks of rows to bound memory: one block is (block, n) uint8.
    """
    found, dists = [], []
    for start in range(0, len(hashes), block):
        d = hamming(hashes[start:start + block], hashes)
        i, j = np.nonzero(d <= threshold)
        keep = i + start < j
        found.append(np.stack([i[keep] + start, j[keep]], axis=1))
        dists.append(d[i[keep], j[keep]])
    if not found:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.uint8)
    return np.concatenate(found).astype(np.int64), np.concatenate(dists)


def near_pairs(hashes: np.ndarray, threshold: int, block: int = 2048) -> np.ndarray:
    """(m, 2) index pairs i < j whose hashes are within ``threshold`` bits (pairs_within, no distances)."""
    return pairs_within(hashes, threshold, block)[0]


def groups_from_pairs(n: int, pairs: np.ndarray, exact: np.ndarray | None = None) -> np.ndarray:
    """Group id per image joining every given pair (transitively) and, if given, every exact group."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if exact is not None:
        order = np.argsort(exact, kind="stable")
        same = exact[order][1:] == exact[order][:-1]
        pairs = np.concatenate([pairs, np.stack([order[:-1][same], order[1:][same]], axis=1)])
    return _components(n, pairs)


def near_groups(hashes: np.ndarray, threshold: int, exact: np.ndarray | None = None,
                owners: Sequence[str | None] | None = None, blank: np.ndarray | None = None) -> np.ndarray:
    """Group id per image joining every pair within ``threshold`` bits (transitively), plus exact groups.

    ``owners`` (per image, e.g. the patient data.groups names; None where unknown): a near link never puts two
    owners in one group, not even through a chain of images without one, and nor do identical ``blank``
    (uniform) images (owned_groups).
    """
    if owners is None:
        return groups_from_pairs(len(hashes), near_pairs(hashes, threshold), exact)
    pairs, dist = pairs_within(hashes, threshold)
    return owned_groups(len(hashes), pairs[np.argsort(dist, kind="stable")], owners, exact, blank)


def owned_groups(n: int, pairs: np.ndarray, owners: Sequence[str | None], exact: np.ndarray | None = None,
                 blank: np.ndarray | None = None) -> np.ndarray:
    """Group id per image (numbered by first appearance): every exact group joined, then each pair in the given
    order (closest first) unless it would bring an owner into a group that holds a different one.

    Two patients' scans are different scans however alike their pHashes, so a near link is no evidence that
    two patients' images are copies; a chain of near links (slice ~ slice ~ slice, through unowned images
    too) joined 28 patients into one group on the LGG slices (benchmarks/split_groups.md). Identical pixels
    are a copy whoever they are filed under, so exact groups join across owners, except ``blank`` ones
    (``uniform`` images, one value throughout: empty slices are identical because nothing is in them; 21 black
    LGG slices of 12 patients would otherwise join those 12), which are held to the owner rule too.
    Union-find by hand on scipy's DisjointSet: connected_components cannot refuse an edge.
    """
    sets = DisjointSet(range(n))
    held = {i: frozenset() if o is None else frozenset([o]) for i, o in enumerate(owners)}  # owners per root

    def join(a: int, b: int, check: bool) -> None:
        ra, rb = sets[a], sets[b]
        if ra == rb or (check and not (held[ra] <= held[rb] or held[rb] <= held[ra])):
            return
        sets.merge(ra, rb)
        held[sets[ra]] = held.pop(ra) | held.pop(rb)

    if exact is not None:
        for members in repeated(exact):
            for b in members[1:]:
                join(members[0], b, check=blank is not None and bool(blank[members[0]]))
    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
        join(int(a), int(b), check=True)
    return exact_groups([sets[i] for i in range(n)])


def repeated(ids: np.ndarray) -> list[np.ndarray]:
    """The indices of every id that occurs more than once, one array per id (in first-appearance order)."""
    ids = np.asarray(ids)
    order = np.argsort(ids, kind="stable")
    cuts = np.flatnonzero(np.diff(ids[order])) + 1
    return [m for m in np.split(order, cuts) if len(m) > 1]


def nearest(query: np.ndarray, reference: np.ndarray | None = None,
            block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash: the distance in bits to its nearest reference hash, and that hash's index.

    ``reference=None`` searches the query set itself, leaving out each image's own entry. An image with
    nothing to compare against gets distance NO_NEIGHBOUR and index -1.
    """
    within = reference is None
    reference = query if within else reference
    dist = np.full(len(query), NO_NEIGHBOUR, dtype=np.uint8)
    index = np.full(len(query), -1, dtype=np.int64)
    if len(reference) == 0 or (within and len(query) < 2):
        return dist, index
    for start in range(0, len(query), block):
        d = hamming(query[start:start + block], reference)
        if within:
            rows = np.arange(len(d))
            d[rows, rows + start] = NO_NEIGHBOUR
        index[start:start + len(d)] = d.argmin(axis=1)
        dist[start:start + len(d)] = d.min(axis=1)
    return dist, index


def exact_matches(query: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """Per query pixel digest, the index of the first reference image with the same pixels, or -1."""
    first: dict[str, int] = {}
    for i, d in enumerate(reference):
        first.setdefault(d, i)
    return np.asarray([first.get(d, -1) for d in query], dtype=np.int64)


def duplicate_groups(digests: Sequence[str], images: np.ndarray, mode: str, threshold: int = 2,
                     owners: Sequence[str | None] | None = None) -> np.ndarray:
    """Group ids for splitting: 'none' (every image alone), 'exact' or 'near' (exact plus perceptual; with
    ``owners``, the patient per image or None, a near link never joins two patients: near_groups)."""
    if mode == "none":
        return np.arange(len(digests), dtype=np.int64)
    exact = exact_groups(digests)
    if mode == "exact":
        return exact
    return near_groups(phashes(images), threshold, exact, owners, None if owners is None else uniform(images))


def join_groups(groups: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Group ids that also join every image sharing a key (the slices of one scanner volume), transitively."""
    groups = np.asarray(groups, dtype=np.int64)
    codes = np.unique(np.asarray(list(keys), dtype=object).astype(str), return_inverse=True)[1].ravel()
    order = np.argsort(groups, kind="stable")
    same = groups[order][1:] == groups[order][:-1]
    return groups_from_pairs(len(groups), np.stack([order[:-1][same], order[1:][same]], axis=1), codes)


def uniform(images: np.ndarray) -> np.ndarray:
    """(n,) bool: the image has one pixel value throughout (an empty slice), for (n, h, w, c) images."""
    flat = np.asarray(images).reshape(len(images), -1)
    return flat.min(axis=1, initial=0) == flat.max(axis=1, initial=0)


def copies_across_owners(exact: np.ndarray, owners: Sequence[str | None],
                         blank: np.ndarray | None = None) -> list[list[int]]:
    """The exact groups (identical pixels) whose images name more than one owner (patient), as index lists;
    ``blank`` (uniform) groups left out (owned_groups does not join them)."""
    return [m.tolist() for m in repeated(exact) if len({owners[i] for i in m} - {None}) > 1
            and not (blank is not None and blank[m[0]])]


# A chain guard: one duplicate group above both bounds is taken for near links chained transitively, not copies.
# 50 is more copies of one image than a collection republishes (at 2 bits the largest group of the Kaggle training
# set holds 22 images, of the four shared collections together 52; at 4 bits 350: benchmarks/split_groups.md); 2%
# is where one group alone moves a 20% validation share by a tenth of itself, so the bound grows with the dataset
# (3,000 images: 60; 12,000: 240).
CHAIN_MIN_IMAGES, CHAIN_SHARE = 50, 0.02


def largest_group(groups: np.ndarray) -> tuple[int, int]:
    """(id, size) of the largest group; (-1, 0) when there are no images."""
    if len(groups) == 0:
        return -1, 0
    counts = np.bincount(groups)
    return int(counts.argmax()), int(counts.max())


CHAIN_FIX = ("lower data.near_threshold, or set data.group_duplicates: exact (identical pixels only), or name the "
             "patients with data.groups (a near link never joins two named patients)")


def chain_warning(groups: np.ndarray, fix: str = CHAIN_FIX) -> str | None:
    """A plain sentence when the largest duplicate group holds more than CHAIN_MIN_IMAGES images and more than
    CHAIN_SHARE of them (near links chained into one group, which a split can only keep on one side), ending
    with ``fix`` (what to change); None otherwise."""
    _, size = largest_group(groups)
    if size <= CHAIN_MIN_IMAGES or size <= CHAIN_SHARE * len(groups):
        return None
    return (f"one duplicate group holds {size} of the {len(groups)} images ({size / len(groups):.0%}): pHash "
            "neighbours chained into one group (a ~ b ~ c ...), not copies of one image, and every split keeps "
            f"the whole group on one side, which skews what is held out; {fix}")


def count_groups(groups: np.ndarray) -> tuple[int, int]:
    """(groups holding more than one image, images in those groups) for a group id per image."""
    counts = np.bincount(groups) if len(groups) else np.zeros(0, dtype=np.int64)
    return int((counts > 1).sum()), int(counts[counts > 1].sum())


def multi_member_groups(groups: np.ndarray) -> int:
    """How many groups hold more than one image."""
    return count_groups(groups)[0]






@dataclass
class DatasetSummary:
    """One folder of class sub-folders (an EDA split such as train or test), read once: a record per readable
    image, and the unreadable files. Not a train/validation split: ``splits.py`` makes those."""

    name: str
    root: Path
    class_names: tuple[str, ...]
    paths: list[str]
    labels: np.ndarray  # (n,) int
    digests: list[str]  # hash of the decoded pixels: equal only for identical images
    hashes: np.ndarray  # (n,) uint64 pHash
    means: np.ndarray  # (n,) mean pixel value, 0-255
    sizes: list[tuple[int, int]]  # (width, height)
    colour: list[str]  # 'grayscale' (also grayscale stored as RGB) or 'colour'
    stored_modes: list[str]  # Pillow mode in the file: L, RGB, P, I;16 ...
    formats: list[str]  # JPEG, PNG ...
    file_bytes: np.ndarray  # (n,) int
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    sources: list[str] = field(default_factory=list)  # per image: the collection (--data folder) it came from
    measures: list[dict] = field(default_factory=list)  # per image: what the ``measure`` returned, if any

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def source_names(self) -> list[str]:
        return list(dict.fromkeys(self.sources))


@dataclass
class Matches:
    """For each image of one split, its nearest image in another (reference) split."""

    nearest: np.ndarray  # (n,) index into the reference split, -1 when it is empty
    distance: np.ndarray  # (n,) pHash bits to that image
    exact: np.ndarray  # (n,) index of a reference image with identical pixels, or -1

    def copies(self, threshold: int) -> np.ndarray:
        """(n,) bool: identical pixels, or a pHash within ``threshold`` bits of some reference image."""
        return (self.exact >= 0) | (self.distance <= threshold)


Measure = Callable[[Image.Image], dict]  # more per-image numbers from the decoded image (e.g. confounds.measure)


def _inspect(path: str, scan_options: ScanOptions = ScanOptions(), measure: Measure | None = None) -> dict[str, Any]:
    """Everything the report needs from one file; raises DataError with the reason if it cannot be read."""
    img = decode(path, scan_options=scan_options)  # DataError with the reason if unreadable
    file = split_id(path)[0]  # a scanner slice id names its file
    kind = file_kind(file)
    if kind:  # a slice of scanner values, windowed to 8 bits; the bytes are the whole file's
        stored_mode, fmt = "scanner", {"dicom": "DICOM", "nifti": "NIfTI"}[kind]
    else:
        with Image.open(path) as raw:  # header only: what the file stores before decode() converts it
            stored_mode, fmt = raw.mode, raw.format or Path(path).suffix.lstrip(".").upper()
    arr = np.asarray(img)
    gray = is_gray(img)
    return {
        "digest": pixel_digest(img), "hash": phash64(img), "mean": float(arr.mean()), "size": img.size,
        "colour": "grayscale" if gray else "colour", "stored_mode": stored_mode, "format": fmt,
        "bytes": os.path.getsize(file), "measure": measure(img) if measure else None,
    }


def summarize_listing(listing: ImageList, name: str, workers: int | None = None,
                      reporter: Reporter | None = None, measure: Measure | None = None) -> DatasetSummary:
    """Read every listed image once (data.map_images); unreadable files apart; ``measure`` adds per-image
    numbers from the same decoded image (DatasetSummary.measures). ``reporter`` hears a stage "reading NAME"."""
    if reporter is not None:
        reporter.start(len(listing.paths), f"reading {name}")
    results = map_images(listing.paths, lambda p: _inspect(p, listing.scan_options, measure), workers, reporter)
    ok = [i for i, r in enumerate(results) if isinstance(r, dict)]
    recs = [results[i] for i in ok]
    return DatasetSummary(
        name=name, root=listing.root, class_names=tuple(listing.class_names),
        paths=[listing.paths[i] for i in ok], labels=np.asarray(listing.labels)[ok].astype(np.int64),
        digests=[r["digest"] for r in recs], hashes=np.asarray([r["hash"] for r in recs], dtype=np.uint64),
        means=np.asarray([r["mean"] for r in recs], dtype=np.float64), sizes=[r["size"] for r in recs],
        colour=[r["colour"] for r in recs], stored_modes=[r["stored_mode"] for r in recs],
        formats=[r["format"] for r in recs],
        file_bytes=np.asarray([r["bytes"] for r in recs], dtype=np.int64),
        unreadable=[(listing.paths[i], r) for i, r in enumerate(results) if not isinstance(r, dict)],
        sources=[listing.source_of(i) for i in ok],
        measures=[r["measure"] for r in recs] if measure else [],
    )


def summarize_folder(root: str | Path | Sequence[str | Path], name: str, classes: tuple[str, ...] | None = None,
                     workers: int | None = None, reporter: Reporter | None = None,
                     scan_options: ScanOptions = ScanOptions(), measure: Measure | None = None) -> DatasetSummary:
    """List and read a folder of class sub-folders, or several (each image keeps its source); a missing class is
    reported, not refused."""
    listing = list_images(root, classes, require_all=False, scan_options=scan_options)
    return summarize_listing(listing, name, workers, reporter, measure)


def match(query: DatasetSummary, reference: DatasetSummary) -> Matches:
    """Nearest reference image (pHash distance) and exact pixel copy, for every image of ``query``."""
    distance, index = nearest(query.hashes, reference.hashes)
    return Matches(index, distance, exact_matches(query.digests, reference.digests))


def copies_of(reference_dir: str | Path, paths: Sequence[str], classes: tuple[str, ...] | None = None,
              threshold: int = DEFAULT_NEAR_THRESHOLD, workers: int | None = None,
              scan_options: ScanOptions = ScanOptions()) -> tuple[np.ndarray, list[dict]]:
    """Which of ``paths`` are exact or near copies of an image under ``reference_dir`` (test vs training).

    ``classes`` maps the reference folder's sub-folders as list_images does. Returns a (len(paths),) bool
    mask (True: a copy) and one row per copy: path, copy_of (the matching reference path), distance in bits
    and kind ('exact' or 'near'). Unreadable files are never marked.
    """
    reference = summarize_folder(reference_dir, "reference", classes, workers, scan_options=scan_options)
    listing = ImageList(Path("."), tuple(paths), np.zeros(len(paths), np.int64), ("any",), {}, scan_options)
    query = summarize_listing(listing, "query", workers)
    m = match(query, reference)
    hit = m.copies(threshold)
    position = {p: i for i, p in enumerate(paths)}
    mask = np.zeros(len(paths), dtype=bool)
    rows = []
    for i in np.flatnonzero(hit):
        mask[position[query.paths[i]]] = True
        exact = m.exact[i] >= 0
        source = reference.paths[m.exact[i] if exact else m.nearest[i]]
        rows.append({"path": query.paths[i], "copy_of": source, "distance": int(m.distance[i]),
                     "kind": "exact" if exact else "near"})
    return mask, rows
