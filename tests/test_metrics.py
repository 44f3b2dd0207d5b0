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


# --- tumour or not (issue 20, item 3) ------------------------------------------------------------------------

CLASSES4 = ["glioma", "meningioma", "notumor", "pituitary"]


def _four_class(p_notumor):
    """Probabilities with p(notumor) as given and the rest on glioma."""
    p = np.zeros((len(p_notumor), 4))
    p[:, 2], p[:, 0] = p_notumor, 1 - np.asarray(p_notumor)
    return p


def test_binary_figures_by_hand():
    from braintumor.metrics import binary_from_probs

    # 6 tumour slices, then 4 without; p(notumor) < 0.5 means the answer is glioma (a tumour)
    truth = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    probs = _four_class([0.1, 0.2, 0.3, 0.7, 0.6, 0.4, 0.9, 0.8, 0.45, 0.65])
    ok = np.array([1, 1, 0, 1, 0, 1, 1, 1, 1, 1], bool)  # the gate's status ok
    b = binary_from_probs(truth, probs, CLASSES4, ok, None, "images", 200, 0)
    assert b["sensitivity"] == pytest.approx(4 / 6)  # tumours 0, 1, 2, 5 answered glioma
    assert b["specificity"] == pytest.approx(3 / 4)  # clean slice 8 (p 0.45) answered glioma
    # tumours accepted: 0, 1, 3, 5; of them 3 was answered notumor (4 too, but the gate refused it)
    assert b["missed_accepted"] == pytest.approx(1 / 4) and b["n_tumour_accepted"] == 4
    # tumour probabilities 0.9 0.8 0.7 0.3 0.4 0.6 against 0.1 0.2 0.55 0.35: 21 of 24 pairs ordered right
    assert b["auc"] == pytest.approx(21 / 24)
    assert b["confusion_matrix"] == [[3, 1], [2, 4]]
    for name in ("sensitivity", "specificity", "missed_accepted", "auc"):
        lo, hi = b[f"{name}_ci95"]
        assert lo <= b[name] <= hi
    assert b["interval"]["text"] == "resampling 10 images"


def test_per_patient_figures_by_hand():
    from braintumor.metrics import binary_from_probs, patient_figures

    # patient a: 3 tumour slices, 1 found, 1 clean slice called clean; b: 2 tumour slices, none found (missed on
    # every slice), 2 clean slices, one called a tumour; c: clean only, none called; the last image has no patient
    truth = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1], bool)
    said = np.array([1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], bool)
    keys = ["a", "a", "a", "a", "b", "b", "b", "b", "c", "c", None]
    f = patient_figures(truth, said, keys)
    assert f == {"patients": 3, "with_tumour": 2, "found": 1, "missed": 1,
                 "slice_sensitivity_median": pytest.approx((1 / 3 + 0) / 2), "slice_sensitivity_lowest": 0.0,
                 "with_clean_slices": 3, "raised_an_alarm": 1}
    assert patient_figures(truth, said, [None] * 11) is None and patient_figures(truth, said, None) is None
    # carried by the binary figures, per source too
    probs = _four_class(np.where(said, 0.2, 0.8))
    assert binary_from_probs(truth, probs, CLASSES4, patients=keys)["per_patient"] == f
    assert "per_patient" not in binary_from_probs(truth, probs, CLASSES4)


def test_binary_figures_without_clean_slices_are_none_not_errors():
    from braintumor.metrics import binary_from_probs

    b = binary_from_probs(np.ones(3, bool), _four_class([0.1, 0.9, 0.2]), CLASSES4, None, None, "images", 50, 0)
    assert b["sensitivity"] == pytest.approx(2 / 3) and b["specificity"] is None and b["auc"] is None
    assert b["specificity_ci95"] == [None, None]


def test_folders_map_to_tumour_or_not(tmp_path):
    from braintumor.binary import binary_listing, folder_label, parse_labels
    from braintumor.errors import DataError

    assert [folder_label(f, {}, CLASSES4) for f in ("yes", "no", "tumor", "no_tumor", "Tumour", "no tumour", "1",
                                                     "0", "glioma", "notumor", "Pituitary Tumor", "normal")] == \
        [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert folder_label("Y", parse_labels(["Y=tumour"]), CLASSES4) == 1 and folder_label("zz", {}, CLASSES4) is None
    for f in ("yes", "no"):
        (tmp_path / "yn" / f).mkdir(parents=True)
        (tmp_path / "yn" / f / "a.png").write_bytes(b"")
    listing = binary_listing(tmp_path / "yn", CLASSES4)
    assert listing.labels.tolist() == [0, 1] and listing.paths[1].endswith("yes/a.png")
    (tmp_path / "yn" / "maybe").mkdir()
    with pytest.raises(DataError, match="--binary-label"):
        binary_listing(tmp_path / "yn", CLASSES4)
    for f in CLASSES4:
        (tmp_path / "four" / f).mkdir(parents=True)
    assert binary_listing(tmp_path / "four", CLASSES4) is None  # scored on its classes (and tumour or not)
