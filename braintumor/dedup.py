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


def phashes(images: np.ndarray) -> np.ndarray:
    """64-bit perceptual hash (imagehash.phash, DCT of a 32x32 gray thumbnail) per (n, h, w, c) uint8 image."""
    import imagehash
    from PIL import Image

    out = np.empty(len(images), dtype=np.uint64)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        bits = imagehash.phash(pil).hash.flatten()
        out[i] = np.packbits(bits).view(">u8")[0]
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


def near_pairs(hashes: np.ndarray, threshold: int, block: int = 2048) -> np.ndarray:
    """(m, 2) index pairs i < j whose hashes are within ``threshold`` bits, computed in blocks to bound memory."""
    found = []
    for start in range(0, len(hashes), block):
        d = hamming(hashes[start:start + block], hashes)
        i, j = np.nonzero(d <= threshold)
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def near_groups(hashes: np.ndarray, threshold: int, exact: np.ndarray | None = None) -> np.ndarray:
    """Group id per image joining every pair within ``threshold`` bits (transitively), plus exact groups."""
    pairs = near_pairs(hashes, threshold)
    if exact is not None:
        order = np.argsort(exact, kind="stable")
        same = exact[order][1:] == exact[order][:-1]
        pairs = np.concatenate([pairs, np.stack([order[:-1][same], order[1:][same]], axis=1)])
    return _union_find_groups(len(hashes), pairs)


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
