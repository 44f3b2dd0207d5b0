"""Calibration figures by hand, and temperature scaling recovering a known temperature."""

import numpy as np
import pytest

from braintumor.metrics import brier, cross_fitted, ece, fit_temperature, nll, reliability, scale


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_ece_equals_a_hand_computation():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    # 15 bins of width 1/15: 0.95 falls in bin 14 (0.933-1.0), 0.6 in bin 8 (0.533-0.6], 0.7 in bin 10
    # bin 14: 2 images, accuracy 0.5, confidence 0.95 -> 2/4 * 0.45
    # bin 8: 1 image, accuracy 1, confidence 0.6 -> 1/4 * 0.4; bin 10: accuracy 1, confidence 0.7 -> 1/4 * 0.3
    assert ece(y, probs) == pytest.approx(0.5 * 0.45 + 0.25 * 0.4 + 0.25 * 0.3)
    assert ece(y, probs, bins=1) == pytest.approx(abs(0.75 - (0.95 + 0.95 + 0.6 + 0.7) / 4))


def test_brier_and_nll_by_hand():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    y = np.array([0, 1])
    assert brier(y, probs) == pytest.approx((0.0 + 0.5) / 2)
    assert nll(y, probs) == pytest.approx(-np.log(0.5) / 2)


def test_scale_with_temperature_one_changes_nothing_and_above_one_softens():
    probs = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    assert np.allclose(scale(probs, 1.0), probs)
    soft = scale(probs, 2.0)
    assert (soft.max(axis=1) < probs.max(axis=1)).all()
    assert np.allclose(soft.sum(axis=1), 1.0)
    assert (soft.argmax(axis=1) == probs.argmax(axis=1)).all()  # calibration never changes the answer


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 4))
    # labels drawn from softmax(z / T): the model's raw softmax(z) is miscalibrated by exactly T
    calibrated = _softmax(z / true_t)
    y = np.array([rng.choice(4, p=p) for p in calibrated])
    probs = _softmax(z)
    t = fit_temperature(y, probs)
    assert t == pytest.approx(true_t, rel=0.05)
    assert ece(y, scale(probs, t)) < ece(y, probs)


def test_cross_fitting_scores_each_fold_with_a_temperature_from_the_others():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (4000, 3))
    y = np.array([rng.choice(3, p=p) for p in _softmax(z / 2.0)])
    folds = np.arange(len(y)) % 2
    out, temps = cross_fitted(y, _softmax(z), folds)
    assert len(temps) == 2 and all(t == pytest.approx(2.0, rel=0.1) for t in temps)
    assert ece(y, out) < ece(y, _softmax(z)) / 2


def test_reliability_bins_count_every_image():
    probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    bins = reliability(np.array([0, 1, 1]), probs)["bins"]
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 3
    assert bins[14]["accuracy"] == 1.0 and bins[8]["accuracy"] == 0.0
