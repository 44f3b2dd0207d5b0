"""How often does Grad-CAM localise the evidence on a freshly trained toy CustomNet? Sizes tests/test_cam.py.

Trains the blob-vs-plain model of tests/test_cam.py once per seed (about 15 s each on 2 cores) and scores the
30 held-out blob images of ``test_heatmap_mass_lies_on_the_blob`` with three localisation measures:

- ``peak``: the heatmap's maximum lies on a blob pixel (pointing game, no tolerance);
- ``near``: the maximum lies within one feature-map cell (2 px) of the blob (pointing game with tolerance);
- ``mass``: mean share of the heatmap's mass on the blob (energy-based pointing game), chance = the blob's area.

CPU training is not bit-reproducible across machines (nor across processes here), so the test must hold for the
spread of models a seed can give, not for one lucky model. Rerun:

    python benchmarks/cam_localisation.py --seeds 21-80 [--set model.leaky_alpha=0.1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, quiet_tensorflow  # noqa: E402


def seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="21-40", help="a range like 21-80 or a list like 1,2,3")
    parser.add_argument("--set", action="append", default=[], help="extra config override for the toy model")
    args = parser.parse_args()
    quiet_tensorflow()
    sys.path.insert(0, str(REPO / "tests"))
    import numpy as np
    import test_cam as T  # the test's own task, recipe and held-out images
    from scipy.ndimage import binary_dilation

    from braintumor.cli import app
    from braintumor.explain import gradcam
    from braintumor.models.loading import load_run

    extra = [a for s in args.set for a in ("--set", s)]
    print(f"recipe: {' '.join(T.TRAIN + extra)}")
    print("seed | method | right | peak | near | mass (chance 0.0625)")
    for seed in seeds(args.seeds):
        root = Path(tempfile.mkdtemp())
        try:
            data = T.write_blob_data(root / "data", per_class=150, seed=0)
            res = T.runner.invoke(app, ["train", "--data", str(data), "--runs-dir", str(root / "runs"), *T.TRAIN,
                                        *extra, "--set", f"seed={seed}"])
            if res.exit_code:
                raise SystemExit(res.output)
            (run_dir,) = (root / "runs" / "train").iterdir()
            model = load_run(run_dir).model
            for method in gradcam.METHODS:
                right = peak = near = 0
                mass = []
                for gray in T.held_out_blobs():
                    e = gradcam.explain(model, T.rgb(gray), method=method)
                    blob = gray >= 200
                    y, x = np.unravel_index(np.argmax(e.heatmap), e.heatmap.shape)
                    right += e.predicted == 0
                    peak += bool(blob[y, x])
                    near += bool(binary_dilation(blob, iterations=2)[y, x])
                    mass.append(T.mass_share(e.heatmap, blob))
                print(f"{seed} | {method} | {right} | {peak} | {near} | {np.mean(mass):.3f}", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
