"""report.md of `eda` and duplicates.csv: every table and figure, readable on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runs import markdown_table, write_csv_dicts
from .confound_report import per_source_lines, summary_lines


def write_duplicates_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv_dicts(path, ["group", "path", "split", "kind", "class", "exact_group", "cross_split"], rows)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [*markdown_table(header, rows), ""]


def report_markdown(s: dict[str, Any]) -> str:
    """report.md: every table and figure, readable on its own, in the order the report reads."""
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
    if "confounds" in s:
        lines += _confound_lines(s["confounds"])
    lines += ["## Samples", "", "![samples](samples.png)", ""]

    lines += _property_lines(s, names)
    lines += _duplicate_lines(s, names)
    return "\n".join(lines)



def _property_lines(s: dict[str, Any], names: list[str]) -> list[str]:
    """Image properties per split (sizes, colour, stored mode, format, file size) and the unreadable files."""
    lines: list[str] = []
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

    return lines


def _duplicate_lines(s: dict[str, Any], names: list[str]) -> list[str]:
    """Exact and near copies over all splits and within each, by pHash distance, with the example figures."""
    t = s["near_threshold"]
    lines = ["## Duplicates", "",
              "Exact: identical decoded pixels (whatever the file bytes). Near: perceptual hashes within "
              "the threshold (exact copies included), joined transitively into groups. `duplicates.csv` "
              "lists every member of every group (group, path, split, kind, class).", "",
              f"Over all splits together: **{s['exact_duplicate_groups']} exact groups** "
              f"({s['exact_duplicate_images']} images), **{s['near_duplicate_groups']} near groups at "
              f"distance <= {t}** ({s['near_duplicate_images']} images), the largest holding "
              f"{s.get('largest_near_group', '-')} images.", ""]
    if s.get("duplicate_chain"):
        lines += [f"**Warning:** {s['duplicate_chain']}.", ""]
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
    return lines


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


def _confound_lines(table: dict[str, Any]) -> list[str]:
    """The confound summary (the full tables and pictures are in confounds.md)."""
    out = ["## Confounds", "",
           "Properties of the training images that should say nothing about the class, and how much they do "
           f"({table['measure']}; a warning from {table['threshold']}). Per-class shares and sample pictures: "
           "[confounds.md](confounds.md); per image: confounds.csv.", ""]
    out += summary_lines(table)
    if "per_source" in table:
        out += ["Inside each collection:", "", *per_source_lines(table)]
    out += [f"- **{w}**" for w in table["warnings"]] or ["- no property reaches the threshold."]
    return [*out, ""]


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

