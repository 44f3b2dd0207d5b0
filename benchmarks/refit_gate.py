"""Fit a train run's calibration and gate again with this checkout's code, in place (gate.json, gate.npz,
calibration.json), exactly as `train` fits them at its end: for runs trained before the gate changed.

    python benchmarks/refit_gate.py RUN [--layers block3_2_act,block4_2_act] [--seed 1]
    python benchmarks/refit_gate.py COPY --extra-negatives DIR [--extra-positives DIR]   # a probe (ood.md)

The model is not touched. The run's own split.csv gives the training images (the class means) and the held-out
ones with their sources (the per-source threshold), as train had them. ``--extra-positives`` / ``--extra-negatives``:
every image under a folder (e.g. benchmarks/synth_brains.py's) joins the brain-MRI-or-not head's positives /
negatives, read as an upload is; a probe of what the head could be fitted on, not a config option: refit a copy
(``cp -r RUN COPY``), the run's own gate is replaced in place.
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

import braintumor.engine.gate_fit as gate_fit  # noqa: E402
from braintumor.data import find_images, map_images  # noqa: E402
from braintumor.engine.scorer import probabilities as predict  # noqa: E402
from braintumor.engine.trainer import calibrate_and_gate, validation_steers  # noqa: E402
from braintumor.models.loading import load_listing, load_run  # noqa: E402


def add_extra(run, positives: Path | None, negatives: Path | None) -> None:
    """Wrap gate_fit's two draws so the images under ``positives`` / ``negatives`` join them (this process only)."""
    def images(folder: Path) -> np.ndarray:
        read = [r for r in map_images(find_images([folder]), run.spec.read) if not isinstance(r, str)]
        return np.stack([r[0] for r in read])

    if positives is not None:
        pos, draw_pos = images(positives), gate_fit.shifted_positives
        gate_fit.shifted_positives = lambda imgs, rng, per_kind=gate_fit.SHIFTED_PER_KIND: np.concatenate(
            [draw_pos(imgs, rng, per_kind), pos])
    if negatives is not None:
        neg, draw_neg = images(negatives), gate_fit.negative_images
        gate_fit.negative_images = lambda spec, n=gate_fit.NEGATIVES, seed=0: np.concatenate(
            [draw_neg(spec, n, seed), neg])


def refit(run_dir: Path, layers: list[str] | None = None, seed: int | None = None,
          extra: tuple[Path | None, Path | None] = (None, None)) -> dict:
    run = load_run(run_dir)
    add_extra(run, *extra)
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
    parser.add_argument("--extra-positives", type=Path, default=None, help="folder: more brain MRI for the head")
    parser.add_argument("--extra-negatives", type=Path, default=None, help="folder: more non-brain for the head")
    args = parser.parse_args()
    out = refit(args.run, args.layers.split(",") if args.layers else None, args.seed,
                (args.extra_positives, args.extra_negatives))
    print(json.dumps({"report": out.get("gate"), "gate.json": json.loads((args.run / "gate.json").read_text())},
                     indent=2))


if __name__ == "__main__":
    main()
