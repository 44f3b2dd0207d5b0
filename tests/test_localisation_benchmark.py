"""benchmarks/localisation.py's nested choice: an explanation is chosen on the other folds and scored on the held-out
one, so the quoted estimate never comes from the slices that chose it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling common.py
    try:
        spec = importlib.util.spec_from_file_location("localisation_bench", BENCH / "localisation.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def row(fold: int, method: str, pointing: float, energy: float = 4.0, n: int = 100) -> dict:
    return {"run": f".../kfold/run/fold_{fold}", "method": method, "layers": ["block4_2_act"], "n": n,
            "pointing_tol": pointing, "energy": energy}


def test_each_fold_is_scored_with_the_choice_of_the_other_folds(bench):
    # c points best everywhere but its maps are loose on fold 1 (energy 2), so only fold 1's held-out choice can be c;
    # between a and b the development folds decide: b on folds 1+3 (0.875 against 0.80), a on folds 1+2
    rows = [row(1, "a", 0.90), row(2, "a", 0.90), row(3, "a", 0.70),
            row(1, "b", 0.80), row(2, "b", 0.80), row(3, "b", 0.95),
            row(1, "c", 0.99, energy=2.0), row(2, "c", 0.99), row(3, "c", 0.99)]
    r = bench.nested(rows)
    chosen = {f["fold"]: f["chosen"] for f in r["folds"]}
    assert chosen == {1: "c @ block4_2_act", 2: "b @ block4_2_act", 3: "a @ block4_2_act"}
    assert r["estimate"] == pytest.approx((0.99 + 0.80 + 0.70) / 3)  # each fold's held-out score of its choice
    assert r["selection"] == pytest.approx((0.99 + 0.99 + 0.99) / 3)  # the best per fold: higher, and not quoted
    report = bench.nested_report(rows)
    assert "**Estimate** (nested" in report and "Selection, not an estimate" in report


def test_a_single_spec_or_fold_is_no_choice(bench):
    with pytest.raises(SystemExit, match="at least two folds"):
        bench.nested([row(1, "a", 0.9), row(2, "a", 0.8)])
