"""Calibration and the out-of-distribution gate of a trained run, measured on images none of their choices saw.

The run's own validation split (never trained on) is cut in two halves, grouped by nothing but a seeded shuffle:
the temperature and the gate's threshold are fitted on half A, exactly as `train` fits them on the whole split,
and everything is scored on half B: ECE / Brier / NLL before and after, the share of real scans refused, accuracy
on the accepted ones, and the share of the non-brain development set (braintumor.nonbrain, built into a temporary
folder) refused, per category, with the AUROC of the feature distance. The class means and covariance come from
the run's training images. Then the halves swap, and both are reported.

    python benchmarks/ood.py RUN [--data .../brain-tumor-mri/Training]

Works on runs trained before the gate existed (it fits everything itself; the run directory is not changed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, shown_path  # noqa: E402

quiet_tensorflow()

import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from braintumor.commands.evaluate import read_split  # noqa: E402
from braintumor.data import find_images, map_images  # noqa: E402
from braintumor.inference import Classifier, gate_layers, layer_widths, pooled_features  # noqa: E402
from braintumor.metrics import calibration_figures, fit_temperature, scale  # noqa: E402
from braintumor.models.loading import load_listing, load_run, predict  # noqa: E402
from braintumor.nonbrain import build  # noqa: E402
from braintumor.ood import fit_gate  # noqa: E402


def measure(run_dir: str, seed: int = 0, acceptance: float | None = None) -> dict:
    run = load_run(run_dir)
    tta, batch = run.config.eval.tta, run.config.train.batch_size
    train = load_listing(run, *read_split(run.path, "train"))
    val = load_listing(run, *read_split(run.path, "val"))
    raw_val = predict(run.model, val.images, batch, tta)
    layers = gate_layers(run.config, run.model)
    f_train = pooled_features(run.model, train.images, batch, layers)
    f_val = pooled_features(run.model, val.images, batch, layers)
    split = pd.read_csv(Path(run_dir) / "split.csv")
    val_sources = (split[split["split"] == "val"]["source"].to_numpy() if "source" in split
                   else np.full(len(val.labels), "held-out"))
    with tempfile.TemporaryDirectory() as tmp:
        rows = build(tmp)
        paths = find_images([tmp])
        prepared = [r for r in map_images(paths, run.spec.read) if not isinstance(r, str)]
        category = [Path(p).parent.name for p in paths]
    others = np.stack([r[0] for r in prepared])
    other_stats = [r[1] for r in prepared]
    raw_other = predict(run.model, others, batch, tta)
    f_other = pooled_features(run.model, others, batch, layers)

    halves = np.random.default_rng(seed).permutation(len(val.labels)) % 2
    out = {"run": shown_path(run_dir), "acceptance": acceptance or run.config.eval.gate_acceptance,
           "n_train": len(train.labels), "n_val": len(val.labels),
           "n_nonbrain": len(others), "nonbrain_sources": sorted({r["source"] for r in rows}), "halves": []}
    for fit_half in (0, 1):
        a, b = np.flatnonzero(halves == fit_half), np.flatnonzero(halves != fit_half)
        t = fit_temperature(val.labels[a], raw_val[a])
        cal_val = scale(raw_val, t)
        features = np.concatenate([f_train, f_val[a]])
        labels = np.concatenate([train.labels, val.labels[a]])
        gate = fit_gate(features, labels, len(run.class_names), np.arange(len(f_train)),
                        np.arange(len(f_train), len(features)), cal_val[a].max(axis=1), train.stats,
                        layers, acceptance or run.config.eval.gate_acceptance,
                        run.config.eval.gate_min_confidence, widths=layer_widths(run.model, layers),
                        held_sources=list(val_sources[a]))
        clf = Classifier(run.model, t, [gate])
        scans = clf.verdicts(cal_val[b], [f_val[b]], [val.stats[i] for i in b])
        nonbrain = clf.verdicts(scale(raw_other, t), [f_other], other_stats)
        ok = np.array([v.answered for v in scans])
        correct = cal_val[b].argmax(axis=1) == val.labels[b]
        refused_other = np.array([not v.answered for v in nonbrain])
        score = [v.ratio if v.status != "out_of_distribution" or v.ratio > 1 else np.inf for v in scans + nonbrain]
        truth = np.r_[np.zeros(len(scans)), np.ones(len(nonbrain))]
        out["halves"].append({
            "temperature": t, "threshold": gate.threshold,
            "ece_before": calibration_figures(val.labels[b], raw_val[b])["ece"],
            "ece_after": calibration_figures(val.labels[b], cal_val[b])["ece"],
            "brier_before": calibration_figures(val.labels[b], raw_val[b])["brier"],
            "brier_after": calibration_figures(val.labels[b], cal_val[b])["brier"],
            "scans_refused": float(1 - ok.mean()), "accuracy_all": float(correct.mean()),
            "accuracy_accepted": float(correct[ok].mean()),
            "nonbrain_refused": float(refused_other.mean()),
            "nonbrain_refused_by_category": {c: float(refused_other[[k == c for k in category]].mean())
                                             for c in sorted(set(category))},
            "auroc": float(roc_auc_score(truth, np.nan_to_num(np.asarray(score, float), posinf=1e9))),
            "accepted_nonbrain": [Path(p).name for p, v in zip(paths, nonbrain) if v.answered],
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a train run directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--acceptance", type=float, default=None, help="default: the run's eval.gate_acceptance")
    args = parser.parse_args()
    print(json.dumps(measure(args.run, args.seed, args.acceptance), indent=2))


if __name__ == "__main__":
    main()
