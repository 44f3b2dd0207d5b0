"""One answer per volume (a NIfTI file, a multi-frame DICOM, a DICOM series) from the answers on its slices.

The pooling rule, used by ``predict`` and ``evaluate`` alike:
- a volume's probabilities are the mean of the calibrated probabilities of the slices the gate accepted (status
  ``ok``); ``n_used`` counts them. Slices the gate refused (the top of the head, the neck, a blank end slice) do not
  vote: they are where the model is least to be trusted;
- the volume is ``ok`` (answered) when at least one slice was accepted and the mean's top probability is at least
  the gate's ``min_confidence`` (the slice rule; accepted slices that disagree give a flat mean: ``uncertain``);
- when no slice was accepted, the volume is ``out_of_distribution`` if every slice was, else ``uncertain``, and
  its probabilities are the mean over all its slices (shown, never answered);
- a run without a gate accepts every slice: the mean over all of them, always answered;
- the run's no-tumour doubt (``eval.notumor_doubt``) withdraws a pooled `notumor` answer as it does a slice's.
A plain image is a volume of one slice, so the rule gives back its own answer. Slices that could not be read are
not counted here; they are in skipped.txt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, recall_score

from .decision import Decider, Verdict
from .runs import markdown_table, write_csv
from .scanners import parse_id


@dataclass(frozen=True)
class VolumeAnswer:
    """The pooled answer on one volume."""

    volume: str  # the file, or '<folder>@<series tag>' for a DICOM series (scanners.parse_id)
    n_slices: int  # its slices that were read and classified
    n_used: int  # of those, the ones the mean is over: accepted by the gate
    status: str  # ok | uncertain | out_of_distribution
    reason: str
    probs: np.ndarray  # (classes,) pooled calibrated probabilities

    @property
    def answered(self) -> bool:
        return self.status == "ok"


def volume_of(image_id: str) -> str:
    """The volume an image id belongs to: its file, or its series (see scanners.parse_id)."""
    return parse_id(image_id).volume


def has_volumes(ids: Sequence[str]) -> bool:
    """Whether any id is a slice of a volume (a NIfTI file, a multi-frame DICOM, a DICOM series)."""
    return any(volume_of(i) != i for i in ids)


def group(ids: Sequence[str]) -> dict[str, list[int]]:
    """Volume -> the indices of its slices in ``ids``, volumes in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, image_id in enumerate(ids):
        out.setdefault(volume_of(image_id), []).append(i)
    return out


def pool_verdicts(verdicts: Sequence[Verdict], min_confidence: float | None = None
                  ) -> tuple[str, str, np.ndarray, int]:
    """(status, reason, pooled probabilities, slices used) of one volume's slice verdicts, by the module's rule.
    ``min_confidence`` None (a run without a gate) skips the confidence check."""
    probs = np.stack([np.asarray(v.probs, dtype=np.float64) for v in verdicts])
    ok = np.array([v.answered for v in verdicts])
    n = len(verdicts)
    if not ok.any():
        status = "out_of_distribution" if all(v.status == "out_of_distribution" for v in verdicts) else "uncertain"
        if n == 1:
            return status, verdicts[0].reason, probs[0], 0
        counts = Counter(v.status for v in verdicts)
        return status, (f"no slice accepted by the gate ({counts['uncertain']} uncertain, "
                        f"{counts['out_of_distribution']} out_of_distribution of {n})"), probs.mean(axis=0), 0
    pooled = probs[ok].mean(axis=0)
    used = int(ok.sum())
    if min_confidence is not None and pooled.max() < min_confidence:
        return "uncertain", (f"the {used} accepted slices disagree: pooled confidence {pooled.max():.2f} < "
                             f"{min_confidence:.2f}"), pooled, used
    if n == 1:
        return "ok", verdicts[0].reason, pooled, used
    return "ok", f"mean of the {used} of {n} slices the gate accepted", pooled, used


def pool(ids: Sequence[str], verdicts: Sequence[Verdict], decider: Decider | None = None
         ) -> list[VolumeAnswer]:
    """One answer per volume of ``ids`` (slice ids with their verdicts, in the same order); ``decider`` (a run's
    classifier) gives its gate's ``min_confidence`` and its no-tumour doubt, applied to the pooled answer as to a
    slice's."""
    min_confidence = decider.gates[0].min_confidence if decider is not None and decider.has_gate else None
    out = []
    for volume, idx in group(ids).items():
        status, reason, probs, used = pool_verdicts([verdicts[i] for i in idx], min_confidence)
        if decider is not None:
            status, reason = decider.doubted(status, reason, probs)
        out.append(VolumeAnswer(volume, len(idx), used, status, reason, probs))
    return out


def volume_labels(ids: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """(volumes,) the label of each volume of ``ids`` (its slices share their class folder; the most common
    label, should they not)."""
    labels = np.asarray(labels)
    return np.array([Counter(labels[idx].tolist()).most_common(1)[0][0] for idx in group(ids).values()],
                    dtype=np.int64)


def volume_metrics(answers: Sequence[VolumeAnswer], labels: np.ndarray, class_names: Sequence[str]
                   ) -> dict[str, Any]:
    """Volume-level accuracy (the pooled probabilities' top class, on every volume, as slice-level accuracy is on
    every slice), per-class recall, the confusion matrix, and accuracy on the volumes answered ``ok``."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.array([int(np.argmax(a.probs)) for a in answers], dtype=np.int64)
    k = range(len(class_names))
    recall = recall_score(labels, pred, labels=list(k), average=None, zero_division=np.nan)
    support = np.bincount(labels, minlength=len(class_names))
    answered = np.array([a.answered for a in answers])
    correct = pred == labels
    return {
        "rule": "mean of the calibrated probabilities of the slices the gate accepted (all slices if none was)",
        "n": len(answers), "n_multi_slice": sum(a.n_slices > 1 for a in answers),
        "n_slices": sum(a.n_slices for a in answers), "n_used": sum(a.n_used for a in answers),
        "accuracy": float(correct.mean()) if len(answers) else float("nan"),
        "per_class_recall": {c: (None if support[i] == 0 else float(recall[i])) for i, c in enumerate(class_names)},
        "support": {c: int(support[i]) for i, c in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(k)).tolist(),
        "status_counts": {s: sum(a.status == s for a in answers) for s in ("ok", "uncertain", "out_of_distribution")},
        "accuracy_answered": float(correct[answered].mean()) if answered.any() else None,
    }


def write_volumes(path: Path, answers: Sequence[VolumeAnswer], class_names: Sequence[str],
                  labels: np.ndarray | None = None) -> None:
    """volumes.csv: volume, [true, predicted,] n_slices, n_used, status, reason, class (only when ok), then a pooled
    probability per class. ``labels`` (evaluate) adds the true and the predicted (top) class."""
    truth = ["true", "predicted"] if labels is not None else []
    header = ["volume", *truth, "n_slices", "n_used", "status", "reason", "class", *[f"p_{c}" for c in class_names]]
    rows = []
    for i, a in enumerate(answers):
        top = class_names[int(np.argmax(a.probs))]
        known = [class_names[int(labels[i])], top] if labels is not None else []
        rows.append([a.volume, *known, a.n_slices, a.n_used, a.status, a.reason, top if a.answered else "",
                     *[f"{x:.6f}" for x in a.probs]])
    write_csv(path, header, rows)


def volumes_markdown(v: dict[str, Any]) -> list[str]:
    """The metrics.md section of ``volume_metrics``."""
    acc = v["accuracy_answered"]
    headline = [v["n"], v["n_multi_slice"], f"{v['n_used']} of {v['n_slices']}", f"{v['accuracy']:.4f}",
                v["status_counts"]["ok"], "-" if acc is None else f"{acc:.4f}"]
    recall = [[c, "-" if r is None else f"{r:.4f}", v["support"][c]] for c, r in v["per_class_recall"].items()]
    return ["", f"Per volume ({v['rule']}; volumes.csv)", "",
            *markdown_table(["volumes", "with several slices", "slices pooled", "accuracy", "answered (ok)",
                             "accuracy on the answered"], [headline]), "",
            *markdown_table(["class", "volume recall", "volumes"], recall)]
