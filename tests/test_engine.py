"""engine/: a Run owns its directory (typed meta, NaN-safe JSON, failures marked), and every number comes from the
one scorer: train's and kfold's scoring, evaluate, predict, export's verification and both server backends."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.engine import scorer
from braintumor.engine.results import read_run
from braintumor.engine.run import Run, RunMeta
from braintumor.errors import RunError
from tests.conftest import FAST, blob_image, make_dataset

CONSUMERS = {
    "braintumor.engine.trainer": "train's validation scoring and the gate's features (each kfold fold too)",
    "braintumor.engine.crossval": "kfold's test-folder scoring of each fold model",
    "braintumor.commands.evaluate": "evaluate",
    "braintumor.commands.predict": "predict",
    "braintumor.commands.export": "export's verification and timing of both runtimes",
    "braintumor.serve.keras_backend": "the Keras server backend",
    "braintumor.serve.predictor": "the ONNX server backend",
}


def png_bytes(label: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(blob_image(label, 40, np.random.default_rng(label))).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Every consumer run once with ``scorer.score`` wrapped: the module outside engine/scorer.py that called it."""
    from braintumor.serve.predictor import Predictor

    root = tmp_path_factory.mktemp("engine")
    data = make_dataset(root / "data", per_class=6)
    test = make_dataset(root / "test", per_class=2, seed=5)
    runs = root / "runs"
    callers: list[str] = []
    real = scorer.score

    def recording(*args, **kwargs):
        frame = sys._getframe(1)
        while frame.f_globals.get("__name__") == scorer.__name__:  # probabilities / classify / median_ms
            frame = frame.f_back
        callers.append(frame.f_globals["__name__"])
        return real(*args, **kwargs)

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scorer, "score", recording)
        r = runner.invoke(app, ["kfold", "--arch", "customnet", "--data", str(data), "--folds", "2",
                                "--test", str(test), "--runs-dir", str(runs), *FAST])
        assert r.exit_code == 0, r.output
        (kfold_run,) = (runs / "kfold").iterdir()
        fold = kfold_run / "fold_1"  # a complete train run of its own
        seen = {"kfold": set(callers)}
        for args in (["evaluate", str(fold)], ["predict", str(test / "glioma"), "--run", str(fold)],
                     ["export", str(fold), "--format", "onnx"]):
            r = runner.invoke(app, [*args, "--runs-dir", str(runs)])
            assert r.exit_code == 0, r.output
        keras_answer = Predictor.load(fold).predict(png_bytes(1))
        (export,) = (runs / "export").iterdir()
        onnx_answer = Predictor.load_exported(export / "model.onnx").predict(png_bytes(1))
    return {"callers": callers, "kfold_callers": seen["kfold"], "kfold_run": kfold_run, "fold": fold,
            "runs": runs, "answers": (keras_answer, onnx_answer)}


def test_every_consumer_scores_through_the_one_scorer(recorded):
    assert set(recorded["callers"]) == set(CONSUMERS), set(recorded["callers"]) ^ set(CONSUMERS)
    assert recorded["kfold_callers"] == {"braintumor.engine.trainer", "braintumor.engine.crossval"}
    keras_answer, onnx_answer = recorded["answers"]
    assert np.abs(keras_answer.probs - onnx_answer.probs).max() < 1e-4  # the same numbers by either runtime


def test_scorer_unwraps_batches_and_mirrors_in_one_place():
    calls = []

    def forward(x):  # a two-output model: "probabilities" from the left column, "features" = row means
        calls.append(len(x))
        left = x[:, :, 0, 0].mean(axis=1, keepdims=True)
        return [np.hstack([left, 255 - left]) / 255, x.mean(axis=(1, 2))]

    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1)).astype(np.uint8)
    probs, (feats,) = scorer.score(forward, images, batch_size=2, tta=True)
    assert calls == [4, 4, 2]  # three batches, each with its mirror image in the same call
    expected = (images[:, :, 0, 0].mean(1) + images[:, :, -1, 0].mean(1)) / 2 / 255  # averaged with the flip
    assert np.allclose(probs[:, 0], expected) and probs.dtype == np.float64
    assert np.allclose(feats[:, 0], images.mean(axis=(1, 2, 3)))  # features of the image as it came
    empty_p, (empty_f,) = scorer.score(forward, images[:0])
    assert empty_p.shape == (0, 2) and empty_f.shape == (0, 1)
    one_output = scorer.score(lambda x: x.mean(axis=(1, 2)), images)
    assert one_output[1] == [] and one_output[0].shape == (5, 1)


def test_run_meta_is_typed_and_json_is_nan_safe(tmp_path):
    run = Run.create(tmp_path, "compare", name="x", note="n")
    info = run.info
    assert isinstance(info, RunMeta) and (info.command, info.status, info.finished) == ("compare", "running", None)
    with run.marking():
        run.write_json("metrics.json", {"auc": float("nan"), "loss": np.float32("inf"), "ok": np.float64(0.5)})
    text = (run / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "loss": None, "ok": 0.5}
    assert run.info.status == "complete" and run.info.finished and run.info.fields["note"] == "n"
    with pytest.raises(RunError, match="does not exist"):
        Run.open(tmp_path / "nope")


def test_failed_export_leaves_a_run_that_says_failed(recorded, monkeypatch):
    from braintumor.commands import export

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export, "convert", broken)
    runs = recorded["runs"] / "failed"
    with pytest.raises(RuntimeError):
        export.run_export(recorded["fold"], "onnx", runs_dir=runs)
    (out,) = (runs / "export").iterdir()
    info = Run.open(out).info
    assert (info.command, info.status) == ("export", "failed") and "converter exploded" in info.error
    assert info.finished and info.fields["exported_from"] == str(recorded["fold"])


def test_compare_takes_the_kind_from_meta_not_from_files(recorded, tmp_path):
    row = read_run(recorded["kfold_run"])
    assert row.kind == "kfold" and math.isfinite(row.accuracy)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "summary.csv").write_text("model,accuracy\nmean,0.5\n")  # looks like kfold, says nothing
    (fake / "meta.json").write_text(json.dumps({"status": "complete", "class_names": ["a", "b"]}))
    with pytest.raises(RunError, match="names no command"):
        read_run(fake)
    assert Path(recorded["fold"]).name == "fold_1" and read_run(recorded["fold"]).kind == "train"
