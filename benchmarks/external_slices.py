"""Where in the head an evaluate run's LGG answers go wrong: by slice position and by the head's share of the image.

    python benchmarks/external_slices.py EVAL_RUN [EVAL_RUN ...] [--slices DATA/tcga-lgg-dev/slices.csv]

For each run and LGG sequence: the mean tumour probability (1 - p(notumor)) of tumour and clean slices per fifth
of each patient's volume (0 = its first slice, 1 = its last) and per band of the head's share of the image
(`braintumor.confounds.features`, the share `eda` reports), and the tumour-or-not AUC on every slice, on the middle
three fifths only, and on the slices whose head fills at least 0.30 of the image (`confounds.HEAD_CUTS`). Kaggle's
images are read the same way for comparison (the share of each class under 0.30). Prints markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

from braintumor import confounds

DATA = Path("/work/shared/data")
POSITION_BANDS = [-0.01, 0.2, 0.4, 0.6, 0.8, 1.01]
SHARE_BANDS = [0.0, 0.15, 0.30, 0.40, 0.50, 1.0]


def head_share(path: str) -> float:
    return confounds.features(confounds.gray_work(Image.open(path)))["head_share"]


def with_position(pred: pd.DataFrame, slices: pd.DataFrame) -> pd.DataFrame:
    s = slices.copy()
    s["position"] = s.groupby("patient")["slice"].transform(lambda x: (x - x.min()) / max(x.max() - x.min(), 1))
    pred = pred.assign(name=pred.path.map(lambda p: Path(p).stem))
    pred = pred.merge(s[["name", "position"]], on="name", how="inner")
    return pred.assign(tumour=pred.true != "notumor", p_tumour=1 - pred.p_notumor,
                       share=[head_share(p) for p in pred.path])


def auc(frame: pd.DataFrame) -> str:
    if frame.tumour.nunique() < 2:
        return "-"
    return f"{roc_auc_score(frame.tumour, frame.p_tumour):.2f}"


def banded(frame: pd.DataFrame, column: str, bands: list[float]) -> str:
    cut = pd.cut(frame[column], bands)
    g = frame.groupby([cut, "tumour"], observed=False).p_tumour.agg(["mean", "size"]).unstack()
    lines = [f"| {column} | tumour slices: p(tumour) (n) | clean slices: p(tumour) (n) |", "|---|---|---|"]
    for band, r in g.iterrows():
        cells = [f"{r[('mean', k)]:.2f} ({int(r[('size', k)])})" if r[("size", k)] else "-" for k in (True, False)]
        lines.append(f"| {band} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(eval_run: Path, slices: pd.DataFrame) -> str:
    pred = with_position(pd.read_csv(eval_run / "predictions.csv"), slices)
    out = [f"## {eval_run.name}"]
    for source, frame in pred.groupby("source"):
        mid = frame[(frame.position >= 0.2) & (frame.position <= 0.8)]
        large = frame[frame.share >= confounds.HEAD_CUTS[0]]
        out += [f"### {source} ({len(frame)} slices)",
                f"tumour-or-not AUC: all {auc(frame)}, middle three fifths {auc(mid)} ({len(mid)}), head share >= "
                f"{confounds.HEAD_CUTS[0]:.2f} {auc(large)} ({len(large)})", "",
                banded(frame, "position", POSITION_BANDS), "", banded(frame, "share", SHARE_BANDS), ""]
    return "\n".join(out)


def kaggle_shares(root: Path, per_class: int = 300, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["| Kaggle class | median head share | share under 0.30 |", "|---|---|---|"]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        chosen = rng.choice(len(files), min(per_class, len(files)), replace=False)
        v = np.array([head_share(str(files[i])) for i in chosen])
        lines.append(f"| {folder.name} | {np.median(v):.2f} | {np.mean(v < confounds.HEAD_CUTS[0]):.1%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_runs", nargs="+", type=Path)
    ap.add_argument("--slices", type=Path, default=DATA / "tcga-lgg-dev" / "slices.csv")
    ap.add_argument("--kaggle", type=Path, default=DATA / "brain-tumor-mri" / "Training")
    args = ap.parse_args()
    slices = pd.read_csv(args.slices)
    for run in args.eval_runs:
        print(report(run, slices))
    if args.kaggle.is_dir():
        print("## Kaggle (300 random images per class, seed 0)\n\n" + kaggle_shares(args.kaggle))


if __name__ == "__main__":
    main()
