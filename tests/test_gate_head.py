"""The brain-MRI-or-not head (gate_head.py): fitted on features, stored with the gate, applied in the decision."""

from __future__ import annotations

import numpy as np
import pytest

from braintumor.decision import Decider
from braintumor.engine.gate_fit import POSITIVE_SHIFTS, negative_images, shifted_positives
from braintumor.gate_head import fit_head
from braintumor.images import ImageSpec
from braintumor.input_checks import InputStats
from braintumor.nonbrain import body_like, ct_head, ct_like, negatives
from braintumor.ood import Gate, decide, fit_gate

LIMITS = dict(far_ratio=1.0, colour_limit=8.0, flat_limit=5.0, min_confidence=0.5)


def _features(rng, n, shift=0.0):
    return rng.normal(0, 1, (n, 6)) + shift


def test_the_head_refuses_what_lies_towards_the_negatives_and_keeps_held_out_positives():
    rng = np.random.default_rng(0)
    pos, neg, held = _features(rng, 600), _features(rng, 300, 4.0), _features(rng, 400)
    sources = ["a"] * 200 + ["b"] * 200
    head = fit_head(pos, neg, held, sources, acceptance=0.99)
    assert head.fitted["held_out_refused_per_source"]["a"] <= 0.02
    assert head.fitted["held_out_refused_per_source"]["b"] <= 0.02
    near = _features(rng, 50, 2.5)  # between the two, never seen: still ranked above the positives
    assert np.median(head.margin(near)) > np.quantile(head.margin(held), 0.95)
    assert head.fitted["negatives_refused"] > 0.9


def test_a_gate_with_a_head_round_trips_and_pools_the_head_layers_after_its_own(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 300)
    feats = np.concatenate([_features(rng, 600) + labels[:, None] * 5, _features(rng, 600)], axis=1)  # 6 + 6
    gate = fit_gate(feats[:, :6], labels, 2, np.arange(400), np.arange(400, 600), np.ones(200),
                    [InputStats(0.0, 40.0)] * 600, "late", widths=[6])
    gate.head = fit_head(feats[:400], _features(rng, 200, 5.0)[:, :1].repeat(12, axis=1), feats[400:])
    gate.head_layers, gate.head_widths = ["early"], [6]
    assert gate.feature_layer == ["late", "early"]
    gate.save(tmp_path)
    again = Gate.load(tmp_path)
    assert again.head_layers == ["early"] and again.head.threshold == pytest.approx(gate.head.threshold)
    assert np.allclose(again.head_margin(feats[:9]), gate.head_margin(feats[:9]))
    assert np.allclose(again.ratio(feats[:9]), gate.ratio(feats[:9]))  # the distance reads its own columns only
    assert "head_mean" not in (tmp_path / "gate.json").read_text()  # arrays in gate.npz, numbers for a reader


def test_the_head_is_a_second_kind_of_no_and_an_ensemble_takes_the_median(tmp_path):
    status, reason = decide(0.5, 0.9, InputStats(0.0, 40.0), **LIMITS, head=0.3)
    assert status == "out_of_distribution" and "not a brain MRI" in reason
    assert decide(0.5, 0.9, InputStats(0.0, 40.0), **LIMITS, head=-0.3)[0] == "ok"
    assert decide(0.5, 0.3, InputStats(0.0, 40.0), **LIMITS, head=-0.3)[0] == "uncertain"  # the model's doubt
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 200)
    feats = _features(rng, 400) + labels[:, None] * 5
    gates = []
    for shift in (3.0, 5.0, 7.0):
        g = fit_gate(feats, labels, 2, np.arange(300), np.arange(300, 400), np.ones(100),
                     [InputStats(0.0, 40.0)] * 400, "late")
        g.head = fit_head(feats[:300], _features(rng, 200, shift), feats[300:])
        gates.append(g)
    x = feats[:5]
    want = np.median([g.head_margin(x) for g in gates], axis=0)
    verdicts = Decider(1.0, gates).from_raw(np.full((5, 2), 0.5), [x, x, x])
    assert np.allclose([v.head for v in verdicts], want)
    assert all(v.score >= v.ratio for v in verdicts)


def test_the_package_built_negatives_are_synthetic_near_misses_and_far_images():
    imgs = negatives(64, 60, seed=3)
    assert len(imgs) == 60 and all(im.size == (64, 64) for im in imgs)
    rng = np.random.default_rng(0)
    for draw in (ct_like, ct_head, body_like):
        a = draw(64, rng)
        assert a.shape == (64, 64) and a.dtype == np.uint8 and a.std() > 10  # not blank: the input checks pass it
    prepared = negative_images(ImageSpec(32, 3), n=20)
    assert prepared.shape == (20, 32, 32, 3) and prepared.dtype == np.uint8


def test_shifted_positives_are_the_training_images_under_every_shift():
    rng = np.random.default_rng(0)
    images = np.zeros((10, 32, 32, 1), np.uint8)
    yy, xx = np.mgrid[0:32, 0:32]
    images[:, (yy - 16) ** 2 + (xx - 16) ** 2 < 144] = 120
    out = shifted_positives(images, rng, per_kind=4)
    assert out.shape == (4 * len(POSITIVE_SHIFTS), 32, 32, 1) and out.dtype == np.uint8
    assert not np.array_equal(out, images[:1].repeat(len(out), axis=0))  # something changed
