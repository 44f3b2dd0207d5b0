"""Slice-level against patient-level bootstrap intervals on the LGG development slices (issue 22, item 1).

Slices of one patient are not independent: a model right on one slice of a head tends to be right on its
neighbours. This prints, for one set of tumour/no-tumour answers, each figure with two 95% percentile bootstrap
intervals: resampling slices (what every report did before) and resampling patients (`data.groups`), through the
package's own metrics.ratio_ci / weighted_ci and groups.patient_keys.

The answers come from a run's predictions.csv (`--predictions`, columns path, true, p_notumor; tumour = not
`notumor`), or, without one, from a stand-in classifier that trains in seconds: scikit-learn's logistic
regression (standardised 32 x 32 thumbnails of the FLAIR slices, C = 0.01), its probabilities out of fold from a
5-fold GroupKFold by patient, so no slice is scored by a model that saw its patient; tumour when p > 0.5. (C was
the better of the two values tried, 0.01 and 0.1, on these same slices: the score is not an estimate of anything,
the point is the width of the intervals around it.)

    python benchmarks/patient_intervals.py                      # the stand-in on /work/shared/data/tcga-lgg-dev
    python benchmarks/patient_intervals.py --predictions runs/evaluate/<run>/predictions.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from braintumor.groups import patient_keys  # noqa: E402
from braintumor.metrics import ratio_ci, weighted_ci  # noqa: E402

LGG = Path("/work/shared/data/tcga-lgg-dev")


def stand_in(folder: Path, groups: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, tumour truth, out-of-fold tumour probability) of the logistic-regression stand-in."""
    paths = [str(p) for cls in ("glioma", "notumor") for p in sorted((folder / cls).glob("*.jpg"))]
    truth = np.asarray([Path(p).parent.name == "glioma" for p in paths])
    x = np.stack([np.asarray(Image.open(p).convert("L").resize((32, 32), Image.BILINEAR), dtype=float).ravel()
                  for p in paths]) / 255
    patient = np.asarray(patient_keys(groups, paths), dtype=object)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    probs = cross_val_predict(model, x, truth, groups=patient, cv=GroupKFold(5), method="predict_proba")[:, 1]
    return paths, truth, probs


def from_predictions(csv: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    df = pd.read_csv(csv)
    return df["path"].astype(str).tolist(), (df["true"] != "notumor").to_numpy(), 1 - df["p_notumor"].to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--predictions", type=Path, help="a run's predictions.csv (default: the stand-in classifier)")
    ap.add_argument("--data", type=Path, default=LGG / "flair", help="the stand-in's folder (glioma/, notumor/)")
    ap.add_argument("--groups", default=f"{LGG / 'slices.csv'}:patient", help="data.groups spec of the patients")
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args()
    paths, truth, score = from_predictions(args.predictions) if args.predictions else stand_in(args.data, args.groups)
    said = score > 0.5
    keys = patient_keys(args.groups, paths)
    missing = sum(k is None for k in keys)
    groups = np.asarray([k if k is not None else f"alone:{i}" for i, k in enumerate(keys)], dtype=object)
    n_pat = len({k for k in keys if k is not None})
    t = truth.astype(float)
    figures = {  # name: (numerator, denominator) per slice
        "accuracy": ((said == truth).astype(float), None),
        "sensitivity": ((said & truth).astype(float), t),
        "specificity": ((~said & ~truth).astype(float), 1 - t),
    }
    source = args.predictions or f"the out-of-fold logistic-regression stand-in on {args.data}"
    print(f"{len(paths)} slices ({int(truth.sum())} tumour) of {n_pat} patients ({missing} slices without a "
          f"patient) from {source}; 95% percentile bootstrap, {args.boot} resamples, seed 0\n")
    print("| figure | value | resampling slices | resampling patients | width ratio |")
    print("|---|---|---|---|---|")
    for name, (num, den) in figures.items():
        value = num.sum() / (len(num) if den is None else den.sum())
        s = ratio_ci(num, den, None, args.boot, 0)
        p = ratio_ci(num, den, groups, args.boot, 0)
        print(f"| {name} | {value:.4f} | {s[0]:.4f}-{s[1]:.4f} ({len(paths)} slices) | {p[0]:.4f}-{p[1]:.4f} "
              f"({n_pat + missing} patients) | {(p[1] - p[0]) / (s[1] - s[0]):.2f} |")
    auc = lambda w: roc_auc_score(truth, score, sample_weight=w)  # noqa: E731
    s = weighted_ci(auc, len(paths), None, args.boot // 4, 0)  # a quarter of the resamples: one AUC each
    p = weighted_ci(auc, len(paths), groups, args.boot // 4, 0)
    print(f"| AUC | {roc_auc_score(truth, score):.4f} | {s[0]:.4f}-{s[1]:.4f} | {p[0]:.4f}-{p[1]:.4f} | "
          f"{(p[1] - p[0]) / (s[1] - s[0]):.2f} |")


if __name__ == "__main__":
    main()
