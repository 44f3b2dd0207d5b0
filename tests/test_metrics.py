"""metrics.py's intervals: the bootstrap resamples the independent unit (issue 22, item 1)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from braintumor.metrics import bootstrap_ci, compute_metrics, interval_info, ratio_ci, weighted_ci


def clustered(n_clusters: int = 40, size: int = 25, seed: int = 0):
    """Correctness constant within a cluster (a patient whose every slice is right, or wrong)."""
    rng = np.random.default_rng(seed)
    right = rng.random(n_clusters) < 0.8
    groups = np.repeat(np.arange(n_clusters), size)
    return np.repeat(right, size).astype(float), groups


def test_clustered_data_gives_a_wider_interval_than_slice_resampling():
    correct, groups = clustered()
    lo_s, hi_s = bootstrap_ci(correct, 2000, 0)
    lo_g, hi_g = bootstrap_ci(correct, 2000, 0, groups=groups)
    assert lo_g <= correct.mean() <= hi_g
    # 1000 slices look like 1000 independent answers; they are 40: the width grows by about sqrt(25) = 5
    assert (hi_g - lo_g) > 3 * (hi_s - lo_s)


def test_singleton_groups_are_the_slice_bootstrap_and_the_unit_says_images():
    correct, _ = clustered()
    assert bootstrap_ci(correct, 500, 3, groups=np.arange(len(correct))) == pytest.approx(
        bootstrap_ci(correct, 500, 3), abs=1e-12)
    assert interval_info(len(correct), np.arange(len(correct)), "patients")["text"] == \
        f"resampling {len(correct)} images"
    assert interval_info(len(correct), clustered()[1], "patients")["text"] == "resampling 40 patients"


def test_compute_metrics_names_the_unit_and_widens():
    correct, groups = clustered()
    y = np.zeros(len(correct), dtype=int)
    probs = np.where(correct[:, None] == 1, [[0.9, 0.1]], [[0.1, 0.9]])
    plain = compute_metrics(y, probs, ["a", "b"], 500, 0)
    grouped = compute_metrics(y, probs, ["a", "b"], 500, 0, groups, "patients")
    assert plain["interval"]["text"] == "resampling 1000 images"
    assert grouped["interval"]["text"] == "resampling 40 patients"
    width = lambda m: m["accuracy_ci95"][1] - m["accuracy_ci95"][0]  # noqa: E731
    assert width(grouped) > 3 * width(plain)


def test_ratio_ci_resamples_numerator_and_denominator_together():
    # sensitivity = detected tumours / tumours; clusters hold both tumour and clean slices
    groups = np.repeat(np.arange(30), 4)
    tumour = np.tile([1, 1, 0, 0], 30).astype(float)
    detected = tumour * np.repeat(np.arange(30) % 3 != 0, 4)
    lo, hi = ratio_ci(detected, tumour, groups, 1000, 0)
    assert lo < 2 / 3 < hi and 0.4 < lo and hi < 0.9


def test_weighted_ci_of_auc_uses_group_weights():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20), 10)
    y = np.tile([0, 1], 100)
    score = y * 0.3 + np.repeat(rng.random(20), 10)  # a patient effect on every score
    auc = roc_auc_score(y, score)
    lo, hi = weighted_ci(lambda w: roc_auc_score(y, score, sample_weight=w), len(y), groups, 300, 0)
    lo_s, hi_s = weighted_ci(lambda w: roc_auc_score(y, score, sample_weight=w), len(y), None, 300, 0)
    assert lo <= auc <= hi and (hi - lo) > (hi_s - lo_s)
