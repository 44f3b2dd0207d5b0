"""Leave-one-collection-out: how a recipe does on a collection it never trained on (issue 20).

Each row is one recipe trained WITHOUT the held-out collection, then `braintumor evaluate` on it. This script only
reads what those commands wrote (the train run's metrics.json, the evaluate run's predictions.csv) and turns it
into the tumour-or-not figures the issue asks for, per held-out source:

- found: tumour slices (any class but notumor) whose predicted class is not notumor, whatever the gate said;
- cleared: slices without a tumour predicted notumor;
- notumor_ok: tumour slices answered notumor with status ok (the dangerous answer), as a share of tumour slices;
- refused: share of all slices with status uncertain or out_of_distribution;
- auc: tumour-or-not ROC AUC of 1 - p(notumor) (does the model rank tumour slices above clean ones at all);
- intervals resample patients (the LGG file names carry them: TCGA_<inst>_<id>_<date>_<slice>), 2,000 resamples;
- per_patient (LGG sources): tumour patients found on at least one slice, missed on every slice, a patient's share
  of tumour slices found (median, lowest), patients with a clean slice called a tumour (metrics.patient_figures).

    python benchmarks/external.py row EVAL_RUN --train TRAIN_RUN --label control --held-out lgg
    python benchmarks/external.py row KFOLD_RUN --train KFOLD_RUN --label L --held-out "none: out of fold"
    python benchmarks/external.py table            # every row of benchmarks/external.jsonl as markdown

The commands that made each row are in benchmarks/external.md.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from braintumor.metrics import binary_metrics, bootstrap_ci

HERE = Path(__file__).resolve().parent
ROWS = HERE / "external.jsonl"
_PATIENT = re.compile(r"(TCGA_[A-Z0-9]{2}_[A-Z0-9]+_\d+)")


def patient_of(path: str) -> str:
    """The LGG patient in a slice's file name, else the file's own name (one slice = one unit)."""
    m = _PATIENT.search(Path(path).name)
    return m.group(1) if m else Path(path).name


def cluster_ci(values: np.ndarray, groups: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of a mean of 0/1 values, resampling whole groups (patients) with replacement: the
    package's own cluster bootstrap (metrics.bootstrap_ci; same draws as the hand version it replaced)."""
    return bootstrap_ci(values, n_boot, seed, groups=groups)


def share(mask: np.ndarray, groups: np.ndarray) -> dict[str, float | int]:
    return {"value": float(mask.mean()) if len(mask) else float("nan"), "n": int(len(mask)),
            "ci": cluster_ci(mask.astype(float), groups), "units": int(len(np.unique(groups)))}


def figures(pred: pd.DataFrame) -> dict[str, dict]:
    """The tumour-or-not figures of one source's predictions."""
    tumour = pred["true"].to_numpy() != "notumor"
    said_clean = pred["predicted"].to_numpy() == "notumor"
    ok = pred["status"].to_numpy() == "ok" if "status" in pred else np.ones(len(pred), bool)
    groups = pred["path"].map(patient_of).to_numpy()
    out = {"found": share(~said_clean[tumour], groups[tumour]),
           "cleared": share(said_clean[~tumour], groups[~tumour]),
           "notumor_ok": share((said_clean & ok)[tumour], groups[tumour]),
           "refused": share(~ok, groups)}
    keys = [g if _PATIENT.fullmatch(g) else None for g in groups]  # LGG patients; other slices stand alone
    b = binary_metrics(tumour, 1 - pred["p_notumor"].to_numpy(), ~said_clean, ok, groups, "patients", 2000,
                       patients=keys)
    out["auc"] = {"value": b["auc"] if b["auc"] is not None else float("nan"), "n": int(len(pred)),
                  "ci": tuple(float("nan") if v is None else v for v in b["auc_ci95"]),
                  "units": b["interval"]["n_units"]}
    four = pred["true"].to_numpy() == pred["predicted"].to_numpy()
    out["accuracy_4class"] = share(four, groups)
    if "per_patient" in b:  # metrics.patient_figures: tumour patients found, missed on every slice, ...
        out["per_patient"] = b["per_patient"]
    return out


def _kfold_training(run: Path) -> dict:
    """What a kfold run's folds trained: pooled out-of-fold accuracy (overall and per source) and the summed
    training time of its fold runs."""
    m = json.loads((run / "oof_metrics.json").read_text())
    folds = sorted(run.glob("fold_*/meta.json"))
    seconds = [json.loads(f.read_text()).get("train_seconds") for f in folds]
    return {"validation": {"accuracy": m.get("accuracy"), "per_source": {
                k: v.get("accuracy") for k, v in (m.get("per_source") or {}).items()}},
            "train_seconds": float(sum(s for s in seconds if s)), "folds": len(folds)}


def row(eval_run: Path, train_run: Path | None, label: str, held_out: str) -> dict:
    """One row: an evaluate run's predictions.csv, or a kfold run's oof_predictions.csv (every image scored by
    the fold model that never saw its patient; no gate status, so nothing counts as refused)."""
    kfold = (eval_run / "oof_predictions.csv").exists()
    pred = pd.read_csv(eval_run / ("oof_predictions.csv" if kfold else "predictions.csv"))
    sources = pred["source"] if "source" in pred else pd.Series(["all"] * len(pred))
    per_source = {str(s): figures(pred[sources == s]) for s in sorted(sources.unique())}
    r = {"label": label, "held_out": held_out, "eval_run": eval_run.name, "per_source": per_source}
    if train_run is not None and (train_run / "oof_metrics.json").exists():
        r["train_run"] = train_run.name
        r.update(_kfold_training(train_run))
        r["config_sha"] = __import__("hashlib").sha1((train_run / "config.yaml").read_bytes()).hexdigest()[:10]
    elif train_run is not None:
        m = json.loads((train_run / "metrics.json").read_text())
        cfg_text = (train_run / "config.yaml").read_text()
        r["train_run"] = train_run.name
        r["validation"] = {"accuracy": m.get("accuracy"), "per_source": {
            k: v.get("accuracy") for k, v in (m.get("per_source") or {}).items()}}
        r["config_sha"] = __import__("hashlib").sha1(cfg_text.encode()).hexdigest()[:10]
        meta = json.loads((train_run / "meta.json").read_text())
        r["train_seconds"] = meta.get("train_seconds") or meta.get("fit_seconds")
    return r


def _cell(f: dict) -> str:
    if not f["n"] or f["value"] != f["value"]:
        return "-"
    return f"{f['value']:.3f} ({f['ci'][0]:.2f}-{f['ci'][1]:.2f})"


def _patients(f: dict) -> str:
    pp = f.get("per_patient")
    if not pp or not pp["with_tumour"]:
        return "-"
    return f"{pp['found']} of {pp['with_tumour']}, median {pp['slice_sensitivity_median']:.2f}, lowest " \
           f"{pp['slice_sensitivity_lowest']:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| recipe | held out | source | n | tumour found | clean cleared | notumor+ok on tumour | refused | "
             "tumour-or-not AUC | tumour patients found (a patient's share found) | "
             "train val acc (sources it trained on) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        val = r.get("validation", {})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in (val.get("per_source") or {}).items() if v is not None)
        for src, f in r["per_source"].items():
            n = f["refused"]["n"]
            lines.append(f"| {r['label']} | {r['held_out']} | {src} | {n} | {_cell(f['found'])} | "
                         f"{_cell(f['cleared'])} | {_cell(f['notumor_ok'])} | {_cell(f['refused'])} | "
                         f"{_cell(f['auc']) if 'auc' in f else '-'} | {_patients(f)} | {shown} |")
    lines.append("")
    lines.append("Intervals: 95% percentile bootstrap resampling patients (2,000 resamples); units per cell in "
                 "benchmarks/external.jsonl.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("row", help="append one row from an evaluate run")
    a.add_argument("eval_run", type=Path)
    a.add_argument("--train", type=Path, default=None)
    a.add_argument("--label", required=True)
    a.add_argument("--held-out", required=True)
    a.add_argument("--dry", action="store_true", help="print the row, do not append it")
    sub.add_parser("table", help="print every recorded row as markdown")
    args = ap.parse_args()
    if args.cmd == "row":
        r = row(args.eval_run, args.train, args.label, args.held_out)
        print(table([r]))
        if not args.dry:
            with ROWS.open("a") as f:
                f.write(json.dumps(r) + "\n")
    else:
        rows = [json.loads(x) for x in ROWS.read_text().splitlines() if x.strip()] if ROWS.exists() else []
        print(table(rows))


if __name__ == "__main__":
    main()
