"""The stress report (issue 20 item 4): each shift is the identity at severity 0 and grows with severity; the
command's numbers on a tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.commands.stress import tumour_figures
from braintumor.shifts import SHIFTS
from tests.conftest import train_tiny_run
from tests.test_pipeline_shifts import heads

GEOMETRIC = ("zoom", "rotation")  # judged on a ramp: on a round head, turning or magnifying further can look closer


def _ramp() -> np.ndarray:
    yy, xx = np.mgrid[:96, :96]
    return np.repeat((40 + 1.5 * xx + 0.5 * yy)[None, :, :, None], 2, 0).astype(np.uint8)


@pytest.mark.parametrize("name", list(SHIFTS))
def test_each_shift_is_the_identity_at_severity_0_and_grows_with_severity(name):
    shift = SHIFTS[name]
    x = _ramp() if name in GEOMETRIC else np.repeat(np.repeat(heads(4), 2, 1), 2, 2).astype(np.uint8)  # 96 px
    assert np.array_equal(shift.apply(x, 0), x)
    change = [float(np.abs(shift.apply(x, s, seed=1).astype(float) - x).mean()) for s in range(len(shift.levels))]
    assert 3 <= len(shift.levels) - 1 <= 5
    assert all(b > a for a, b in zip(change, change[1:])), change
    again = shift.apply(x, len(shift.levels) - 1, seed=1)
    assert np.array_equal(again, shift.apply(x, len(shift.levels) - 1, seed=1))  # seeded: reproducible
    assert again.dtype == np.uint8 and again.shape == x.shape


def test_inversion_and_skull_strip_keep_the_background_black():
    x = heads(2).astype(np.uint8)
    for name in ("invert", "remap", "skull_strip", "bias_field"):
        assert SHIFTS[name].apply(x, len(SHIFTS[name].levels) - 1)[:, :3, :3].max() == 0, name


def test_tumour_figures_by_hand():
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    labels = np.array([0, 1, 3, 3, 2, 2, 2])
    top = np.array([0, 2, 3, 0, 2, 1, 2])  # 3 of 4 tumours called a tumour; 2 of 3 clean ones called clean
    probs = np.eye(4)[top]
    f = tumour_figures(labels, probs, classes)
    assert f == {"sensitivity": 0.75, "specificity": pytest.approx(2 / 3)}
    assert tumour_figures(labels[:4], probs[:4], classes)["specificity"] is None
    assert tumour_figures(labels, probs, ["a", "b", "c", "d"]) == {"sensitivity": None, "specificity": None}


def test_stress_command_writes_its_numbers(tmp_path: Path):
    run = train_tiny_run(tmp_path)
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["evaluate", str(run), "--data", str(data), "--runs-dir", str(runs)])
    assert res.exit_code == 0, res.output
    (ev,) = (runs / "evaluate").iterdir()
    plain = json.loads((ev / "metrics.json").read_text())
    res = CliRunner().invoke(app, ["stress", str(run), "--data", str(data), "--runs-dir", str(runs),
                                   "--shift", "invert", "--shift", "noise", "--shift", "jpeg"])
    assert res.exit_code == 0, res.output
    (out,) = (runs / "stress").iterdir()
    s = json.loads((out / "stress.json").read_text())
    assert list(s["shifts"]) == ["invert", "noise", "jpeg"] and s["n"] == 24
    for key, v in s["shifts"].items():
        assert [r["severity"] for r in v["rows"]] == list(range(len(SHIFTS[key].levels)))
        assert [r["level"] for r in v["rows"]] == list(SHIFTS[key].levels)
        for r in v["rows"]:
            for m in ("accuracy", "sensitivity", "specificity", "ece", "refused", "notumor_ok_on_tumour"):
                assert 0.0 <= r[m] <= 1.0, (key, m, r[m])
            assert sum(r["status_counts"].values()) == 24
        assert v["rows"][0]["accuracy"] == s["unchanged"]["accuracy"]
    # the unchanged row is evaluate's: same classifier, same images, same gate
    assert s["unchanged"]["accuracy"] == pytest.approx(plain["accuracy"])
    assert s["unchanged"]["refused"] == pytest.approx(plain["gate"]["refused"])
    assert s["unchanged"]["status_counts"] == plain["gate"]["status_counts"]
    md = (out / "stress.md").read_text()
    assert "| invert | 4 | 1 |" in md and "plots/stress.png" in md
    assert (out / "plots" / "stress.png").stat().st_size > 10_000
    bad = CliRunner().invoke(app, ["stress", str(run), "--data", str(data), "--runs-dir", str(runs), "--shift", "fog"])
    assert bad.exit_code == 2 and "is not a shift" in bad.output


def test_help_names_every_shift():
    """The CLI names the shifts without importing TensorFlow; this holds the list to shifts.SHIFTS."""
    res = CliRunner().invoke(app, ["stress", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert all(name in text for name in SHIFTS), [n for n in SHIFTS if n not in text]
