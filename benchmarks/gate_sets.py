"""The gate's development sets of brain MRI that must be accepted, written as PNG folders (benchmarks/ood.md).

    python benchmarks/gate_sets.py OUT_DIR --run RUN [--data-root /work/shared/data]

Each set is a folder ``OUT_DIR/<set>/`` of 8-bit PNGs, read back through the toolkit's own decode path:
- ``lgg_flair``, ``lgg_t1ce``: 400 seeded slices each of the TCGA-LGG development part (another collection, other
  scanners and sequences; FLAIR was never a training sequence);
- ``kaggle_skullstripped``: the run's Kaggle *validation* images with scalp and skull removed (Otsu head mask,
  holes filled, eroded by 9% of the head's width), as skull-stripped research data looks;
- ``kaggle_gamma05``, ``kaggle_gamma2``, ``kaggle_equalised``: the same images contrast-remapped (gamma 0.5 and 2,
  histogram equalisation), as another scanner's or viewer's contrast;
- ``mni_t1``: the MNI152 2009 T1 template of nilearn (skull-stripped; 30 axial, 10 coronal, 10 sagittal slices);
- ``epi``: nibabel's example 4-D EPI (a functional brain series, 128 x 96, 16 middle slices): low-resolution
  brain MRI, the hardest case kept here.
The training sources' own validation images (``kaggle``, ``figshare``) come from the run's split.csv.
Needs scikit-image and nilearn (``pip install scikit-image nilearn``: data they ship, nothing downloaded).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

ACCEPTED = ("lgg_flair", "lgg_t1ce", "kaggle_skullstripped", "kaggle_gamma05", "kaggle_gamma2",
            "kaggle_equalised", "mni_t1", "epi")


def _save(out: Path, name: str, arr: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(out / f"{name}.png")


def _unit8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return (np.clip((a - lo) / ((hi - lo) or 1.0), 0, 1) * 255).astype(np.uint8)


def skull_strip(gray: np.ndarray) -> np.ndarray:
    """A rough skull strip of one uint8 slice: the head (Otsu threshold, largest component, holes filled) eroded
    by 9% of its width; outside set to 0."""
    from skimage.filters import threshold_otsu

    head = ndimage.gaussian_filter(gray.astype(float), 2) > threshold_otsu(gray)
    lab, n = ndimage.label(head)
    if n == 0:
        return gray
    head = ndimage.binary_fill_holes(lab == 1 + np.argmax(ndimage.sum(head, lab, range(1, n + 1))))
    width = np.ptp(np.flatnonzero(head.any(axis=0))) + 1
    brain = ndimage.binary_erosion(head, iterations=max(1, int(0.09 * width)))
    return np.where(brain, gray, 0).astype(np.uint8)


def kaggle_variants(run_dir: Path, out: Path, n: int, rng: np.random.Generator) -> None:
    from skimage.exposure import equalize_hist

    split = pd.read_csv(run_dir / "split.csv")
    val = split[(split["split"] == "val") & (split.get("source", "kaggle") == "kaggle")]["path"].tolist()
    for path in rng.choice(val, size=min(n, len(val)), replace=False):
        gray = np.asarray(Image.open(path).convert("L"))
        stem = Path(path).parent.name + "_" + Path(path).stem
        _save(out / "kaggle_skullstripped", stem, skull_strip(gray))
        g = gray / 255.0
        _save(out / "kaggle_gamma05", stem, g ** 0.5 * 255)
        _save(out / "kaggle_gamma2", stem, g ** 2 * 255)
        _save(out / "kaggle_equalised", stem, equalize_hist(gray) * 255)


def lgg(data_root: Path, out: Path, n: int, rng: np.random.Generator) -> None:
    for seq in ("flair", "t1ce"):
        files = sorted((data_root / "tcga-lgg-dev" / seq).rglob("*.jpg"))
        for f in rng.choice(files, size=min(n, len(files)), replace=False):
            _save(out / f"lgg_{seq}", f.stem, np.asarray(Image.open(f).convert("L")))


def templates(out: Path) -> None:
    import nibabel as nib
    from nilearn.datasets import load_mni152_template

    vol = np.asarray(nib.as_closest_canonical(load_mni152_template(resolution=1)).get_fdata())
    vol = _unit8(vol)
    inside = np.flatnonzero(vol.max(axis=(0, 1)) > 0)  # axial slices with brain
    for z in np.linspace(inside[0] + 0.2 * len(inside), inside[-1] - 0.1 * len(inside), 30).astype(int):
        _save(out / "mni_t1", f"axial_{z}", np.rot90(vol[:, :, z]))  # anterior up, as the training slices
    for y in np.linspace(0.3, 0.7, 10) * vol.shape[1]:
        _save(out / "mni_t1", f"coronal_{int(y)}", np.rot90(vol[:, int(y), :]))
    for x in np.linspace(0.3, 0.45, 10) * vol.shape[0]:
        _save(out / "mni_t1", f"sagittal_{int(x)}", np.rot90(vol[int(x), :, :]))
    epi = nib.as_closest_canonical(nib.load(Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"))
    e = np.asarray(epi.dataobj[..., 0], dtype=np.float64)
    for z in range(4, 20):
        _save(out / "epi", f"slice_{z}", np.rot90(_unit8(e[:, :, z])))


def build(out: Path, run_dir: Path, data_root: Path, n: int = 400, seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    lgg(data_root, out, n, rng)
    kaggle_variants(run_dir, out, n, rng)
    templates(out)
    return {s: len(list((out / s).glob("*.png"))) for s in ACCEPTED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="the train run whose Kaggle validation images to use")
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("-n", type=int, default=400, help="images per set drawn from a collection")
    args = parser.parse_args()
    print(build(args.out, args.run, args.data_root, args.n))


if __name__ == "__main__":
    main()
