"""The shift levers of the training augmentation (issue 20 item 5: shifts.py through pipeline.augmenter) and
collection-balanced sampling, on synthetic heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from typer.testing import CliRunner

from braintumor import shifts
from braintumor.cli import app
from braintumor.config import AugmentConfig, load_config
from braintumor.errors import ConfigError
from braintumor.pipeline import augmenter, make_dataset
from tests.conftest import FAST
from tests.conftest import make_dataset as write_dataset

SIZE = 48
QUIET = dict(flip_horizontal=False, rotation=0.0, zoom=0.0, brightness=0.0, contrast=0.0)  # every old lever off


def heads(n: int = 8) -> np.ndarray:
    """(n, 48, 48, 1) float: a black background, a bright skull ring (radius 18-21), grey matter (80) and a
    central block of white matter (160), with a dark ventricle (0 gray levels) in the middle."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - 23.5, xx - 23.5)
    img = np.zeros((SIZE, SIZE), np.float32)
    img[r < 21] = 230.0  # skull and scalp
    img[r < 18] = 80.0  # grey matter
    img[14:34, 14:34] = 160.0  # white matter
    img[21:27, 21:27] = 0.0  # a ventricle darker than the background threshold
    return np.repeat(img[None, :, :, None], n, axis=0)


GM, WM, SKULL, BG = (12, 23), (16, 16), (24, 4), (1, 1)  # a pixel of each


def run_aug(x: np.ndarray, **levers) -> np.ndarray:
    return augmenter(AugmentConfig(**QUIET, **levers), seed=0)(tf.constant(x)).numpy()


def test_head_mask_fills_the_head_and_keeps_the_background():
    m = shifts.head_mask(tf.constant(heads(2))).numpy()[0, ..., 0]
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - 23.5, xx - 23.5)
    assert m[24, 24] == 1.0  # the dark ventricle is inside
    assert m[r < 20].mean() == 1.0 and m[r > 22].max() == 0.0
    brain = shifts.brain_mask(shifts.head_mask(tf.constant(heads(2))), 0.1).numpy()[0, ..., 0]
    assert brain[GM] == 1.0 and brain[SKULL] == 0.0 and brain.sum() < m.sum()


def test_inversion_flips_the_tissue_order_inside_the_head_and_keeps_the_background_black():
    x = heads()
    out = run_aug(x, invert=1.0)
    assert (out[:, GM[0], GM[1], 0] > out[:, WM[0], WM[1], 0]).all()  # grey matter now brighter than white
    assert np.allclose(out[:, WM[0], WM[1], 0], 230 - 160) and out[:, 24, 24, 0].min() == 230.0  # within its range
    assert out[:, BG[0], BG[1], 0].max() == 0.0 and out[:, 0, :, 0].max() == 0.0
    assert np.array_equal(run_aug(x, invert=0.0), x)  # off: the identity


def test_remap_rising_keeps_the_order_free_curves_reorder_and_the_background_stays():
    x = heads(64)
    rising = run_aug(x, remap=1.0, remap_monotone=1.0)
    assert (rising[:, GM[0], GM[1], 0] <= rising[:, WM[0], WM[1], 0] + 1e-4).all()
    assert np.abs(rising - x).mean() > 5  # the curve changed the gray levels
    free = run_aug(x, remap=1.0, remap_monotone=0.0)
    reordered = free[:, GM[0], GM[1], 0] > free[:, WM[0], WM[1], 0]
    assert 0.2 < reordered.mean() < 0.8  # free curves put grey matter above white matter about half the time
    assert free[:, BG[0], BG[1], 0].max() == 0.0 and rising[:, BG[0], BG[1], 0].max() == 0.0
    half = run_aug(x, remap=0.5)
    changed = np.abs(half - x).reshape(len(x), -1).max(axis=1) > 0
    assert 0.25 < changed.mean() < 0.75  # p = 0.5: about half the images


def test_skull_strip_zeroes_the_rim_and_keeps_the_brain():
    x = heads()
    out = run_aug(x, skull_strip=1.0, skull_strip_margin=0.1)
    assert out[:, SKULL[0], SKULL[1], 0].max() == 0.0  # the skull ring is gone
    assert np.allclose(out[:, WM[0], WM[1], 0], 160) and np.allclose(out[:, GM[0], GM[1], 0], 80)


def test_bias_field_shades_smoothly_and_noise_lifts_the_background():
    x = np.full((16, SIZE, SIZE, 1), 100.0, np.float32)
    out = run_aug(x, bias_field=0.5)
    gain = out / 100.0
    assert gain.min() >= np.exp(-0.5) - 1e-3 and gain.max() <= np.exp(0.5) + 1e-3 and gain.std() > 0.02
    step = np.abs(np.diff(gain, axis=2))
    assert step.max() < 0.2 and step.mean() < 0.03  # smooth: neighbours differ by little (white noise: ~0.4)
    assert run_aug(heads(), bias_field=0.5)[:, BG[0], BG[1], 0].max() == 0.0  # multiplicative: black stays black
    noisy = run_aug(heads(), noise=0.1)
    assert noisy[:, :4, :4].mean() > 2  # Rayleigh floor on the background
    assert noisy[:, :4, :4].mean() < 0.1 * 255 * 1.26  # below the floor of the largest sigma


def test_random_erasing_blanks_one_rectangle_per_image():
    x = np.full((12, 32, 32, 1), 200.0, np.float32)
    out = run_aug(x, erasing=1.0)
    blank = (out == 0).reshape(12, -1).mean(axis=1)
    assert ((blank >= 1 / 16 - 0.02) & (blank <= 1 / 4 + 0.02)).all()
    assert np.array_equal(run_aug(x, erasing=0.0), x)


def test_balance_draws_collections_evenly_whatever_their_sizes():
    sizes = {"big": 120, "mid": 30, "small": 10}
    sources = [s for s, n in sizes.items() for _ in range(n)]
    labels = np.array([i % 2 for n in sizes.values() for i in range(n)])
    labels[:120] = np.r_[np.zeros(100, int), np.ones(20, int)]  # the big collection mostly class 0
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    src = np.array(sources)

    def drawn(balance):
        ds = make_dataset(images, labels, 2, 16, training=True, seed=1, sources=sources, balance=balance)
        idx = np.concatenate([x.numpy()[:, 0, 0, 0].astype(int) for _ in range(3) for x, _ in ds])
        assert len(idx) == 3 * len(labels)  # the epoch keeps its length
        return idx

    idx = drawn("source")
    shares = np.array([(src[idx] == s).mean() for s in sizes])
    assert np.abs(shares - 1 / 3).max() < 0.06, shares
    idx = drawn("source_class")
    big = idx[src[idx] == "big"]
    assert abs((labels[big] == 1).mean() - 0.5) < 0.1  # classes even within a collection
    plain = make_dataset(images, labels, 2, 16, training=True, seed=1)
    assert (src[np.concatenate([x.numpy()[:, 0, 0, 0].astype(int) for x, _ in plain])] == "big").mean() == 0.75
    with pytest.raises(ConfigError, match="NAME=DIR"):
        make_dataset(images, labels, 2, 16, training=True, seed=1, balance="source")


def test_lever_values_are_checked_with_their_key():
    with pytest.raises(ConfigError, match="data.augment.invert: 1.5"):
        load_config("customnet", sets=["data.augment.invert=1.5"])
    with pytest.raises(ConfigError, match="data.balance: 'evenly'.*source_class"):
        load_config("customnet", sets=["data.balance=evenly"])
    plain = load_config("customnet").data.augment
    assert (plain.remap, plain.invert, plain.bias_field, plain.noise, plain.skull_strip) == (0, 0, 0, 0, 0)


def test_one_epoch_with_every_lever_and_balance_on_trains(tmp_path: Path):
    a = write_dataset(tmp_path / "a", per_class=4, size=40, seed=1)
    b = write_dataset(tmp_path / "b", per_class=2, size=40, seed=2)
    levers = ["remap=0.5", "invert=0.5", "bias_field=0.3", "noise=0.03", "skull_strip=0.5", "erasing=0.3"]
    result = CliRunner().invoke(app, ["train", "--arch", "customnet", "--data", f"a={a}", "--data", f"b={b}",
                                      "--runs-dir", str(tmp_path / "runs"), *FAST, "--set", "data.balance=source",
                                      *[x for lever in levers for x in ("--set", f"data.augment.{lever}")]])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "train").iterdir()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["balance"] == "source" and cfg["data"]["augment"]["invert"] == 0.5
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2 and np.isfinite(float(history[1].split(",")[1]))


def test_guidance_masks_ride_along_unchanged_by_the_shift_levers_under_balance():
    """The guided recipe's path: box masks with the images, levers on, collections balanced."""
    x = heads(12).astype(np.uint8)
    masks = np.zeros((12, SIZE, SIZE), np.uint8)
    for i in range(12):
        masks[i, i:i + 10, 5:15] = 1  # each image's own box, so a mismatch would show
    aug = AugmentConfig(**QUIET, remap=1.0, invert=1.0, skull_strip=1.0, bias_field=0.3, noise=0.05)
    ds = make_dataset(x, np.arange(12) % 2, 2, 6, training=True, augment=aug, seed=0, masks=masks,
                      sources=["a"] * 9 + ["b"] * 3, balance="source_class")
    for xb, yb, mb in ds:
        assert xb.shape == (6, SIZE, SIZE, 1) and mb.shape == (6, SIZE, SIZE, 1)
        rows = mb.numpy()[..., 0].sum(axis=2).argmax(axis=1)  # the first row of each box is its image's index
        assert np.array_equal(mb.numpy()[..., 0], masks[rows].astype(np.float32))
        assert np.allclose(yb.numpy().argmax(axis=1), rows % 2)  # labels still belong to their images
        assert float(np.abs(xb.numpy() - x[:6]).mean()) > 5  # the photometric levers did act
