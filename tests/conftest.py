"""Shared fixtures: tiny synthetic MRI-like datasets made in tmp_path, so no test needs ../shared."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
# a bright square per class at a distinct quadrant: learnable in one or two epochs
_QUADRANT = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}


def blob_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A gray noise image with a bright square in the quadrant that ``label`` decides."""
    img = (rng.random((size, size)) * 70).astype(np.uint8)
    qy, qx = _QUADRANT[label % 4]
    s = size // 2
    side = size // 4
    y0 = qy * s + int(rng.integers(0, s - side))
    x0 = qx * s + int(rng.integers(0, s - side))
    img[y0:y0 + side, x0:x0 + side] = 200 + int(rng.integers(0, 55))
    return img


def make_dataset(root: Path, per_class: int = 10, size: int = 40, folders=CLASSES, seed: int = 0,
                 fmt: str = "png") -> Path:
    """Write ``per_class`` images per class folder under ``root``; returns root."""
    rng = np.random.default_rng(seed)
    for label, folder in enumerate(folders):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(blob_image(label, size, rng)).save(d / f"img_{i:03d}.{fmt}")
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """Four canonical classes, 10 grayscale PNGs each, 40 px."""
    return make_dataset(tmp_path / "data")


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


# Settings that make any training run take seconds: tiny model, tiny images, one epoch.
# No flips: the synthetic label is the blob's quadrant, which a flip would change.
FAST = ["--epochs", "1", "--image-size", "32", "--batch-size", "8",
        "--set", "model.filters=[8,16]", "--set", "model.dense_units=[16]", "--set", "eval.bootstrap=50",
        "--set", "data.augment.flip_horizontal=false"]


def train_tiny_run(root: Path, per_class: int = 6) -> Path:
    """Train the FAST customnet on a fresh synthetic dataset under ``root``; returns the run directory."""
    from typer.testing import CliRunner

    from braintumor.cli import app

    data = make_dataset(root / "data", per_class=per_class)
    result = CliRunner().invoke(app, ["train", "--arch", "customnet", "--data", str(data),
                                      "--runs-dir", str(root / "runs"), *FAST])
    assert result.exit_code == 0, result.output
    (run,) = (root / "runs" / "train").iterdir()
    return run


# The bias fold 2's softmax layer gets on top of fold 1's: the same trained features, different probabilities, so a
# mean of the two folds differs from either (two copies of one fold would hide an ensemble that returns fold 1).
FOLD2_BIAS_SHIFT = (1.5, -1.0, 0.5, -1.0)


def two_fold_run(run_dir: Path, root: Path) -> Path:
    """A kfold run directory from one finished train run: fold_1 is a copy, fold_2 a copy whose output layer's bias
    is shifted by FOLD2_BIAS_SHIFT. Returns the kfold directory (meta says complete, two folds)."""
    import json
    import shutil

    import keras

    kfold_dir = root / "kfold" / "run"
    for i in (1, 2):
        shutil.copytree(run_dir, kfold_dir / f"fold_{i}")
    model = keras.models.load_model(kfold_dir / "fold_2" / "model.keras", safe_mode=True)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel, bias + np.asarray(FOLD2_BIAS_SHIFT, bias.dtype)])
    model.save(kfold_dir / "fold_2" / "model.keras")
    shutil.copy(run_dir / "config.yaml", kfold_dir / "config.yaml")
    (kfold_dir / "meta.json").write_text(json.dumps({"command": "kfold", "status": "complete", "n_folds": 2}))
    return kfold_dir


def fold_probabilities(kfold_dir: Path, images: np.ndarray, tta: bool = False) -> list[np.ndarray]:
    """Each fold model's own (uncalibrated) probabilities for ``images`` (n, size, size, channels) 0-255; ``tta``:
    averaged with the mirror image, as a server does under the run's eval.tta."""
    import keras

    def probs(model, x):
        return np.asarray(model(x.astype("float32"), training=False), np.float64)

    models = [keras.models.load_model(kfold_dir / f"fold_{i}" / "model.keras", safe_mode=True) for i in (1, 2)]
    return [(probs(m, images) + probs(m, images[:, :, ::-1])) / 2 if tta else probs(m, images) for m in models]


def assert_png_figure(path: Path, min_size: tuple[int, int] = (200, 150)) -> np.ndarray:
    """``path`` is a PNG of at least ``min_size`` (width, height) pixels that is not blank: its gray levels spread
    (std > 10) and more than 2% of its pixels are not background white. Returns the RGB pixels."""
    img = Image.open(path)
    assert img.format == "PNG", path
    assert img.width >= min_size[0] and img.height >= min_size[1], (path, img.size)
    rgb = np.asarray(img.convert("RGB"))
    gray = rgb.mean(axis=2)
    assert gray.std() > 10 and (gray < 245).mean() > 0.02, (path, gray.std(), (gray < 245).mean())
    return rgb


# --- under CI a skip is a failure ---------------------------------------------------------------------------
# Every package the tests use comes with `make install`, and .ci/run installs chromium or stops, so in CI a skip can
# only mean a broken install: a green run of 70 skips would hide it. Locally a skip stays a skip (no chromium here).
CI_SKIP = "skipped under CI=true, where every package and chromium must be present (make install; .ci/run): "


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _skip_reason(report) -> str:
    # a skip's longrepr is (path, line, "Skipped: reason")
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test (a skip call, a skip mark, an importorskip) fails under CI=true; xfail is left alone."""
    report = yield
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = CI_SKIP + _skip_reason(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips itself at import fails collection under CI=true (pytest stops with the reason)."""
    report = yield
    if _in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = CI_SKIP + _skip_reason(report)
    return report
