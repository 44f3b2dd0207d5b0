"""Duplicate images: exact (same decoded pixels) and near (perceptual hash within a Hamming distance).

Groups feed the validation split and k-fold folds (copies of one image never straddle a boundary) and `eda`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def exact_groups(digests: Sequence[str]) -> np.ndarray:
    """Group id per image: images with the same pixel digest share an id (ids number first appearances)."""
    ids: dict[str, int] = {}
    return np.asarray([ids.setdefault(d, len(ids)) for d in digests], dtype=np.int64)


# A pHash sets the 32 of its 64 bits that lie above their median (barring ties), so the distance between two
# hashes is almost always even: thresholds 1, 3, 5 ... behave like the even number below them.
NO_NEIGHBOUR = 255  # distance reported for an image with nothing to compare against


def phash64(img) -> np.uint64:
    """imagehash.phash of a PIL image (DCT of a 32x32 gray thumbnail) as one unsigned 64-bit integer."""
    import imagehash

    return np.packbits(imagehash.phash(img).hash.flatten()).view(">u8")[0].astype(np.uint64)


def phashes(images: np.ndarray) -> np.ndarray:
    """64-bit perceptual hash (imagehash.phash via phash64) per (n, h, w, c) uint8 image."""
    from PIL import Image

    out = np.empty(len(images), dtype=np.uint64)
    for i, img in enumerate(images):
        out[i] = phash64(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img))
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two uint64 hash vectors: (len(a), len(b)) uint8."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.uint8)


def _union_find_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.asarray([find(i) for i in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


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
    return _union_find_groups(n, pairs)


def near_groups(hashes: np.ndarray, threshold: int, exact: np.ndarray | None = None) -> np.ndarray:
    """Group id per image joining every pair within ``threshold`` bits (transitively), plus exact groups."""
    return groups_from_pairs(len(hashes), near_pairs(hashes, threshold), exact)


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


def duplicate_groups(digests: Sequence[str], images: np.ndarray, mode: str, threshold: int = 2) -> np.ndarray:
    """Group ids for splitting: 'none' (every image alone), 'exact' or 'near' (exact plus perceptual)."""
    if mode == "none":
        return np.arange(len(digests), dtype=np.int64)
    exact = exact_groups(digests)
    if mode == "exact":
        return exact
    return near_groups(phashes(images), threshold, exact)


def multi_member_groups(groups: np.ndarray) -> int:
    """How many groups hold more than one image."""
    return int((np.bincount(groups) > 1).sum()) if len(groups) else 0
