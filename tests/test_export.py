"""`braintumor export` round trips (ONNX, TFLite, SavedModel, int8) and the ONNX server without TensorFlow."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras

# the [onnx], [export] and [serve] extras: make install installs them, so a missing one fails, never skips
import numpy as np
import onnxruntime  # noqa: F401
import pytest
import tf2onnx  # noqa: F401
from fastapi.testclient import TestClient
from PIL import Image

from braintumor.commands.export import load_scorer, run_export
from braintumor.engine import scorer
from braintumor.serve.app import create_app
from braintumor.serve.predictor import Predictor
from braintumor.serve.settings import ServeSettings
from tests.conftest import CLASSES, blob_image, fold_probabilities, train_tiny_run, two_fold_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("export"), per_class=8)


@pytest.fixture(scope="module")
def onnx_file(run_dir) -> Path:
    """Exported through the CLI, as a user would."""
    from typer.testing import CliRunner

    from braintumor.cli import app

    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx",
                                      "--runs-dir", str(run_dir.parents[1])])
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output and "braintumor serve --model" in result.output
    (out,) = (run_dir.parents[1] / "export").glob("*-onnx")
    return out / "model.onnx"


def image_bytes(label: int = 0, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(blob_image(label, 48, np.random.default_rng(label))).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def assert_agrees(info: dict, run_dir: Path) -> None:
    v = info["verification"]
    assert v["n"] > 0 and "validation split" in v["on"]
    assert v["max_abs_prob_diff"] <= 1e-4 and v["top1_agreement"] == 1.0, v
    assert info["meets_targets"] is True
    assert info["class_names"] == list(CLASSES) and info["source_run"] == run_dir.name
    assert info["gates"] == 1 and info["temperature"] > 0
    for runtime in ("keras", info["format"]):
        assert v["latency_ms"][runtime]["single_ms"] > 0 and v["latency_ms"][runtime]["batch_ms"] > 0


def test_onnx_export_agrees_and_carries_what_a_server_needs(onnx_file, run_dir):
    out = onnx_file.parent
    info = json.loads((out / "export.json").read_text())
    assert_agrees(info, run_dir)
    assert info["format"] == "onnx" and "tf2onnx" in info["converter"] and info["size_bytes"] > 0
    assert info["tta"] is True  # the run's eval.tta: the ONNX server averages with the mirror image as predict does
    assert (out / "gates" / "0" / "gate.npz").is_file() and (out / "config.yaml").is_file()
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("fmt", ["tflite", "savedmodel"])
def test_tflite_and_savedmodel_exports_agree(run_dir, fmt, tmp_path):
    out, info = run_export(run_dir, fmt, runs_dir=tmp_path)
    assert_agrees(info, run_dir)
    assert (out / ("model.tflite" if fmt == "tflite" else "saved_model")).exists()


def test_int8_tflite_is_smaller_and_verified(run_dir, tmp_path):
    """int8 agrees with the float model within what quantisation costs. Measured on this tiny run: gate features
    0.006-0.009 relative, probabilities 0.002-0.003, top-1 all equal; calibrating on images scaled 0-1 instead of
    0-255 (a plausible bug) gives features 0.27 relative, which fails here."""
    _, full = run_export(run_dir, "tflite", runs_dir=tmp_path)
    out, info = run_export(run_dir, "tflite", quantize="int8", runs_dir=tmp_path)
    assert info["quantize"] == "int8" and info["size_bytes"] < full["size_bytes"]
    v = info["verification"]
    assert v["max_rel_feature_diff"] < 0.05 and v["max_abs_prob_diff"] < 0.02 and v["top1_agreement"] >= 5 / 6, v
    assert "meets_targets" in info
    # the same check made here, not by export's own verification: the int8 file against model.keras
    images = np.stack([blob_image(i % 4, 32, np.random.default_rng(i)) for i in range(24)])[..., None]
    int8, _ = scorer.score(load_scorer("tflite", out / "model.tflite"), images)
    ref = np.asarray(keras.models.load_model(run_dir / "model.keras")(images.astype("float32")), np.float64)
    assert np.abs(int8 - ref).max() < 0.02 and (int8.argmax(1) == ref.argmax(1)).mean() >= 22 / 24


def test_a_kfold_run_exports_its_ensemble_as_one_model(run_dir, tmp_path):
    """Two different folds: one ONNX graph whose probabilities are the mean of the folds', each fold's gate beside
    it."""
    kfold_dir = two_fold_run(run_dir, tmp_path)
    out, info = run_export(kfold_dir, "onnx", runs_dir=tmp_path)
    assert info["gates"] == 2 and (out / "gates" / "1" / "gate.json").is_file()
    v = info["verification"]
    assert v["max_abs_prob_diff"] <= 1e-4 and v["top1_agreement"] == 1.0 and "fold_1" in v["on"]
    exported = Predictor.load_exported(out / "model.onnx")
    image = exported.image(image_bytes(2))[0][None]
    assert exported.backend.tta  # the k-fold run's eval.tta
    p1, p2 = fold_probabilities(kfold_dir, image, tta=True)  # the run's eval.tta, as served
    assert np.abs(p1 - p2).max() > 0.05  # the folds really differ
    raw = exported.backend.scores(image)[0]
    np.testing.assert_allclose(raw, (p1 + p2) / 2, atol=1e-4)
    assert np.abs(raw - p1).max() > 0.02  # an export of fold 1 alone fails here


def test_bad_options_say_what_is_valid(run_dir, tmp_path):
    from braintumor.errors import ConfigError

    with pytest.raises(ConfigError, match="onnx, tflite, savedmodel"):
        run_export(run_dir, "pt", runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="tflite"):
        run_export(run_dir, "onnx", quantize="int8", runs_dir=tmp_path)


# --- serving the ONNX file ---------------------------------------------------------------------------------


def test_onnx_server_answers_every_endpoint_like_the_keras_server(onnx_file, run_dir):
    keras_p, onnx_p = Predictor.load(run_dir), Predictor.load_exported(onnx_file)
    assert keras_p.backend.tta and onnx_p.backend.tta  # both follow the run's eval.tta, so they agree below
    settings = ServeSettings(concurrency=2, metrics=True)
    with TestClient(create_app(settings, onnx_p)) as c, TestClient(create_app(settings, keras_p)) as k:
        assert c.get("/health").json() == {"status": "ready", "model": "customnet"}
        m = c.get("/model").json()
        assert m["runtime"] == "onnx" and m["classes"] == list(CLASSES) and m["explanation"] is None
        assert m["decision"] == k.get("/model").json()["decision"]  # same temperature and gate
        photo = io.BytesIO()
        Image.fromarray((np.random.default_rng(1).random((48, 48, 3)) * 255).astype(np.uint8)).save(photo, "PNG")
        from braintumor.nonbrain import ct_like

        ct = io.BytesIO()
        Image.fromarray(ct_like(96, np.random.default_rng(2))).save(ct, "PNG")  # a near miss for the head
        assert m["decision"]["gate"][0]["head"] is not None  # the head travels with the gate
        for blob in [image_bytes(i) for i in range(4)] + [image_bytes(1, "RGB"), ct.getvalue(), photo.getvalue()]:
            a = c.post("/predict", files={"file": ("x.png", blob)}).json()
            b = k.post("/predict", files={"file": ("x.png", blob)}).json()
            assert (a["status"], a["class"], a["reason"][:12]) == (b["status"], b["class"], b["reason"][:12])
            assert a["head_margin"] == pytest.approx(b["head_margin"], abs=1e-3)
            np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()),
                                       atol=1e-4)
        assert a["status"] == "out_of_distribution"  # the colour photo, on both
        r = c.post("/predict/batch", files=[("files", (f"{i}.png", image_bytes(i), "image/png")) for i in range(3)])
        assert r.status_code == 200 and [x["filename"] for x in r.json()["results"]] == ["0.png", "1.png", "2.png"]
        r = c.post("/cam", files={"file": ("x.png", image_bytes())})
        assert r.status_code == 501 and "Keras model" in r.json()["detail"] and "--run" in r.json()["detail"]
        assert c.get("/").status_code == 200 and c.get("/docs").status_code == 200
        assert 'runtime="onnx"' in c.get("/metrics").text


def test_serving_an_onnx_file_never_imports_tensorflow(onnx_file):
    """The real CLI in a fresh interpreter where importing tensorflow or keras fails."""
    import httpx

    from tests.test_serve import free_port

    port = free_port()
    entry = ("import sys\n"
             "class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'matplotlib', 'pandas'):\n"
             "            raise ImportError(f'{name} imported by the ONNX server')\n"
             "sys.meta_path.insert(0, Block())\n"
             "from braintumor.cli import main\n"
             "sys.argv[0] = 'braintumor'\n"
             "main()\n")
    cmd = [sys.executable, "-c", entry, "serve", "--model", str(onnx_file), "--port", str(port)]
    env = {**os.environ, "BRAINTUMOR_API_KEY": "k", "BRAINTUMOR_METRICS": "true"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as http:
            while True:
                assert proc.poll() is None, f"server exited:\n{proc.stdout.read()}"
                assert time.monotonic() < deadline, "not ready within 60 s"
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            assert http.post("/predict", files={"file": ("a.png", image_bytes())}).status_code == 401
            r = http.post("/predict", files={"file": ("a.png", image_bytes())}, headers={"X-API-Key": "k"})
            assert r.status_code == 200 and r.json()["status"], r.text
            assert "braintumor_verdicts_total" in http.get("/metrics", headers={"X-API-Key": "k"}).text
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "imported by the ONNX server" not in out


def test_a_gate_on_several_layers_gives_the_same_verdicts_in_keras_and_onnx(tmp_path):
    """eval.gate_layers: the block ends pooled into the one features output; the exported graph carries them and
    the NumPy decision reaches the same verdict on scans and on planted CT-like heads."""
    from typer.testing import CliRunner

    from braintumor.cli import app
    from braintumor.exported import OnnxScorer, load_exported
    from braintumor.models.loading import load_run
    from braintumor.nonbrain import ct_like
    from tests.conftest import FAST, make_dataset

    data = make_dataset(tmp_path / "data", per_class=8)
    result = CliRunner().invoke(app, ["train", "--arch", "customnet", "--data", str(data), "--runs-dir",
                                      str(tmp_path / "runs"), *FAST, "--set",
                                      "eval.gate_layers=[block1_2_act,block2_2_act]"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "train").iterdir()
    run = load_run(run_dir)
    (gate,) = run.classifier.gates
    assert gate.layers == ["block1_2_act", "block2_2_act"] and gate.widths == [8, 16] and gate.far_ratio == 1.0
    info = run_export(run_dir, "onnx", runs_dir=tmp_path / "runs")[1]
    assert info["verification"]["verdict_agreement"] == 1.0
    rng = np.random.default_rng(0)
    images = np.stack([np.asarray(Image.fromarray(a).resize((32, 32)))[..., None] for a in
                       [ct_like(64, rng) for _ in range(4)] + [blob_image(k % 4, 32, rng) for k in range(8)]])
    exported = load_exported(next((tmp_path / "runs" / "export").glob("*-onnx")) / "model.onnx")
    probs, feats = scorer.score(OnnxScorer(exported.model_file), images)
    onnx_verdicts = exported.decider().from_raw(probs, feats)
    keras_verdicts = scorer.classify(run.classifier, images)
    assert [v.status for v in onnx_verdicts] == [v.status for v in keras_verdicts]
    assert np.allclose([v.ratio for v in onnx_verdicts], [v.ratio for v in keras_verdicts], rtol=1e-4)
    # the brain-MRI-or-not head (on by default) travels with the gate and reads the same pooled columns
    assert gate.head is not None and gate.head_layers and exported.gates()[0].head is not None
    assert np.allclose([v.head for v in onnx_verdicts], [v.head for v in keras_verdicts], atol=1e-3)



def test_an_export_carries_a_sites_notumor_doubt_and_both_servers_apply_it(run_dir, tmp_path):
    """export --notumor-doubt writes the threshold into export.json; the ONNX server applies it (serve
    --notumor-doubt overrides it) and reports the same decision as the Keras server with that threshold. The rule
    itself is the one NumPy Decider both use (tests/test_decision.py; withdrawn answers on a real model:
    tests/test_predict.py)."""
    from typer.testing import CliRunner

    from braintumor.cli import app
    from braintumor.decision import Doubt

    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx", "--runs-dir", str(tmp_path),
                                      "--notumor-doubt", "0.15"])
    assert result.exit_code == 0, result.output
    onnx_file = next((tmp_path / "export").glob("*-onnx")) / "model.onnx"
    assert json.loads((onnx_file.parent / "export.json").read_text())["notumor_doubt"] == 0.15
    notumor = CLASSES.index("notumor")
    assert Predictor.load_exported(onnx_file, warm=False).decider.doubt == Doubt(notumor, 0.15)
    onnx_p = Predictor.load_exported(onnx_file, notumor_doubt=0.3)
    keras_p = Predictor.load(run_dir, notumor_doubt=0.3)
    assert onnx_p.decider.doubt == keras_p.decider.doubt == Doubt(notumor, 0.3)
    settings = ServeSettings(concurrency=1)
    with TestClient(create_app(settings, onnx_p)) as c, TestClient(create_app(settings, keras_p)) as k:
        decision = c.get("/model").json()["decision"]
        assert decision["notumor_doubt"] == 0.3 and decision == k.get("/model").json()["decision"]
    assert Predictor.load(run_dir, warm=False).decider.doubt is None  # the run's own setting: off
