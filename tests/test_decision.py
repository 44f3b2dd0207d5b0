"""The no-tumour doubt (eval.notumor_doubt, decision.Doubt): a `notumor` answer with a high p(tumour) is withdrawn
as `uncertain`, the same way on every path that decides (Decider, volume pooling, an export's decider)."""

from __future__ import annotations

import numpy as np
import pytest

from braintumor.config import Config, build
from braintumor.decision import Decider, Doubt, Verdict
from braintumor.errors import ConfigError
from braintumor.exported import ExportedRun
from braintumor.input_checks import InputStats
from braintumor.operating_point import markdown, suggest, threshold_for
from braintumor.volumes import pool

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def test_the_doubt_withdraws_only_an_accepted_notumor_answer_with_a_high_p_tumour():
    probs = np.array([[0.10, 0.10, 0.70, 0.10],   # notumor, p(tumour) 0.30: withdrawn at 0.2
                      [0.04, 0.03, 0.90, 0.03],   # notumor, p(tumour) 0.10: stands
                      [0.60, 0.10, 0.25, 0.05],   # glioma: never touched, whatever p(tumour)
                      [0.10, 0.10, 0.70, 0.10]])  # notumor with p(tumour) 0.30, but refused by the header rule
    stats = [None, None, None, InputStats(0.0, 40.0, "CT", None)]
    doubted = Decider(1.0, [], doubt=Doubt.of(0.2, CLASSES)).verdicts(probs, [], stats)
    assert [v.status for v in doubted] == ["uncertain", "ok", "ok", "out_of_distribution"]
    assert [v.doubted for v in doubted] == [True, False, False, False]
    assert "p(tumour) 0.300 >= eval.notumor_doubt 0.2" in doubted[0].reason
    assert "DICOM header" in doubted[3].reason  # a refusal keeps its own reason
    np.testing.assert_array_equal(doubted[0].probs, probs[0])  # the probabilities are still reported
    plain = Decider(1.0, []).verdicts(probs, [], stats)
    assert [v.status for v in plain] == ["ok", "ok", "ok", "out_of_distribution"]
    assert [v.status for v in Decider(1.0, [], doubt=Doubt.of(0.31, CLASSES)).verdicts(probs, [], stats)] == \
        ["ok", "ok", "ok", "out_of_distribution"]  # 0.30 < 0.31: the threshold is inclusive from above only
    assert Decider(doubt=Doubt.of(0.2, CLASSES)).describe()["notumor_doubt"] == 0.2
    assert Decider().describe()["notumor_doubt"] is None


def test_the_no_tumour_class_is_found_by_name_or_the_setting_is_refused():
    assert Doubt.of(None, CLASSES) is None
    assert Doubt.of(0.1, ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]).index == 2
    assert Doubt.of(0.1, ["Normal", "Glioma"]).index == 0
    with pytest.raises(ConfigError, match="needs a no-tumour class.*rename that class folder notumor"):
        Doubt.of(0.1, ["cat", "dog"])


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1])
def test_the_config_key_takes_a_probability_strictly_between_0_and_1(value):
    with pytest.raises(ConfigError, match="eval.notumor_doubt"):
        build(Config, {"eval": {"notumor_doubt": value}})
    assert build(Config, {"eval": {"notumor_doubt": 0.05}}).eval.notumor_doubt == 0.05
    assert build(Config, {}).eval.notumor_doubt is None  # off unless a site sets it


def test_a_volume_whose_pooled_answer_is_a_doubtful_notumor_is_withdrawn():
    # two accepted slices: one says notumor firmly, one barely; their mean is notumor with p(tumour) 0.25
    slices = [Verdict("ok", "", np.array([0.05, 0.05, 0.85, 0.05]), 0.5),
              Verdict("ok", "", np.array([0.20, 0.10, 0.65, 0.05]), 0.5)]
    ids = ["scan.nii.gz#1", "scan.nii.gz#2"]
    (plain,) = pool(ids, slices, Decider(1.0, []))
    (doubted,) = pool(ids, slices, Decider(1.0, [], doubt=Doubt.of(0.2, CLASSES)))
    assert plain.status == "ok" and doubted.status == "uncertain"
    assert "p(tumour) 0.250" in doubted.reason and doubted.n_used == 2
    (kept,) = pool(ids, slices, Decider(1.0, [], doubt=Doubt.of(0.3, CLASSES)))
    assert kept.status == "ok"


def test_an_export_carries_the_doubt_and_a_server_may_override_it(tmp_path):
    def decider(override=None, **export):
        return ExportedRun(tmp_path, tmp_path / "model.onnx", {"class_names": CLASSES, **export}).decider(override)

    assert decider().doubt is None  # exports written before the setting: off
    assert decider(notumor_doubt=0.2).doubt == Doubt(2, 0.2)
    assert decider(0.05, notumor_doubt=0.2).doubt == Doubt(2, 0.05)  # serve --notumor-doubt wins


def test_the_suggested_threshold_is_the_largest_that_leaves_at_most_the_allowed_share_answered_notumor():
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.05])
    said = np.array([False, False, True, True, True])  # two found by argmax, three answered notumor
    assert threshold_for(p, said, 0.8) == 0.2  # 4 of 5 must be kept: argmax keeps 2, the doubt catches 0.3 and 0.2
    assert threshold_for(p, said, 0.6) == 0.3
    assert threshold_for(p, said, 0.4) is None  # argmax alone keeps 2 of 5
    assert threshold_for(p[:0], said[:0], 0.9) is None


def test_the_operating_point_is_cross_fitted_by_fold_and_costed_on_the_other_collections():
    # collection "site": fold 1 and fold 2, two tumour slices answered notumor and one clean slice each
    truth = np.array([1, 1, 0, 1, 1, 0, 0, 0], dtype=bool)
    p_tumour = np.array([0.30, 0.10, 0.25, 0.40, 0.20, 0.05, 0.45, 0.01])
    said = np.ones(8, dtype=bool)  # every answer is notumor
    folds = np.array([1, 1, 1, 2, 2, 2, 1, 2])
    sources = np.array(["site"] * 6 + ["home"] * 2)
    out = suggest(truth, p_tumour, said, folds, sources, target=0.5)
    assert set(out) == {"site"}  # "home" has no tumour slice: nothing to set
    s = out["site"]
    assert s["suggested"] == 0.30  # on all four tumour slices: keep 2 of 4 -> the second largest, 0.30
    c = s["cross_fitted"]
    assert c["thresholds"] == {"1": 0.40, "2": 0.30}  # fold 1 judged with fold 2's choice, and back
    # fold 1: 0.30, 0.10 < 0.40 stay notumor; fold 2: 0.40 >= 0.30 withdrawn, 0.20 stays -> 3 of 4 left
    assert c["tumour_said_notumor"] == {"argmax": 1.0, "doubt": 0.75}
    assert c["clean_said_notumor"] == {"argmax": 1.0, "doubt": 1.0}  # 0.25 < 0.40, 0.05 < 0.30
    # home: 0.45 >= 0.40 withdrawn in fold 1; 0.01 < 0.30 stays in fold 2
    assert c["other_clean_said_notumor"] == {"home": {"argmax": 1.0, "doubt": 0.5}}
    lines = "\n".join(markdown(out, "runs/kfold/X"))
    assert "| site | 4 | 0.3 | 100.0% -> 75.0% | 100.0% -> 100.0% | home 100.0% -> 50.0% |" in lines
    assert "--notumor-doubt 0.3" in lines
