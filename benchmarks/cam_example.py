"""The README's localisation picture: the same annotated slices explained by several runs, one row per run.

The slices are chosen without looking at any model: for each class, the slice whose box area is the median of that
class's boxes (ties: the first by path). Each cell is the scan at its own resolution with the run's map of the true
class (its default explanation: eval.cam_*, else the architecture's, unless METHOD@LAYERS is given), the box in
green, its energy ratio, and whether the peak lands within the tolerance (frame green) or not (red).

    python benchmarks/cam_example.py --boxes HALF_B.csv --out docs/cam_boxes_example.png \\
        "shipped recipe=runs/train/RUN1" "guided recipe=runs/train/RUN2"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from braintumor import plots  # noqa: E402
from braintumor.commands.cam import resolve_explanation, run_explanation  # noqa: E402
from braintumor.commands.localise import read_annotations, true_class  # noqa: E402
from braintumor.data import decode  # noqa: E402
from braintumor.explain.gradcam import explain  # noqa: E402
from braintumor.explain.localisation import score  # noqa: E402
from braintumor.explain.render import draw_region, native_view, overlay  # noqa: E402
from braintumor.models.loading import load_run  # noqa: E402


def median_box_slices(annotations, classes) -> list[str]:
    """Per class (in the model's order), the slice whose region area is the median of its class."""
    picks = []
    for cls in classes:
        mine = sorted((float(r.mask(256, 256).mean()), p) for p, r in annotations.regions.items() if r.label == cls)
        if mine:
            picks.append(mine[(len(mine) - 1) // 2][1])
    return picks


def row(run_dir: Path, spec: str | None, annotations, paths: list[str]) -> tuple[str, list[tuple]]:
    run = load_run(run_dir)
    if spec:
        method, layers = spec.split("@")
        method, layers = resolve_explanation(run.model, method, layers.split("+"))
    else:
        method, layers = resolve_explanation(run.model, None, None, run_explanation(run))
    cells = []
    for path in paths:
        region = annotations.regions[path]
        truth = true_class(path, region, run.class_names)
        img = decode(path)
        array, box = run.spec.prepare(img)
        e = explain(run.model, array, truth, layers, method)
        rgb, heat = native_view(img, box, e.heatmap, max_side=max(img.size))
        s = score(heat, region)
        shown = draw_region(overlay(rgb, heat), region.mask(*heat.shape))
        hit = s.pointing_tol >= 0.5
        cells.append((shown, f"{region.label}: energy {s.energy:.1f}\npeak {'near the box' if hit else 'MISSES'}",
                      hit))
    return f"{method} @ {'+'.join(layers)}", cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="LABEL=RUN or LABEL=RUN@METHOD@LAYERS, one row each")
    parser.add_argument("--boxes", required=True, help="boxes CSV (cam --boxes' format)")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    first = load_run(Path(args.rows[0].split("=", 1)[1].split("@", 1)[0]))
    annotations = read_annotations(args.boxes, [], first.class_names)
    paths = median_box_slices(annotations, first.class_names)
    grid, labels = [], []
    for item in args.rows:
        label, target = item.split("=", 1)
        run_dir, _, spec = target.partition("@")
        how, cells = row(Path(run_dir), spec or None, annotations, paths)
        grid.append(cells)
        labels.append(f"{label}\n{how}")
    fig = plots.image_grid_figure(grid, labels, "the median-box slice of each class, true class explained "
                                                "(green box: the tumour)")
    Path(args.out).write_bytes(plots.figure_png(fig))
    print(args.out, [Path(p).name for p in paths])


if __name__ == "__main__":
    main()
