"""A site sets `eval.notumor_doubt` on its own labelled patients for a model that never saw its collection.

`braintumor kfold` suggests the threshold when the site's scans were in training. A clinic that receives a trained
model cannot retrain it, but it can label some of its own patients, score them (`braintumor evaluate MODEL --data
site=DIR`) and set the doubt on them. This script estimates what that buys on new patients of the site: the
evaluate run's patients are cut into `--folds` patient folds (scikit-learn GroupKFold over `--groups`), and each
fold is judged with the threshold `braintumor.operating_point.suggest` chooses on the other folds (the package's
rule: the largest threshold leaving at most 1 - target of the tumour slices answered `notumor`). The probabilities
are evaluate's calibrated ones, what the model answers with; answers are counted whatever the gate says.

    python benchmarks/site_threshold.py runs/evaluate/RUN [RUN ...] --source lgg_flair --source lgg_t1ce \\
        [--groups '(TCGA_[A-Z0-9]{2}_[A-Z0-9]+_[0-9]+)_'] [--target 0.9 --target 0.95] [--folds 5]

Prints a Markdown table (write-up: benchmarks/external.md, "A site's threshold on a collection the model never saw").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from braintumor.operating_point import suggest

LGG_PATIENT = r"(TCGA_[A-Z0-9]{2}_[A-Z0-9]+_[0-9]+)_"


def rows_of(run: Path, sources: list[str], groups: str, n_folds: int) -> pd.DataFrame:
    df = pd.read_csv(run / "predictions.csv")
    df = df[df["source"].isin(sources)].reset_index(drop=True)
    patients = df["path"].str.extract(groups)[0]
    if patients.isna().any():
        raise SystemExit(f"{run}: {int(patients.isna().sum())} paths name no patient by {groups!r}")
    df["fold"] = 0
    for i, (_, held) in enumerate(GroupKFold(n_folds).split(df, groups=patients), start=1):
        df.loc[held, "fold"] = i
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="evaluate run directories (predictions.csv)")
    ap.add_argument("--source", action="append", required=True, help="the site's collection(s)")
    ap.add_argument("--groups", default=LGG_PATIENT, help="a regex whose first group is the patient in the path")
    ap.add_argument("--target", type=float, action="append", help="eval.notumor_doubt_target (default 0.9)")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    print("| evaluate run | collection | AUC | target | threshold (all patients) | tumour slices answered notumor, "
          "argmax -> doubt | clean slices answered notumor (cleared), argmax -> doubt |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        df = rows_of(run, args.source, args.groups, args.folds)
        truth = (df["true"] != "notumor").to_numpy()
        p_tumour = 1 - df["p_notumor"].to_numpy()
        for target in args.target or [0.9]:
            points = suggest(truth, p_tumour, (df["predicted"] == "notumor").to_numpy(), df["fold"].to_numpy(),
                             df["source"].to_numpy(), target)
            for src, point in points.items():
                mine = (df["source"] == src).to_numpy()
                c = point["cross_fitted"]
                t, tn, cn = point["suggested"], c["tumour_said_notumor"], c["clean_said_notumor"]
                print(f"| {run.name} | {src} | {roc_auc_score(truth[mine], p_tumour[mine]):.3f} | {target:g} | "
                      f"{'none needed' if t is None else f'{t:.4f}'} | {tn['argmax']:.3f} -> {tn['doubt']:.3f} | "
                      f"{cn['argmax']:.3f} -> {cn['doubt']:.3f} |")


if __name__ == "__main__":
    main()
