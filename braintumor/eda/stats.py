"""Dataset statistics for `eda` (pure: per-image records in, dicts out): class balance, pixel statistics, image
properties, per-source figures, duplicate groups within and across splits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import dedup
from ..dedup import DatasetSummary, match

REPORT_DISTANCES = (0, 2, 4, 8)  # counts at these distances go into summary.json


def class_counts(split: DatasetSummary) -> dict[str, int]:
    counts = np.bincount(split.labels, minlength=len(split.class_names))
    return {c: int(n) for c, n in zip(split.class_names, counts, strict=True)}


def imbalance_ratio(counts: dict[str, int]) -> float | None:
    """Largest class over smallest non-empty class; None when no class has images."""
    present = [n for n in counts.values() if n > 0]
    return max(present) / min(present) if present else None


def pixel_stats(split: DatasetSummary) -> dict[str, dict[str, float | int | None]]:
    """Per class: mean and standard deviation of the per-image mean pixel value."""
    out = {}
    for k, c in enumerate(split.class_names):
        v = split.means[split.labels == k]
        out[c] = {"n": int(len(v)), "mean": float(v.mean()) if len(v) else None,
                  "std": float(v.std()) if len(v) else None}
    return out


def property_stats(split: DatasetSummary, top: int = 8) -> dict[str, Any]:
    """Image sizes (most common first), colour, stored mode, format and file size."""
    sizes = Counter(f"{w}x{h}" for w, h in split.sizes)
    b = split.file_bytes
    return {
        "sizes": dict(sizes.most_common(top)),
        "distinct_sizes": len(sizes),
        "width": _range([w for w, _ in split.sizes]), "height": _range([h for _, h in split.sizes]),
        "colour": dict(Counter(split.colour).most_common()),
        "stored_mode": dict(Counter(split.stored_modes).most_common()),
        "format": dict(Counter(split.formats).most_common()),
        "file_bytes": {"min": int(b.min()), "median": int(np.median(b)), "mean": float(b.mean()),
                       "max": int(b.max())} if len(b) else None,
    }


def _range(values: list[int]) -> dict[str, int] | None:
    return {"min": int(min(values)), "max": int(max(values))} if values else None


def within_duplicates(split: DatasetSummary, threshold: int,
                      distances: Sequence[int] = REPORT_DISTANCES) -> dict[str, Any]:
    """Exact and near duplicate groups inside one split, and the counts at each reporting distance."""
    exact = dedup.exact_groups(split.digests)
    pairs, dist = dedup.pairs_within(split.hashes, max([threshold, *distances]))
    out: dict[str, Any] = {}
    out["exact_groups"], out["exact_images"] = dedup.count_groups(exact)
    near = dedup.groups_from_pairs(len(split), pairs[dist <= threshold], exact)
    out["near_groups"], out["near_images"] = dedup.count_groups(near)
    by = {}
    for d in distances:
        g, n = dedup.count_groups(dedup.groups_from_pairs(len(split), pairs[dist <= d], exact))
        by[str(d)] = {"groups": g, "images": n, "pairs": int((dist <= d).sum()),
                      "redundant": n - g}  # images a de-duplicated copy of the split would drop
    out["by_distance"] = by
    return out


def cross_split(test: DatasetSummary, train: DatasetSummary, threshold: int,
                distances: Sequence[int] = REPORT_DISTANCES) -> dict[str, Any]:
    """Leakage both ways: test images with a training copy, and training images with a test copy."""
    t, r = match(test, train), match(train, test)
    return {
        "cross_split_exact": int((t.exact >= 0).sum()),
        "cross_split_near": int(t.copies(threshold).sum()),
        "cross_split_by_distance": {str(d): int((t.distance <= d).sum()) for d in distances},
        "train_images_with_test_copy": {"exact": int((r.exact >= 0).sum()),
                                        "near": int(r.copies(threshold).sum())},
    }


def source_stats(split: DatasetSummary, combined_near: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per source (collection) of a split read from several --data folders: images, images per class, mean pixel
    value per class, colour, and how many of its images have a copy (near group) in another source: the
    collection cues a model could learn instead of the tumour."""
    sources = np.asarray(split.sources)
    out: dict[str, dict[str, Any]] = {}
    for name in split.source_names:
        idx = np.flatnonzero(sources == name)
        part = DatasetSummary(name, split.root, split.class_names, [split.paths[i] for i in idx], split.labels[idx],
                     [split.digests[i] for i in idx], split.hashes[idx], split.means[idx],
                     [split.sizes[i] for i in idx], [split.colour[i] for i in idx],
                     [split.stored_modes[i] for i in idx], [split.formats[i] for i in idx], split.file_bytes[idx])
        row: dict[str, Any] = {"images": len(part), "per_class": class_counts(part), "pixel_mean": pixel_stats(part),
                               "colour": dict(Counter(part.colour).most_common()),
                               "sizes": dict(Counter(f"{w}x{h}" for w, h in part.sizes).most_common(3))}
        if combined_near is not None:
            elsewhere = set(combined_near[sources != name].tolist())
            row["copies_in_other_sources"] = int(np.isin(combined_near[idx], list(elsewhere)).sum())
        out[name] = row
    return out


@dataclass
class Combined:
    """All splits side by side, with duplicate groups over the lot."""

    splits: list[DatasetSummary]
    paths: list[str]
    split_of: np.ndarray  # (n,) index into splits
    labels: np.ndarray
    digests: list[str]
    hashes: np.ndarray
    exact: np.ndarray  # (n,) exact group id
    near: np.ndarray  # (n,) near group id at the threshold (exact groups joined in)

    @classmethod
    def of(cls, splits: list[DatasetSummary], threshold: int) -> Combined:
        digests = [d for s in splits for d in s.digests]
        hashes = np.concatenate([s.hashes for s in splits]) if splits else np.zeros(0, np.uint64)
        exact = dedup.exact_groups(digests)
        return cls(
            splits, [p for s in splits for p in s.paths],
            np.concatenate([np.full(len(s), i) for i, s in enumerate(splits)]).astype(np.int64),
            np.concatenate([s.labels for s in splits]).astype(np.int64), digests, hashes, exact,
            dedup.near_groups(hashes, threshold, exact),
        )


def duplicate_rows(c: Combined) -> list[dict[str, Any]]:
    """One row per image in a multi-member near group, groups numbered from 1.

    ``kind`` is 'exact' when another member of the group has identical pixels, else 'near';
    ``cross_split`` says the group spans splits (leakage).
    """
    sizes = np.bincount(c.near)
    exact_sizes = np.bincount(c.exact)
    multi = [g for g in np.unique(c.near) if sizes[g] > 1]
    rows = []
    for number, g in enumerate(multi, 1):
        members = np.flatnonzero(c.near == g)
        spans = len(set(c.split_of[members].tolist())) > 1
        for i in members:
            s = c.splits[c.split_of[i]]
            rows.append({"group": number, "path": c.paths[i], "split": s.name,
                         "kind": "exact" if exact_sizes[c.exact[i]] > 1 else "near",
                         "class": s.class_names[c.labels[i]], "exact_group": int(c.exact[i]),
                         "cross_split": spans})
    return rows


def example_pairs(c: Combined, distances: Sequence[int], per_distance: int, seed: int,
                  ) -> dict[int, list[tuple[int, int, bool]]]:
    """Seeded example pairs (i, j, identical pixels) at each distance; pairs whose pixels differ first."""
    rng = np.random.default_rng(seed)
    pairs, dist = dedup.pairs_within(c.hashes, max(distances)) if len(distances) else (np.zeros((0, 2)), [])
    out = {}
    for d in distances:
        at = pairs[dist == d]
        identical = np.asarray([c.digests[i] == c.digests[j] for i, j in at], dtype=bool)
        order = np.concatenate([rng.permutation(np.flatnonzero(~identical)),
                                rng.permutation(np.flatnonzero(identical))])
        out[d] = [(int(at[k][0]), int(at[k][1]), bool(identical[k])) for k in order[:per_distance]]
    return out


EDA_CHAIN_FIX = (f"try a lower --near-threshold here; for train and kfold {dedup.CHAIN_FIX}")


def summarize(splits: list[DatasetSummary], threshold: int, distances: Sequence[int] = REPORT_DISTANCES,
              combined: Combined | None = None) -> dict[str, Any]:
    """Everything summary.json holds (the test split, if any, is the second)."""
    combined = combined or Combined.of(splits, threshold)
    s: dict[str, Any] = {
        "splits": {sp.name: str(sp.root) for sp in splits},
        "class_names": list(splits[0].class_names),
        "images": {sp.name: len(sp) for sp in splits},
        "per_class": {sp.name: class_counts(sp) for sp in splits},
    }
    s["class_share"] = {n: {c: (v / max(1, sum(cc.values()))) for c, v in cc.items()}
                        for n, cc in s["per_class"].items()}
    s["imbalance_ratio"] = {n: imbalance_ratio(cc) for n, cc in s["per_class"].items()}
    s["pixel_mean"] = {sp.name: pixel_stats(sp) for sp in splits}
    s["properties"] = {sp.name: property_stats(sp) for sp in splits}
    s["unreadable"] = [{"split": sp.name, "path": p, "reason": why}
                       for sp in splits for p, why in sp.unreadable]
    if len(splits[0].source_names) > 1:  # several --data folders: the same figures per collection
        s["sources"] = source_stats(splits[0], combined.near[combined.split_of == 0])
    s["near_threshold"] = threshold
    # groups over all splits together: what a de-duplicated dataset would keep one image of
    s["exact_duplicate_groups"], s["exact_duplicate_images"] = dedup.count_groups(combined.exact)
    s["near_duplicate_groups"], s["near_duplicate_images"] = dedup.count_groups(combined.near)
    s["largest_near_group"] = dedup.largest_group(combined.near)[1]
    s["duplicate_chain"] = dedup.chain_warning(combined.near, fix=EDA_CHAIN_FIX)
    s["within_split"] = {sp.name: within_duplicates(sp, threshold, distances) for sp in splits}
    if len(splits) > 1:
        s.update(cross_split(splits[1], splits[0], threshold, distances))
    else:
        s.update({"cross_split_exact": None, "cross_split_near": None, "cross_split_by_distance": None,
                  "train_images_with_test_copy": None})
    return s

