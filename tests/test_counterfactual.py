"""Counterfactual edits (issue 20, data.augment.counterfactual_remove / counterfactual_paste / counterfactual_lesion):
a removed tumour leaves tissue like its surroundings and the label notumor; a pasted one brings the donor's region,
class and box; a synthetic lesion lies inside the brain, differs from the tissue around it and takes glioma and its
region as box;
settings that cannot be honoured are refused before any work; a training with the edits and no guidance runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import FAST
from test_guidance import boxed_dataset
from typer.testing import CliRunner

from braintumor import counterfactual
from braintumor.cli import app
from braintumor.config import AugmentConfig, load_config
from braintumor.data import ImageSpec, list_images, load_images
from braintumor.errors import ConfigError
from braintumor.guidance import box_masks, check, clean_class, lesion_class
from braintumor.pipeline import augmenter, make_dataset

runner = CliRunner()
S, CLEAN = 64, 2  # side; notumor's index among glioma, meningioma, notumor, pituitary


def heads(n: int, seed: int = 0) -> np.ndarray:
    """(n, S, S, 1) float32: an elliptic head of textured tissue (~80) on a black background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    head = ((yy - 32) ** 2 / 28 ** 2 + (xx - 32) ** 2 / 24 ** 2) < 1
    return np.stack([head * (80 + rng.normal(0, 5, (S, S))) for _ in range(n)]).astype(np.float32)[..., None]


def batch():
    """Six heads: 0-2 tumours (a bright 10 px square at rows/cols 20-29, boxed by rows/cols 18-31), 3-5 clean."""
    x = heads(6)
    m = np.ones_like(x)
    for i in range(3):
        x[i, 20:30, 20:30] = 220
        m[i] = 0
        m[i, 18:32, 18:32] = 1
    y = np.eye(4, dtype=np.float32)[[0, 1, 0, 2, 2, 2]]
    return x, y, m


def test_remove_fills_the_box_with_tissue_and_labels_it_clean():
    x, y, m = batch()
    ex, ey, em = (t.numpy() for t in counterfactual.apply(tf.constant(x), tf.constant(y), tf.constant(m),
                                                          1.0, 0.0, CLEAN))
    assert ey[:3].argmax(1).tolist() == [CLEAN] * 3 and (em[:3] == 1).all()  # no box left to guide to
    for i in range(3):
        assert abs(ex[i, 20:30, 20:30].mean() - 80) < 10  # the 220 square is gone: tissue-like level
        assert ex[i, 20:30, 20:30].std() > 1.0  # with texture, not a flat patch
        far = np.ones((S, S), bool)
        far[14:36, 14:36] = False  # beyond the box and its feathered edge nothing changes
        assert np.allclose(ex[i, ..., 0][far], x[i, ..., 0][far])
    np.testing.assert_array_equal(ex[3:], x[3:])  # clean images untouched (no paste asked)
    np.testing.assert_array_equal(ey[3:], y[3:])


def test_paste_brings_the_donor_region_its_class_and_its_box():
    x, y, m = batch()
    tf.random.set_seed(1)
    ex, ey, em = (t.numpy() for t in counterfactual.apply(tf.constant(x), tf.constant(y), tf.constant(m),
                                                          0.0, 1.0, CLEAN))
    for i in range(3, 6):
        assert ey[i].argmax() in (0, 1)  # a tumour class of one of the donors
        assert ex[i, 20:30, 20:30].mean() > 180  # the bright square arrived (scaled to tissue ~80: ~x1)
        assert em[i].min() == 0 and em[i, 18:32, 18:32].min() == 1  # with its box, for guidance
    np.testing.assert_array_equal(ex[:3], x[:3])  # tumour images untouched (no removal asked)


def test_a_synthetic_lesion_lies_in_the_brain_stands_out_and_is_labelled_glioma_with_its_region():
    x = heads(32, seed=3)
    tf.random.set_seed(2)
    ex, region, inside = (t.numpy() for t in counterfactual.lesion(tf.constant(x)))
    assert inside.mean() > 0.5  # most draws fit in a 48 x 56 px head
    yy, xx = np.mgrid[:S, :S]
    brain = ((yy - 32) ** 2 / 22 ** 2 + (xx - 32) ** 2 / 18 ** 2) < 1  # the head less a generous skull margin
    for i in np.flatnonzero(inside):
        r = region[i, ..., 0] > 0.5
        assert r.sum() >= 4 and not (r & ~brain).any()  # a region of its own, inside the brain
        # brighter or darker than the tissue (~80): at least 1.15x or at most 0.6x its level, less the soft edge
        assert abs(ex[i, ..., 0][r].mean() - x[i, ..., 0][r].mean()) > 10
        assert (ex[i, ..., 0][yy < 2] == 0).all()  # the background stays black
    levels = [ex[i, ..., 0][region[i, ..., 0] > 0.5].mean() for i in np.flatnonzero(inside)]
    assert min(levels) < 70 and max(levels) > 100  # both kinds drawn: hypo- and hyperintense
    x, y, m = batch()
    tf.random.set_seed(3)
    ex, ey, em = (t.numpy() for t in counterfactual.apply(tf.constant(x), tf.constant(y), tf.constant(m), 0.0,
                                                          0.0, CLEAN, lesion_share=1.0, lesion_class=0))
    changed = [i for i in range(3, 6) if not np.array_equal(ex[i], x[i])]
    assert changed  # the clean heads gained a lesion (where it fit) ...
    for i in changed:
        assert ey[i].argmax() == 0 and em[i].min() == 0 and 0 < em[i].mean() < 0.5  # glioma, boxed by its region
    for i in set(range(3, 6)) - set(changed):
        np.testing.assert_array_equal(ey[i], y[i])
    np.testing.assert_array_equal(ex[:3], x[:3])  # ... and the tumour images are left as they were
    assert lesion_class(("glioma_tumor", "no_tumor")) == 0 and lesion_class(("meningioma", "notumor")) is None
    with pytest.raises(ConfigError, match="glioma class"):
        check(load_config("customnet", sets=["data.augment.counterfactual_lesion=0.3", "data.boxes=x.csv",
                                             "data.classes=[meningioma,notumor]"]))


def test_nothing_changes_at_zero_or_without_a_donor():
    x, y, m = batch()
    for args, x_, y_, m_ in (((0.0, 0.0), x, y, m), ((1.0, 1.0), x[3:], y[3:], m[3:])):
        ex, ey, em = (t.numpy() for t in counterfactual.apply(tf.constant(x_), tf.constant(y_), tf.constant(m_),
                                                              *args, CLEAN))
        np.testing.assert_array_equal(ex, x_)
        np.testing.assert_array_equal(ey, y_)


def test_the_edits_refuse_what_they_cannot_honour():
    assert clean_class(("glioma_tumor", "no_tumor")) == 1 and clean_class(("glioma", "meningioma")) is None
    with pytest.raises(ConfigError, match="data.boxes"):
        check(load_config("customnet", sets=["data.augment.counterfactual_remove=0.3"]))
    with pytest.raises(ConfigError, match="no-tumour class"):
        check(load_config("customnet", sets=["data.augment.counterfactual_paste=0.3", "data.boxes=x.csv",
                                             "data.classes=[glioma,meningioma]"]))
    with pytest.raises(ConfigError, match="mixup"):
        check(load_config("customnet", sets=["data.augment.counterfactual_paste=0.3", "data.boxes=x.csv",
                                             "data.augment.mixup=0.2"]))
    with pytest.raises(ConfigError, match="counterfactual_remove"):
        load_config("customnet", sets=["data.augment.counterfactual_remove=1.5"])


def test_unguided_batches_are_pairs_and_the_edits_move_labels(tmp_path):
    data, boxes = boxed_dataset(tmp_path / "d", per_class=8)
    loaded = load_images(list_images(data), ImageSpec(32, 1))
    masks, _ = box_masks(boxes, loaded.paths, 32, 0.0)
    aug = AugmentConfig(flip_horizontal=False, rotation=0.0, zoom=0.0, brightness=0.0, contrast=0.0,
                        counterfactual_remove=1.0)
    ds = make_dataset(loaded.images, loaded.labels, 4, 32, training=True, augment=aug, seed=0, masks=masks,
                      guided=False, clean_class=CLEAN)
    (x, y), = list(ds)  # one batch of all 32, and no mask slot (Keras would read it as sample weights)
    assert (y.numpy().argmax(1) == CLEAN).all()  # every boxed tumour image lost its tumour


def test_a_training_with_the_edits_and_no_guidance_runs_and_says_so(tmp_path):
    data, boxes = boxed_dataset(tmp_path / "d", per_class=8)
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["train", "--arch", "customnet", "--data", str(data), *FAST, "--runs-dir", str(runs),
                            "--set", "model.filters=[8,16]", "--set", "eval.gate=false",
                            "--set", f"data.boxes={boxes}", "--set", "data.augment.counterfactual_remove=0.5",
                            "--set", "data.augment.counterfactual_paste=0.5"])
    assert r.exit_code == 0, r.output
    (run,) = (runs / "train").iterdir()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["guided_images"] == len(pd.read_csv(run / "split.csv").query("split == 'train'"))
    assert "outside_share" not in pd.read_csv(run / "history.csv")  # no guidance: a plain fit


def test_a_mask_folder_marks_every_image_of_its_stem(tmp_path):
    """data.boxes may be a folder of mask PNGs (LGG's masks/): an image takes the mask of its file stem, in every
    collection that has it (one scan's FLAIR and T1c slices), and mixes with a boxes CSV."""
    from PIL import Image

    data, boxes = boxed_dataset(tmp_path / "d", per_class=2)
    seq = tmp_path / "seq"
    for name in ("flair", "t1ce"):
        (seq / name / "glioma").mkdir(parents=True)
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(seq / name / "glioma" / "case_7.jpg")
    (tmp_path / "masks").mkdir()
    mask = np.zeros((64, 64), np.uint8)
    mask[8:24, 40:56] = 255  # rows 4-11, cols 20-27 at 32 px
    Image.fromarray(mask).save(tmp_path / "masks" / "case_7.png")
    paths = [str(seq / "flair/glioma/case_7.jpg"), str(seq / "t1ce/glioma/case_7.jpg"),
             str(data / "glioma/img_00.png")]
    masks, found = box_masks([str(tmp_path / "masks"), str(boxes)], paths, 32, 0.0)
    assert found == 3
    for m in masks[:2]:
        assert m[4:12, 20:28].all() and m.sum() == 64  # exactly the mask, resized
    assert 0 < masks[2].sum() < 32 * 32  # the CSV's box
    with pytest.raises(Exception, match="mask folder"):
        box_masks(str(tmp_path / "masks"), [str(data / "glioma/img_00.png")], 32, 0.0)


def test_rotation_and_zoom_do_not_turn_an_image_without_a_box_into_a_boxed_one():
    """The affine step fills the corners of an all-ones (no box) mask with zeros; the edits must still leave a
    tumour image without a box alone (a first version filled its whole head and called it notumor)."""
    x, y, m = batch()
    m[1] = 1.0  # tumour image 1 has no box
    aug = AugmentConfig(flip_horizontal=False, rotation=0.05, zoom=0.2, brightness=0.0, contrast=0.0,
                        counterfactual_remove=1.0, counterfactual_paste=0.0)
    tf.random.set_seed(3)
    ex, em, ey = (t.numpy() for t in augmenter(aug, 0, CLEAN)(tf.constant(x), tf.constant(m), tf.constant(y)))
    assert ey[1].argmax() == 1  # still meningioma
    assert ex[1, 20:30, 20:30].mean() > 150  # its bright square survived (moved a little by the affine step)
    assert ey[0].argmax() == CLEAN and ey[2].argmax() == CLEAN  # the boxed ones were edited
