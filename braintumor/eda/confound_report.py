"""The confound table of `eda`: per image the properties that should not predict the class, and per property how
strongly it does (confounds.associate), as confounds.json, confounds.md and a per-image confounds.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import confounds
from ..dedup import DatasetSummary
from ..runs import atomic_write_json, atomic_write_text, markdown_table, write_csv_dicts

# the order of the table; 'source' only when the data came from several --data folders
PROPERTIES = ("source", "contrast", "plane", "skull", "border", "head", "colour", "size", "brightness")
HOW = {
    "source": "the --data folder (collection) an image came from",
    "contrast": "T2-like: bright CSF (at least 3% of the brain's pixels above 1.6 x its median, and 8 times as "
                "many as below 0.5 x); T1/FLAIR-like: dark CSF (T1 and FLAIR are not told apart)",
    "plane": "sagittal: not left-right symmetric; coronal: the head's lowest rows stay wide (the neck); "
             "else axial",
    "skull": "skull: the scalp is brighter than the brain inside it; stripped: the edge is no brighter",
    "border": "frame: the outermost ring of the image is not black",
    "head": "share of the image the head fills (the head mask): small under 0.30, large from 0.50",
    "colour": "any pixel whose channels differ (grayscale stored as RGB counts as grayscale)",
    "size": "original width x height in pixels (the 5 most common; the rest 'other')",
    "brightness": "mean pixel value, in tertiles of the whole dataset",
}
MEASURED = ("contrast", "plane", "skull", "border")  # the values confounds.measure estimates per image


def property_values(split: DatasetSummary) -> dict[str, list[str]]:
    """Per property, one category per image of the split (the order of PROPERTIES)."""
    out: dict[str, list[str]] = {}
    if len(split.source_names) > 1:
        out["source"] = list(split.sources)
    if split.measures:
        for p in MEASURED:
            out[p] = [m[p] for m in split.measures]
        out["head"] = confounds.head_values([m["head_share"] for m in split.measures])[0]
    out["colour"] = list(split.colour)
    out["size"] = confounds.size_values(split.sizes)
    out["brightness"] = confounds.brightness_values(split.means)[0]
    return out


def confound_table(split: DatasetSummary,
                   threshold: float = confounds.WARN_V) -> tuple[dict[str, Any], dict[str, list]]:
    """(confounds.json's content, the per-image property values) for a split read with confounds.measure.

    With several sources, each property is also associated with the class inside each source (``per_source``):
    what a model could still learn if every collection held every class; those warnings say 'within NAME'."""
    values = property_values(split)
    table = confounds.associate(split.class_names, split.labels.tolist(), values, threshold)
    table["how"] = {p: HOW[p] for p in values}
    table["images"] = len(split)
    if "source" in values:
        table["per_source"] = {}
        sources = np.asarray(split.sources)
        for name in split.source_names:
            idx = np.flatnonzero(sources == name)
            inner = confounds.associate(split.class_names, split.labels[idx].tolist(),
                                        {p: [v[i] for i in idx] for p, v in values.items() if p != "source"},
                                        threshold)
            table["per_source"][name] = {p: row["v"] for p, row in inner["properties"].items()}
            table["warnings"] += [f"within {name}: {w}" for w in inner["warnings"]]
    return table, values


def per_image_rows(split: DatasetSummary, values: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One row per image: path, class, each property and the features behind the estimates."""
    rows = []
    for i, path in enumerate(split.paths):
        row = {"path": path, "class": split.class_names[split.labels[i]], **{p: v[i] for p, v in values.items()}}
        if split.measures:
            row.update({k: v for k, v in split.measures[i].items() if k not in MEASURED})
        rows.append(row)
    return rows


def markdown(table: dict[str, Any], class_names: tuple[str, ...] | list[str]) -> str:
    """confounds.md: the class x property summary (V and the strongest cell), the warnings, then one share table
    per property (share of each class's images with each value)."""
    t = table["threshold"]
    lines = ["# Confounds: properties that should not predict the class", "",
             f"{table['images']:,} images. Association: {table['measure']}, 0 = the property says nothing about "
             f"the class, 1 = it gives the class away. A warning from V >= {t} (strong from "
             f"{confounds.STRONG_V}). How each property is estimated: below each table.", ""]
    lines += summary_lines(table)
    if "per_source" in table:
        lines += ["Inside each collection (what a model could still learn if every collection held every class; "
                  "`-`: one value, or one class):", ""]
        lines += per_source_lines(table)
    lines += ["## Warnings", ""]
    lines += [f"- **{w}**" for w in table["warnings"]] or ["- none: no property reaches the threshold."]
    lines.append("")
    for p, row in table["properties"].items():
        lines += [f"## {p} (V {_v(row['v'])})", "", f"_{table['how'][p]}_", ""]
        header = ["class", "images", *row["values"]]
        body = []
        for c in class_names:
            counts = row["counts"][c]
            n = sum(counts.values())
            body.append([c, n, *(f"{counts[v] / n:.0%}" if n else "-" for v in row["values"])])
        lines += [*markdown_table(header, body), "", f"![{p}](confounds_{p}.png)", ""]
    return "\n".join(lines)


def summary_lines(table: dict[str, Any]) -> list[str]:
    """The one table a README can quote: property, V, and the value whose share differs most between classes."""
    rows = []
    for p, row in table["properties"].items():
        cell = row["strongest"]
        known = cell and row["v"] is not None
        said = f"{cell['class']}: {confounds.cell_text(p, cell)}" if known else "-"
        flag = "**warning**" if row["warning"] else ""
        rows.append([p, _v(row["v"]), said, confounds.value_text(p, cell) if known else "-", flag])
    return [*markdown_table(["property", "Cramer's V", "largest difference", "the value alone", ""], rows), ""]


def per_source_lines(table: dict[str, Any]) -> list[str]:
    """Cramer's V of each property with the class inside each source."""
    by = table["per_source"]
    props = [p for p in table["properties"] if p != "source"]
    rows = [[name, *(("-" if v[p] is None else f"{v[p]:.2f}") for p in props)] for name, v in by.items()]
    return [*markdown_table(["source", *props], rows), ""]


def _v(v: float | None) -> str:
    return "- (one value)" if v is None else f"{v:.2f}"


def write(out: Path, split: DatasetSummary, table: dict[str, Any], values: dict[str, list[str]]) -> None:
    """confounds.json, confounds.md and confounds.csv in the run directory."""
    atomic_write_json(out / "confounds.json", table)
    atomic_write_text(out / "confounds.md", markdown(table, split.class_names))
    rows = per_image_rows(split, values)
    write_csv_dicts(out / "confounds.csv", list(rows[0]) if rows else ["path", "class"], rows)


def sample_cells(split: DatasetSummary, values: list[str], per_cell: int,
                 seed: int) -> dict[tuple[str, str], list[str]]:
    """Seeded paths of up to ``per_cell`` images for each (class, value) of one property."""
    rng = np.random.default_rng(seed)
    v = np.asarray(values)
    out = {}
    for k, c in enumerate(split.class_names):
        for value in dict.fromkeys(values):
            idx = np.flatnonzero((split.labels == k) & (v == value))
            out[c, value] = [split.paths[i] for i in np.sort(rng.choice(idx, min(per_cell, len(idx)),
                                                                         replace=False))]
    return out
