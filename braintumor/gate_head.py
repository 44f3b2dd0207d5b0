"""The gate's "brain MRI or not" head: outlier exposure on features (Hendrycks et al. 2019, "Deep anomaly detection
with outlier exposure"), as a small separate head on the pooled block ends the scorer already returns.

A logistic regression (scikit-learn) on standardised features, fitted at train time (engine/gate_fit.py) with
- positives: the training images and shifted copies of them (braintumor/shifts.py: gray levels remapped, the head
  inverted, skull and scalp stripped, a bias field, blurred, down-sampled), so brain MRI of another sequence,
  preparation or resolution stays a brain MRI to it;
- negatives: package-built images that are not brain MRI (braintumor/nonbrain.negatives: drawn CT heads in CT
  windows, body, limb and spine sections, noise, text, shapes): synthetic only, so the real CT, body MRI and
  photographs of the development sets judge it unseen (benchmarks/ood.md).
Its threshold is chosen on held-out brain MRI of every training source, as the Mahalanobis gate's is. What it
says is the second kind of no: ``out_of_distribution`` because the image is not a brain MRI at all.

Stored in the run as plain numbers (the gate's ``gate.json`` / ``gate.npz``) and applied in NumPy after the forward
pass (``GateHead.margin``), so predict, evaluate, both servers, the k-fold ensemble and exported models share it.
NumPy and scikit-learn only: the ONNX server imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEAD_C = 0.01  # inverse L2 strength of the logistic head: strong, so it leans on broad features (benchmarks/ood.md)
HEAD_ACCEPTANCE = 0.99  # each training source keeps this share of its held-out scans past the head alone


@dataclass
class GateHead:
    """A fitted head: ``margin`` > 0 says "not a brain MRI"."""

    mean: np.ndarray  # (d,) the positives' feature means
    scale: np.ndarray  # (d,) their standard deviations (1 where a feature is constant)
    coef: np.ndarray  # (d,) logistic weights on the standardised features
    intercept: float
    threshold: float  # logit above which an image is not a brain MRI
    fitted: dict[str, Any] = field(default_factory=dict)  # what it was fitted and chosen on, for the reader

    def logit(self, features: np.ndarray) -> np.ndarray:
        """(n,) the head's log-odds that each row of (n, d) features is not a brain MRI."""
        z = (np.asarray(features, np.float64) - self.mean) / self.scale
        return z @ self.coef + self.intercept

    def margin(self, features: np.ndarray) -> np.ndarray:
        """(n,) the logit past the threshold: above 0 is refused."""
        return self.logit(features) - self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        return {"head_mean": self.mean, "head_scale": self.scale, "head_coef": self.coef}

    def summary(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "threshold": self.threshold, "fitted": self.fitted}

    @classmethod
    def from_saved(cls, info: dict[str, Any], arrays) -> GateHead:
        return cls(arrays["head_mean"], arrays["head_scale"], arrays["head_coef"], float(info["intercept"]),
                   float(info["threshold"]), dict(info.get("fitted", {})))


def fit_head(positives: np.ndarray, negatives: np.ndarray, held: np.ndarray, held_sources: list[str] | None = None,
             acceptance: float = HEAD_ACCEPTANCE, c: float = HEAD_C) -> GateHead:
    """A head fitted on (n, d) ``positives`` (brain MRI) against ``negatives`` (not), classes balanced; its
    threshold the largest per-source ``acceptance`` quantile of the ``held`` brain MRI's logits."""
    from sklearn.linear_model import LogisticRegression  # lazy: fit time only

    positives, negatives = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    mean = positives.mean(axis=0)
    scale = positives.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    x = (np.r_[positives, negatives] - mean) / scale
    y = np.r_[np.zeros(len(positives)), np.ones(len(negatives))]
    lr = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y)
    head = GateHead(mean, scale, lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), 0.0)
    logits = head.logit(held)
    names = np.asarray(held_sources if held_sources is not None else ["held-out"] * len(logits))
    per_source = {str(k): float(np.quantile(logits[names == k], acceptance)) for k in np.unique(names)}
    head.threshold = max(per_source.values()) + 1e-4  # a hair above: see ood.fit_gate (float32 runtimes)
    head.fitted = {"positives": int(len(positives)), "negatives": int(len(negatives)), "c": c,
                   "acceptance": acceptance, "threshold_from": int(len(logits)),
                   "negatives_refused": float(np.mean(head.margin(negatives) > 0)),
                   "held_out_refused_per_source": {k: float(np.mean(head.margin(held[names == k]) > 0))
                                                   for k in per_source}}
    return head
