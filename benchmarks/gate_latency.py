"""What the out-of-distribution gate adds to single-image serving latency (issue 13: at most 15%).

The same run served twice in this process: as it is (temperature + gate, one forward pass returning the
probabilities and the gate's features, then a Mahalanobis distance in NumPy) and as a copy without gate.json /
gate.npz (an older run: the probabilities model alone). Both go through ``Predictor.predict(bytes)``, the path
/predict takes, taking turns call by call so background load hits both alike.

    python benchmarks/gate_latency.py --run runs/train/<run> [--onnx runs/export/<export>/model.onnx]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load_serve import synthetic_jpeg  # noqa: E402


def without_gate(run_dir: Path) -> Path:
    copy = Path(tempfile.mkdtemp(prefix="no-gate-")) / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("gate.json", "gate.npz", "plots", "cam"))
    return copy


def timed(fns: dict, n: int) -> dict[str, list[float]]:
    """``n`` timings of each, the variants taking turns call by call in a rotating order (blocks of 50 calls
    each let load that comes and goes land on one variant: +76% one run, +4% the next, on a loaded machine)."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(20):
            fn()
    order = list(fns.items())
    for i in range(n):
        for k, fn in order[i % len(order):] + order[:i % len(order)]:
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000)
    return times


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--n", type=int, default=500, help="timed calls per variant")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from braintumor.serve.predictor import Predictor

    run = Path(args.run)
    data = synthetic_jpeg()
    gated, plain = Predictor.load(run), Predictor.load(without_gate(run))
    assert gated.decider.has_gate and not plain.decider.has_gate, "the run must have a gate"
    times = timed({"gate": lambda: gated.predict(data), "no gate": lambda: plain.predict(data)}, args.n)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    result = {"p50_ms": p50, "overhead": p50["gate"] / p50["no gate"] - 1, "n": args.n,
              "feature_width": int(sum(gated.decider.gates[0].widths))}
    result["target_le_15pct"] = result["overhead"] <= 0.15
    print(f"single image, bytes -> verdict: gate {p50['gate']:.2f} ms, no gate {p50['no gate']:.2f} ms p50 "
          f"({100 * result['overhead']:+.1f}%; {result['feature_width']}-wide features); target <= +15%: "
          f"{result['target_le_15pct']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
