"""Patient groups and the validation split on the shared data, before and after issue 20's two fixes.

No training: decode the collections as ``train`` does (configs/customnet.yaml: 64 px grayscale), group them and
make train's validation split, twice:

- before: near (pHash) links join any two images transitively (dedup.near_groups without owners), and the split
  stratifies by class alone;
- after: a near link never joins two patients data.groups names (groups.grouping), and the split stratifies by
  collection x class (splits.strata).

It prints and writes (``--out``, default benchmarks/split_groups.md) the largest group (images, patients, per
collection), the chain guard's verdict (dedup.chain_warning) and the validation share of every collection x class,
for the two fixes apart and together; and checks that one collection alone splits exactly as before.

    python benchmarks/split_groups.py            # the four shared collections, LGG patients from the file name
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import cpu_model, shown_path  # noqa: E402
from braintumor import dedup  # noqa: E402
from braintumor.config import load_config  # noqa: E402
from braintumor.data import ImageSpec, list_images, load_images  # noqa: E402
from braintumor.groups import grouping, join_patients, patients  # noqa: E402
from braintumor.scanners import ScanOptions  # noqa: E402
from braintumor.splits import split_train_val  # noqa: E402
from braintumor.volumes import volume_of  # noqa: E402

SHARED = Path("/work/shared/data")
DATA = [f"kaggle={SHARED}/brain-tumor-mri/Training", f"figshare={SHARED}/figshare-tumour-boxes",
        f"lgg_flair={SHARED}/tcga-lgg-dev/flair", f"lgg_t1ce={SHARED}/tcga-lgg-dev/t1ce"]
GROUPS = "re:^(TCGA_[A-Z0-9]{2}_[A-Z0-9]+_[0-9]+)_"


def old_groups(cfg, loaded) -> tuple[np.ndarray, np.ndarray]:
    """(groups, duplicate groups) as split_groups made them before the fix: near links join across patients."""
    dup = dedup.duplicate_groups(loaded.digests, loaded.images, cfg.data.group_duplicates, cfg.data.near_threshold)
    joined = dedup.join_groups(dup, [volume_of(p) for p in loaded.paths])
    return join_patients(joined, patients(cfg.data.groups, loaded.paths)), dup


def largest(groups: np.ndarray, keys: list, sources: list[str]) -> dict:
    g, size = dedup.largest_group(groups)
    members = np.flatnonzero(groups == g)
    return {"images": size, "patients": len({keys[i] for i in members} - {None}),
            "per source": dict(Counter(sources[i] for i in members))}


def chain_by_threshold(loaded, thresholds=(2, 4, 6, 8)) -> dict[int, tuple[int, bool]]:
    """Without patient names: near_threshold -> (largest duplicate group, whether the chain guard fires)."""
    hashes, exact = dedup.phashes(loaded.images), dedup.exact_groups(loaded.digests)
    out = {}
    for t in thresholds:
        g = dedup.near_groups(hashes, t, exact)
        out[t] = (dedup.largest_group(g)[1], dedup.chain_warning(g) is not None)
    return out


def val_shares(loaded, val_idx: np.ndarray) -> dict[tuple[str, str], tuple[float, int]]:
    """(source, class) -> (share of its images on the validation side, images)."""
    src, lab = np.asarray(loaded.sources), loaded.labels
    on_val = np.zeros(len(lab), bool)
    on_val[val_idx] = True
    out = {}
    for s in loaded.source_names:
        for c, name in enumerate(loaded.class_names):
            cell = (src == s) & (lab == c)
            if cell.any():
                out[(s, name)] = (float(on_val[cell].mean()), int(cell.sum()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", help="NAME=DIR, repeatable (default: the four shared collections)")
    ap.add_argument("--groups", default=GROUPS, help=f"data.groups (default {GROUPS})")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("split_groups.md"))
    args = ap.parse_args()
    data = args.data or DATA
    cfg = load_config("customnet", flags={"data": data}, sets=[f"data.groups={args.groups}"])
    t0 = time.perf_counter()
    listing = list_images(cfg.data_paths, cfg.data.classes, scan_options=ScanOptions.from_config(cfg.data))
    loaded = load_images(listing, ImageSpec.of(cfg.data))
    decode_s = time.perf_counter() - t0
    keys = patients(cfg.data.groups, loaded.paths).keys

    t0 = time.perf_counter()
    before, before_dup = old_groups(cfg, loaded)
    made = grouping(cfg.data, loaded)
    group_s = time.perf_counter() - t0
    v, seed, names = cfg.data.val_split, cfg.seed, loaded.class_names
    splits = {
        "before": split_train_val(loaded.labels, before, v, seed, names)[1],
        "groups fixed": split_train_val(loaded.labels, made.groups, v, seed, names)[1],
        "both fixed": split_train_val(loaded.labels, made.groups, v, seed, names, loaded.sources)[1],
    }
    shares = {k: val_shares(loaded, idx) for k, idx in splits.items()}

    # one collection alone: the split with sources must be the old one, image for image
    first = np.asarray(loaded.sources) == loaded.source_names[0]
    sub_groups = np.unique(made.groups[first], return_inverse=True)[1]
    same = all(np.array_equal(a, b) for a, b in zip(
        split_train_val(loaded.labels[first], sub_groups, v, seed, names),
        split_train_val(loaded.labels[first], sub_groups, v, seed, names,
                        [loaded.source_names[0]] * int(first.sum())), strict=True))
    alone = dedup.duplicate_groups([d for d, f in zip(loaded.digests, first) if f], loaded.images[first],
                                   cfg.data.group_duplicates, cfg.data.near_threshold)
    blank = dedup.uniform(loaded.images)
    by_threshold = chain_by_threshold(loaded)

    lines = ["# Patient groups and the validation split: before and after (issue 20)", "",
             f"`python benchmarks/split_groups.py` on "
             f"{cpu_model()}, 2 cores shared with other work; decode {decode_s:.0f} s, both groupings "
             f"{group_s:.0f} s. Config: configs/customnet.yaml ({cfg.data.image_size} px {cfg.data.color_mode}, "
             f"data.group_duplicates: {cfg.data.group_duplicates}, data.near_threshold: {cfg.data.near_threshold}, "
             f"data.val_split: {v:g}, seed {seed}), `data.groups={args.groups}`.", "",
             "Collections: " + ", ".join(f"{d.split('=')[0]} (`{shown_path(d.split('=', 1)[1])}`, "
                                         f"{loaded.sources.count(d.split('=')[0])} images)" for d in data) + ".", "",
             "## Largest group", "",
             "| | images | patients | per collection | largest duplicate group (before the volume and patient "
             "joins) | chain guard |", "|---|---|---|---|---|---|"]
    for name, g, dup in (("before", before, before_dup), ("after", made.groups, made.duplicates)):
        big = largest(g, keys, loaded.sources)
        warn = dedup.chain_warning(dup)
        lines.append(f"| {name} | {big['images']} | {big['patients']} | "
                     + ", ".join(f"{k} {n}" for k, n in big["per source"].items())
                     + f" | {dedup.largest_group(dup)[1]} | {'fires' if warn else 'quiet'} |")
    lines += ["", f"Patients named: {len(set(keys) - {None})}; sets of identical pixels across patients, joined and "
              f"warned about: {len(made.crossing)}; blank (uniform) images, held to the patient rule: "
              f"{int(blank.sum())}, naming {len({keys[i] for i in np.flatnonzero(blank)} - {None})} patients. "
              f"{loaded.source_names[0]} alone: largest duplicate group {dedup.largest_group(alone)[1]} images "
              f"(the chain guard's bound: more than {dedup.CHAIN_MIN_IMAGES} images and "
              f"{dedup.CHAIN_SHARE:.0%} of them).", "",
              "Without patient names the groups are the duplicate groups (the LGG slices are single files, no "
              "volumes), so the chain before the fix needed the patient join to bridge its near groups. The "
              "largest duplicate group of all four collections without names, by data.near_threshold:", "",
              "| data.near_threshold | largest duplicate group | chain guard |", "|---|---|---|",
              *(f"| {t} | {n} | {'fires' if w else 'quiet'} |" for t, (n, w) in by_threshold.items()), "",
              "## Validation share per collection x class", "",
              f"data.val_split {v:g} asks for {v:.0%} of every cell. 'groups fixed': the new grouping, the split "
              "still stratified by class alone; 'both fixed': stratified by collection x class too.", "",
              "| collection | class | images | " + " | ".join(splits) + " |",
              "|---|---|---|" + "---|" * len(splits)]
    for cell in shares["before"]:
        lines.append(f"| {cell[0]} | {cell[1]} | {shares['before'][cell][1]} | "
                     + " | ".join(f"{shares[k][cell][0]:.1%}" for k in splits) + " |")
    worst = {k: max(abs(s - v) for s, _ in sh.values()) for k, sh in shares.items()}
    lines += ["", "Largest distance from the asked share, over the cells: "
              + ", ".join(f"{k} {w:.1%}" for k, w in worst.items()) + ".", "",
              f"One collection ({loaded.source_names[0]}) split with and without its collection names: "
              + ("identical, image for image." if same else "DIFFERENT (a bug)."), ""]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
