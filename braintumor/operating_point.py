"""A site's operating point for the no-tumour doubt (``eval.notumor_doubt``, decision.Doubt), chosen out of fold.

On a collection whose tumours look unlike the training scans, many tumour slices come out `notumor` with a small
but not tiny p(tumour) = 1 - p(notumor). The doubt withdraws such an answer (``uncertain``, no class) when p(tumour)
is at or above a threshold. The threshold belongs to the site: it is chosen on the site's own labelled patients.

``suggest`` reads a k-fold run's out-of-fold answers (every slice scored by a fold model that never saw its
patient), at the calibrated scale the ensemble answers with (``for_kfold``), per collection:
- the suggested threshold: the largest one that leaves at most ``1 - target`` of the collection's tumour slices
  answered `notumor` (a slice the model already calls a tumour needs no doubt), chosen on all its out-of-fold
  answers: the value to deploy for new patients of that collection;
- what it does to new patients, cross-fitted: each fold's slices judged with the threshold chosen on the other
  folds' slices (so no slice is judged by a threshold chosen on it): the tumour slices left with a `notumor` answer,
  and the clean slices still answered `notumor`, before (argmax) and after; and the clean slices of each other
  collection answered `notumor` under the same thresholds (what the doubt costs there).
The gate is not part of these figures (the folds' gates are not pooled): they count answers, accepted or not.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .binary import truth_of_classes
from .config import Config
from .decision import scale
from .runs import markdown_table
from .splits import FoldPlan


def threshold_for(p_tumour: np.ndarray, said_notumor: np.ndarray, target: float) -> float | None:
    """The largest p(tumour) threshold that leaves at most 1 - ``target`` of these tumour slices answered
    `notumor`; None when argmax alone already does (or there is no tumour slice)."""
    n = len(p_tumour)
    extra = math.ceil(target * n - 1e-9) - int((~said_notumor).sum())  # slices the doubt must catch
    if n == 0 or extra <= 0:
        return None
    doubted = np.sort(p_tumour[said_notumor])[::-1]
    return float(doubted[extra - 1])


def _share(mask: np.ndarray, of: np.ndarray) -> float | None:
    return float(mask[of].mean()) if of.any() else None


def suggest(truth: np.ndarray, p_tumour: np.ndarray, said_notumor: np.ndarray, folds: np.ndarray,
            sources: np.ndarray, target: float) -> dict[str, Any]:
    """The module's figures for each collection with tumour slices (see the module docstring), by name."""
    truth, p_tumour, said_notumor = (np.asarray(a) for a in (truth, p_tumour, said_notumor))
    folds, sources = np.asarray(folds), np.asarray(sources)
    out: dict[str, Any] = {}
    for src in dict.fromkeys(sources.tolist()):
        mine = sources == src
        tumour = mine & truth
        if not tumour.any():
            continue
        chosen = {int(f): threshold_for(p_tumour[tumour & (folds != f)], said_notumor[tumour & (folds != f)], target)
                  for f in np.unique(folds[mine])}
        # a fold whose others need no doubt gets none (inf: nothing withdrawn)
        t = np.array([chosen.get(int(f)) or np.inf for f in folds])
        left = said_notumor & (p_tumour < t)  # still answered notumor under its fold's threshold
        cross = {"thresholds": {str(f): v for f, v in chosen.items()},
                 "tumour_said_notumor": {"argmax": _share(said_notumor, tumour), "doubt": _share(left, tumour)},
                 "clean_said_notumor": {"argmax": _share(said_notumor, mine & ~truth),
                                        "doubt": _share(left, mine & ~truth)},
                 "other_clean_said_notumor": {
                     str(o): {"argmax": _share(said_notumor, (sources == o) & ~truth),
                              "doubt": _share(left, (sources == o) & ~truth)}
                     for o in dict.fromkeys(sources.tolist()) if o != src and ((sources == o) & ~truth).any()}}
        out[str(src)] = {"target": target, "n_tumour": int(tumour.sum()), "n_clean": int((mine & ~truth).sum()),
                         "suggested": threshold_for(p_tumour[tumour], said_notumor[tumour], target),
                         "cross_fitted": cross if len(chosen) > 1 else None}
    return out


def for_kfold(cfg: Config, plan: FoldPlan, probs: np.ndarray, temperature: float) -> dict[str, Any] | None:
    """oof_metrics.json's notumor_doubt: ``suggest`` on a k-fold run's out-of-fold answers at the ensemble's
    calibrated scale (``temperature``, what it answers with), per collection; None without a notumor class or
    when each collection is held out whole (--by source: no other folds of its own to set a threshold on)."""
    loaded = plan.loaded
    truth = truth_of_classes(loaded.labels, loaded.class_names)
    if truth is None or plan.by == "source":
        return None
    notumor = list(loaded.class_names).index("notumor")
    calibrated = scale(probs, temperature)
    sources = loaded.sources or [Path(cfg.data_paths[0]).name if cfg.data_paths else "all"] * len(truth)
    return suggest(truth, 1 - calibrated[:, notumor], calibrated.argmax(axis=1) == notumor, plan.folds, sources,
                   cfg.eval.notumor_doubt_target)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def markdown(points: dict[str, Any], run_dir: str) -> list[str]:
    """kfold summary.md's section: the suggested threshold per collection and its cross-fitted effect."""
    if not points:
        return []
    target = next(iter(points.values()))["target"]
    rows = []
    for src, p in points.items():
        c = p["cross_fitted"]
        t = "none needed" if p["suggested"] is None else f"{p['suggested']:.4g}"
        if c is None:
            rows.append([src, str(p["n_tumour"]), t, "-", "-", "-"])
            continue
        others = "; ".join(f"{o} {_pct(v['argmax'])} -> {_pct(v['doubt'])}"
                           for o, v in c["other_clean_said_notumor"].items()) or "-"
        rows.append([src, str(p["n_tumour"]), t,
                     f"{_pct(c['tumour_said_notumor']['argmax'])} -> {_pct(c['tumour_said_notumor']['doubt'])}",
                     f"{_pct(c['clean_said_notumor']['argmax'])} -> {_pct(c['clean_said_notumor']['doubt'])}",
                     others])
    example = next((p["suggested"] for p in points.values() if p["suggested"] is not None), None)
    return ["", "## A site's operating point (`eval.notumor_doubt`)", "",
            f"A `notumor` answer with p(tumour) = 1 - p(notumor) at or above the threshold is said `uncertain` "
            f"instead (no class). Suggested per collection: the largest threshold that leaves at most "
            f"{1 - target:.0%} of its tumour slices answered `notumor` (eval.notumor_doubt_target {target:g}), "
            "chosen on all its out-of-fold answers, calibrated with the ensemble's temperature (what "
            "`--run` of this k-fold run answers with; a model trained apart has its own temperature, so set its "
            "threshold on its own k-fold). The arrows are the estimate for new patients, cross-fitted: "
            "each fold's slices judged with the threshold chosen on the other folds' (argmax -> with the doubt). "
            "Answers are counted whatever the gate says (the folds' gates are not pooled).", "",
            *markdown_table(["collection", "tumour slices", "suggested threshold",
                             "tumour slices answered notumor", "clean slices answered notumor",
                             "other collections' clean slices answered notumor"], rows),
            "", "Use one where its collection's scans are served (it withdraws answers on every collection): "
            + (f"`braintumor predict SCANS --run {run_dir} --notumor-doubt {example:.4g}`; `evaluate`, `serve` and "
               "`export` take the same option, and a config takes `eval.notumor_doubt`."
               if example is not None else "no collection needs one at this target.")]
