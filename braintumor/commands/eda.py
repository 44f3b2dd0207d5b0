"""Dataset report: class counts, pixel statistics, image properties, duplicates within and across splits.

Every image is read once at full size: the decoded pixels give the exact-copy digest, the mean pixel value,
the colour check and the perceptual hash (imagehash.phash). Everything after that works on those small
per-image records; only the figures open a few files again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import dedup, plots, runs
from ..config import DEFAULT_NEAR_THRESHOLD
from ..data import decode, to_array
from ..dedup import Progress, Split, match, scan_split
from ..engine.run import Run
from ..errors import DataError
from ..plots import atomic_save_figure
from ..runs import markdown_table, write_csv_dicts

REPORT_DISTANCES = (0, 2, 4, 8)  # counts at these distances go into summary.json
MONTAGE_DISTANCES = (0, 2, 4, 6, 8, 10)  # example pairs drawn at these distances
THUMB = 112  # pixels per image in the sample grid and the montage


# ----------------------------------------------------------------------------------------------------
# Statistics (pure: records in, dicts out)


def class_counts(split: Split) -> dict[str, int]:
    counts = np.bincount(split.labels, minlength=len(split.class_names))
    return {c: int(n) for c, n in zip(split.class_names, counts, strict=True)}


def imbalance_ratio(counts: dict[str, int]) -> float | None:
    """Largest class over smallest non-empty class; None when no class has images."""
    present = [n for n in counts.values() if n > 0]
    return max(present) / min(present) if present else None


def pixel_stats(split: Split) -> dict[str, dict[str, float | int | None]]:
    """Per class: mean and standard deviation of the per-image mean pixel value."""
    out = {}
    for k, c in enumerate(split.class_names):
        v = split.means[split.labels == k]
        out[c] = {"n": int(len(v)), "mean": float(v.mean()) if len(v) else None,
                  "std": float(v.std()) if len(v) else None}
    return out


def property_stats(split: Split, top: int = 8) -> dict[str, Any]:
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


def within_duplicates(split: Split, threshold: int,
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


def cross_split(test: Split, train: Split, threshold: int, distances: Sequence[int] = REPORT_DISTANCES,
                ) -> dict[str, Any]:
    """Leakage both ways: test images with a training copy, and training images with a test copy."""
    t, r = match(test, train), match(train, test)
    return {
        "cross_split_exact": int((t.exact >= 0).sum()),
        "cross_split_near": int(t.copies(threshold).sum()),
        "cross_split_by_distance": {str(d): int((t.distance <= d).sum()) for d in distances},
        "train_images_with_test_copy": {"exact": int((r.exact >= 0).sum()),
                                        "near": int(r.copies(threshold).sum())},
    }


def source_stats(split: Split, combined_near: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per source (collection) of a split read from several --data folders: images, images per class, mean pixel
    value per class, colour, and how many of its images have a copy (near group) in another source: the
    collection cues a model could learn instead of the tumour."""
    sources = np.asarray(split.sources)
    out: dict[str, dict[str, Any]] = {}
    for name in split.source_names:
        idx = np.flatnonzero(sources == name)
        part = Split(name, split.root, split.class_names, [split.paths[i] for i in idx], split.labels[idx],
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

    splits: list[Split]
    paths: list[str]
    split_of: np.ndarray  # (n,) index into splits
    labels: np.ndarray
    digests: list[str]
    hashes: np.ndarray
    exact: np.ndarray  # (n,) exact group id
    near: np.ndarray  # (n,) near group id at the threshold (exact groups joined in)

    @classmethod
    def of(cls, splits: list[Split], threshold: int) -> Combined:
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


def summarize(splits: list[Split], threshold: int, distances: Sequence[int] = REPORT_DISTANCES,
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
    s["within_split"] = {sp.name: within_duplicates(sp, threshold, distances) for sp in splits}
    if len(splits) > 1:
        s.update(cross_split(splits[1], splits[0], threshold, distances))
    else:
        s.update({"cross_split_exact": None, "cross_split_near": None, "cross_split_by_distance": None,
                  "train_images_with_test_copy": None})
    return s


# ----------------------------------------------------------------------------------------------------
# Files


def _thumb(path: str, size: int = THUMB) -> np.ndarray:
    """A square (size, size, 3) uint8 thumbnail for figures; a gray square if the file cannot be read now."""
    try:
        return to_array(decode(path), size, 3)
    except DataError:
        return np.full((size, size, 3), 128, np.uint8)


def sample_paths(split: Split, per_class: int, seed: int) -> dict[str, list[str]]:
    """A seeded choice of ``per_class`` images of each class (fewer when a class is smaller)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, c in enumerate(split.class_names):
        idx = np.flatnonzero(split.labels == k)
        out[c] = [split.paths[i] for i in np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False))]
    return out


def write_figures(out: Path, splits: list[Split], summary: dict[str, Any], c: Combined,
                  samples_per_class: int, seed: int, montage_distances: Sequence[int] = MONTAGE_DISTANCES,
                  pairs_per_distance: int = 4) -> None:
    """class_distribution, mean_pixel_histogram, samples, near_duplicates and nearest_distance PNGs."""
    atomic_save_figure(plots.class_distribution_figure(summary["per_class"]), out / "class_distribution.png")
    means = {sp.name: {cl: sp.means[sp.labels == k] for k, cl in enumerate(sp.class_names)} for sp in splits}
    atomic_save_figure(plots.overlaid_histograms_figure(means, "mean pixel value per image (0-255)",
                                                        "mean pixel value per image, by class"),
                       out / "mean_pixel_histogram.png")
    if "sources" in summary:
        by = summary["sources"]
        atomic_save_figure(plots.class_distribution_figure({n: v["per_class"] for n, v in by.items()},
                                                           "images per class, by source"),
                           out / "class_distribution_by_source.png")
        src = np.asarray(splits[0].sources)
        sp = splits[0]
        per = {n: {cl: sp.means[(sp.labels == k) & (src == n)] for k, cl in enumerate(sp.class_names)} for n in by}
        atomic_save_figure(plots.overlaid_histograms_figure(per, "mean pixel value per image (0-255)",
                                                            "mean pixel value per image, by class, one panel per "
                                                            "source"),
                           out / "mean_pixel_histogram_by_source.png")
    chosen = sample_paths(splits[0], samples_per_class, seed)
    grid = [[_thumb(p) for p in paths] for paths in chosen.values()]
    title = f"{samples_per_class} random images per class ({splits[0].name}, seed {seed})"
    atomic_save_figure(plots.sample_grid_figure(grid, list(chosen), title), out / "samples.png")
    examples = example_pairs(c, montage_distances, pairs_per_distance, seed)
    rows = []
    for d, pairs in examples.items():
        cells = []
        for i, j, identical in pairs:
            cap = f"{_short(c, i)}\n{_short(c, j)}" + ("\nidentical pixels" if identical else "")
            cells.append((_thumb(c.paths[i]), _thumb(c.paths[j]), cap))
        rows.append((f"d = {d}" + ("  (<= threshold)" if d <= summary["near_threshold"] else ""), cells))
    title = f"example pairs by pHash distance (bits); threshold {summary['near_threshold']}"
    atomic_save_figure(plots.pair_montage_figure(rows, pairs_per_distance, title),
                       out / "near_duplicates.png")
    nn = {sp.name: dedup.nearest(sp.hashes)[0] for sp in splits}
    if len(splits) > 1:
        nn[f"{splits[1].name} -> {splits[0].name}"] = dedup.nearest(splits[1].hashes, splits[0].hashes)[0]
    atomic_save_figure(plots.distance_histogram_figure(nn, summary["near_threshold"]),
                       out / "nearest_distance.png")


def _short(c: Combined, i: int) -> str:
    s = c.splits[c.split_of[i]]
    return f"{s.name}/{Path(c.paths[i]).parent.name}/{Path(c.paths[i]).stem}"[-34:]


def write_duplicates_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv_dicts(path, ["group", "path", "split", "kind", "class", "exact_group", "cross_split"], rows)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [*markdown_table(header, rows), ""]


def report_markdown(s: dict[str, Any]) -> str:
    """report.md: every table and figure, readable on its own.

    Longer than our usual function on purpose: one list of lines in the order the report reads.
    """
    names = list(s["images"])
    t = s["near_threshold"]
    lines = ["# Dataset report", ""]
    lines += [f"- **{n}**: `{s['splits'][n]}`, {s['images'][n]:,} readable images" for n in names]
    lines += [f"- near-duplicate threshold: pHash distance <= {t} bits (imagehash.phash, 64 bits)", ""]
    if s["cross_split_exact"] is not None:
        lines += _leakage_lines(s, names)

    lines += ["## Class distribution", "", "![class distribution](class_distribution.png)", ""]
    for n in names:
        cc, share = s["per_class"][n], s["class_share"][n]
        ratio = s["imbalance_ratio"][n]
        lines += [f"**{n}** (imbalance ratio, largest / smallest class: "
                  f"{'n/a' if ratio is None else f'{ratio:.2f}'})", ""]
        lines += _table(["class", "images", "share"], [[c, cc[c], f"{share[c]:.1%}"] for c in cc])

    lines += ["## Mean pixel value per image", "", "![mean pixel histogram](mean_pixel_histogram.png)", ""]
    for n in names:
        lines += [f"**{n}**", ""]
        lines += _table(["class", "images", "mean", "std"],
                        [[c, v["n"], _f(v["mean"]), _f(v["std"])] for c, v in s["pixel_mean"][n].items()])

    if "sources" in s:
        lines += _source_lines(s)
    lines += ["## Samples", "", "![samples](samples.png)", ""]

    lines += ["## Image properties", ""]
    for n in names:
        p = s["properties"][n]
        fb = p["file_bytes"] or {}
        lines += [f"**{n}**", ""]
        lines += _table(["property", "value"], [
            ["sizes (most common)", ", ".join(f"{k}: {v}" for k, v in p["sizes"].items())],
            ["distinct sizes", p["distinct_sizes"]],
            ["colour (grayscale stored as RGB counts as grayscale)", _counts(p["colour"])],
            ["mode stored in the file", _counts(p["stored_mode"])],
            ["format", _counts(p["format"])],
            ["file size (bytes): min / median / max",
             f"{fb.get('min', '-')} / {fb.get('median', '-')} / {fb.get('max', '-')}"],
        ])
    bad = s["unreadable"]
    lines += [f"**Unreadable files: {len(bad)}**", ""]
    if bad:
        lines += _table(["split", "path", "reason"],
                        [[u["split"], f"`{u['path']}`", u["reason"]] for u in bad])

    lines += ["## Duplicates", "",
              "Exact: identical decoded pixels (whatever the file bytes). Near: perceptual hashes within "
              "the threshold (exact copies included), joined transitively into groups. `duplicates.csv` "
              "lists every member of every group (group, path, split, kind, class).", "",
              f"Over all splits together: **{s['exact_duplicate_groups']} exact groups** "
              f"({s['exact_duplicate_images']} images), **{s['near_duplicate_groups']} near groups at "
              f"distance <= {t}** ({s['near_duplicate_images']} images).", ""]
    for n in names:
        w = s["within_split"][n]
        lines += [f"**within {n}**: {w['exact_groups']} exact groups ({w['exact_images']} images), "
                  f"{w['near_groups']} near groups ({w['near_images']} images)", ""]
        lines += _table(["pHash distance <=", "groups", "images in groups", "pairs", "redundant images"],
                        [[d, v["groups"], v["images"], v["pairs"], v["redundant"]]
                         for d, v in w["by_distance"].items()])
    lines += ["![nearest distance](nearest_distance.png)", "",
              "Example pairs at each distance, to judge where copies end and neighbouring slices of one "
              "patient begin:",
              "", "![near duplicates](near_duplicates.png)", ""]
    return "\n".join(lines)


def _source_lines(s: dict[str, Any]) -> list[str]:
    """The per-source section: class balance, mean pixel value per class, colour, copies across sources."""
    by = s["sources"]
    classes = s["class_names"]
    out = ["## Per source", "",
           "The training folders as the collections they came from (`--data NAME=PATH`). A class whose share, "
           "brightness or colour differs between collections is a cue a model can learn instead of the tumour; "
           "`braintumor kfold --by source` measures how a model transfers to a collection it never saw.", "",
           "![class distribution by source](class_distribution_by_source.png)", "",
           "![mean pixel histogram by source](mean_pixel_histogram_by_source.png)", ""]
    out += _table(["source", "images", *classes, "colour", "most common sizes", "copies in other sources"],
                  [[n, v["images"], *(v["per_class"][c] for c in classes), _counts(v["colour"]),
                    ", ".join(v["sizes"]), v.get("copies_in_other_sources", "-")] for n, v in by.items()])
    out += ["Mean pixel value per image (0-255), mean (std) per class:", ""]
    out += _table(["source", *classes],
                  [[n, *(f"{_f(v['pixel_mean'][c]['mean'])} ({_f(v['pixel_mean'][c]['std'])})" for c in classes)]
                   for n, v in by.items()])
    return out


def _leakage_lines(s: dict[str, Any], names: list[str]) -> list[str]:
    train, test = names[0], names[1]
    n = s["images"][test]
    out = ["## Leakage between splits", ""]
    exact, near = s["cross_split_exact"], s["cross_split_near"]
    out += [f"- **{exact} of {n} {test} images ({_pct(exact, n)}) have identical pixels to a {train} "
            f"image**; {near} ({_pct(near, n)}) are within pHash distance {s['near_threshold']}.",
            f"- {s['train_images_with_test_copy']['exact']} {train} images have an exact copy in {test} "
            f"({s['train_images_with_test_copy']['near']} within the threshold).", ""]
    out += _table([f"nearest {train} image within (bits)", f"{test} images", "share"],
                  [[d, v, _pct(v, n)] for d, v in s["cross_split_by_distance"].items()])
    if s["cross_split_near"]:
        out += [f"Scores on this {test} split overstate accuracy on unseen images. Evaluate on the "
                f"de-duplicated set: `braintumor evaluate RUN --data {s['splits'][test]} "
                f"--exclude-duplicates-of {s['splits'][train]}`.", ""]
    return out


def _pct(k: int, n: int) -> str:
    return f"{k / n:.1%}" if n else "n/a"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"


# ----------------------------------------------------------------------------------------------------
# The command


def run_eda(data: str | Path | Sequence[str | Path], test: str | Path | None = None, *,
            near_threshold: int = DEFAULT_NEAR_THRESHOLD,
            runs_dir: str | Path = "runs", name: str | None = None, classes: tuple[str, ...] | None = None,
            samples_per_class: int = 6, seed: int = 0, workers: int | None = None,
            progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Report on a folder (and optionally a test folder) in runs/eda/<timestamp>/; returns (dir, summary).

    ``data`` may be several folders (collections; NAME=PATH names one): they are read as one training split whose
    images keep their source, and the report adds class balance and pixel statistics per source."""
    if not 0 <= near_threshold <= 64:
        raise DataError(f"--near-threshold {near_threshold} is not valid; use 0 to 64 bits (pHash has 64)")
    started = time.perf_counter()
    # 1. read every image once (before creating the run directory: a bad folder leaves nothing behind)
    splits = [scan_split(data, "train", classes, workers, progress)]
    if test is not None:
        splits.append(scan_split(test, "test", classes, workers, progress))
    for sp in splits:
        if not len(sp):
            raise DataError(f"none of the image files under {sp.root} could be read")
    run = Run.create(runs_dir, "eda", name=name, seed=seed,
                     data=str(data) if isinstance(data, (str, Path)) else [str(d) for d in data],
                     test=str(test) if test else None, near_threshold=near_threshold)
    out = run.path
    with run.marking():
        # 2. duplicate groups over all splits, then the summary
        combined = Combined.of(splits, near_threshold)
        summary = summarize(splits, near_threshold, combined=combined)
        # 3. files
        write_duplicates_csv(out / "duplicates.csv", duplicate_rows(combined))
        write_figures(out, splits, summary, combined, samples_per_class, seed)
        summary["duration_s"] = round(time.perf_counter() - started, 2)
        runs.atomic_write_json(out / "summary.json", summary)
        runs.atomic_write_text(out / "report.md", report_markdown(summary))
    return out, summary

