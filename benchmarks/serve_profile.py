"""Where the serving path's time goes: file bytes -> verdict, step by step, against the raw compiled call.

One process, one train run (``--run DIR``): the raw compiled call (``tf.function(model(x, training=False))`` on
the preprocessed image, as ``benchmarks/inference.py`` times it), ``Predictor.predict(bytes)`` (what /predict
does, the gate and the input checks included) and each of its steps alone, taking turns call by call so
machine load hits them alike; then a cProfile of ``predict(bytes)`` whose top functions are printed as shares of
its time. Absolute milliseconds on a loaded machine are noise: read the ratios and the shares.

    python benchmarks/serve_profile.py --run runs/train/<run> [--file scan.jpg] [--calls 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def first_file(run_dir: Path) -> bytes:
    """A real image of the run's own split (what ``benchmarks/inference.py`` times)."""
    import csv

    with open(run_dir / "split.csv") as f:
        for row in csv.DictReader(f):
            if Path(row["path"]).is_file():
                return Path(row["path"]).read_bytes()
    raise SystemExit(f"no readable image in {run_dir / 'split.csv'}: pass --file")


def main(argv=None) -> dict:
    common.quiet_tensorflow()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a train run directory")
    p.add_argument("--file", default=None, help="the image to send (default: the first of the run's split)")
    p.add_argument("--calls", type=int, default=100, help="timed calls per block")
    p.add_argument("--repeats", type=int, default=5, help="interleaved blocks")
    p.add_argument("--top", type=int, default=18, help="functions shown from the profile")
    args = p.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    from braintumor.images import decode
    from braintumor.input_checks import InputStats
    from braintumor.serve.predictor import Predictor, check_pixels

    run_dir = Path(args.run)
    data = Path(args.file).read_bytes() if args.file else first_file(run_dir)
    predictor = Predictor.load(run_dir)
    spec, backend = predictor.spec, predictor.backend
    image, stats = predictor.image(data)
    model = predictor.run.model
    x1 = tf.constant(image[None].astype(np.float32))
    raw = tf.function(lambda x: model(x, training=False), jit_compile=False, reduce_retracing=True)
    img = decode(data, None, spec.scan)
    out = backend.scores(image[None])
    steps = {
        "raw compiled call": lambda: raw(x1).numpy(),
        "predict(bytes) -> verdict": lambda: predictor.predict(data),
        "  check_pixels (header)": lambda: check_pixels(data, predictor.max_pixels),
        "  decode": lambda: decode(data, None, spec.scan),
        "  prepare (frame, resize)": lambda: spec.prepare(img),
        "  InputStats.of": lambda: InputStats.of(img),
        "  backend.scores": lambda: backend.scores(image[None]),
        "  decider.from_raw": lambda: predictor.decider.from_raw(out[0], out[1], [stats]),
    }
    for fn in steps.values():
        for _ in range(5):
            fn()
    blocks: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps.items())
    for _ in range(args.repeats):  # the steps take turns call by call, in a rotating order: the same conditions
        times: dict[str, list[float]] = {k: [] for k in steps}
        for i in range(args.calls):
            for k, fn in order[i % len(order):] + order[:i % len(order)]:
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1000)
        for k, v in times.items():
            blocks[k].append(statistics.median(v))
    ms = {k: statistics.median(v) for k, v in blocks.items()}
    raw_ms = ms["raw compiled call"]
    print(f"{predictor.run.config.model.arch} {spec.size} px x{spec.channels}, gate {predictor.decider.has_gate}, "
          f"{len(data):,} byte file {img.width}x{img.height} {img.mode}; load average "
          f"{[round(x, 2) for x in os.getloadavg()]}")
    for k, v in ms.items():
        print(f"{k:32s} {v:7.3f} ms  x{v / raw_ms:5.2f} raw")

    prof = cProfile.Profile()
    n = args.calls * 2
    prof.enable()
    for _ in range(n):
        predictor.predict(data)
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    total = st.total_tt
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][3], reverse=True)  # by cumulative time
    print(f"\ncProfile of {n} predict(bytes) calls: {1000 * total / n:.3f} ms each under the profiler; "
          "cumulative share of each function:")
    shown = 0
    for (file, line, name), (_, _, tt, ct, _) in rows:
        if shown >= args.top:
            break
        print(f"  {100 * ct / total:5.1f}% cum  {100 * tt / total:5.1f}% own  {name} ({Path(file).name}:{line})")
        shown += 1
    return {"ms": ms, "ratio_to_raw": {k: v / raw_ms for k, v in ms.items()}, "load_average": os.getloadavg()}


if __name__ == "__main__":
    main()
