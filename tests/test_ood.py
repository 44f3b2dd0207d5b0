"""The gate's pure parts: distances, thresholds for a stated acceptance, the input checks and the decision."""

import numpy as np
import pytest
from PIL import Image

from braintumor.input_checks import InputStats
from braintumor.ood import Gate, choose_threshold, decide, fit_gate, mahalanobis, refusal_report

LIMITS = dict(far_ratio=2.0, colour_limit=8.0, flat_limit=10.0, min_confidence=0.5)


def test_mahalanobis_with_identity_precision_is_the_distance_to_the_nearest_mean():
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[3.0, 4.0], [9.0, 0.0]])
    assert mahalanobis(x, means, np.eye(2)) == pytest.approx([5.0, 1.0])



def test_mahalanobis_matches_the_quadratic_form_per_class_and_skips_a_class_without_images():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    precision = a @ a.T + np.eye(6)
    means = rng.normal(size=(3, 6))
    means[1] = np.nan  # a class with no training images
    x = rng.normal(size=(5, 6))
    expected = [min(np.sqrt((v - m) @ precision @ (v - m)) for m in means[[0, 2]]) for v in x]
    assert mahalanobis(x, means, precision) == pytest.approx(expected, rel=1e-12)
    assert mahalanobis(np.zeros((0, 6)), means, precision).shape == (0,)

def test_thresholds_accept_the_stated_share_of_held_out_scans():
    rng = np.random.default_rng(0)
    d = rng.gamma(4.0, 1.0, 4000)
    conf = np.ones_like(d)
    threshold = choose_threshold(d, conf, 0.975, 0.5)
    assert np.mean(d <= threshold) == pytest.approx(0.975, abs=0.002)
    # a confidence floor that refuses 1% leaves 1.5% to the distance
    conf[:40] = 0.2
    threshold = choose_threshold(d, conf, 0.975, 0.5)
    assert np.mean((d <= threshold) & (conf >= 0.5)) == pytest.approx(0.975, abs=0.002)


def test_threshold_keeps_the_acceptance_of_every_source_not_only_the_majority():
    rng = np.random.default_rng(2)
    big, small = rng.gamma(4.0, 1.0, 3000), rng.gamma(4.0, 1.0, 300) + 3.0  # a minority collection sits further
    d, sources = np.r_[big, small], ["kaggle"] * 3000 + ["figshare"] * 300
    pooled = choose_threshold(d, np.ones_like(d), 0.98, 0.5)
    assert np.mean(small <= pooled) < 0.95  # one threshold for all: the minority pays
    per_source = choose_threshold(d, np.ones_like(d), 0.98, 0.5, sources)
    assert np.mean(small <= per_source) == pytest.approx(0.98, abs=0.004)
    assert np.mean(big <= per_source) >= 0.98


def test_input_stats_see_colour_and_flatness():
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8))
    assert InputStats.of(gray).colourfulness == 0 and InputStats.of(gray).spread > 50
    rgb_gray = gray.convert("RGB")  # a gray scan saved as RGB is still gray
    assert InputStats.of(rgb_gray).colourfulness == 0
    red = Image.new("RGB", (32, 32), (200, 20, 20))
    assert InputStats.of(red).colourfulness == 180 and InputStats.of(red).spread == 0


@pytest.mark.parametrize("ratio, conf, stats, status, words", [
    (0.5, 0.9, InputStats(0.0, 40.0), "ok", "like the training"),
    (0.5, 0.9, InputStats(0.0, 2.0), "out_of_distribution", "nearly uniform"),
    (0.5, 0.9, InputStats(60.0, 40.0), "out_of_distribution", "colour image"),
    (3.0, 0.9, InputStats(0.0, 40.0), "out_of_distribution", "unlike the brain MRI it was trained on"),
    (1.5, 0.9, InputStats(0.0, 40.0), "uncertain", "edge of the training scans"),
    (0.5, 0.3, InputStats(0.0, 40.0), "uncertain", "low confidence"),
    (0.5, 0.9, None, "ok", "like the training"),
])
def test_decide(ratio, conf, stats, status, words):
    got, reason = decide(ratio, conf, stats, **LIMITS)
    assert got == status and words in reason


def test_fit_gate_round_trips_through_the_run_files_and_refuses_far_points(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 500)
    feats = rng.normal(0, 1, (1000, 8)) + labels[:, None] * 6.0
    stats = [InputStats(1.0, 40.0)] * 1000
    idx = rng.permutation(1000)
    gate = fit_gate(feats, labels, 2, idx[:700], idx[700:], np.ones(300), stats, "layer", 0.975, 0.5)
    assert gate.fitted["held_out_accepted"] == pytest.approx(0.975, abs=0.01)
    assert gate.far_ratio == 1.0  # past the threshold is out of distribution: uncertain is the model's doubt
    gate.save(tmp_path)
    again = Gate.load(tmp_path)
    assert Gate.load(tmp_path / "elsewhere") is None  # a run without a gate
    far_away = np.full((1, 8), 40.0)
    assert again.ratio(far_away)[0] > again.far_ratio
    assert np.allclose(again.ratio(feats[:5]), gate.ratio(feats[:5]))
    assert gate.flat_limit == 20.0 and gate.colour_limit == 8.0


def test_several_layers_each_count_and_a_point_odd_in_one_layer_only_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 400)
    low, high = rng.normal(0, 1, (800, 4)), rng.normal(0, 1, (800, 6)) + labels[:, None] * 5.0
    feats = np.concatenate([low, high], axis=1)
    stats = [InputStats(0.0, 40.0)] * 800
    idx = rng.permutation(800)
    gate = fit_gate(feats, labels, 2, idx[:600], idx[600:], np.ones(200), stats, ["early", "late"], 0.98, 0.5,
                    widths=[4, 6], held_sources=["a"] * 100 + ["b"] * 100)
    assert gate.feature_layer == ["early", "late"] and len(gate.scales) == 2
    odd = np.concatenate([np.full((1, 4), 8.0), high[:1]], axis=1)  # ordinary late features, odd early ones
    assert gate.ratio(odd)[0] > 1.0 and np.median(gate.ratio(feats[idx[600:]])) < 1.0
    gate.save(tmp_path)
    again = Gate.load(tmp_path)
    assert np.allclose(again.ratio(feats[:7]), gate.ratio(feats[:7])) and again.widths == [4, 6]
    with pytest.raises(ValueError, match="do not split"):
        fit_gate(feats, labels, 2, idx[:600], idx[600:], np.ones(200), stats, ["early", "late"], widths=[4, 5])


def test_a_gate_saved_before_layers_existed_still_loads(tmp_path):
    means, precision = np.zeros((2, 3)), np.eye(3)
    np.savez(tmp_path / "gate.npz", means=means, precision=precision)
    (tmp_path / "gate.json").write_text('{"feature_layer": "conv", "threshold": 2.0, "far": 3.0, '
                                        '"colour_limit": 8.0, "flat_limit": 5.0}')
    gate = Gate.load(tmp_path)
    assert gate.feature_layer == "conv" and gate.far_ratio == 1.5
    assert gate.ratio(np.array([[3.0, 4.0, 0.0]]))[0] == pytest.approx(2.5)


def test_refusal_report_counts_each_kind_of_no_per_folder_and_ranks_input_check_refusals_last():
    accepted = {"kaggle": (["ok"] * 9 + ["uncertain"], [0.5] * 9 + [0.7]),
                "lgg": (["ok"] * 3 + ["out_of_distribution"], [0.6, 0.7, 0.8, 1.5])}
    refused = {"ct": (["out_of_distribution", "ok"], [2.0, 0.9]),
               "photos": (["out_of_distribution"] * 2, [0.2, None])}  # refused by the colour check
    r = refusal_report(accepted, refused)
    assert r["accepted"]["kaggle"]["refused"] == pytest.approx(0.1) and r["accepted"]["lgg"]["refused"] == 0.25
    assert r["refused"]["ct"]["status_counts"] == {"ok": 1, "uncertain": 0, "out_of_distribution": 1}
    assert r["refused"]["photos"]["auroc"] == 1.0
    # ct's 0.9 ranks above every kaggle scan but under lgg's 1.5: 4 of 8 pairs then 7 of 8 with 2.0
    assert r["refused"]["ct"]["auroc_per_accepted"]["kaggle"] == 1.0
    assert r["refused"]["ct"]["auroc_per_accepted"]["lgg"] == pytest.approx((4 + 3) / 8)
