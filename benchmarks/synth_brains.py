"""Synthetic clean brain slices from the MNI152 tissue templates, at every position of the head (issue 20).

Why: the leave-LGG-out runs call LGG's clean slices a tumour where no Kaggle image resembles them: the bottom and
top of the head (skull base, vertex) and sequences the Kaggle `notumor` folder does not hold (benchmarks/
external_slices.md). This writes a `notumor` collection that covers every axial position (and some coronal and
sagittal slices, the planes Kaggle's tumour classes hold almost only) in random contrasts, SynthSeg-style
(Billot et al. 2023: a label map, a random intensity per tissue, bias field, blur, noise): a brain that is not any
patient, from no scanner, so it cannot carry a collection's or a sequence's signature to the class.

Tissues (1 mm, nilearn's bundled MNI152 2009 templates, no download): grey and white matter from the probability
maps, CSF for the rest of the brain mask; outside the brain, shells by 3-D distance to it (extra-axial CSF, skull,
scalp), so a slice above the brain shows scalp and skull as the top slices of a real volume do. Every setting below
was fixed before the first training with it (argued from anatomy and from the shift ranges of shifts.py), not tuned
on any collection.

    python benchmarks/synth_brains.py OUT_DIR [--n 1500] [--size 224] [--seed 0]   # needs: nilearn (pip)

writes OUT_DIR/notumor/synth_00000.png ... and OUT_DIR/README.md (what it is, the template's licence).

Two more kinds, for the gate's brain-MRI-or-not head (issue 21, benchmarks/ood.md; `refit_gate.py --extra-*`):
``--kind mri`` keeps the contrasts physical (cortical bone dark in every sequence, background dark, grey and white
matter apart by at least 0.08) and strips skull and scalp from ``--strip-share`` of the slices, as research data
is; ``--kind ct`` renders the same anatomy as a head CT would show it (Hounsfield units per tissue, CT noise, one
of four reading windows, no bias field), written to OUT_DIR/ct/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

PLANES = {"axial": 0.7, "coronal": 0.15, "sagittal": 0.15}
# tissue order: background, CSF, grey matter, white matter, skull, scalp
TISSUES = ("background", "csf", "gm", "wm", "skull", "scalp")
# sequence prototypes (relative intensity per tissue), each jittered; half of the images draw every tissue freely
PROTOTYPES = {
    "t1": (0.02, 0.20, 0.50, 0.75, 0.10, 0.85),
    "t1c": (0.02, 0.20, 0.50, 0.70, 0.10, 0.85),
    "t2": (0.02, 0.95, 0.55, 0.35, 0.08, 0.55),
    "flair": (0.02, 0.12, 0.60, 0.42, 0.08, 0.65),
    "pd": (0.02, 0.70, 0.65, 0.50, 0.08, 0.70),
}
FREE_SHARE = 0.5
SHELLS_MM = {"csf": (1.0, 4.0), "skull": (4.0, 9.0), "scalp": (3.0, 8.0)}  # thickness ranges
HULL_MM = 25.0  # the closing that turns the brain's outline into the skull's inner one
MIN_BRAIN_VOXELS = 150  # a slice shows at least this much brain (1 mm voxels), or the shells around its end


def load_volumes():
    """(gm, wm, brain mask, head hull, distance outside the hull in mm), 1 mm."""
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata().astype(np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata().astype(np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0.5
    brain = ndimage.binary_closing(brain, iterations=2) | (gm + wm > 0.5)
    # the head's inner outline: the brain closed by HULL_MM (two distance transforms), so the skull runs across the
    # gaps between temporal lobes, brainstem and cerebellum as a skull does, not into them
    dilated = ndimage.distance_transform_edt(~brain) <= HULL_MM
    hull = ndimage.distance_transform_edt(dilated) > HULL_MM
    hull |= brain
    outside = ndimage.distance_transform_edt(~hull).astype(np.float32)
    return gm, wm, brain, hull, outside


def tissue_maps(gm, wm, brain, hull, outside, shells):
    """(6, ...) partial-volume maps of TISSUES for the given shell thicknesses (csf, skull, scalp in mm): CSF fills
    the hull around the brain and a thin shell outside it, then skull, then scalp."""
    c, s, p = shells
    inside = np.maximum(brain, hull).astype(np.float32)
    g, w = gm * inside, wm * inside
    total = np.clip(g + w, 0, 1)
    csf_in = inside * (1 - total)  # ventricles, sulci and the hull's gaps
    ramp = lambda lo, hi: np.clip(outside - lo + 0.5, 0, 1) * np.clip(hi - outside + 0.5, 0, 1)  # noqa: E731
    csf_out = ramp(0.5, c) * (1 - inside)
    skull = ramp(c, c + s) * (1 - inside)
    scalp = ramp(c + s, c + s + p) * (1 - inside)
    background = np.clip(1 - (g + w + csf_in + csf_out + skull + scalp), 0, 1)
    return np.stack([background, csf_in + csf_out, g, w, skull, scalp])


def positions(brain, plane: str) -> np.ndarray:
    """Slice indices of the plane that show brain, widened by 12 mm at each end (shells only: the top of a head)."""
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    other = tuple(a for a in range(3) if a != axis)
    counts = brain.sum(axis=other)
    idx = np.flatnonzero(counts >= MIN_BRAIN_VOXELS)
    return np.arange(max(idx[0] - 12, 0), min(idx[-1] + 13, brain.shape[axis]))


def take(volume, plane: str, index: int) -> np.ndarray:
    """A slice shown as radiology shows it: anterior (axial) or superior (coronal, sagittal) at the top."""
    if plane == "axial":
        return np.rot90(volume[..., :, :, index])
    if plane == "coronal":
        return np.rot90(volume[..., :, index, :])
    return np.rot90(volume[..., index, :, :])


# Hounsfield units per tissue (ranges drawn from) and reading windows (centre, width), for --kind ct
HOUNSFIELD = {"background": (-1000, -1000), "csf": (0, 15), "gm": (35, 45), "wm": (22, 32), "skull": (600, 1600),
              "scalp": (-120, 40)}
CT_WINDOWS = ((40, 80), (75, 215), (40, 400), (600, 2800))  # brain, subdural, soft tissue, bone


def intensities(rng) -> np.ndarray:
    if rng.random() < FREE_SHARE:
        means = rng.uniform(0.05, 1.0, size=len(TISSUES))
        means[0] = rng.uniform(0.0, 0.08)
        return means
    name = rng.choice(list(PROTOTYPES))
    return np.clip(np.array(PROTOTYPES[name]) + rng.normal(0, 0.06, size=len(TISSUES)), 0.0, 1.0)


def mri_intensities(rng) -> np.ndarray:
    """intensities() as MRI physics allows them: bone dark, background dark, grey and white matter apart."""
    while True:
        means = intensities(rng)
        means[4] = rng.uniform(0.0, 0.12)  # cortical bone gives no signal in any conventional sequence
        means[0] = min(means[0], 0.08)
        if abs(means[2] - means[3]) >= 0.08:
            return means


def turned(image: np.ndarray, rng) -> np.ndarray:
    """``image`` padded to a square, then a random zoom, rotation and shift."""
    h, w = image.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = image
    zoom = rng.uniform(0.8, 1.15)
    angle = np.deg2rad(rng.uniform(-12, 12))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / zoom
    centre = np.array([side / 2, side / 2])
    offset = centre - rot @ centre + rng.uniform(-0.05, 0.05, 2) * side
    return ndimage.affine_transform(square, rot, offset=offset, order=1, mode="constant")


def to_uint8(image: np.ndarray, size: int) -> np.ndarray:
    out = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(out.resize((size, size), Image.BILINEAR))


def render_ct(maps: np.ndarray, rng, size: int) -> np.ndarray:
    """One 8-bit head-CT slice from (6, h, w) tissue maps: Hounsfield units, noise, a reading window."""
    h, w = maps.shape[1:]
    hu = np.zeros((h, w), np.float32)
    for k, tissue in enumerate(TISSUES):
        hu += maps[k] * rng.uniform(*HOUNSFIELD[tissue])
    hu += rng.normal(0, rng.uniform(2, 8), (h, w))  # in place: float32, as measured in benchmarks/ood.md
    hu = ndimage.gaussian_filter(hu, rng.uniform(0.3, 1.0))
    centre, width = CT_WINDOWS[rng.integers(len(CT_WINDOWS))]
    centre, width = centre * rng.uniform(0.8, 1.2), width * rng.uniform(0.8, 1.2)
    return to_uint8(turned(np.clip((hu - (centre - width / 2)) / width, 0, 1), rng), size)


def render(maps: np.ndarray, rng, size: int, draw=intensities) -> np.ndarray:
    """One 8-bit slice from (6, h, w) tissue maps: random intensities (``draw``) and texture, bias field, blur,
    noise, a random rotation, zoom and shift, padded to a square of ``size``."""
    means = draw(rng)
    h, w = maps.shape[1:]
    image = np.zeros((h, w), np.float32)
    for k in range(len(TISSUES)):
        texture = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)).astype(np.float32), rng.uniform(0.5, 2.0))
        image += maps[k] * (means[k] + rng.uniform(0.0, 0.05) * texture / (texture.std() + 1e-6))
    coarse = rng.normal(0, 1, (4, 4))
    field = np.exp(rng.uniform(0.0, 0.35) * ndimage.zoom(coarse, (h / 4, w / 4), order=3)[:h, :w])
    image = ndimage.gaussian_filter(image * field, rng.uniform(0.3, 1.5))
    square = turned(image, rng)
    sigma = rng.uniform(0.005, 0.04)
    square = np.hypot(square + rng.normal(0, sigma, square.shape), rng.normal(0, sigma, square.shape))  # Rician
    return to_uint8(square / max(np.quantile(square, 0.995), 1e-6), size)


def stripped(maps: np.ndarray) -> np.ndarray:
    """The maps with skull and scalp made background, as skull-stripped research data shows a brain."""
    maps = maps.copy()
    maps[0] += maps[4] + maps[5]
    maps[4:] = 0
    return maps


def draw_slice(maps: np.ndarray, rng, size: int, kind: str, strip_share: float) -> np.ndarray:
    if kind == "ct":
        return render_ct(maps, rng, size)
    if kind == "mri":
        if rng.random() < strip_share:
            maps = stripped(maps)
        return render(maps, rng, size, mri_intensities)
    return render(maps, rng, size)


def generate(out: Path, n: int, size: int, seed: int, kind: str = "any", strip_share: float = 0.0) -> list[str]:
    rng = np.random.default_rng(seed)
    gm, wm, brain, hull, outside = load_volumes()
    spans = {p: positions(brain, p) for p in PLANES}
    folder = out / ("ct" if kind == "ct" else "notumor")
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        plane = str(rng.choice(list(PLANES), p=list(PLANES.values())))
        index = int(rng.choice(spans[plane]))
        shells = [rng.uniform(*SHELLS_MM[k]) for k in ("csf", "skull", "scalp")]
        sl = tuple(take(v, plane, index) for v in (gm, wm, brain, hull, outside))
        maps = tissue_maps(*sl, shells)
        image = draw_slice(maps, rng, size, kind, strip_share)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        name = f"synth_{i:05d}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name)
        names.append(f"{name},{plane},{index}")
    return names


README = """# Synthetic clean brain slices (benchmarks/synth_brains.py)

{n} slices ({size} px, seed {seed}, kind {kind}: `any` free contrasts, `mri` physical MRI contrasts with
{strip:.0%} skull-stripped, `ct` head CT in a reading window, in `ct/`), class `notumor` only (kinds any and mri):
a random-contrast rendering (SynthSeg-style) of the
MNI152 2009c nonlinear symmetric templates bundled with nilearn (grey and white matter probability maps, brain
mask), with extra-axial CSF, skull and scalp drawn as shells around the brain. Not any patient's scan.
Template: Fonov et al., NeuroImage 2011; Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University (free use with the copyright notice). `slices.csv`: plane and
slice index of each file.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=("any", "mri", "ct"), default="any")
    ap.add_argument("--strip-share", type=float, default=0.0, help="--kind mri: share of skull-stripped slices")
    a = ap.parse_args()
    rows = generate(a.out, a.n, a.size, a.seed, a.kind, a.strip_share)
    (a.out / "slices.csv").write_text("name,plane,index\n" + "\n".join(rows) + "\n")
    (a.out / "README.md").write_text(README.format(n=a.n, size=a.size, seed=a.seed, kind=a.kind, strip=a.strip_share))
    print(f"{len(rows)} slices in {a.out / ('ct' if a.kind == 'ct' else 'notumor')}")


if __name__ == "__main__":
    main()
