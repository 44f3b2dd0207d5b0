"""train.strategy=multiworker for real: two `braintumor train` processes on loopback ports, one TF_CONFIG each.

They share the data folder and the runs directory, as workers on a shared file system would; each gets its own
TMPDIR, where a non-chief worker keeps its copy of the run (runs_dir_for_this_worker).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from braintumor.runs import fold_complete
from tests.conftest import FAST, make_dataset

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240  # both workers together; about 15 s on 2 idle cores


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out for port 0, all held until every one is chosen (so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(tmp_path: Path, data: Path, runs: Path, n: int = 2) -> list[dict]:
    """Start ``n`` workers of one cluster, wait for all of them (killing every one on timeout), and return
    each one's exit code, stdout, stderr and TMPDIR."""
    hosts = [f"localhost:{p}" for p in free_ports(n)]
    workers = []
    try:
        for i in range(n):
            tmp = tmp_path / f"tmp{i}"
            tmp.mkdir()
            env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                   "TMPDIR": str(tmp), "COLUMNS": "400",  # one line per message, so the run directory is one line
                   "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})}
            out, err = (tmp_path / f"worker{i}.out").open("w"), (tmp_path / f"worker{i}.err").open("w")
            cmd = [sys.executable, "-c", "from braintumor.cli import main; main()", "train", "--arch", "customnet",
                   "--data", str(data), "--runs-dir", str(runs), *FAST, "--set", "train.strategy=multiworker"]
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=err)
            workers.append({"proc": proc, "tmp": tmp, "files": (out, err)})
        deadline = time.monotonic() + TIMEOUT_S
        for w in workers:
            w["rc"] = w["proc"].wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for w in workers:  # a worker waiting on a dead peer never returns by itself
            if w["proc"].poll() is None:
                w["proc"].kill()
                w["killed"] = f"killed after {TIMEOUT_S} s"
            w["rc"] = w["proc"].wait()
            for f in w["files"]:
                f.close()
    for i, w in enumerate(workers):
        w["out"] = (tmp_path / f"worker{i}.out").read_text()
        w["err"] = (tmp_path / f"worker{i}.err").read_text()
    return workers


def report(workers: list[dict]) -> str:
    return "\n".join(f"--- worker {i}: exit {w['rc']} {w.get('killed', '')}\n{w['out'][-2000:]}\n{w['err'][-4000:]}"
                     for i, w in enumerate(workers))


def weights(model_path: Path) -> dict[str, np.ndarray]:
    import keras

    import braintumor.models  # noqa: F401  (registers the custom layers the model file names)

    model = keras.models.load_model(model_path, safe_mode=True)
    return {w.path: np.asarray(w) for w in model.weights}


def test_two_workers_train_one_model_and_only_the_chief_writes_it(tmp_path):
    data, runs = make_dataset(tmp_path / "data", per_class=6, size=32), tmp_path / "runs"
    workers = run_workers(tmp_path, data, runs)
    assert [w["rc"] for w in workers] == [0, 0], report(workers)

    # the chief (worker 0, as the cluster has no chief job) wrote the one run in the shared runs directory
    (chief_run,) = (runs / "train").iterdir()
    assert fold_complete(chief_run), report(workers)  # meta says complete; model, metrics, predictions written
    assert all((chief_run / f).is_file() for f in ("history.csv", "split.csv", "config.yaml", "plots/history.png"))
    meta = json.loads((chief_run / "meta.json").read_text())
    assert meta["replicas"] == 2 and meta["epochs_run"] == 1
    assert f"run directory: {chief_run}" in workers[0]["out"]
    assert not list(workers[0]["tmp"].iterdir())  # the chief made no scratch folder

    # worker 1 ran the same command to the end, into a folder under its TMPDIR, and says where
    (worker_run,) = workers[1]["tmp"].glob("braintumor-worker1-*/train/*")
    assert fold_complete(worker_run), report(workers)
    assert f"run directory: {worker_run}" in workers[1]["out"]

    # one model: every weight, trained ones and batch-norm statistics alike, is the same in both
    chief, helper = weights(chief_run / "model.keras"), weights(worker_run / "model.keras")
    assert chief.keys() == helper.keys() and any("moving_mean" in k for k in chief)
    differ = [k for k in chief if not np.allclose(chief[k], helper[k], rtol=1e-6, atol=1e-7)]
    assert not differ, f"weights that differ between the workers: {differ}"
    # so both scored the validation split alike
    assert (chief_run / "predictions.csv").read_text() == (worker_run / "predictions.csv").read_text()


def test_batch_norm_is_synchronised_only_over_several_replicas():
    import keras

    from braintumor.config import ModelConfig
    from braintumor.distribute import synchronize_batch_norm
    from braintumor.models import build_model

    def model():
        cfg = ModelConfig(arch="customnet", filters=(8, 16), dense_units=(16,), dropout=0.0)  # no random masks
        return build_model(cfg, 4, (32, 32, 1))

    one = model()
    assert synchronize_batch_norm(one, 1) == 0
    assert not any(getattr(layer, "synchronized", False) for layer in one.layers)
    two = model()
    bns = [layer for layer in two.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert synchronize_batch_norm(two, 2) == len(bns) == 5
    assert all(layer.synchronized for layer in bns)
    # one device: a synchronised layer computes what a plain one does, outputs and moving statistics alike (up
    # to rounding: it takes the variance as E[x^2] - E[x]^2)
    two.set_weights(one.get_weights())
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(two(x, training=True)), np.asarray(one(x, training=True)), atol=1e-4)
    for a, b in zip(one.weights, two.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=a.path)
