"""Pure metrics from labels and class probabilities: numbers, dicts and arrays (report.py writes the files)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import (
    brier_score_loss,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from .decision import scale  # noqa: F401  (re-exported: calibration code and tests use it from here)


def _codes(n: int, groups) -> np.ndarray:
    """Group index 0..G-1 per image; every image its own group when ``groups`` is None."""
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    return np.unique(groups.astype(str) if groups.dtype == object else groups, return_inverse=True)[1].ravel()


def n_units(n: int, groups=None) -> int:
    """How many independent units (groups) ``n`` images form."""
    return int(len(np.unique(_codes(n, groups)))) if n else 0


def resampled_groups(n: int, groups=None, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, G) indices of the groups drawn with replacement in each bootstrap resample (a cluster bootstrap:
    the group is the unit, every image of a drawn group comes along). Without groups, G = n images."""
    g = n_units(n, groups)
    return np.random.default_rng(seed).integers(0, g, size=(n_boot, g))


def ratio_ci(num, den=None, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval for sum(num) / sum(den) (den: ones, so a mean) resampling ``groups`` (an id per
    image: duplicate groups, volumes, patients), or images when None; (nan, nan) when empty.

    Slices of one patient are not independent, and resampling them one by one understates the spread; drawing
    whole groups (Field & Welsh 2007, the cluster bootstrap) keeps their correlation. A resample whose
    denominator is 0 (no image of the kind counted) is left out."""
    num = np.asarray(num, dtype=float)
    den = np.ones_like(num) if den is None else np.asarray(den, dtype=float)
    if den.sum() == 0 or n_boot == 0:
        return (float("nan"), float("nan"))
    codes = _codes(len(num), groups)
    g = int(codes.max()) + 1
    sums, counts = np.bincount(codes, num, g), np.bincount(codes, den, g)
    idx = resampled_groups(len(num), groups, n_boot, seed)
    top, bottom = sums[idx].sum(axis=1), counts[idx].sum(axis=1)
    keep = bottom > 0
    values = top[keep] / bottom[keep]
    alpha = (1 - level) / 2
    return (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95, groups=None):
    """Percentile bootstrap interval for the mean of a 0/1 vector (accuracy), resampling ``groups`` when given
    (ratio_ci); (nan, nan) when empty."""
    return ratio_ci(correct, None, groups, n_boot, seed, level)


def weighted_ci(stat, n: int, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval of any ``stat(weights)`` that takes one weight per image (how often the
    image's group was drawn; e.g. roc_auc_score's sample_weight), resampling groups; resamples where the
    statistic is undefined (nan) are left out."""
    if n == 0 or n_boot == 0:
        return (float("nan"), float("nan"))
    codes = _codes(n, groups)
    idx = resampled_groups(n, groups, n_boot, seed)
    g = int(codes.max()) + 1
    values = np.array([stat(np.bincount(row, minlength=g)[codes].astype(float)) for row in idx])
    values = values[np.isfinite(values)]
    if not len(values):
        return (float("nan"), float("nan"))
    alpha = (1 - level) / 2
    return (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))


def interval_info(n: int, groups=None, unit: str = "images", n_boot: int = 1000, level: float = 0.95) -> dict:
    """What an interval resampled, for metrics.json and the sentence beside it: 'resampling 46 patients'.
    Groups that are all single images are called images, whatever ``unit`` says."""
    k = n_units(n, groups)
    unit = unit if groups is not None and k < n else "images"
    return {"method": "percentile bootstrap", "level": level, "resamples": int(n_boot), "unit": unit,
            "n_units": k, "text": f"resampling {k} {unit}"}


def macro_auc(y_true: np.ndarray, probs: np.ndarray) -> tuple[float, dict[int, float]]:
    """One-vs-rest AUC per class and their mean, over classes that have both positives and negatives."""
    per = {}
    for c in range(probs.shape[1]):
        pos = y_true == c
        if 0 < pos.sum() < len(y_true):
            per[c] = float(roc_auc_score(pos, probs[:, c]))
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def compute_metrics(y_true, probs, class_names, n_boot: int = 1000, seed: int = 0, groups=None,
                    unit: str = "images") -> dict[str, Any]:
    """Loss, accuracy (+95% bootstrap CI resampling ``groups``, called ``unit``, or images), macro AUC and F1,
    per-class precision/recall/F1/support, confusion."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    y_pred = probs.argmax(axis=1)
    correct = (y_pred == y_true).astype(float)
    labels = list(range(k))
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    auc, auc_per = macro_auc(y_true, probs)
    present = support > 0
    return {
        "classes": list(class_names),
        "n": int(len(y_true)),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "accuracy_ci95": list(bootstrap_ci(correct, n_boot, seed, groups=groups)),
        "interval": interval_info(len(y_true), groups, unit, n_boot),
        "loss": nll(y_true, probs),
        "auc": auc,
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                "support": int(support[i]), "auc": auc_per.get(i)}
            for i, c in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def per_source_metrics(y_true, probs, sources, class_names) -> dict[str, dict[str, Any]]:
    """Accuracy, macro AUC (over the classes present in that collection) and recall per class, for each source
    (collection) in order of first appearance. Recall is None for a class the source has no images of."""
    y_true, probs, sources = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=np.float64), np.asarray(sources)
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(sources.tolist()):
        idx = np.flatnonzero(sources == name)
        y, p = y_true[idx], probs[idx]
        pred = p.argmax(axis=1)
        auc, _ = macro_auc(y, p)
        out[name] = {
            "n": int(len(idx)), "accuracy": float((pred == y).mean()),
            "auc": None if np.isnan(auc) else auc,
            "recall": {c: float((pred[y == i] == i).mean()) if (y == i).any() else None
                       for i, c in enumerate(class_names)},
            "support": {c: int((y == i).sum()) for i, c in enumerate(class_names)},
        }
    return out


# --- calibration ------------------------------------------------------------------------------------------

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. (2017)


def ece(y_true, probs, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over the reliability bins (equal-width, of the top-class confidence) of
    (share of images in the bin) x |accuracy in the bin - mean confidence in the bin|."""
    rows = reliability(y_true, probs, bins)["bins"]
    n = sum(r["n"] for r in rows)
    if n == 0:
        return float("nan")
    return float(sum(r["n"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]))


def _rows(probs) -> np.ndarray:
    """float64 probabilities whose rows sum to 1 exactly (float32 softmax is off by ~1e-7, which scikit-learn's
    log_loss warns about)."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs / probs.sum(axis=1, keepdims=True)


def brier(y_true, probs) -> float:
    """Multi-class Brier score (scikit-learn, not halved): mean over images of the squared distance between the
    probabilities and the one-hot label (0 = perfect, 2 = confidently wrong)."""
    probs = _rows(probs)
    return float(brier_score_loss(np.asarray(y_true, dtype=int), probs, labels=list(range(probs.shape[1])),
                                  scale_by_half=False))


def nll(y_true, probs) -> float:
    """Mean negative log-likelihood of the true class (scikit-learn's log_loss; probabilities clipped at float64
    epsilon, where float32 softmax underflows to 0)."""
    probs = _rows(probs)
    return float(log_loss(np.asarray(y_true, dtype=int), probs, labels=list(range(probs.shape[1]))))


def fit_temperature(y_true, probs) -> float:
    """The temperature that minimises the NLL of ``probs`` on ``y_true`` (Guo et al. 2017), searched on
    log T in [1/20, 20]."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    res = minimize_scalar(lambda log_t: nll(y_true, scale(probs, np.exp(log_t))), bounds=(-3.0, 3.0),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def calibration_figures(y_true, probs) -> dict[str, float]:
    """ECE (15 bins), Brier and NLL of one set of probabilities."""
    return {"ece": ece(y_true, probs), "brier": brier(y_true, probs), "nll": nll(y_true, probs)}


def cross_fitted(y_true, probs, folds: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Each fold's probabilities scaled by the temperature fitted on the other folds: an honest 'after'
    (a temperature scored on the images it was fitted on would look better than it is)."""
    y_true, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=np.float64)
    out, temps = np.empty_like(probs), []
    for f in np.unique(folds):
        inside = folds == f
        t = fit_temperature(y_true[~inside], probs[~inside])
        out[inside] = scale(probs[inside], t)
        temps.append(t)
    return out, temps


def reliability(y_true, probs, bins: int = ECE_BINS) -> dict[str, Any]:
    """Per-bin counts, accuracy and mean confidence, for the reliability diagram and ece(): bin i holds top-class
    confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins the first bin."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = probs.argmax(axis=1) == y_true if len(probs) else np.zeros(0, bool)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "n": n,
                     "accuracy": float(correct[inside].mean()) if n else None,
                     "confidence": float(conf[inside].mean()) if n else None})
    return {"bins": rows}


def calibration_report(y_true, probs, fitted_on: str, seed: int = 0) -> tuple[float, dict[str, Any]]:
    """(temperature fitted on all of ``probs``, the ``calibration`` entry of metrics.json).

    'before' scores the raw probabilities; 'after' scores each half of the images with a temperature fitted on
    the other half (two-fold cross-fitting), so the figure is not flattered by fitting and scoring on one set."""
    y_true = np.asarray(y_true, dtype=int)
    temperature = fit_temperature(y_true, probs)
    halves = np.random.default_rng(seed).permutation(len(y_true)) % 2
    after, temps = cross_fitted(y_true, probs, halves)
    return temperature, {
        "temperature": temperature, "fitted_on": fitted_on, "n": int(len(y_true)), "ece_bins": ECE_BINS,
        "before": calibration_figures(y_true, probs), "after": calibration_figures(y_true, after),
        "after_is": "two-fold cross-fitted (each half scaled by the temperature fitted on the other half)",
        "cross_fit_temperatures": temps,
    }


# --- tumour or not ----------------------------------------------------------------------------------------

def binary_metrics(truth, tumour_prob, said_tumour, accepted=None, groups=None, unit: str = "images",
                   n_boot: int = 1000, seed: int = 0, patients=None) -> dict[str, Any]:
    """Tumour-or-not figures, each with a 95% bootstrap interval resampling ``groups`` (ratio_ci, weighted_ci):

    - sensitivity: tumour images answered with a tumour class / tumour images;
    - specificity: no-tumour images answered 'no tumour' / no-tumour images;
    - missed_accepted: tumour images answered 'no tumour' with the gate's status ok / tumour images accepted
      (``accepted``: per image, the gate said ok; None: every answer counts as accepted);
    - auc: ROC AUC of ``tumour_prob`` (1 - p(notumor)) against ``truth``;
    - per_patient: patient_figures, where ``patients`` (a patient key per image) names any.
    A figure whose denominator is empty (no tumour image, say) is None, as are its interval's ends."""
    truth = np.asarray(truth, dtype=bool)
    said = np.asarray(said_tumour, dtype=bool)
    prob = np.asarray(tumour_prob, dtype=np.float64)
    ok = np.ones_like(truth) if accepted is None else np.asarray(accepted, dtype=bool)
    parts = {"sensitivity": (said & truth, truth), "specificity": (~said & ~truth, ~truth),
             "missed_accepted": (~said & truth & ok, truth & ok)}
    out: dict[str, Any] = {"n": int(len(truth)), "n_tumour": int(truth.sum()), "n_no_tumour": int((~truth).sum()),
                           "n_tumour_accepted": int((truth & ok).sum())}
    for name, (num, den) in parts.items():
        defined = den.sum() > 0
        out[name] = float(num.sum() / den.sum()) if defined else None
        ci = ratio_ci(num, den, groups, n_boot, seed) if defined else (None, None)
        out[f"{name}_ci95"] = [None if v is None or np.isnan(v) else v for v in ci]
    both = 0 < truth.sum() < len(truth)
    out["auc"] = float(roc_auc_score(truth, prob)) if both else None
    ci = weighted_ci(lambda w: _weighted_auc(truth, prob, w), len(truth), groups, n_boot, seed) if both \
        else (None, None)
    out["auc_ci95"] = [None if v is None or np.isnan(v) else v for v in ci]
    out["interval"] = interval_info(len(truth), groups, unit, n_boot)
    out["confusion_matrix"] = [[int((~truth & ~said).sum()), int((~truth & said).sum())],
                               [int((truth & ~said).sum()), int((truth & said).sum())]]  # rows: no tumour, tumour
    per_patient = patient_figures(truth, said, patients)
    if per_patient is not None:
        out["per_patient"] = per_patient
    return out


def patient_figures(truth, said_tumour, patients) -> dict[str, Any] | None:
    """Tumour or not per patient, the unit a clinic decides on, over the images whose patient is known
    (``patients``: a key per image, None where unknown; None when no image has one). A patient with tumour slices is
    *found* when at least one of them is called a tumour, *missed* when none is; a patient's slice sensitivity is the
    share of its tumour slices called a tumour (median and lowest over patients: a pooled slice rate hides a patient
    whose tumour is missed on every slice). A patient with clean slices *raises an alarm* when at least one of them
    is called a tumour."""
    if patients is None:
        return None
    keys = np.asarray(patients, dtype=object)
    known = np.array([k is not None for k in keys], dtype=bool)
    if not known.any():
        return None
    truth, said = np.asarray(truth, dtype=bool)[known], np.asarray(said_tumour, dtype=bool)[known]
    codes = np.unique(keys[known].astype(str), return_inverse=True)[1].ravel()
    tumour = np.bincount(codes, weights=truth)
    found = np.bincount(codes, weights=truth & said)
    clean = np.bincount(codes, weights=~truth)
    alarms = np.bincount(codes, weights=~truth & said)
    has = tumour > 0
    rate = found[has] / tumour[has]
    return {"patients": int(len(tumour)), "with_tumour": int(has.sum()), "found": int((found[has] > 0).sum()),
            "missed": int((found[has] == 0).sum()),
            "slice_sensitivity_median": float(np.median(rate)) if has.any() else None,
            "slice_sensitivity_lowest": float(rate.min()) if has.any() else None,
            "with_clean_slices": int((clean > 0).sum()), "raised_an_alarm": int((alarms[clean > 0] > 0).sum())}


def _weighted_auc(truth: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> float:
    """AUC of one resample (image weights = how often its group was drawn); nan when a side is not drawn."""
    drawn = weights > 0
    if not (truth[drawn].any() and (~truth[drawn]).any()):
        return float("nan")
    return float(roc_auc_score(truth[drawn], prob[drawn], sample_weight=weights[drawn]))


def binary_from_probs(truth, probs, class_names, verdict_ok=None, groups=None, unit: str = "images",
                      n_boot: int = 1000, seed: int = 0, patients=None) -> dict[str, Any]:
    """binary_metrics of 4-class probabilities: the tumour probability is 1 - p(notumor), and an answer says
    'tumour' when its top class is not notumor."""
    probs = np.asarray(probs, dtype=np.float64)
    clean = list(class_names).index("notumor")
    return binary_metrics(truth, 1 - probs[:, clean], probs.argmax(axis=1) != clean, verdict_ok, groups, unit,
                          n_boot, seed, patients)


def binary_per_source(truth, probs, class_names, sources, verdict_ok=None, groups=None, unit: str = "images",
                      n_boot: int = 1000, seed: int = 0, patients=None) -> dict[str, dict[str, Any]]:
    """binary_from_probs for each source (collection), in order of first appearance."""
    sources = np.asarray(sources)
    out = {}
    for name in dict.fromkeys(sources.tolist()):
        i = np.flatnonzero(sources == name)
        ok = None if verdict_ok is None else np.asarray(verdict_ok)[i]
        g = None if groups is None else np.asarray(groups)[i]
        keys = None if patients is None else np.asarray(patients, dtype=object)[i]
        out[name] = binary_from_probs(np.asarray(truth)[i], np.asarray(probs)[i], class_names, ok, g, unit, n_boot,
                                      seed, keys)
    return out


