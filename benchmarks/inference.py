"""Inference: single-image latency of the serving path against the raw compiled call; batched throughput.

All in one process, on one train run (``--run DIR``, or a CustomNet trained here for one epoch on a few real
images at the default size: latency does not depend on how well a model is trained):

- raw compiled call: ``tf.function(model(x, training=False))`` on one preprocessed (1, h, w, c) float image;
- serving path: ``braintumor.serve.predictor.Predictor`` as the server uses it, from the uploaded file's bytes
  to the verdict (decode, the gate's input checks, resize, one compiled call returning probabilities and the
  gate's features, temperature, feature distance); and its ``infer`` on the preprocessed array alone. The server
  answers from one forward pass: it does not average over a flip, whatever the run's ``eval.tta`` says;
- ``model.predict`` on one image, for reference (what the serving path avoids);
- batched throughput: the raw compiled call on batches of ``--batch`` images.

Each figure is the median over ``--repeats`` blocks of the median of ``--calls`` timed calls, the paths taking
turns call by call (so machine noise hits every path alike; ``model.predict`` and the batch in runs of their own).
Target (issue 23): serving path <= 2 x the raw call with the gate on.
``benchmarks/serve_profile.py`` shows where the serving path's time goes, step by step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=common.DEFAULT_DATA, help=common.DATA_HELP)
    p.add_argument("--run", default=None, help="a train run directory to time (default: train a small one)")
    p.add_argument("--image-size", type=int, default=None, help="of the run trained here (default: config's)")
    p.add_argument("--calls", type=int, default=50, help="timed calls per block")
    p.add_argument("--repeats", type=int, default=5, help="blocks per path")
    p.add_argument("--batch", type=int, default=32, help="batch size for the throughput figure")
    p.add_argument("--quick", action="store_true", help="smoke test: 64 px, few calls")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args(argv)
    if a.quick:
        a.image_size, a.calls, a.repeats, a.batch = a.image_size or 64, 10, 2, 8
    return a


def make_run(args) -> Path:
    """A real CustomNet train run on 8 images per class of the data folder (1 epoch)."""
    from braintumor.commands.train import run_train
    from braintumor.config import load_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    data = common.subset_folder(common.check_data(args.data), 8, tmp / "data")
    flags = {"data": str(data), "runs_dir": str(tmp / "runs"), "epochs": 1, "batch_size": 8}
    if args.image_size:
        flags["image_size"] = args.image_size
    run_dir, _ = run_train(load_config(arch="customnet", flags=flags, sets=["eval.bootstrap=0"]))
    return run_dir


def one_file(args, run_dir: Path) -> bytes:
    """The bytes of one real image: from the run's own split, else the data folder."""
    import csv

    split = run_dir / "split.csv"
    if split.is_file():
        with open(split) as f:
            for row in csv.DictReader(f):
                if Path(row["path"]).is_file():
                    return Path(row["path"]).read_bytes()
    from braintumor.data import list_images

    return Path(list_images(common.check_data(args.data)).paths[0]).read_bytes()


def timed_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def serving_paths(run_dir: Path, data: bytes, image):
    """HOOK(serve): the serving path's callables, or (None, reason) while braintumor.serve is not built.

    Uses ``Predictor.load(run_dir)``, ``predict(bytes)`` and ``infer(images)`` from
    braintumor/serve/predictor.py; if the serve engineer renames them, update this function only.
    """
    try:
        from braintumor.serve.predictor import Predictor
    except ImportError as e:
        return None, f"braintumor.serve.predictor is not available ({e})"
    if not all(hasattr(Predictor, name) for name in ("load", "predict", "infer")):
        return None, "braintumor.serve.predictor.Predictor has no load/predict/infer: update serving_paths()"
    predictor = Predictor.load(run_dir)
    return {"serving path (file bytes -> verdict)": lambda: predictor.predict(data),
            "serving infer (array -> probabilities)": lambda: predictor.infer(image[None]),
            "gate": predictor.decider.has_gate}, None


def main(argv=None) -> dict:
    common.quiet_tensorflow()
    args = parse(argv)
    import numpy as np
    import tensorflow as tf

    from braintumor.models.loading import load_run

    started = time.perf_counter()
    run_dir = Path(args.run) if args.run else make_run(args)
    run = load_run(run_dir)
    model, shape = run.model, (run.image_size, run.image_size, run.channels)
    common.log(f"timing {run.config.model.arch} at {shape} from {run_dir}")

    # 1. the inputs: one real image, decoded exactly as training decodes, and a batch of it
    from braintumor.data import read_image

    data = one_file(args, run_dir)
    image = read_image(data, run.spec)  # (h, w, c) uint8
    x1 = tf.constant(image[None].astype(np.float32))
    xb = tf.constant(np.repeat(image[None], args.batch, axis=0).astype(np.float32))

    # 2. the paths, each warmed up (traced) before timing
    raw = tf.function(lambda x: model(x, training=False), jit_compile=False, reduce_retracing=True)
    paths = {"raw compiled call": lambda: raw(x1).numpy(),
             "model.predict (1 image)": lambda: model.predict(x1, verbose=0)}
    serving, missing = serving_paths(run_dir, data, image)
    gate = bool((serving or {}).pop("gate", False))
    paths.update(serving or {})
    batched = {f"raw compiled call, batch {args.batch}": lambda: raw(xb).numpy()}
    for fn in [*paths.values(), *batched.values()]:
        for _ in range(3):
            fn()

    # 3. interleaved blocks; within a block the fast paths take turns call by call, in an order that rotates, so
    #    that on a shared machine they see the same conditions; the slow ones (~10x) in runs of their own after
    #    them, never just before a timed fast call (model.predict leaves work behind that slows the next call)
    blocks: dict[str, list[float]] = {name: [] for name in [*paths, *batched]}
    slow = {name: fn for name, fn in [*paths.items(), *batched.items()] if "predict (" in name or name in batched}
    fast = [(name, fn) for name, fn in paths.items() if name not in slow]
    for _ in range(args.repeats):
        times: dict[str, list[float]] = {name: [] for name, _ in fast}
        for i in range(args.calls):
            for name, fn in fast[i % len(fast):] + fast[:i % len(fast)]:
                times[name].append(timed_ms(fn))
        for name, fn in slow.items():
            times[name] = [timed_ms(fn) for _ in range(max(3, args.calls // 5))]
        for name, v in times.items():
            blocks[name].append(statistics.median(v))
    latency = {name: common.summary(v) for name, v in blocks.items()}
    raw_ms = latency["raw compiled call"]["median"]
    ratios = {name: round(s["median"] / raw_ms, 3) for name, s in latency.items() if name in paths}
    batch_ms = latency[f"raw compiled call, batch {args.batch}"]["median"]
    out = {"benchmark": "inference", "machine": common.machine(), "run": str(run_dir),
           "arch": run.config.model.arch, "input_shape": list(shape), "calls": args.calls, "gate": gate,
           "file_bytes": len(data),
           "repeats": args.repeats,
           "latency_ms": latency, "ratio_to_raw": ratios, "serving_missing": missing,
           "batched_images_per_second": round(args.batch / batch_ms * 1000, 1), "batch": args.batch,
           "single_image_images_per_second": round(1000 / raw_ms, 1), "quick": args.quick,
           "seconds": round(time.perf_counter() - started, 1)}
    for name, s in latency.items():
        times = f" (x{ratios[name]:.2f} the raw call)" if name in ratios else ""
        common.log(f"{name}: {s['median']:.2f} ms{times}")
    common.log(f"batched: {out['batched_images_per_second']} images/s at batch {args.batch}")
    common.log(f"gate on: {gate}; load average {out['machine']['load_average']} when the timing ended")
    if missing:
        common.log(f"serving path not timed: {missing}")
    if args.out:
        common.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
