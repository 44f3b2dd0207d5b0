"""Class-name canonicalisation, every image kind we promise to read, skipping broken files, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor.data import ImageSpec, canonical_class, list_images, load_images, map_images, read_image
from braintumor.dedup import exact_groups
from braintumor.errors import DataError
from braintumor.pipeline import class_weights, make_dataset, oversample
from braintumor.progress import Reporter, Silent
from braintumor.splits import split_train_val
from tests.conftest import make_dataset as make_folder


@pytest.mark.parametrize("folder, expected", [
    ("glioma", "glioma"), ("glioma_tumor", "glioma"), ("Glioma Tumour", "glioma"), ("Meningioma", "meningioma"),
    ("meningioma_tumor", "meningioma"), ("no_tumor", "notumor"), ("no tumor", "notumor"), ("notumor", "notumor"),
    ("No-Tumour", "notumor"), ("pituitary_tumor", "pituitary"), ("PITUITARY", "pituitary"), ("yes", None),
    ("cat", None),
])
def test_canonical_class(folder, expected):
    assert canonical_class(folder) == expected


def test_wild_spellings_map_to_fixed_order(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=2, folders=("pituitary_tumor", "no_tumor", "Meningioma",
                                                              "glioma_tumor"))
    listing = list_images(root)
    assert listing.class_names == ("glioma", "meningioma", "notumor", "pituitary")
    # the folder listed first (pituitary_tumor) still gets label 3
    for path, label in zip(listing.paths, listing.labels):
        assert canonical_class(Path(path).parent.name) == listing.class_names[label]


def test_unknown_folder_says_to_list_classes(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=1, folders=("glioma", "cat"))
    with pytest.raises(DataError, match=r"'cat'.*data.classes"):
        list_images(root)


def test_missing_class_is_named(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=1, folders=("glioma", "notumor"))
    with pytest.raises(DataError, match=r"no folder for class\(es\) meningioma, pituitary"):
        list_images(root)
    assert list_images(root, require_all=False).class_names[2] == "notumor"


def test_configured_other_classes(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=1, folders=("Dog", "cat"))
    listing = list_images(root, classes=("cat", "dog"))
    assert listing.class_names == ("cat", "dog")
    assert sorted(listing.labels.tolist()) == [0, 1]


def test_two_folders_for_one_class_is_an_error(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=1, folders=("no_tumor", "notumor"))
    with pytest.raises(DataError, match="keep one"):
        list_images(root)


def _odd_images(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    gray = (rng.random((50, 70)) * 255).astype(np.uint8)
    rgb = np.stack([gray] * 3, axis=-1)
    files = {}

    def save(name, img, **kw):
        files[name] = d / name
        img.save(files[name], **kw)

    save("gray.png", Image.fromarray(gray))
    save("rgb.jpg", Image.fromarray(rgb))
    rgba = Image.fromarray(np.dstack([rgb, np.full_like(gray, 128)]), "RGBA")
    save("rgba.png", rgba)
    save("palette.png", Image.fromarray(rgb).convert("P"))
    save("gray16.png", Image.fromarray(gray.astype(np.uint16) * 257))
    save("image.bmp", Image.fromarray(rgb))
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
    save("la.png", Image.fromarray(gray).convert("LA"))
    return files


@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_kind_loads(tmp_path: Path, channels: int):
    files = _odd_images(tmp_path)
    for name, path in files.items():
        arr = read_image(path, ImageSpec(32, channels))
        assert arr.shape == (32, 32, channels) and arr.dtype == np.uint8, name
        assert arr.max() > 0, f"{name} decoded to black"
    # 16-bit is scaled to 8-bit, not clipped to white
    assert 0 < read_image(files["gray16.png"], ImageSpec(32, 1)).mean() < 250


def test_broken_files_are_skipped_and_listed(tmp_path: Path):
    root = make_folder(tmp_path / "d", per_class=3)
    (root / "glioma" / "empty.png").write_bytes(b"")
    (root / "notumor" / "text.jpg").write_bytes(b"this is not a jpeg")
    good = root / "meningioma" / "img_000.png"
    (root / "meningioma" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "glioma" / "notes.txt").write_text("ignored: not an image extension")
    listing = list_images(root)
    loaded = load_images(listing, ImageSpec(32))
    assert len(loaded.paths) == 12
    assert sorted(Path(p).name for p, _ in loaded.skipped) == ["empty.png", "text.jpg", "truncated.png"]
    assert all("not a readable image" in why for _, why in loaded.skipped)


def test_nothing_readable_is_a_clear_error(tmp_path: Path):
    d = tmp_path / "d" / "glioma"
    d.mkdir(parents=True)
    (d / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 image files"):
        load_images(list_images(tmp_path / "d", require_all=False), ImageSpec(32))


def test_missing_folder_says_what_to_pass(tmp_path: Path):
    with pytest.raises(DataError, match="--data DIR"):
        list_images(tmp_path / "nope")


def test_split_is_stratified_and_keeps_copies_together():
    labels = np.repeat(np.arange(4), 20)
    digests = [f"img{i}" for i in range(80)]
    for i in range(0, 80, 10):  # plant copies: image i+1 duplicates image i
        digests[i + 1] = digests[i]
    groups = exact_groups(digests)
    tr, va = split_train_val(labels, groups, 0.2, seed=1)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == 80
    assert set(groups[tr]).isdisjoint(groups[va])
    assert np.all(np.bincount(labels[va], minlength=4) >= 3)  # every class is in validation
    tr2, va2 = split_train_val(labels, groups, 0.2, seed=1)
    assert np.array_equal(va, va2)  # seeded



def _two_collections(seed: int = 0):
    """Two collections with different class mixes (b has no class 2), copies in pairs, the order shuffled."""
    counts = {"a": [300, 60, 200, 40], "b": [40, 200, 0, 300]}
    labels = np.concatenate([np.repeat(np.arange(4), c) for c in counts.values()])
    sources = np.concatenate([[s] * sum(c) for s, c in counts.items()])
    order = np.random.default_rng(seed).permutation(len(labels))
    return labels[order], np.arange(len(labels)) // 2, sources[order].tolist()  # groups: pairs of neighbours


def test_split_holds_out_every_collection_x_class_in_proportion():
    labels, groups, sources = _two_collections()
    for seed in (0, 1, 2):
        tr, va = split_train_val(labels, groups, 0.2, seed, sources=sources)
        assert set(groups[tr]).isdisjoint(groups[va])
        on_val = np.isin(np.arange(len(labels)), va)
        src = np.asarray(sources)
        for s in ("a", "b"):
            for c in range(4):
                cell = (src == s) & (labels == c)
                if cell.any():
                    assert abs(on_val[cell].mean() - 0.2) <= 0.04, (seed, s, c, on_val[cell].mean())


def test_one_collection_splits_and_folds_exactly_as_before():
    from braintumor.splits import assign_folds

    labels, groups, _ = _two_collections(1)
    one = ["only"] * len(labels)
    for seed in (0, 7):
        old, new = split_train_val(labels, groups, 0.2, seed), split_train_val(labels, groups, 0.2, seed, sources=one)
        assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
        assert np.array_equal(assign_folds(labels, groups, 5, seed), assign_folds(labels, groups, 5, seed, one))


def test_collection_cells_too_small_to_stratify_fall_back_to_the_class():
    labels = np.tile(np.repeat(np.arange(2), 3), 2)  # 2 collections x 2 classes x 3 images: no cell reaches 5
    tr, va = split_train_val(labels, np.arange(12), 0.2, 0, ("x", "y"), ["a"] * 6 + ["b"] * 6)
    assert len(va) and len(tr) + len(va) == 12

def test_class_weights_and_oversampling():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 4)
    w = class_weights(labels, 4)
    assert w[0] == pytest.approx(12 / (3 * 6)) and w[1] == pytest.approx(12 / (3 * 2)) and w[3] == 1.0
    idx = oversample(np.arange(12), labels, seed=0)
    assert np.bincount(labels[idx]).tolist() == [6, 6, 6]


def test_pipeline_batches_float_pixels_and_one_hot():
    from braintumor.config import AugmentConfig

    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10) % 4
    plain = next(iter(make_dataset(images, labels, 4, 4)))
    assert plain[0].shape == (4, 32, 32, 3) and plain[0].dtype.name == "float32"
    assert np.array_equal(plain[0].numpy(), images[:4].astype(np.float32))  # no scaling outside the model
    assert np.array_equal(plain[1].numpy(), np.eye(4)[labels[:4]])
    aug = AugmentConfig(flip_vertical=True, rotation=0.1, zoom=0.2, brightness=0.2, contrast=0.2, erasing=1.0)
    x, _ = next(iter(make_dataset(images, labels, 4, 10, training=True, augment=aug, seed=0)))
    assert x.shape == (10, 32, 32, 3) and float(x.numpy().min()) >= 0 and float(x.numpy().max()) <= 255


def test_pipeline_holds_no_second_copy_and_visits_every_image_once_per_epoch():
    """Shuffling indices (not images) still yields each image exactly once per epoch."""
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 1), np.uint8)
    ds = make_dataset(images, np.arange(10) % 4, 4, 3, training=True, seed=0)
    for _ in range(2):
        seen = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in ds])
        assert sorted(seen.tolist()) == list(range(10))


def test_rotation_keeps_content_and_zoom_scales_it():
    from braintumor.pipeline import _random_affine

    x = np.zeros((8, 40, 40, 1), np.float32)
    x[:, 14:26, 14:26] = 255.0  # a centred 12x12 square
    area = (x > 128).sum()
    rotated = _random_affine(x, 0.125, 0.0).numpy()
    assert abs((rotated > 128).sum() - area) / area < 0.25
    assert rotated[:, 20, 20].min() == 255.0  # the centre stays put
    assert np.allclose(_random_affine(x, 0.0, 0.0).numpy(), x)  # no rotation, no zoom: identity


@pytest.mark.parametrize("zoom", [0.1, 0.25, 0.5])
def test_zoom_magnifies_by_one_plus_or_minus_zoom(zoom):
    """A centred square's area (its summed intensity: exact under bilinear resampling) scales by s^2 with s drawn
    from [1 - zoom, 1 + zoom]: within those bounds, and over 64 draws reaching towards both ends."""
    import tensorflow as tf

    from braintumor.pipeline import _random_affine

    tf.random.set_seed(0)
    x = np.zeros((64, 64, 64, 1), np.float32)
    x[:, 22:42, 22:42] = 255.0  # 20x20, centred: still inside the image at 1.5x
    ratio = _random_affine(x, 0.0, zoom).numpy().sum(axis=(1, 2, 3)) / x[0].sum()
    assert ratio.min() > (1 - zoom) ** 2 * 0.95 and ratio.max() < (1 + zoom) ** 2 * 1.05, (ratio.min(), ratio.max())
    assert ratio.min() < (1 - zoom / 2) ** 2 and ratio.max() > (1 + zoom / 2) ** 2, (ratio.min(), ratio.max())


def test_mixup_blends_images_and_labels_within_a_batch():
    from braintumor.config import AugmentConfig
    from braintumor.pipeline import make_dataset as batches

    n = 32
    x = np.zeros((n, 8, 8, 1), dtype=np.uint8)
    x[: n // 2] = 200  # class 0 bright, class 1 dark
    y = np.array([0] * (n // 2) + [1] * (n // 2))
    off = AugmentConfig(flip_horizontal=False, rotation=0, zoom=0, brightness=0, contrast=0)
    on = AugmentConfig(flip_horizontal=False, rotation=0, zoom=0, brightness=0, contrast=0, mixup=0.4)
    xb, yb = next(iter(batches(x, y, 2, n, training=True, augment=off, seed=3)))
    assert set(np.unique(yb.numpy())) == {0.0, 1.0}
    xb, yb = next(iter(batches(x, y, 2, n, training=True, augment=on, seed=3)))
    xb, yb = xb.numpy(), yb.numpy()
    assert np.allclose(yb.sum(axis=1), 1.0, atol=1e-5)
    soft = (yb[:, 0] > 0.01) & (yb[:, 0] < 0.99)
    assert soft.any()  # some labels are blends
    # each image is the same blend as its label: brightness = 200 * weight of class 0
    assert np.allclose(xb.mean(axis=(1, 2, 3)), 200 * yb[:, 0], atol=0.5)


def test_split_train_val_names_an_empty_class_and_the_minimum():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    with pytest.raises(DataError, match=r"class 'c' has no readable images.*at least 5 images"):
        split_train_val(labels, np.arange(12), 0.2, seed=0, class_names=("a", "b", "c"))
    with pytest.raises(DataError, match=r"class 'a' has 2 and no class has 4"):
        split_train_val(np.array([0, 0, 1, 1, 1]), np.arange(5), 0.25, seed=0, class_names=("a", "b"))


def test_map_images_reports_progress_through_the_reporter_protocol():
    """Every 64 images and the rest at the end; a refused file still counts, and gives its reason."""

    class Recorder:
        def __init__(self):
            self.advances = []

        def start(self, total, label):
            raise AssertionError("map_images reports advances; the caller starts the stage")

        def advance(self, n=1):
            self.advances.append(n)

        def log(self, message):
            pass

    def read(path):
        if path == "p7":
            raise DataError("cannot read p7")
        return path.upper()

    rec = Recorder()
    assert isinstance(rec, Reporter) and isinstance(Silent(), Reporter)
    out = map_images([f"p{i}" for i in range(130)], read, workers=2, reporter=rec)
    assert rec.advances == [64, 64, 2] and out[7] == "cannot read p7" and out[129] == "P129"


def test_the_cli_rich_reporter_opens_a_bar_per_stage():
    from braintumor.cli.progress import RichReporter, make_progress

    progress = make_progress()
    rep = RichReporter(progress, "explaining")
    assert isinstance(rep, Reporter)
    rep.advance(2)  # before any start: a bar of unknown length under the default label
    rep.start(10, "reading train")
    rep.advance(4)
    rep.advance()
    tasks = [(t.description, t.total, t.completed) for t in progress.tasks]
    assert tasks == [("explaining", None, 2), ("reading train", 10, 5)]
