"""A tumour threshold chosen on other patients of a collection, applied to new ones (issue 20, an observation).

The package answers `notumor` when it is the most probable class (argmax). On a collection whose tumours look
unlike the training collection's, many tumour slices get a small but not tiny p(tumour) = 1 - p(notumor). This
script asks what a site would get if it set its own operating point on its own labelled patients: from a kfold
run's `oof_predictions.csv` (every slice scored by a fold model that never saw its patient), for each fold, the
threshold on p(tumour) that finds `--sensitivity` of the *other* folds' tumour slices of the source is applied to
this fold's slices (cross-fitted, so no slice is scored with a threshold chosen on it). Reported per source: the
argmax rule, the cross-fitted threshold, and what that threshold does to the other sources' slices.

    python benchmarks/operating_point.py runs/kfold/RUN --source lgg_flair --source lgg_t1ce [--sensitivity 0.9]

Kept to rerun the 2026-12-03 figures; the package now suggests the threshold itself (kfold's summary.md, *A site's
operating point*; braintumor/operating_point.py) and applies it (eval.notumor_doubt, --notumor-doubt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def tumour_of(rows: pd.DataFrame) -> np.ndarray:
    return rows["true"].to_numpy() != "notumor"


def apply(rows: pd.DataFrame, chosen: dict[int, float]) -> np.ndarray:
    """Tumour or not per slice: p(tumour) = 1 - p(notumor) at or above its fold's threshold."""
    thresholds = rows["fold"].map(chosen).to_numpy(dtype=float)
    return (1 - rows["p_notumor"].to_numpy()) >= thresholds


def choose(rows: pd.DataFrame, sensitivity: float) -> dict[int, float]:
    """Per fold, the threshold that finds `sensitivity` of the OTHER folds' tumour slices of these rows."""
    p_tumour, tumour, folds = 1 - rows["p_notumor"].to_numpy(), tumour_of(rows), rows["fold"].to_numpy()
    return {int(f): float(np.quantile(p_tumour[(folds != f) & tumour], 1 - sensitivity)) for f in np.unique(folds)}


def cells(said: np.ndarray, tumour: np.ndarray) -> str:
    found = f"{said[tumour].mean():.3f}" if tumour.any() else "-"
    cleared = f"{(~said[~tumour]).mean():.3f}" if (~tumour).any() else "-"
    return f"{found} | {cleared}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kfold_run", type=Path)
    ap.add_argument("--source", action="append", required=True, help="the collection the threshold is set on")
    ap.add_argument("--sensitivity", type=float, default=0.90)
    args = ap.parse_args()
    pred = pd.read_csv(args.kfold_run / "oof_predictions.csv")
    print("| threshold set on | scored on | rule | tumour slices found | clean slices cleared |")
    print("|---|---|---|---|---|")
    for src in args.source:
        rows = pred[pred["source"] == src]
        print(f"| - | {src} | argmax | {cells(rows['predicted'].to_numpy() != 'notumor', tumour_of(rows))} |")
        chosen = choose(rows, args.sensitivity)
        rule = f"p(tumour) >= {min(chosen.values()):.3f}-{max(chosen.values()):.3f}"
        for other in [src, *sorted(set(pred["source"]) - {src})]:
            o = pred[pred["source"] == other]
            print(f"| {src}, other folds | {other} | {rule if other == src else 'the same'} | "
                  f"{cells(apply(o, chosen), tumour_of(o))} |")

if __name__ == "__main__":
    main()
