"""Fit a train run's calibration and gate again with this checkout's code, in place (gate.json, gate.npz,
calibration.json), exactly as `train` fits them at its end: for runs trained before the gate changed.

    python benchmarks/refit_gate.py RUN [--layers block3_2_act,block4_2_act] [--seed 1]

The model is not touched. The run's own split.csv gives the training images (the class means) and the held-out
ones with their sources (the per-source threshold), as train had them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import pandas as pd  # noqa: E402

from braintumor.engine.scorer import probabilities as predict  # noqa: E402
from braintumor.engine.trainer import calibrate_and_gate, validation_steers  # noqa: E402
from braintumor.models.loading import load_listing, load_run  # noqa: E402


def refit(run_dir: Path, layers: list[str] | None = None, seed: int | None = None) -> dict:
    run = load_run(run_dir)
    cfg = run.config
    if seed is not None:  # the brain-MRI-or-not head's draws (shifted positives, negatives)
        cfg = replace(cfg, seed=seed)
    if layers is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, gate_layers=tuple(layers)))
    split = pd.read_csv(run_dir / "split.csv")
    part = split[split["split"].isin(["train", "val"])].reset_index(drop=True)
    loaded = load_listing(run, part["path"].tolist(), part["label"].to_numpy())
    if len(loaded.paths) != len(part):
        raise SystemExit(f"{len(part) - len(loaded.paths)} images of split.csv could not be read")
    loaded.sources = part["source"].astype(str).tolist() if "source" in part else []
    train_idx = np.flatnonzero(part["split"].to_numpy() == "train")
    held_idx = np.flatnonzero(part["split"].to_numpy() == "val")
    held_probs = predict(run.model, loaded.images[held_idx], cfg.train.batch_size, cfg.eval.tta)
    return calibrate_and_gate(cfg, run_dir, run.model, loaded, train_idx, held_idx, held_probs,
                              honest=not validation_steers(cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--layers", default=None, help="comma list: eval.gate_layers to fit with instead")
    parser.add_argument("--seed", type=int, default=None, help="seed of the head's draws (default: the run's)")
    args = parser.parse_args()
    out = refit(args.run, args.layers.split(",") if args.layers else None, args.seed)
    print(json.dumps({"report": out.get("gate"), "gate.json": json.loads((args.run / "gate.json").read_text())},
                     indent=2))


if __name__ == "__main__":
    main()
