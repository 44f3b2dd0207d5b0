"""A development set of images that are not brain MRI, built from what installed packages ship (no download).

For choosing and testing the out-of-distribution gate: ``python -m braintumor.nonbrain OUT_DIR`` writes PNGs under
``OUT_DIR/<category>/`` and ``manifest.csv`` (file, category, source). Categories:

- ``photo_colour``: photographs as they are, and seeded crops of them;
- ``photo_gray``: the same photographs in gray, and gray pictures (so the colour check alone cannot pass the set);
- ``medical``: medical images far from brain MRI: a whole-body bone scan (pydicom's test files), the Shepp-Logan
  head phantom, retina and microscopy images (scikit-image);
- ``ct``: the near misses a PACS sends: two head CT slices and a thoracic-spine CT (pydicom's test files), each in
  the brain, subdural, soft-tissue and bone windows a viewer would export, as they are and mirrored;
- ``mri_body``: MR that is not of the brain: an abdominal MR and a small MR of another body part (pydicom's test
  files), as they are, mirrored, turned and cropped;
- ``synthetic``: noise (uniform, Gaussian, salt-and-pepper; gray and colour), blanks, gradients, checkerboards,
  rendered text pages, random shapes and CT-like heads (``ct_like``: a bright skull ring round a uniform gray
  brain).

Sources: scikit-learn's two sample photographs (``china.jpg``, ``flower.jpg``; CC BY 2.0, see
``sklearn/datasets/images/README.txt``), scikit-image's ``skimage.data`` pictures (their licences are listed in
``skimage/data/README.txt``; ``skimage.data.brain`` is an MRI and is left out) and pydicom's bundled test files.
scikit-image and pydicom are optional: without them their images are left out and the manifest says which
sources were used. The synthetic images and scikit-learn's photos are always there.
"""

from __future__ import annotations

import argparse
import csv
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ("photo_colour", "photo_gray", "medical", "ct", "mri_body", "synthetic")
NEAR = ("ct", "mri_body")  # the near misses: medical images a brain-MRI service is sent by mistake
_SKIMAGE_COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "colorwheel", "logo")
_SKIMAGE_GRAY = ("camera", "moon", "coins", "horse", "clock", "brick", "grass", "gravel", "page", "text",
                 "binary_blobs", "checkerboard")
_SKIMAGE_MEDICAL = ("shepp_logan_phantom", "retina", "microaneurysms", "cell", "immunohistochemistry")
_PYDICOM_MEDICAL = ("JPEG2000.dcm",)
_PYDICOM_CT = ("J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm", "CT_small.dcm")  # head, head, thoracic spine
_PYDICOM_MR = ("examples_overlay.dcm", "MR_small.dcm")  # abdomen, another body part
CT_WINDOWS = {"brain": (40, 80), "subdural": (75, 215), "soft": (40, 400), "bone": (600, 2800)}  # (centre, width) HU

Item = tuple[str, str, str, Image.Image]  # (name, category, source, image)


def _to_image(arr: np.ndarray) -> Image.Image:
    """Any 2-D or (h, w, 3|4) array -> an 8-bit PIL image, scaled to its own range."""
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        a = (a - a.min()) / (np.ptp(a) or 1.0) * 255
        a = a.astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 4:
        return Image.fromarray(a, "RGBA").convert("RGB")
    return Image.fromarray(a)


def _crops(img: Image.Image, rng: np.random.Generator, n: int) -> Iterator[Image.Image]:
    """``n`` seeded square crops of a half to three quarters of the shorter side."""
    w, h = img.size
    for _ in range(n):
        side = int(min(w, h) * rng.uniform(0.5, 0.75))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        yield img.crop((x, y, x + side, y + side))


def _photos(rng: np.random.Generator) -> Iterator[Item]:
    from sklearn.datasets import load_sample_image

    sources: list[tuple[str, Image.Image]] = [
        (f"sklearn:{n}", Image.fromarray(load_sample_image(n))) for n in ("china.jpg", "flower.jpg")]
    sources += [(f"skimage:{n}", img) for n, img in _skimage(_SKIMAGE_COLOUR)]
    for source, img in sources:
        stem = source.split(":")[1].split(".")[0]
        for i, crop in enumerate([img, *_crops(img, rng, 3)]):
            yield f"{stem}_{i}", "photo_colour", source, crop.convert("RGB")
            yield f"{stem}_{i}_gray", "photo_gray", source, crop.convert("L")
    for n, img in _skimage(_SKIMAGE_GRAY):
        yield n, "photo_gray", f"skimage:{n}", img.convert("L")


def _skimage(names: tuple[str, ...]) -> Iterator[tuple[str, Image.Image]]:
    try:
        from skimage import data
    except ImportError:
        return
    for n in names:
        try:
            yield n, _to_image(getattr(data, n)())
        except Exception:  # noqa: BLE001  (a picture that needs a download, or a changed API: leave it out)
            continue


def _medical(rng: np.random.Generator) -> Iterator[Item]:
    for n, img in _skimage(_SKIMAGE_MEDICAL):
        for i, crop in enumerate([img, *_crops(img, rng, 2)]):
            yield f"{n}_{i}", "medical", f"skimage:{n}", crop
    for n, arr in _dicoms(_PYDICOM_MEDICAL):
        img = _to_image(arr).convert("L")
        stem = n.split(".")[0]
        for i, view in enumerate([img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                  img.rotate(90, expand=True)]):
            yield f"{stem}_{i}", "medical", f"pydicom:{n}", view


def _dicoms(names: tuple[str, ...], hounsfield: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """pydicom's bundled test files as 2-D arrays (Hounsfield units with ``hounsfield``); files this install
    cannot decode, or without pydicom, are left out."""
    try:
        import pydicom  # lazy: the scanners extra
        from pydicom.data import get_testdata_file
        from pydicom.pixels import apply_modality_lut
    except ImportError:
        return
    for n in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(get_testdata_file(n))
                arr = ds.pixel_array
                arr = apply_modality_lut(arr, ds) if hounsfield else arr
        except Exception:  # noqa: BLE001  (a file this pydicom cannot decode without a plug-in)
            continue
        yield n, np.asarray(arr, dtype=np.float64)


def _near(rng: np.random.Generator) -> Iterator[Item]:
    """CT in the windows a viewer exports, and MR of other body parts (the module docstring)."""
    for n, hu in _dicoms(_PYDICOM_CT, hounsfield=True):
        stem = n.split(".")[0]
        for window, (centre, width) in CT_WINDOWS.items():
            img = Image.fromarray((np.clip((hu - centre + width / 2) / width, 0, 1) * 255).astype(np.uint8))
            yield f"{stem}_{window}", "ct", f"pydicom:{n}", img
            yield f"{stem}_{window}_m", "ct", f"pydicom:{n}", img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for n, arr in _dicoms(_PYDICOM_MR):
        img = _to_image(arr).convert("L")
        views = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img.rotate(90, expand=True),
                 *_crops(img, rng, 2)]
        for i, view in enumerate(views):
            yield f"{n.split('.')[0]}_{i}", "mri_body", f"pydicom:{n}", view


def ct_like(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) uint8: a synthetic head CT in a brain window, the planted near miss of the gate's tests: a
    bright skull ring round a uniform gray brain on black, at a seeded size, shape and gray level."""
    yy, xx = (np.mgrid[0:size, 0:size] - (size - 1) / 2) / (size / 2)
    a, b = rng.uniform(0.7, 0.9), rng.uniform(0.8, 0.95)  # the head's half-axes (of half the image)
    r = np.hypot(xx / a, yy / b)
    img = np.where(r < 1.0, 255.0, 0.0)  # skull
    img = np.where(r < 1.0 - rng.uniform(0.06, 0.12), rng.uniform(90, 130), img)  # brain
    img = img + (r < 1.0) * rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def ct_head(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) uint8: a richer synthetic head CT than ``ct_like``, one of the outlier-exposure head's
    negatives (gate_head.py): skull of varying thickness, faint scalp, gray and white matter a few levels apart,
    dark ventricles, sometimes the scanner table, in a brain, subdural, soft-tissue or bone window."""
    yy, xx = (np.mgrid[0:size, 0:size] - (size - 1) / 2) / (size / 2)
    yy = yy + rng.uniform(-0.08, 0.08)
    xx = xx + rng.uniform(-0.08, 0.08)
    a, b = rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.95)
    r = np.hypot(xx / a, yy / b)
    skull = rng.uniform(0.05, 0.15)
    hu = np.where(r < 1.06, 30.0, -1000.0)  # scalp
    hu = np.where(r < 1.0, 1200.0, hu)  # bone
    brain = r < 1.0 - skull
    hu = np.where(brain, 38.0 + 6.0 * (r < 0.6), hu)  # white inside gray: a few HU apart
    vent = np.hypot((np.abs(xx) - rng.uniform(0.05, 0.15)) / 0.07, (yy + rng.uniform(-0.1, 0.1)) / 0.25) < 1
    hu = np.where(brain & vent, 8.0, hu)
    if rng.random() < 0.5:  # the table under the head
        hu = np.where((yy > 0.95) & (yy < 1.0), 300.0, hu)
    hu = hu + rng.normal(0, rng.uniform(2, 8), hu.shape)
    centre, width = list(CT_WINDOWS.values())[int(rng.integers(len(CT_WINDOWS)))]
    return (np.clip((hu - centre + width / 2) / width, 0, 1) * 255).astype(np.uint8)


def body_like(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) uint8: a synthetic body image as MR or CT might show it: an axial trunk (a wide section with a
    bright fat rim, organs, a vertebra, sometimes the arms beside it), a limb (a round section round a marrow-filled
    bone) or a sagittal spine (vertebral bodies and discs along the cord), softened, shaded and with a noise floor:
    the outlier-exposure head's stand-in for spine, knee, shoulder and abdominal images (gate_head.py)."""
    from scipy import ndimage  # lazy: only the head's fitting draws these

    yy, xx = (np.mgrid[0:size, 0:size] - (size - 1) / 2) / (size / 2)
    img = np.zeros((size, size))
    kind = rng.random()
    if kind < 0.45:  # axial trunk
        a, b = rng.uniform(0.65, 0.9), rng.uniform(0.45, 0.7)
        r = np.hypot(xx / a, yy / b)
        img[r < 1] = rng.uniform(150, 255)  # fat
        img[r < 1 - rng.uniform(0.05, 0.15)] = rng.uniform(60, 130)  # muscle and organs
        for _ in range(int(rng.integers(2, 7))):
            cx, cy, rad = rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.2), rng.uniform(0.08, 0.3)
            img[np.hypot((xx - cx) / rng.uniform(0.6, 1.4), yy - cy) < rad] = rng.uniform(30, 220)
        img[np.hypot(xx, yy - 0.6 * b) < rng.uniform(0.08, 0.13)] = rng.uniform(180, 255)  # vertebra
        if rng.random() < 0.5:  # the arms beside the trunk
            for side in (-1, 1):
                img[np.hypot((xx - side * (a + 0.08)) / 0.08, yy / 0.15) < 1] = rng.uniform(80, 200)
    elif kind < 0.75:  # limb
        rad = rng.uniform(0.5, 0.9)
        r = np.hypot(xx, yy) / rad
        img[r < 1] = rng.uniform(60, 140)
        img[(r > 0.85) & (r < 1)] = rng.uniform(150, 255)
        bone = np.hypot(xx - rng.uniform(-0.2, 0.2), yy - rng.uniform(-0.2, 0.2)) / (rad * rng.uniform(0.2, 0.45))
        img[bone < 1] = rng.uniform(0, 60)  # cortex
        img[bone < 0.75] = rng.uniform(150, 255)  # marrow
    else:  # sagittal spine: a column of vertebral bodies and discs, the cord behind, soft tissue around
        x0, w = rng.uniform(-0.3, 0.1), rng.uniform(0.25, 0.4)
        img[np.abs(xx - x0 - 0.1) < 0.8] = rng.uniform(50, 120)  # soft tissue
        body, disc = rng.uniform(120, 220), rng.uniform(30, 200)
        pitch = rng.uniform(0.25, 0.4)
        phase = np.mod(yy / pitch + rng.random(), 1.0)
        img[(xx > x0) & (xx < x0 + w)] = np.where(phase[(xx > x0) & (xx < x0 + w)] < 0.75, body, disc)
        img[(xx > x0 + w + 0.04) & (xx < x0 + w + 0.14)] = rng.uniform(20, 250)  # cord and its fluid
    img = ndimage.gaussian_filter(img, sigma=size * rng.uniform(0.002, 0.012))  # no edge is a step in a scan
    img = img * np.exp(0.3 * rng.uniform(-1, 1) * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)))  # shading
    noise = rng.uniform(2, 12)
    img = np.hypot(img + rng.normal(0, noise, img.shape), rng.normal(0, noise, img.shape))  # a magnitude image
    return np.clip(img, 0, 255).astype(np.uint8)


def negatives(size: int, n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` package-built images that are not brain MRI, for the outlier-exposure head (gate_head.py): drawn
    heads in CT windows (``ct_like``, ``ct_head``), body and limb cross-sections (``body_like``), noise,
    gradients, checkerboards, text pages and shapes. Synthetic only: no photograph, no real CT or MR, so every
    real category of ``build`` stays unseen and can judge the head."""
    rng = np.random.default_rng(seed)
    near = [lambda: _to_image(ct_like(size, rng)), lambda: _to_image(ct_head(size, rng)),
            lambda: _to_image(body_like(size, rng))]
    far = [img for name, _, _, img in _synthetic(rng, size) if not name.startswith("ct_like")]
    out = [near[i % len(near)]() for i in range(max(0, n - len(far)))]
    for img in out[::2]:  # mirrored and turned views, as a viewer exports them
        img.paste(img.transpose(Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.FLIP_TOP_BOTTOM))
    return out + far[:n]


def _synthetic(rng: np.random.Generator, size: int) -> Iterator[Item]:
    s = size
    for i in range(4):
        yield f"noise_uniform_gray_{i}", "synthetic", "numpy", _to_image(rng.integers(0, 256, (s, s), np.uint8))
        yield f"noise_uniform_rgb_{i}", "synthetic", "numpy", _to_image(rng.integers(0, 256, (s, s, 3), np.uint8))
        g = np.clip(rng.normal(rng.uniform(40, 200), rng.uniform(10, 60), (s, s)), 0, 255).astype(np.uint8)
        yield f"noise_gaussian_{i}", "synthetic", "numpy", _to_image(g)
        sp = np.where(rng.random((s, s)) < 0.5, 0, 255).astype(np.uint8)
        yield f"noise_salt_pepper_{i}", "synthetic", "numpy", _to_image(sp)
    for level in (0, 64, 128, 200, 255):
        yield f"blank_{level}", "synthetic", "numpy", Image.new("L", (s, s), level)
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1)
    yield "gradient_horizontal", "synthetic", "numpy", _to_image(xx)
    yield "gradient_vertical", "synthetic", "numpy", _to_image(yy)
    yield "gradient_radial", "synthetic", "numpy", _to_image(1 - np.hypot(xx - 0.5, yy - 0.5))
    yield "gradient_colour", "synthetic", "numpy", _to_image(np.stack([xx, yy, 1 - xx], axis=-1))
    for cells in (2, 4, 8, 16):
        board = ((np.floor(xx * cells * 0.999) + np.floor(yy * cells * 0.999)) % 2).astype(np.uint8) * 255
        yield f"checkerboard_{cells}", "synthetic", "numpy", _to_image(board)
    for i in range(4):
        yield f"ct_like_{i}", "synthetic", "numpy", _to_image(ct_like(s, rng))
    for i in range(4):
        yield f"text_page_{i}", "synthetic", "PIL", _text_page(rng, s)
        yield f"shapes_{i}", "synthetic", "PIL", _shapes(rng, s, colour=i % 2 == 1)


def _text_page(rng: np.random.Generator, size: int) -> Image.Image:
    img = Image.new("L", (size, size), 245)
    draw = ImageDraw.Draw(img)
    words = "the patient was seen in clinic today report findings normal study impression follow up".split()
    for row in range(4, size - 10, 12):
        line = " ".join(rng.choice(words, size=8))
        draw.text((6, row), line, fill=int(rng.integers(0, 60)))
    return img


def _shapes(rng: np.random.Generator, size: int, colour: bool) -> Image.Image:
    img = Image.new("RGB" if colour else "L", (size, size), 0 if rng.random() < 0.5 else 255)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, size, 2)
        x1, y1 = x0 + rng.integers(10, size // 2), y0 + rng.integers(10, size // 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3)) if colour else int(rng.integers(0, 256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=fill)
    return img


def build(out_dir: str | Path, size: int = 256, seed: int = 0,
          only: tuple[str, ...] = CATEGORIES) -> list[dict[str, str]]:
    """Write the set as PNGs at ``size`` px (longer side; photographs keep their aspect) and manifest.csv."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    makers: list[Callable[[], Iterator[Item]]] = [lambda: _photos(rng), lambda: _medical(rng),
                                                  lambda: _near(rng), lambda: _synthetic(rng, size)]
    rows = []
    for make in makers:
        for name, category, source, img in make():
            if category not in only:
                continue
            img = img.copy()
            img.thumbnail((size, size), Image.BILINEAR)
            path = out_dir / category / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
            rows.append({"file": str(path.relative_to(out_dir)), "category": category, "source": source})
    with (out_dir / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["file", "category", "source"])
        w.writeheader()
        w.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a development set of images that are not brain MRI.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=256, help="longer side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = build(args.out_dir, args.size, args.seed)
    counts = {c: sum(r["category"] == c for r in rows) for c in CATEGORIES}
    print(f"{len(rows)} images in {args.out_dir}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))


if __name__ == "__main__":
    main()
