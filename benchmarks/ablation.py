"""CustomNet recipe ablation (issue 8): one lever at a time against a fixed baseline, on held-out k-fold folds.

Every lever is a set of config overrides (the same `--set section.key=value` strings the CLI takes). Each run
goes through kfold's own fold code (`kfold.fit_fold`): duplicate groups stay inside one fold, and the held-out
fold never steers training (recipes that pick a best epoch or lower the rate on plateaus get an inner split).
Each result is scored with and without test-time flip averaging (TTA) from the same model.

    python benchmarks/ablation.py --size 64 --epochs 12 --levers baseline,gray,erasing
    python benchmarks/ablation.py --table          # render benchmarks/ablation.md from ablation.jsonl

Results are appended to benchmarks/ablation.jsonl (one JSON object per run, with the machine's load), so an
interrupted sweep loses nothing and reruns add rows instead of replacing them.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_HELP, DEFAULT_DATA, REPO, machine, quiet_tensorflow  # noqa: E402

OUT = REPO / "benchmarks" / "ablation.jsonl"

# The protocol's fixed part: a fixed schedule and the last epoch, so the held-out fold only scores.
BASE = ["train.lr_schedule=cosine", "train.checkpoint=last", "train.early_stopping_patience=0"]

LEVERS: dict[str, list[str]] = {
    "baseline": [],
    "plateau_best": ["train.lr_schedule=plateau", "train.checkpoint=best", "train.early_stopping_patience=8"],
    "adamw_warmup": ["train.optimizer=adamw", "train.weight_decay=1e-4", "train.warmup_epochs=2"],
    "label_smoothing": ["train.label_smoothing=0.1"],
    "gray": ["data.color_mode=grayscale"],
    "residual": ["model.residual=true"],
    "squeeze_excite": ["model.squeeze_excite=true"],
    "separable": ["model.separable=true"],
    "wider": ["model.filters=[24,48,96,192]"],
    "erasing": ["data.augment.erasing=0.25"],
    "strong_geometry": ["data.augment.rotation=0.05", "data.augment.zoom=0.15", "data.augment.contrast=0.2",
                        "data.augment.brightness=0.15"],
    "vertical_flip": ["data.augment.flip_vertical=true"],
    "mixup": ["data.augment.mixup=0.2"],
    "no_augment": ["data.augment.flip_horizontal=false", "data.augment.rotation=0", "data.augment.zoom=0",
                   "data.augment.brightness=0", "data.augment.contrast=0"],
    "dropout_0.5": ["model.dropout=0.5"],
    "lr_2e-3": ["train.lr=2e-3"],
    "ema": ["train.ema=0.99"],
    "double_epochs": [],  # handled by --epochs x2 in run_one
    "size_96": ["data.image_size=96"],
    "size_128": ["data.image_size=128"],
}


def snapshot_config(runs_dir: Path) -> Path:
    """Copy the shipped YAML once per sweep: a sweep is hours long, and re-reading a file someone edits mid-sweep
    once killed one (a new key) and could silently mix recipes."""
    from braintumor.config import configs_dir

    runs_dir.mkdir(parents=True, exist_ok=True)
    snap = runs_dir / f"customnet-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    snap.write_text((configs_dir() / "customnet.yaml").read_text())
    return snap


def run_one(lever: str, extra: list[str], args, plans: dict) -> dict:
    from braintumor.commands import kfold
    from braintumor.config import load_config
    from braintumor.engine.scorer import probabilities as predict
    from braintumor.metrics import compute_metrics
    from braintumor.runs import read_json

    epochs = args.epochs * (2 if lever == "double_epochs" else 1)
    sets = BASE + [f"data.image_size={args.size}", f"train.epochs={epochs}", "eval.bootstrap=1000",
                   *LEVERS.get(lever, []), *extra]
    cfg = load_config("customnet", args.config, {"data": args.data, "runs_dir": args.runs_dir, "name": f"abl-{lever}"},
                      sets)
    key = (cfg.data.image_size, cfg.data.color_mode)
    if key not in plans:  # decode each size / colour once per sweep
        plans[key] = kfold.plan_folds(cfg, args.folds)
    plan = plans[key]
    from braintumor.runs import new_run_dir

    run_dir = new_run_dir(cfg.runs_dir, "ablation", "customnet", f"{lever}-f{args.fold}")
    started = time.perf_counter()
    kfold.fit_fold(cfg, run_dir, run_dir / "fold", plan, args.fold)
    wall = time.perf_counter() - started
    fold_dir = run_dir / "fold"
    meta, metrics = read_json(fold_dir / "meta.json"), read_json(fold_dir / "metrics.json")
    # the same model, scored again with flip averaging
    import keras
    import numpy as np

    model = keras.models.load_model(fold_dir / "model.keras", safe_mode=True)
    held = np.flatnonzero(plan.folds == args.fold)
    tta_probs = predict(model, plan.loaded.images[held], 64, tta=not cfg.eval.tta)
    tta = compute_metrics(plan.loaded.labels[held], tta_probs, plan.loaded.class_names, 0, cfg.seed)
    row = {
        "lever": lever, "sets": LEVERS.get(lever, []) + extra, "image_size": cfg.data.image_size,
        "color_mode": cfg.data.color_mode, "epochs": epochs, "fold": args.fold, "folds": args.folds,
        "n_train": meta.get("n_train"), "n_scored": meta.get("n_scored"), "params": meta.get("params"),
        "accuracy": metrics["accuracy"], "accuracy_ci": metrics.get("accuracy_ci95"),
        "macro_f1": metrics["macro_f1"], "auc": metrics.get("auc"),
        ("accuracy_no_tta" if cfg.eval.tta else "accuracy_tta"): tta["accuracy"],
        "train_seconds": meta.get("train_seconds"), "wall_seconds": round(wall, 1),
        "train_images_per_second": meta.get("train_images_per_second"),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "run_dir": str(run_dir), "config": str(args.config), "load_average_after": machine()["load_average"],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| lever | overrides | size | epochs | fold acc | 95% CI | + TTA | macro-F1 | train s | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = r["accuracy_ci"] or [float("nan")] * 2  # of the recipe's own score (with TTA when eval.tta is on)
        plain = r.get("accuracy_no_tta", r["accuracy"])  # runs of a recipe with eval.tta: true store it this way
        tta = r.get("accuracy_tta", r["accuracy"])
        lines.append(f"| {r['lever']} | {' '.join(r['sets']) or '-'} | {r['image_size']} | {r['epochs']} "
                     f"| {plain:.4f} | {ci[0]:.3f}-{ci[1]:.3f} | {tta:.4f} | {r['macro_f1']:.4f} "
                     f"| {r['train_seconds']:.0f} | {r['train_images_per_second']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    ap.add_argument("--size", type=int, default=64, help="image size for every lever (default 64)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs per run (double_epochs doubles it)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold", type=int, default=1, help="the held-out fold every lever is scored on")
    ap.add_argument("--levers", default=",".join(LEVERS), help=f"comma list of: {', '.join(LEVERS)}")
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    help="extra override for every lever in this call (repeatable)")
    ap.add_argument("--runs-dir", default="/tmp/braintumor-ablation/runs")
    ap.add_argument("--table", action="store_true", help="print the table of every recorded run and stop")
    args = ap.parse_args()
    if args.table:
        rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
        print(table(rows))
        return
    levers = [x for x in args.levers.split(",") if x]
    unknown = [x for x in levers if x not in LEVERS]
    if unknown:
        raise SystemExit(f"unknown lever {unknown[0]!r}; choose from {', '.join(LEVERS)}")
    quiet_tensorflow()
    args.config = snapshot_config(Path(args.runs_dir))
    print(f"config: {args.config} (copied from configs/customnet.yaml now: editing the YAML cannot change this sweep)")
    plans: dict = {}
    for lever in levers:
        r = run_one(lever, args.extra, args, plans)
        print(f"{lever:16s} acc {r['accuracy']:.4f} tta {r.get('accuracy_tta', r['accuracy']):.4f} "
              f"train {r['train_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
