"""The out-of-distribution gate: is an input like the brain MRI slices the model was trained on?

Two kinds of evidence, fitted on the training images and stored with the run (``gate.json``, ``gate.npz``):
- **input checks**, cheap and on the decoded pixels before any resizing: a near-uniform image (blank, a white
  square) or a colour image (a photograph; MRI slices are gray, and the training folder's RGB files carry at most
  JPEG chroma noise) is refused outright;
- **feature distance** (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples"):
  the minimum over classes of the Mahalanobis distance of the image's features (the last feature map, globally
  average-pooled: the layer Grad-CAM explains by default) to that class's training mean, with one shared
  covariance (Ledoit-Wolf shrinkage, as scikit-learn estimates it). ``eval.gate_layers`` can name several layers
  instead (Lee et al. combine layers): each gets its own means and covariance, its distance is divided by its
  training images' ``acceptance`` quantile, and the layers' distances are summed. The scorer pools and
  concatenates them into the one features output, so export and the servers need nothing new.

The threshold is chosen on held-out real scans of **every training source**: each source must keep ``acceptance``
(default 98%) of its own scans, so the threshold is the largest of the per-source ones and a collection unlike the
majority is not refused wholesale. Which scores were tried against it, and on what: benchmarks/ood.md.

The decision (``decide``) turns these and the calibrated confidence into ``ok | uncertain | out_of_distribution``
with a short reason, two kinds of no kept apart:
- ``out_of_distribution``: not a brain MRI it can read: an input check failed, the "brain MRI or not" head
  (``eval.gate_head: oe``, gate_head.py) says it is not a brain MRI, or the distance is past the threshold
  (``far`` equals ``threshold`` since per-source thresholds; gates fitted before keep their band between the two,
  which still says ``uncertain``);
- ``uncertain``: a brain MRI the model is unsure about: the calibrated top probability is below ``min_confidence``;
- ``ok``: otherwise.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from .errors import RunError
from .gate_head import GateHead
from .input_checks import InputStats
from .runs import atomic_write_bytes, atomic_write_json, read_json

STATUSES = ("ok", "uncertain", "out_of_distribution")
DEFAULT_ACCEPTANCE = 0.98


@dataclass
class Gate:
    """A fitted gate (see the module docstring); ``save``/``load`` keep it with the run."""

    layers: list[str]  # the layers whose globally pooled outputs, concatenated in this order, are the features
    widths: list[int]  # each layer's feature width
    means: list[np.ndarray]  # per layer: (classes, d) class means
    precisions: list[np.ndarray]  # per layer: (d, d) inverse of the shared covariance
    scales: list[float]  # per layer: its distance is divided by this before the layers are summed
    threshold: float  # summed distance above which a scan is not like the training scans
    far: float  # summed distance above which it is out of distribution (the threshold, since the 2nd gate)
    colour_limit: float  # colourfulness above which an image is not an MRI slice
    flat_limit: float  # gray-level spread below which an image is blank
    min_confidence: float = 0.5
    acceptance: float = DEFAULT_ACCEPTANCE
    fitted: dict[str, Any] = field(default_factory=dict)  # what it was fitted and chosen on, for the reader
    # the "brain MRI or not" head (gate_head.py), or None; it reads every pooled column: ``layers``', then those of
    # ``head_layers`` (pooled for the head alone, after the distance's)
    head: GateHead | None = None
    head_layers: list[str] = field(default_factory=list)
    head_widths: list[int] = field(default_factory=list)

    @property
    def feature_layer(self) -> str | list[str]:
        """What the scorer pools: one layer name, or the list whose pooled outputs are concatenated."""
        pooled = [*self.layers, *self.head_layers]
        return pooled[0] if len(pooled) == 1 else pooled

    def head_margin(self, features: np.ndarray) -> np.ndarray | None:
        """(n,) the head's logit past its threshold (above 0: not a brain MRI), or None without a head."""
        return None if self.head is None else self.head.margin(features)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(n,) the gate's score of (n, sum of widths) features: each layer's Mahalanobis distance over its
        scale, summed over the layers."""
        features = np.asarray(features, dtype=np.float64)
        edges = np.cumsum([0, *self.widths])
        return sum(mahalanobis(features[:, a:b], m, p) / s for a, b, m, p, s
                   in zip(edges[:-1], edges[1:], self.means, self.precisions, self.scales, strict=True))

    def ratio(self, features: np.ndarray) -> np.ndarray:
        """(n,) the score over the threshold: above 1 is past the edge of the held-out brain MRI."""
        return self.distance(features) / self.threshold

    @property
    def far_ratio(self) -> float:
        return self.far / self.threshold

    def summary(self) -> dict[str, Any]:
        """Everything but the arrays: what gate.json holds for a reader."""
        d = asdict(replace(self, head=None))
        del d["means"], d["precisions"]
        d["head"] = None if self.head is None else self.head.summary()
        return d

    def save(self, run_dir: Path) -> None:
        """gate.json (readable) and gate.npz (class means and precisions: a 2048-wide backbone's precision
        matrix would be 90 MB of JSON)."""
        buf = io.BytesIO()
        np.savez(buf, **{f"means_{i}": m for i, m in enumerate(self.means)},
                 **{f"precision_{i}": p for i, p in enumerate(self.precisions)},
                 **(self.head.arrays() if self.head is not None else {}))
        atomic_write_bytes(Path(run_dir) / "gate.npz", buf.getvalue())
        atomic_write_json(Path(run_dir) / "gate.json", self.summary())

    @classmethod
    def load(cls, run_dir: Path) -> Gate | None:
        """The run's gate, or None when it has none (runs trained before the gate existed). Reads the one-layer
        gate.json / gate.npz of runs trained before the gate had several layers."""
        run_dir = Path(run_dir)
        if not (run_dir / "gate.json").is_file():
            return None
        info = read_json(run_dir / "gate.json")
        try:
            with np.load(run_dir / "gate.npz") as arrays:
                if "means" in arrays:  # one layer, before layers/scales
                    means, precisions = [arrays["means"]], [arrays["precision"]]
                else:
                    n = len(info["layers"])
                    means = [arrays[f"means_{i}"] for i in range(n)]
                    precisions = [arrays[f"precision_{i}"] for i in range(n)]
                head = None if info.get("head") is None else GateHead.from_saved(info.pop("head"), arrays)
        except (OSError, KeyError, ValueError) as e:
            raise RunError(f"{run_dir / 'gate.npz'} is missing or damaged ({e}); retrain, or delete gate.json "
                           "to use the run without a gate") from e
        if "feature_layer" in info:  # one layer, before layers/scales
            layer = info.pop("feature_layer")
            info = {**info, "layers": [layer], "widths": [int(means[0].shape[1])], "scales": [1.0]}
        info.pop("head", None)
        return cls(**info, means=means, precisions=precisions, head=head)


def decide(ratio: float, confidence: float, stats: InputStats | None, *, far_ratio: float, colour_limit: float,
           flat_limit: float, min_confidence: float, head: float | None = None) -> tuple[str, str]:
    """(status, reason) for one image. ``ratio`` is the feature distance over the threshold, ``head`` the brain-MRI-
    or-not head's logit past its threshold (None: no head; for an ensemble, both are medians over its members);
    ``stats`` None skips the input checks."""
    if stats is not None and stats.spread < flat_limit:
        return "out_of_distribution", (f"the image is nearly uniform (gray-level spread {stats.spread:.1f}, under "
                                       f"the limit {flat_limit:.1f} set from the training scans): not a scan")
    if stats is not None and stats.colourfulness > colour_limit:
        return "out_of_distribution", (f"a colour image (colourfulness {stats.colourfulness:.1f}, over the limit "
                                       f"{colour_limit:.1f} set from the training scans): MRI slices are gray")
    if head is not None and head > 0.0:
        return "out_of_distribution", (f"not a brain MRI (the brain-MRI-or-not head's score is {head:.2f} past its "
                                       "threshold, which drawn CT heads, body sections and noise cross)")
    if ratio > far_ratio:
        return "out_of_distribution", (f"unlike the brain MRI it was trained on (feature distance {ratio:.2f}x "
                                       f"the threshold, beyond {far_ratio:.2f}x): not a brain MRI it can read")
    if ratio > 1.0:
        return "uncertain", f"at the edge of the training scans (feature distance {ratio:.2f}x the threshold)"
    if confidence < min_confidence:
        return "uncertain", f"low confidence ({confidence:.2f} < {min_confidence:.2f})"
    return "ok", "like the training scans"


def fit_gate(features: np.ndarray, labels: np.ndarray, num_classes: int, fit_idx: np.ndarray,
             held_idx: np.ndarray, held_confidence: np.ndarray, stats: list[InputStats],
             feature_layer: str | list[str], acceptance: float = DEFAULT_ACCEPTANCE, min_confidence: float = 0.5,
             *, widths: list[int] | None = None, held_sources: list[str] | None = None) -> Gate:
    """Class means and covariances on ``fit_idx`` (training images), the threshold on ``held_idx`` (real scans
    the model did not train on; with ``held_sources``, every source keeps ``acceptance`` of its own), input-check
    limits from every listed image's ``stats``. ``features`` are the pooled outputs of ``feature_layer`` (a list:
    several layers' outputs, concatenated, ``widths`` wide each)."""
    layers = [feature_layer] if isinstance(feature_layer, str) else list(feature_layer)
    widths = list(widths) if widths is not None else [int(features.shape[1])]
    if len(widths) != len(layers) or sum(widths) != features.shape[1]:
        raise ValueError(f"widths {widths} do not split {features.shape[1]} features into {len(layers)} layers")
    edges = np.cumsum([0, *widths])
    fits = [fit_features(features[fit_idx, a:b], labels[fit_idx], num_classes) for a, b in zip(edges[:-1], edges[1:])]
    # one layer keeps its raw distance; several are each scaled by their training images' acceptance quantile
    scales = [1.0] if len(layers) == 1 else [
        float(np.quantile(mahalanobis(np.asarray(features[fit_idx, a:b], np.float64), *f), acceptance))
        for a, b, f in zip(edges[:-1], edges[1:], fits)]
    gate = Gate(layers, widths, [f[0] for f in fits], [f[1] for f in fits], scales, 1.0, 1.0, 0.0, 0.0,
                min_confidence, acceptance)
    held = gate.distance(features[held_idx])
    # a hair above the chosen value: the quantile can be a held-out image's own distance, and float32 runtimes
    # (Keras, ONNX) differ in the 7th digit, so that image must not land on both sides of it
    gate.threshold = gate.far = choose_threshold(held, held_confidence, acceptance, min_confidence,
                                                 held_sources) * (1 + 1e-5)
    colour = np.array([s.colourfulness for s in stats])
    spread = np.array([s.spread for s in stats])
    gate.colour_limit, gate.flat_limit = float(max(8.0, 2.0 * colour.max())), float(spread.min() / 2.0)
    ok = (held <= gate.threshold) & (np.asarray(held_confidence) >= min_confidence)
    names = np.asarray(held_sources if held_sources is not None else ["held-out"] * len(held))
    gate.fitted = {"features_from": int(len(fit_idx)), "threshold_from": int(len(held_idx)),
                   "held_out_accepted": float(np.mean(ok)),
                   "held_out_accepted_per_source": {str(k): float(np.mean(ok[names == k])) for k in np.unique(names)}}
    return gate


def mahalanobis(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(n,) min over classes c of sqrt((x - mu_c)^T P (x - mu_c)).

    One matrix product for every (image, class) pair, then a row-wise dot: a three-operand einsum runs as one
    unblocked loop of n * classes * d * d steps (5x slower for one 128-wide image, 100x for a batch of 64)."""
    n, classes, d = len(features), len(means), means.shape[1]
    diff = (features[:, None, :] - means[None, :, :]).reshape(n * classes, d)
    d2 = np.einsum("ij,ij->i", diff @ precision, diff).reshape(n, classes)
    d2 = np.where(np.isnan(d2), np.inf, d2)  # a class with no training images (NaN mean) is never nearest
    return np.sqrt(np.clip(d2.min(axis=1), 0, None))


def fit_features(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the precision of the shared (class-centred, Ledoit-Wolf shrunk) covariance."""
    features = np.asarray(features, dtype=np.float64)
    means = np.stack([features[labels == c].mean(axis=0) if (labels == c).any()
                      else np.full(features.shape[1], np.nan) for c in range(num_classes)])
    centred = features - means[labels]  # labels only name classes that have images: no NaN here
    return means, LedoitWolf().fit(centred).precision_


def choose_threshold(held_out_distance: np.ndarray, held_out_confidence: np.ndarray, acceptance: float,
                     min_confidence: float, sources: list[str] | None = None) -> float:
    """The threshold under which ``acceptance`` of the held-out real scans end ``ok``; with ``sources``, of each
    source's scans (the largest of the per-source thresholds), so a collection unlike the majority keeps its share.

    The confidence floor refuses its share first; the distance threshold takes what is left of the budget."""
    d = np.asarray(held_out_distance, dtype=np.float64)
    conf = np.asarray(held_out_confidence)
    names = np.asarray(sources if sources is not None else [""] * len(d))
    out = []
    for name in np.unique(names):
        dk, confident = d[names == name], conf[names == name] >= min_confidence
        budget = acceptance * len(dk)  # images that should end ok
        if confident.sum() <= budget:  # the confidence floor alone refuses too many: the distance refuses none
            out.append(float(dk.max()))
        else:
            out.append(float(np.quantile(dk[confident], min(1.0, budget / confident.sum()))))
    return max(out)


def refusal_report(accepted: dict[str, tuple[list[str], list[float | None]]],
                   refused: dict[str, tuple[list[str], list[float | None]]]) -> dict[str, Any]:
    """The gate judged on collections that must be accepted and groups of images that must be refused, each
    given as (statuses, ratios): per refused group its ``out_of_distribution`` and ``uncertain`` counts, refused
    share and AUROC against every accepted collection (and all pooled); per accepted collection its refused
    share and status counts. An image refused by an input check ranks beyond every distance."""
    def score(statuses, ratios):
        return np.array([np.inf if s == "out_of_distribution" and (r is None or r <= 1.0)
                         else np.nan if r is None else r for s, r in zip(statuses, ratios)], dtype=np.float64)

    def counts(statuses):
        return {s: int(sum(x == s for x in statuses)) for s in STATUSES}

    def auroc(good: np.ndarray, bad: np.ndarray) -> float | None:
        if not len(good) or not len(bad) or np.isnan(np.r_[good, bad]).any():
            return None
        return float(roc_auc_score(np.r_[np.zeros(len(good)), np.ones(len(bad))],
                                   np.nan_to_num(np.r_[good, bad], posinf=1e12)))

    good = {k: score(*v) for k, v in accepted.items()}
    pooled = np.concatenate(list(good.values())) if good else np.zeros(0)
    out: dict[str, Any] = {"accepted": {}, "refused": {}}
    for k, (statuses, _) in accepted.items():
        out["accepted"][k] = {"n": len(statuses), "status_counts": counts(statuses),
                              "refused": float(np.mean([s != "ok" for s in statuses])) if statuses else None}
    for k, (statuses, ratios) in refused.items():
        bad = score(statuses, ratios)
        out["refused"][k] = {"n": len(statuses), "status_counts": counts(statuses),
                             "refused": float(np.mean([s != "ok" for s in statuses])) if statuses else None,
                             "auroc": auroc(pooled, bad),
                             "auroc_per_accepted": {a: auroc(g, bad) for a, g in good.items()}}
    return out
