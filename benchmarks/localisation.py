"""Where do a run's heatmaps look? Scores trained runs against figshare tumour boxes through `cam --boxes`' code.

Each row: one model (a train run, or every fold of a kfold run), one way of explaining it (method and layers),
scored on every annotated slice: pointing game (exact and with the 0.15 tolerance), energy ratio, the centre
prior's figures on the same slices, and the model's accuracy on them. Rows are appended to
benchmarks/localisation.jsonl; ``--table`` prints the Markdown table benchmarks/localisation.md quotes.

    python benchmarks/localisation.py RUN [RUN ...] --label crop --specs default,gradcam@auto
    python benchmarks/localisation.py --table

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


def score(runs: list[str], specs: list[str], boxes: str, label: str) -> None:
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
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    score(args.runs, [s for s in args.specs.split(",") if s], args.boxes, args.label)


if __name__ == "__main__":
    main()
