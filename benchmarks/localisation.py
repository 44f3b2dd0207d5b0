"""Where do a run's heatmaps look? Scores trained runs against figshare tumour boxes through `cam --boxes`' code.

Each row: one model (a train run, or every fold of a kfold run), one way of explaining it (method and layers),
scored on every annotated slice: pointing game (exact and with the 0.15 tolerance), energy ratio, the centre
prior's figures on the same slices, and the model's accuracy on them. Rows are appended to
benchmarks/localisation.jsonl; ``--table`` prints the Markdown table benchmarks/localisation.md quotes.

    python benchmarks/localisation.py RUN [RUN ...] --label crop --specs default,gradcam@auto
    python benchmarks/localisation.py --table
    python benchmarks/localisation.py --nested "guided recipe, 5-fold"

Choosing an explanation is nested: with a kfold run and several specs, each fold's explanation is chosen on the
*other* folds' rows (the RULE below) and scored on this fold's held-out slices; the pooled figure over the folds is
the estimate to quote. The best spec on the very slices it is reported on is a selection (best of N), printed beside
it so the two are never confused. ``--nested LABEL`` prints that report from the rows already logged under labels
starting with LABEL (one row per fold and spec), without scoring anything.

A spec is METHOD@LAYERS: ``auto`` is the last convolutional layer, ``default`` (alone) is what `cam` draws for
the run (its eval.cam_method/eval.cam_layers, else the architecture's default), and several layers joined by
``+`` are fused by their maximum.
Note: the Kaggle training folder absorbed the figshare collection, so a model trained there has seen many of
these slices: fine for asking where it looks, not a test of accuracy (the accuracy column is not a result).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, shown_path  # noqa: E402

quiet_tensorflow()

from braintumor.commands.cam import resolve_explanation, run_explanation  # noqa: E402
from braintumor.commands.localise import read_annotations, run_localisation  # noqa: E402
from braintumor.explain.graph import last_conv_layer  # noqa: E402
from braintumor.models.loading import load_run  # noqa: E402

BOXES = "/work/shared/data/figshare-tumour-boxes/boxes.csv"
LOG = Path(__file__).resolve().parent / "localisation.jsonl"
# RULE, the one the guided recipe's choice followed: the highest pooled pointing (tolerant) among the specs whose
# energy ratio is at least MIN_ENERGY on every development fold (tight maps, not just well-placed peaks)
MIN_ENERGY = 3.0


def models(runs: list[str]) -> list[Path]:
    out = []
    for r in map(Path, runs):
        folds = sorted(r.glob("fold_*"), key=lambda p: int(p.name[5:]))
        out += [f for f in folds if (f / "model.keras").is_file()] if folds else [r]
    return out


def explanation(run, spec: str) -> tuple[str, list[str]]:
    if spec == "default":  # the run's eval.cam_* choice, else the architecture's: what `cam` draws
        return resolve_explanation(run.model, None, None, run_explanation(run))
    method, layers = spec.split("@")
    names = [last_conv_layer(run.model) if n == "auto" else n for n in layers.split("+")]
    return resolve_explanation(run.model, method, names)


def score(runs: list[str], specs: list[str], boxes: str, label: str) -> list[dict]:
    logged = []
    for run_dir in models(runs):
        run = load_run(run_dir)
        annotations = read_annotations(boxes, [], run.class_names)
        for spec in specs:
            method, layers = explanation(run, spec)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                report = run_localisation(run, Path(tmp), annotations, method, layers)
            s = report.summary
            row = {"label": label, "run": shown_path(run_dir), "method": method, "layers": layers,
                   "n": s["model"]["n"], "pointing": s["model"]["pointing"],
                   "pointing_tol": s["model"]["pointing_tol"], "energy": s["model"]["energy"],
                   "prior_pointing_tol": s["prior"]["pointing_tol"], "prior_energy": s["prior"]["energy"],
                   "accuracy_on_boxes": s["accuracy"], "seconds": round(time.perf_counter() - started, 1),
                   "crop": run.config.data.crop, "normalize": run.config.data.normalize}
            print(json.dumps(row), flush=True)
            with LOG.open("a") as f:
                f.write(json.dumps(row) + "\n")
            logged.append(row)
    return logged


def _fold(row: dict) -> int | None:
    name = Path(row["run"]).name
    return int(name[5:]) if name.startswith("fold_") and name[5:].isdigit() else None


def _spec(row: dict) -> str:
    return f"{row['method']} @ {'+'.join(row['layers'])}"


def _pooled(rows: list[dict]) -> float:
    return sum(r["pointing_tol"] * r["n"] for r in rows) / sum(r["n"] for r in rows)


def nested(rows: list[dict], min_energy: float = MIN_ENERGY) -> dict:
    """Leave-one-fold-out choice of the explanation: for each fold, RULE applied to the other folds' rows picks a
    spec, scored on this fold. Returns per-fold choices, the pooled nested estimate and, for contrast, the per-fold
    best (a selection on the reported slices). ``rows``: one per (fold, spec), every spec on every fold."""
    table: dict[str, dict[int, dict]] = {}
    for r in rows:
        if _fold(r) is not None:
            table.setdefault(_spec(r), {})[_fold(r)] = r
    folds = sorted({k for by_fold in table.values() for k in by_fold})
    table = {s: by_fold for s, by_fold in table.items() if sorted(by_fold) == folds}  # specs scored on every fold
    if len(folds) < 2 or len(table) < 2:
        raise SystemExit("nested choice needs at least two folds, each scored with the same two or more specs")
    out = {"specs": sorted(table), "folds": []}
    for k in folds:
        dev = {s: [by_fold[j] for j in folds if j != k] for s, by_fold in table.items()}
        eligible = {s: _pooled(r) for s, r in dev.items() if min(x["energy"] for x in r) >= min_energy} or \
            {s: _pooled(r) for s, r in dev.items()}  # none tight enough anywhere: pointing alone decides
        chosen = max(eligible, key=eligible.get)
        best = max(table, key=lambda s: table[s][k]["pointing_tol"])
        out["folds"].append({"fold": k, "chosen": chosen, "dev_pointing": eligible[chosen],
                             "held_out": table[chosen][k], "best": best, "best_row": table[best][k]})
    out["estimate"] = _pooled([f["held_out"] for f in out["folds"]])
    out["selection"] = _pooled([f["best_row"] for f in out["folds"]])
    out["per_spec"] = {s: _pooled(list(by_fold.values())) for s, by_fold in table.items()}
    out["n"] = sum(f["held_out"]["n"] for f in out["folds"])
    return out


def nested_report(rows: list[dict], min_energy: float = MIN_ENERGY) -> str:
    """Markdown: the nested estimate (quote this) and the selections it replaces (do not)."""
    r = nested(rows, min_energy)
    lines = [f"Nested choice among {len(r['specs'])} explanations (rule: highest pooled pointing, energy >= "
             f"{min_energy:g} on every development fold; chosen on the other folds, scored on this one):", "",
             "| held-out fold | chosen on the other folds | their pooled pointing | held-out pointing (tol.) / energy "
             "| best on this fold (a selection) |", "|---|---|---|---|---|"]
    for f in r["folds"]:
        h, b = f["held_out"], f["best_row"]
        lines.append(f"| {f['fold']} | {f['chosen']} | {f['dev_pointing']:.3f} | {h['pointing_tol']:.3f} / "
                     f"{h['energy']:.2f} | {f['best']}: {b['pointing_tol']:.3f} |")
    lines += ["", f"**Estimate** (nested, pooled over the held-out folds, n={r['n']}): pointing {r['estimate']:.3f}.",
              f"Selection, not an estimate: the best spec per fold on its own slices pools to {r['selection']:.3f}; "
              "each spec's own pooled figure (one of these picked after looking is a selection too): "
              + ", ".join(f"{s} {v:.3f}" for s, v in sorted(r["per_spec"].items(), key=lambda kv: -kv[1])) + "."]
    return "\n".join(lines)


def table() -> str:
    rows = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    lines = ["| label | model | method @ layers | n | pointing | pointing (tol.) | energy | prior (tol.) | "
             "prior energy |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {Path(r['run']).name} | {r['method']} @ {'+'.join(r['layers'])} | {r['n']} "
                     f"| {r['pointing']:.3f} | {r['pointing_tol']:.3f} | {r['energy']:.2f} | "
                     f"{r['prior_pointing_tol']:.3f} | {r['prior_energy']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="train runs or kfold runs (every fold is scored)")
    parser.add_argument("--boxes", default=BOXES, help="boxes CSV (default: the shared figshare half)")
    parser.add_argument("--specs", default="default", help="comma-separated METHOD@LAYERS, or default")
    parser.add_argument("--label", default="", help="a name for the recipe, in the table")
    parser.add_argument("--table", action="store_true", help="print the table of every logged row")
    parser.add_argument("--nested", metavar="LABEL", help="the nested choice report from logged rows whose label "
                        "starts with LABEL (a kfold run scored with several specs)")
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    if args.nested is not None:
        rows = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
        print(nested_report([r for r in rows if r["label"].startswith(args.nested)]))
        return
    specs = [s for s in args.specs.split(",") if s]
    logged = score(args.runs, specs, args.boxes, args.label)
    if len(specs) > 1 and sum(_fold(r) is not None for r in logged) > len(specs):  # several folds, several specs
        print(nested_report(logged))


if __name__ == "__main__":
    main()
