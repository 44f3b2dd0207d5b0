"""tf.distribute: strategy choice, TF_CONFIG checks, precision, and a real two-replica mirror on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from braintumor.config import ModelConfig, TrainConfig
from braintumor.distribute import (
    cluster_spec,
    configure_precision,
    even_for_replicas,
    make_strategy,
    runs_dir_for_this_worker,
    scaled_lr,
)
from braintumor.errors import ConfigError
from tests.conftest import FAST, make_dataset

REPO = Path(__file__).resolve().parent.parent


def test_lr_scales_with_replicas_only_when_asked():
    assert scaled_lr(TrainConfig(lr=0.01), 4) == 0.01
    assert scaled_lr(TrainConfig(lr=0.01, lr_scaling="linear"), 4) == pytest.approx(0.04)


def test_auto_and_none_use_one_device_on_a_cpu_machine():
    for choice in ("auto", "none"):
        assert make_strategy(TrainConfig(strategy=choice)).num_replicas_in_sync == 1


def test_even_for_replicas_drops_fewer_than_one_per_replica():
    import numpy as np

    idx = np.arange(10, 29)  # 19 images
    assert even_for_replicas(idx, 1) is idx or np.array_equal(even_for_replicas(idx, 1), idx)
    two = even_for_replicas(idx, 2, seed=0)
    assert len(two) == 18 and set(two) <= set(idx) and list(two) == sorted(two)
    assert np.array_equal(two, even_for_replicas(idx, 2, seed=0))  # seeded
    assert len(even_for_replicas(idx, 4)) == 16
    assert np.array_equal(even_for_replicas(idx[:18], 2), idx[:18])  # already even: unchanged


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the cluster in the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster' mapping"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG has no 'task' with 'type' and 'index'"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "TF_CONFIG task worker:3 is not in the cluster"),
])
def test_multiworker_names_what_is_wrong_with_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=message):
        make_strategy(TrainConfig(strategy="multiworker"))


def test_a_well_formed_tf_config_is_accepted(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert cluster_spec()["task"]["index"] == 1


def _cluster(task_type: str, index: int, chief: bool = False) -> str:
    cluster = {"worker": ["a:1", "b:1"], **({"chief": ["c:1"]} if chief else {})}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("task_type, index, chief, writes_to_runs", [
    ("worker", 0, False, True),   # no chief job: worker 0 is the chief
    ("worker", 1, False, False),
    ("chief", 0, True, True),
    ("worker", 0, True, False),   # with a chief job, every worker is a helper
])
def test_only_the_chief_worker_writes_into_runs(monkeypatch, tmp_path, task_type, index, chief, writes_to_runs):
    from braintumor.config import load_config

    monkeypatch.setenv("TF_CONFIG", _cluster(task_type, index, chief))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # helpers' folders land here, not in /tmp
    cfg = load_config("customnet", None, {"runs_dir": str(tmp_path / "runs")}, ["train.strategy=multiworker"])
    got = Path(runs_dir_for_this_worker(cfg))
    assert (got == tmp_path / "runs") is writes_to_runs
    if not writes_to_runs:
        assert got.is_dir() and not got.is_relative_to(tmp_path / "runs") and not any(got.iterdir())
    plain = load_config("customnet", None, {"runs_dir": str(tmp_path / "runs")}, [])
    assert runs_dir_for_this_worker(plain) == str(tmp_path / "runs")  # other strategies ignore TF_CONFIG


def test_a_helper_worker_trains_but_leaves_no_run_in_runs(monkeypatch, tmp_path):
    """The whole train command as worker 1 of 2 (the cluster itself replaced by the default strategy, since a
    real MultiWorkerMirroredStrategy waits for its peer): it completes a run, in a temporary folder."""
    import tensorflow as tf
    from typer.testing import CliRunner

    import braintumor.distribute as distribute
    from braintumor.cli import app

    monkeypatch.setenv("TF_CONFIG", _cluster("worker", 1))
    monkeypatch.setattr(distribute, "_multi_worker", tf.distribute.get_strategy)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    data, runs = make_dataset(tmp_path / "data", per_class=6), tmp_path / "runs"
    res = CliRunner().invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir", str(runs),
                                   *FAST, "--set", "train.strategy=multiworker"])
    assert res.exit_code == 0, res.output
    assert not runs.exists() or not any(runs.rglob("*"))
    (model,) = (tmp_path / "tmp").glob("braintumor-worker1-*/train/*/model.keras")
    assert model.stat().st_size > 0


def test_mixed_precision_is_gpu_only_and_the_softmax_stays_float32():
    import keras

    from braintumor.models import build_model

    assert configure_precision(TrainConfig(mixed_precision="auto")) == "float32"  # no GPU here
    assert configure_precision(TrainConfig(mixed_precision="off")) == "float32"
    with pytest.raises(ConfigError, match="needs a GPU"):
        configure_precision(TrainConfig(mixed_precision="on"))
    try:  # what a GPU run builds: float16 compute everywhere but the output layer
        keras.mixed_precision.set_global_policy("mixed_float16")
        for arch in ("customnet", "mobilenet"):
            model = build_model(ModelConfig(arch=arch, filters=(8, 16), dense_units=(16,)), 4, (32, 32, 3))
            assert model.get_layer("preprocess").compute_dtype == "float16"
            assert model.get_layer("predictions").compute_dtype == "float32"
            assert model.outputs[0].dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# Runs in its own Python: logical devices must be configured before TensorFlow initialises, and this process's
# TensorFlow is already running.
TWO_REPLICAS = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    import pandas as pd

    from braintumor.config import AugmentConfig, ModelConfig, TrainConfig, load_config
    from braintumor.pipeline import make_dataset
    from braintumor.distribute import make_strategy
    from braintumor.models import build_model
    from braintumor.commands.train import run_train

    data, runs, out_path = sys.argv[1:4]
    out = {}

    # 1. the strategy train.py gets for train.strategy=mirrored
    strategy = make_strategy(TrainConfig(strategy="mirrored"))
    out["replicas"] = strategy.num_replicas_in_sync
    out["worker_devices"] = list(strategy.extended.worker_devices)
    try:
        make_strategy(TrainConfig(strategy="mirrored", batch_size=7))
    except Exception as e:
        out["odd_batch_error"] = f"{type(e).__name__}: {e}"

    # 2. one training step over the real input pipeline, written out so every replica reports back
    global_batch = 8
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(32) % 4
    ds = make_dataset(images, labels, 4, global_batch, training=True, augment=AugmentConfig(), seed=0)
    with strategy.scope():
        model = build_model(ModelConfig(filters=(8, 16), dense_units=(16,)), 4, (32, 32, 3))
        optimizer = keras.optimizers.Adam(1e-2)
        optimizer.build(model.trainable_variables)  # its slots, created outside the traced step
    kernel = model.trainable_variables[0]
    before = np.array(kernel.numpy())

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_image = keras.losses.categorical_crossentropy(y, probs)
                loss = tf.nn.compute_average_loss(per_image, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            ctx = tf.distribute.get_replica_context()
            return tf.shape(x)[0], ctx.replica_id_in_sync_group + tf.zeros([], tf.int32), loss
        return strategy.run(replica_step, args=(x, y))

    x, y = next(iter(strategy.experimental_distribute_dataset(ds)))
    sizes, ids, losses = step(x, y)
    local = strategy.experimental_local_results
    out["per_replica_batch"] = [int(t) for t in local(sizes)]
    out["replica_ids"] = [int(t) for t in local(ids)]
    out["input_devices"] = [t.device for t in local(x)]  # where the distributed pipeline put each half
    out["per_replica_loss"] = [float(t) for t in local(losses)]
    copies = kernel.value.values  # a MirroredVariable: one copy per device
    out["kernel_devices"] = [c.device for c in copies]
    out["copies_equal"] = bool(all(np.array_equal(copies[0].numpy(), c.numpy()) for c in copies))
    out["kernel_changed"] = bool(not np.allclose(before, copies[0].numpy()))

    # 3. the real train path with train.strategy=mirrored and a linearly scaled learning rate
    cfg = load_config(arch="customnet", flags={"data": data, "runs_dir": runs, "epochs": 1, "image_size": 32,
                                               "batch_size": 8},
                      sets=["model.filters=[8,16]", "model.dense_units=[16]", "eval.bootstrap=20",
                            "train.strategy=mirrored", "train.lr_scaling=linear", "train.lr=0.001",
                            # the same input shape as the step above: TensorFlow reuses collective keys within
                            # one process, and a model of another shape then fails its first all-reduce
                            "data.color_mode=rgb",
                            "train.lr_schedule=plateau"])  # a constant rate in epoch 1, so the log shows it
    run_dir, metrics = run_train(cfg)
    meta = json.loads((run_dir / "meta.json").read_text())
    out["train_status"], out["train_replicas"] = meta["status"], meta["replicas"]
    history = pd.read_csv(run_dir / "history.csv")
    out["train_lr"] = float(history["learning_rate" if "learning_rate" in history else "lr"].iloc[0])
    out["train_accuracy"] = metrics["accuracy"]
    with open(out_path, "w") as f:
        json.dump(out, f)
""")


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mirrored")
    data = make_dataset(tmp / "data", per_class=6, size=32)
    out = tmp / "result.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", TWO_REPLICAS, str(data), str(tmp / "runs"), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_mirrored_strategy_uses_both_logical_cpus(two_replicas):
    assert two_replicas["replicas"] == 2
    assert [d.split("/")[-1] for d in two_replicas["worker_devices"]] == ["device:CPU:0", "device:CPU:1"]


def test_a_global_batch_that_does_not_split_evenly_is_refused(two_replicas):
    assert two_replicas["odd_batch_error"] == (
        "ConfigError: train.batch_size 7 does not split evenly over the 2 replicas of "
        "train.strategy=mirrored; use a multiple of 2 (it is the global batch)")


def test_each_replica_trains_on_half_the_global_batch(two_replicas):
    r = two_replicas
    assert r["replica_ids"] == [0, 1]
    assert r["per_replica_batch"] == [4, 4]  # train.batch_size is the global batch
    assert [d.split("/")[-1] for d in r["input_devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert all(loss > 0 for loss in r["per_replica_loss"])


def test_the_step_updated_every_mirrored_copy_identically(two_replicas):
    r = two_replicas
    assert [d.split("/")[-1] for d in r["kernel_devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert r["kernel_changed"] and r["copies_equal"]


def test_train_runs_mirrored_and_scales_the_rate(two_replicas):
    """The real train path, on a split whose last batches do not divide evenly (keras-team/keras#19246)."""
    r = two_replicas
    assert r["train_status"] == "complete" and r["train_replicas"] == 2
    assert r["train_lr"] == pytest.approx(0.002)  # lr 0.001 x 2 replicas (lr_scaling: linear)
    assert 0.0 <= r["train_accuracy"] <= 1.0
