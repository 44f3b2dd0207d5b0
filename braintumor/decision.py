"""The decision on one image from numbers alone: temperature scaling, the gate's distance ratio and the verdict.

NumPy only (no TensorFlow, no Keras): the Keras ``Classifier`` and the ONNX server both decide here, so an
exported model reaches the same verdict as ``model.keras`` for the same model outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import find_class
from .errors import ConfigError
from .input_checks import DEFAULT_MODALITIES, InputStats, header_refusal
from .ood import Gate, decide

_TINY = 1e-12  # probabilities are clipped here before a log: float32 softmax underflows to 0
NO_GATE = "no out-of-distribution gate is stored with this run (trained before the gate existed): not checked"


@dataclass(frozen=True)
class Verdict:
    """What the toolkit says about one image."""

    status: str  # ok | uncertain | out_of_distribution
    reason: str
    probs: np.ndarray  # (classes,) calibrated probabilities
    ratio: float | None  # feature distance over the gate's threshold (None without a gate)
    head: float | None = None  # the brain-MRI-or-not head's logit past its threshold (None without a head)
    doubted: bool = False  # an ok `notumor` answer withdrawn by the no-tumour doubt (status uncertain)

    @property
    def answered(self) -> bool:
        return self.status == "ok"

    @property
    def score(self) -> float | None:
        """One number ranking how unlike a brain MRI the gate finds the image (AUROC, histograms): the distance
        ratio, or with a head the larger of it and exp(head margin); either passes 1 where it refuses."""
        if self.ratio is None or self.head is None:
            return self.ratio
        return max(self.ratio, float(np.exp(min(self.head, 50.0))))


@dataclass(frozen=True)
class Doubt:
    """``eval.notumor_doubt``: a `notumor` answer that leaves p(tumour) = 1 - p(notumor) at or above ``threshold``
    is said ``uncertain`` instead of ``ok``. The four-class answer is unchanged; the rule only withdraws the one
    answer that sends a tumour home: on another collection's scans many tumour slices come out `notumor` with a
    p(tumour) that is small but not tiny (benchmarks/external.md, "operating point"). A site sets the threshold on its
    own labelled patients (``kfold``'s summary suggests one, chosen out of fold)."""

    index: int  # the no-tumour class
    threshold: float  # in (0, 1)

    def reason(self, probs: np.ndarray) -> str | None:
        """Why this answer is withdrawn, or None when it stands."""
        p_tumour = 1.0 - float(probs[self.index])
        if int(np.argmax(probs)) != self.index or p_tumour < self.threshold:
            return None
        return (f"no tumour is the top answer, but p(tumour) {p_tumour:.3f} >= eval.notumor_doubt "
                f"{self.threshold:g}: a tumour is not ruled out; have a reader look")

    @classmethod
    def of(cls, threshold: float | None, class_names) -> Doubt | None:
        """The rule for a run's classes (None when ``threshold`` is None: off); the no-tumour class is found by
        its name (`notumor`, `no_tumor`, `normal`, ...), and a ConfigError says so when the run has none."""
        if threshold is None:
            return None
        index = find_class("notumor", list(class_names))
        if index is None:
            raise ConfigError(f"eval.notumor_doubt needs a no-tumour class, and the model's classes are "
                              f"{list(class_names)}: rename that class folder notumor, or leave the setting null")
        return cls(index, float(threshold))


def scale(probs, temperature: float) -> np.ndarray:
    """Probabilities with their temperature changed: softmax(log(p) / T).

    log(p) equals the logits up to a per-row constant, which softmax ignores, so this is temperature scaling of
    the logits and works on any model's (or ensemble's) probabilities."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def median(values: list):
    """The median over an ensemble's gates, element-wise; a single run's one gate is its own median, and skipping
    np.median there saves most of a verdict's NumPy time (benchmarks/serve_profile.py)."""
    return values[0] if len(values) == 1 else np.median(np.stack(values), axis=0)


class Decider:
    """A run's temperature and gate(s) (either may be missing: older runs), applied to model outputs, and the
    header rule (``eval.gate_modalities``; None: off), which refuses a file whose DICOM header says it is not a
    brain MRI whatever the model answers, with or without a gate, and the no-tumour doubt (``eval.notumor_doubt``;
    None: off), which turns an accepted `notumor` answer with a high p(tumour) into ``uncertain``."""

    def __init__(self, temperature: float = 1.0, gates: list[Gate] | None = None,
                 modalities: tuple[str, ...] | None = DEFAULT_MODALITIES, doubt: Doubt | None = None):
        self.temperature = float(temperature)
        self.gates = gates or []
        self.modalities = None if modalities is None else tuple(modalities)
        self.doubt = doubt

    @property
    def has_gate(self) -> bool:
        return bool(self.gates)

    def ratios(self, features: list[np.ndarray]) -> np.ndarray | None:
        """(n,) the median over gates of the feature distance over each gate's threshold."""
        if not self.gates:
            return None
        return median([g.ratio(f) for g, f in zip(self.gates, features, strict=True)])

    def head_margins(self, features: list[np.ndarray]) -> np.ndarray | None:
        """(n,) the median over gates of the head's margin; None unless every gate has a head."""
        if not self.gates or any(g.head is None for g in self.gates):
            return None
        return median([g.head_margin(f) for g, f in zip(self.gates, features, strict=True)])

    def from_raw(self, raw: np.ndarray, feats: list[np.ndarray], stats: list[InputStats | None] | None = None
                 ) -> list[Verdict]:
        """Verdicts from the model's own (uncalibrated) probabilities and each gate's features."""
        return self.verdicts(scale(raw, self.temperature), feats, stats)

    def verdicts(self, probs: np.ndarray, feats: list[np.ndarray], stats: list[InputStats | None] | None = None
                 ) -> list[Verdict]:
        """Verdicts from calibrated probabilities and each gate's features; ``stats`` are the input checks'
        figures of each decoded image (None where only the resized array is known)."""
        ratios, heads = self.ratios(feats), self.head_margins(feats)
        stats = stats or [None] * len(probs)
        out = []
        for i, p in enumerate(probs):
            refusal = header_refusal(stats[i], self.modalities)  # the header rule first: no model output moves it
            if refusal is not None:
                out.append(Verdict("out_of_distribution", refusal, p, None if ratios is None else float(ratios[i])))
                continue
            head = None if heads is None else float(heads[i])
            status, reason = ("ok", NO_GATE) if ratios is None else self.decide(float(ratios[i]), float(p.max()),
                                                                                stats[i], head)
            final, why = self.doubted(status, reason, p)
            out.append(Verdict(final, why, p, None if ratios is None else float(ratios[i]), head,
                               doubted=final != status))
        return out

    def doubted(self, status: str, reason: str, probs: np.ndarray) -> tuple[str, str]:
        """(status, reason) after the no-tumour doubt: only an ``ok`` answer can be withdrawn."""
        doubt = None if status != "ok" or self.doubt is None else self.doubt.reason(probs)
        return ("uncertain", doubt) if doubt else (status, reason)

    def decide(self, ratio: float, confidence: float, stats: InputStats | None, head: float | None = None
               ) -> tuple[str, str]:
        g = self.gates
        return decide(ratio, confidence, stats, far_ratio=float(median([x.far_ratio for x in g])),
                      colour_limit=float(median([x.colour_limit for x in g])),
                      flat_limit=float(median([x.flat_limit for x in g])), min_confidence=g[0].min_confidence,
                      head=head)

    def describe(self) -> dict:
        """What /model and export.json say about the decision: the temperature, the gate (if any) and the DICOM
        modalities the header rule accepts (None: the rule is off) and the no-tumour doubt's threshold (None: off)."""
        return {"temperature": self.temperature, "has_gate": self.has_gate,
                "gate": [g.summary() for g in self.gates] if self.gates else None,
                "gate_modalities": None if self.modalities is None else list(self.modalities),
                "notumor_doubt": None if self.doubt is None else self.doubt.threshold}
