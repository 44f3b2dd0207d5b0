"""The header rule of the gate (input_checks.py): what a DICOM says it is, decided before any model output counts."""

from __future__ import annotations

import numpy as np
from PIL import Image

from braintumor.decision import Decider
from braintumor.exported import ExportedRun
from braintumor.input_checks import (
    DEFAULT_MODALITIES,
    HEADER_INFO,
    InputStats,
    header_facts,
    header_refusal,
    rgb_figures,
)


def test_header_facts_keep_only_a_code_and_a_yes_or_no():
    assert header_facts("CT", "CHEST") == ("CT", False)
    assert header_facts(" mr ", "Brain w/wo") == ("MR", True)
    assert header_facts("MR", "Schädel") == ("MR", True)  # free text, accents dropped
    assert header_facts("MR", "") == ("MR", None) and header_facts(None, None) == (None, None)
    assert header_facts("Jane Doe's scan", "HEAD") == ("?", True)  # not a code: never kept as text


def test_header_refusal_names_no_tag_value():
    ct = InputStats(0.0, 40.0, "CT", None)
    reason = header_refusal(ct, DEFAULT_MODALITIES)
    assert reason is not None and "CT" not in reason and "eval.gate_modalities (MR, OT)" in reason
    knee = header_refusal(InputStats(0.0, 40.0, "MR", False), DEFAULT_MODALITIES)
    assert knee is not None and "body part" in knee
    assert header_refusal(InputStats(0.0, 40.0, "MR", True), DEFAULT_MODALITIES) is None
    assert header_refusal(InputStats(0.0, 40.0), DEFAULT_MODALITIES) is None  # a PNG: nothing to say
    assert header_refusal(ct, None) is None  # eval.gate_modalities: null


def test_decider_refuses_on_the_header_with_or_without_a_gate_and_says_so():
    probs = np.array([[0.97, 0.01, 0.01, 0.01]] * 3)
    stats = [InputStats(0.0, 40.0, "CT", None), InputStats(0.0, 40.0, "MR", True), None]
    verdicts = Decider(1.0, []).verdicts(probs, [], stats)
    assert [v.status for v in verdicts] == ["out_of_distribution", "ok", "ok"]
    assert Decider(1.0, [], None).verdicts(probs, [], stats)[0].status == "ok"
    assert Decider().describe()["gate_modalities"] == ["MR", "OT"] and Decider(modalities=None).describe()[
        "gate_modalities"] is None


def test_input_stats_read_the_decoders_header_facts():
    img = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    assert InputStats.of(img).modality is None
    img.info[HEADER_INFO] = ("CT", None)
    assert (InputStats.of(img).modality, InputStats.of(img).says_head) == ("CT", None)


def test_exported_model_applies_the_runs_header_rule(tmp_path):
    def decider(**export):
        return ExportedRun(tmp_path, tmp_path / "model.onnx", export).decider()

    assert decider().modalities == DEFAULT_MODALITIES  # an export from before the rule: on
    assert decider(gate_modalities=None).modalities is None
    assert decider(gate_modalities=["MR"]).modalities == ("MR",)


def test_rgb_figures_equal_the_float32_formula_bit_for_bit():
    # every channel sum 0-765 (a ramp through R, then G, then B) and a skewed random image, RGBA converted too
    v = np.arange(766)
    ramp = np.stack([np.minimum(v, 255), np.clip(v - 255, 0, 255), np.clip(v - 510, 0, 255)], -1)
    noise = (np.random.default_rng(0).random((61, 47, 3)) ** 3 * 255).astype(np.uint8)
    for rgb in (ramp.astype(np.uint8)[None], noise):
        f = rgb.astype(np.float32)
        expected = (float((f.max(-1) - f.min(-1)).mean()), float(f.mean(-1).std()))
        assert rgb_figures(rgb) == expected
        stats = InputStats.of(Image.fromarray(rgb))
        assert (stats.colourfulness, stats.spread) == expected
    rgba = Image.fromarray(noise).convert("RGBA")
    assert InputStats.of(rgba).colourfulness == rgb_figures(noise)[0]
