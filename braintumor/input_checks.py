"""What the out-of-distribution gate knows about an image before any model runs: figures measured on the decoded
pixels, and what a scanner file's header says it is.

NumPy only (no Pillow import, no image loader, no scanner reader): ``decision.py`` and the exported-model server
import it. The decoders fill it in (``data.ImageSpec.read``, ``data.load_images``): a DICOM decoder leaves the
header's facts on the decoded image's ``info`` under ``HEADER_INFO`` as (modality, says_head).

The header rule (``header_refusal``): a DICOM whose Modality is not one of ``eval.gate_modalities``, or whose
BodyPartExamined is present and names no part of the head, is refused as ``out_of_distribution``. A PACS routes
head CTs, spine MRIs and radiographs to an MRI service by mistake, and their pixels can look enough like a brain
MRI to get an answer; the header says so for free. The reason names no tag value (the PHI rule of scanners/):
only the configured list, which is the user's own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# eval.gate_modalities' default. MR: magnetic resonance. OT ("other"): secondary captures, which is how JPEG/PNG
# collections converted to DICOM and screenshots of an MRI viewer are labelled; their pixels still meet the
# image checks. Everything else (CT, CR, DX, MG, US, NM, PT, XA, RF, IO, PX, OP, SM, XC, ES, ...) is not an MRI.
DEFAULT_MODALITIES = ("MR", "OT")
# BodyPartExamined is free text in practice ("BRAIN", "Head", "SCHAEDEL", "HEAD_NECK"): a value counts as the head
# when its letters contain one of these (English, and the German and French words seen on scanners)
HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "CEREB", "CRANI", "CRANE", "NEURO", "SELLA", "PITUIT", "HYPOPHYS", "ORBIT",
              "KOPF", "SCHAEDEL", "SCHADEL", "HIRN")
HEADER_INFO = "braintumor.header"  # key of the decoded image's info dict that carries (modality, says_head)
_CODE = re.compile(r"^[A-Z0-9_]{1,16}$")  # a DICOM code string (VR CS)


@dataclass(frozen=True)
class InputStats:
    """What the out-of-distribution gate's input checks measure on a decoded image (0-255 units), and what its
    file's header says (None: no header, or the header does not say)."""

    colourfulness: float  # mean over pixels of (max - min) over R, G, B: 0 for gray
    spread: float  # standard deviation of the gray levels
    modality: str | None = None  # a DICOM's Modality code ("MR", "CT"...); "?" when it is not a code at all
    says_head: bool | None = None  # a DICOM's BodyPartExamined names the head (True) or another part (False)

    @classmethod
    def of(cls, img: Any) -> InputStats:
        """The figures of a decoded PIL image (mode 'L' or 'RGB') and the header facts its decoder left on it."""
        modality, says_head = getattr(img, "info", {}).get(HEADER_INFO, (None, None))
        if img.mode == "L":
            return cls(0.0, float(np.asarray(img, dtype=np.float32).std()), modality, says_head)
        return cls(*rgb_figures(np.asarray(img if img.mode == "RGB" else img.convert("RGB"))), modality, says_head)


def rgb_figures(rgb: np.ndarray) -> tuple[float, float]:
    """(colourfulness, spread) of an (h, w, 3) uint8 array, channel by channel: NumPy reductions over a last axis
    of 3 walk memory with a stride and were most of the serving path's time (benchmarks/serve_profile.py). The
    same float32 figures as ``max(-1) - min(-1)`` and ``mean(-1)`` on the float32 array, bit for bit: the channel
    sums are integers, exact in float32."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    colour = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).astype(np.float32)
    gray = r.astype(np.float32)
    gray += g
    gray += b
    gray /= np.float32(3)
    return float(colour.mean()), float(gray.std())


def header_facts(modality: Any, body_part: Any) -> tuple[str | None, bool | None]:
    """(modality code, says_head) from a DICOM's Modality and BodyPartExamined values; nothing else is kept, so no
    free text of the header travels further than this function."""
    code = str(modality or "").strip().upper()
    code = None if not code else code if _CODE.match(code) else "?"
    text = unicodedata.normalize("NFKD", str(body_part or "")).encode("ascii", "ignore").decode().upper()
    letters = re.sub(r"[^A-Z]", "", text)
    return code, (any(w in letters for w in HEAD_WORDS) if letters else None)


def header_refusal(stats: InputStats | None, modalities: Sequence[str] | None) -> str | None:
    """Why the file's header says it is not a brain MRI, or None. ``modalities`` None turns the rule off."""
    if stats is None or modalities is None:
        return None
    accepted = ", ".join(modalities)
    if stats.modality is not None and stats.modality not in modalities:
        return (f"the DICOM header names a modality that is not one of eval.gate_modalities ({accepted}): not a "
                "brain MRI")
    if stats.says_head is False:
        return "the DICOM header names a body part that is not the head: not a brain MRI"
    return None
