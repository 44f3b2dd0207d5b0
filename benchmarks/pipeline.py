"""Input-pipeline efficiency: the real train pipeline's images/s over in-memory tensors' images/s, same model.

For each architecture, in one process:
1. decode the data folder once, exactly as ``train`` does (``prepare_data``, ``split_train_val``);
2. build and compile the model as ``fit_and_report`` does (strategy, precision policy, jit_compile);
3. warm-up: a few steps through the real pipeline (traces the train step), timed per step to size the epochs;
4. then 1 + R rounds, the first one dropped (warm-up), each two one-epoch ``fit`` calls of S steps back to
   back on the same compiled model: real = the train path's own ``make_dataset(...)`` (shuffle, uint8 ->
   float32, augmentation, prefetch); in-memory = S batches of float32 tensors already made. Alternating
   (in ABBA order) keeps a busy or drifting machine from favouring either side;
5. images/s of an epoch = images of steps 2..S over their summed step times (step 1 pays for a new
   iterator, which a real epoch pays once per ~140 steps);
6. ratio = the median over rounds of real / in-memory images/s (target >= 0.90).

Throughput does not depend on weight values, so ImageNet architectures are built with ``weights: none`` (no
download) and trained whole (no frozen phase). Also reported: the pipeline alone (no model), as a diagnostic.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import common


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=common.DEFAULT_DATA, help=common.DATA_HELP)
    p.add_argument("--archs", default=",".join(common.ARCHS), help="comma-separated (default: all five)")
    p.add_argument("--image-size", type=int, default=None,
                   help="decode size for every architecture (default: the first one's config, customnet 64 px)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per side (after one warm-up epoch)")
    p.add_argument("--budget-seconds", type=float, default=450,
                   help="for all architectures together; epoch length adapts to it (default %(default)s)")
    p.add_argument("--min-steps", type=int, default=4, help="fewest steps in a timed epoch")
    p.add_argument("--per-class", type=int, default=0, help="use only this many images per class (0 = all)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 archs, 64 px, 16 images/class")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args(argv)
    if a.quick:
        a.archs, a.image_size, a.per_class, a.repeats, a.budget_seconds = "customnet,mobilenet", 64, 16, 1, 60
        a.batch_size = min(a.batch_size, 8)
    return a


def load(args):
    """Decode once, as ``train`` does; returns (data folder, loaded images, training indices, seconds)."""
    from braintumor.splits import prepare_data, split_train_val

    data = str(common.check_data(args.data))
    if args.per_class:
        data = str(common.subset_folder(data, args.per_class, tempfile.mkdtemp(prefix="bench-data-")))
    cfg = config_for(args, args.archs.split(",")[0], data)
    start = time.perf_counter()
    loaded, groups = prepare_data(cfg)
    seconds = time.perf_counter() - start
    train_idx, _ = split_train_val(loaded.labels, groups, cfg.data.val_split, cfg.seed)
    return data, loaded, train_idx, seconds


def config_for(args, arch: str, data: str):
    from braintumor.config import load_config

    flags = {"data": data, "batch_size": args.batch_size}
    if args.image_size:
        flags["image_size"] = args.image_size
    return load_config(arch=arch, flags=flags, sets=["model.weights=none", "model.freeze_backbone_epochs=0"])


def compiled_model(cfg, input_shape, k: int):
    """The model ``fit_and_report`` would train, compiled the same way (loss, metrics, jit_compile)."""
    import keras

    from braintumor.distribute import configure_precision, make_strategy
    from braintumor.models import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    configure_precision(cfg.train)
    strategy = make_strategy(cfg.train)
    with strategy.scope():
        model = build_model(cfg.model, k, input_shape)
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.lr),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                               keras.metrics.AUC(name="auc")],
                      jit_compile=cfg.train.jit_compile)
    return model


def in_memory(images, labels, k: int, batch: int, steps: int):
    """``steps`` distinct float32 batches already in memory, element spec identical to the real pipeline's."""
    import numpy as np
    import tensorflow as tf

    idx = np.arange(steps * batch) % len(images)
    x = tf.constant(images[idx].astype(np.float32))  # (steps * batch, h, w, c) 0-255
    y = tf.one_hot(labels[idx], k)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(tf.data.AUTOTUNE)


def timed_epoch(model, ds, steps: int, batch: int) -> float:
    """Images/s of one ``steps``-step epoch, over steps 2..``steps`` (data wait included)."""
    clock = common.batch_clock()
    model.fit(ds, steps_per_epoch=steps, epochs=1, callbacks=[clock], verbose=0, shuffle=False)
    gc.collect()  # free this epoch's iterator now, so its prefetch threads cannot run into the next epoch
    return (steps - 1) * batch / sum(clock.seconds[1:])


def pipeline_only(ds, batches: int) -> float:
    """Images/s of the pipeline alone (nothing else running): what it can produce at most."""
    it = iter(ds)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(it)
        n += int(x.shape[0])
    return n / (time.perf_counter() - start)


def bench_arch(args, arch: str, data: str, loaded, fit_idx, budget: float) -> dict:
    from braintumor.pipeline import make_dataset

    started = time.perf_counter()
    cfg = config_for(args, arch, data)
    k, b = len(loaded.class_names), cfg.train.batch_size
    images, labels = loaded.images[fit_idx], loaded.labels[fit_idx]
    # 1. the real pipeline, built exactly as fit_and_report builds it, repeated so epochs can be any length
    real = make_dataset(images, labels, k, b, training=True, augment=cfg.data.augment, seed=cfg.seed).repeat()
    model = compiled_model(cfg, loaded.images.shape[1:], k)
    build_s = time.perf_counter() - started

    # 2. warm-up through the real pipeline: traces the step; the later steps size the timed epochs
    clock = common.batch_clock()
    model.fit(real, steps_per_epoch=3, epochs=1, callbacks=[clock], verbose=0, shuffle=False)
    step_s = max(min(clock.seconds[1:]), 1e-3)
    left = budget - (time.perf_counter() - started)
    epoch_s = max(1.0, left / (2 * (1 + args.repeats)) * 0.9)
    steps = min(60, max(args.min_steps, round(epoch_s / step_s)))  # 60 caps the in-memory tensors' size
    common.log(f"{arch}: built in {build_s:.0f}s, warm step {step_s:.2f}s -> epochs of {steps} steps")

    # 3. real pipeline, then in-memory tensors, on the same compiled model
    memory = in_memory(images, labels, k, b, steps)
    real_ips, mem_ips = [], []
    for i in range(1 + args.repeats):
        order = (real, memory) if i % 2 == 0 else (memory, real)  # ABBA: neither side always goes first
        timed = {id(ds): timed_epoch(model, ds, steps, b) for ds in order}
        real_ips.append(timed[id(real)])
        mem_ips.append(timed[id(memory)])
    real_ips, mem_ips = real_ips[1:], mem_ips[1:]  # the first round warms up (iterators, a possible retrace)
    per_round = [r / m for r, m in zip(real_ips, mem_ips, strict=True)]
    ratio = common.summary(per_round)["median"]
    alone = pipeline_only(make_dataset(images, labels, k, b, training=True, augment=cfg.data.augment,
                                       seed=cfg.seed).repeat(), batches=max(5, steps))
    result = {"arch": arch, "params": int(model.count_params()), "steps_per_epoch": steps, "batch_size": b,
              "real_images_per_second": common.summary(real_ips, 2),
              "memory_images_per_second": common.summary(mem_ips, 2),
              "ratio": round(ratio, 3),
              "ratio_per_repeat": [round(r, 3) for r in per_round],
              "pipeline_alone_images_per_second": round(alone, 1),
              "seconds": round(time.perf_counter() - started, 1)}
    common.log(f"{arch}: real {result['real_images_per_second']['median']} img/s, in-memory "
               f"{result['memory_images_per_second']['median']} img/s, ratio {result['ratio']:.3f}")
    return result


def main(argv=None) -> dict:
    common.quiet_tensorflow()
    args = parse(argv)
    archs = args.archs.split(",")
    data, loaded, fit_idx, decode_s = load(args)
    size, channels = loaded.images.shape[1], loaded.images.shape[3]  # what the config decoded: (n, h, w, c)
    common.log(f"decoded {len(loaded.paths)} images at {size}px x {channels} channel(s) in {decode_s:.1f}s "
               f"({loaded.images.nbytes / 2**20:.0f} MiB uint8); {len(fit_idx)} in the training part")
    started, results = time.perf_counter(), []
    for i, arch in enumerate(archs):
        left = args.budget_seconds - (time.perf_counter() - started)
        budget = max(30.0, left / (len(archs) - i))  # what earlier architectures left, shared out
        results.append(bench_arch(args, arch, data, loaded, fit_idx, budget))
    out = {"benchmark": "pipeline", "machine": common.machine(), "data": args.data,
           "images": len(loaded.paths),
           "train_images": int(len(fit_idx)), "image_size": int(size), "channels": int(channels),
           "repeats": args.repeats,
           "decode_seconds": round(decode_s, 1), "quick": args.quick, "results": results,
           "seconds": round(time.perf_counter() - started + decode_s, 1)}
    if args.out:
        common.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
