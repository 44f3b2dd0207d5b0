"""Localisation scores against known boxes, and the three annotation forms with their malformed rows."""

import numpy as np
import pytest
from PIL import Image

from braintumor.explain.localisation import (
    BoxFraction,
    Region,
    centre_prior,
    energy_ratio,
    pointing,
    read_boxes_csv,
    read_masks,
    read_yolo_folder,
    score,
    summarise,
)

BOX = BoxFraction(0.25, 0.75, 0.2, 0.1)  # lower left: not under the image centre


def test_box_mask_covers_the_box_and_grows_by_a_fraction_of_the_side():
    m = BOX.mask(100, 100)
    assert m.sum() == 20 * 10
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (70, 79, 15, 34)
    grown = BOX.mask(100, 100, grow=0.15)  # 15 px on every side
    assert grown.sum() == (20 + 30) * (10 + 30)


def test_a_perfect_map_scores_full_pointing_and_one_over_area_energy():
    region = Region(boxes=[BOX])
    s = score(BOX.mask(100, 100).astype(np.float32), region)
    assert s.pointing and s.pointing_tol
    assert s.energy == pytest.approx(1 / 0.02)


def test_a_uniform_map_scores_chance_energy_and_no_peak():
    region = Region(boxes=[BOX])
    s = score(np.ones((100, 100), np.float32), region)
    assert s.energy == pytest.approx(1.0)
    assert not s.pointing  # a flat map has no peak, so it cannot point anywhere
    zero = score(np.zeros((100, 100), np.float32), region)
    assert not zero.pointing and zero.energy == pytest.approx(1.0)


def test_a_map_elsewhere_scores_below_chance_and_misses():
    heat = np.zeros((100, 100), np.float32)
    heat[10:20, 80:90] = 1.0  # upper right
    s = score(heat, Region(boxes=[BOX]))
    assert not s.pointing and not s.pointing_tol and s.energy == 0.0


def test_tolerance_catches_a_peak_just_outside_the_box():
    heat = np.zeros((100, 100), np.float32)
    heat[75, 40] = 1.0  # 6 px right of the box's right edge (column 34)
    s = score(heat, Region(boxes=[BOX]))
    assert not s.pointing and s.pointing_tol


def test_centre_prior_is_the_documented_gaussian():
    prior = centre_prior(101, 101)
    assert np.unravel_index(prior.argmax(), prior.shape) == (50, 50)
    # sigma = a quarter of the side: one sigma from the centre the prior is exp(-1/2)
    assert prior[50, 50 + 25] == pytest.approx(np.exp(-0.5), rel=0.02)
    centre_box = Region(boxes=[BoxFraction(0.5, 0.5, 0.2, 0.2)])
    assert pointing(prior, centre_box.mask(101, 101))
    assert not pointing(prior, Region(boxes=[BOX]).mask(101, 101))
    # its energy in a central box: the Gaussian's mass there over the box's area
    inside = centre_box.mask(101, 101)
    assert energy_ratio(prior, inside) == pytest.approx(prior[inside].sum() / prior.sum() / inside.mean())


def test_tied_peaks_score_the_share_inside():
    heat = np.zeros((100, 100), np.float32)
    heat[75, 25] = 1.0  # inside BOX
    heat[10, 90] = 1.0  # a second peak elsewhere: a fused map's peaks tie at 1
    assert pointing(heat, Region(boxes=[BOX]).mask(100, 100)) == 0.5


def test_summarise_means_over_images():
    region = Region(boxes=[BOX])
    good = score(BOX.mask(50, 50).astype(np.float32), region)
    flat = score(np.ones((50, 50), np.float32), region)
    out = summarise([good, flat])
    assert out["n"] == 2 and out["pointing"] == 0.5
    assert out["energy"] == pytest.approx((good.energy + 1.0) / 2)


def _image(path, size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)
    return path


def test_csv_reader_lists_malformed_and_unmatched_rows(tmp_path):
    _image(tmp_path / "glioma" / "a.jpg")
    _image(tmp_path / "glioma" / "b.jpg")
    csv = tmp_path / "boxes.csv"
    csv.write_text("path,class,x_center,y_center,width,height\n"
                   "glioma/a.jpg,glioma,0.5,0.5,0.2,0.2\n"
                   "glioma/a.jpg,glioma,0.2,0.2,0.1,0.1\n"  # a second box for the same image
                   "glioma/b.jpg,glioma,0.5,abc,0.2,0.2\n"  # not a number
                   "glioma/b.jpg,glioma,1.5,0.5,0.2,0.2\n"  # not a fraction
                   "glioma/missing.jpg,glioma,0.5,0.5,0.2,0.2\n")
    ann = read_boxes_csv(csv)
    assert list(ann.regions) == [str(tmp_path / "glioma" / "a.jpg")]
    assert len(ann.regions[str(tmp_path / "glioma" / "a.jpg")].boxes) == 2
    reasons = dict(ann.problems)
    assert set(reasons) == {"boxes.csv line 4", "boxes.csv line 5", "boxes.csv line 6"}
    assert "malformed" in reasons["boxes.csv line 4"]
    assert "fraction" in reasons["boxes.csv line 5"]
    assert "does not exist" in reasons["boxes.csv line 6"]


def test_csv_reader_names_missing_columns(tmp_path):
    csv = tmp_path / "boxes.csv"
    csv.write_text("path,x,y\nglioma/a.jpg,1,2\n")
    ann = read_boxes_csv(csv)
    assert not ann.regions
    assert "x_center" in ann.problems[0][1]


def test_yolo_folder_with_classes_file_and_bad_lines(tmp_path):
    _image(tmp_path / "images" / "glioma" / "a.png")
    _image(tmp_path / "images" / "pituitary" / "b.png")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "classes.txt").write_text("glioma\nmeningioma\npituitary\n")
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "b.txt").write_text("2 0.4 0.4 0.1 0.1\n7 0.5 0.5 0.1 0.1\n0 0.5 0.5\n")
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    ann = read_yolo_folder(labels, tmp_path / "images", ["glioma", "meningioma", "notumor", "pituitary"])
    a, b = str(tmp_path / "images" / "glioma" / "a.png"), str(tmp_path / "images" / "pituitary" / "b.png")
    assert set(ann.regions) == {a, b}
    assert ann.regions[b].label == "pituitary" and len(ann.regions[b].boxes) == 1
    reasons = dict(ann.problems)
    assert "class id 7" in reasons["b.txt line 2"]
    assert "expected 'class_id" in reasons["b.txt line 3"]
    assert "no image named orphan" in reasons["orphan.txt"]


def test_mask_pngs_are_scored_by_their_own_pixels(tmp_path):
    img = _image(tmp_path / "glioma" / "c.png", (40, 40))
    mask = np.zeros((40, 40), np.uint8)
    mask[5:10, 30:38] = 255  # a small blob, not a box around the image centre
    Image.fromarray(mask).save(img.with_name("c_mask.png"))
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "glioma" / "d_mask.png")  # empty, no image
    ann = read_masks(tmp_path)
    region = ann.regions[str(img)]
    assert region.mask(40, 40).sum() == 5 * 8
    s = score(region.mask(80, 80).astype(np.float32), region)  # resized to any heatmap size
    assert s.pointing and s.energy == pytest.approx(1 / (40 / 1600))
    assert any("d_mask" in p for p, _ in ann.problems)


def test_pointing_intervals_resample_patients_and_name_them():
    from braintumor.explain.localisation import Score, summarise

    # 20 patients of 10 slices; the map hits on every slice of 14 patients and misses on every slice of 6
    hits = np.repeat(np.arange(20) < 14, 10).astype(float)
    scores = [Score(h, h, 2.0) for h in hits]
    groups = np.repeat(np.arange(20), 10)
    by_slice, by_patient = summarise(scores), summarise(scores, groups, "patients")
    assert by_patient["pointing_tol"] == pytest.approx(0.7)
    assert by_patient["interval"]["text"] == "resampling 20 patients"
    assert by_slice["interval"]["text"] == "resampling 200 images"
    width = lambda s: s["pointing_tol_ci95"][1] - s["pointing_tol_ci95"][0]  # noqa: E731
    assert width(by_patient) > 2 * width(by_slice)
