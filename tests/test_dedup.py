"""dedup.py: exact and near duplicate groups, nearest neighbours, copies of a reference folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from braintumor import dedup
from braintumor.config import DEFAULT_NEAR_THRESHOLD
from tests.conftest import CLASSES, blob_image


def test_exact_groups_number_first_appearances():
    assert dedup.exact_groups(["x", "y", "x", "z", "y"]).tolist() == [0, 1, 0, 2, 1]
    assert dedup.exact_groups([]).tolist() == []


def test_hamming_counts_differing_bits():
    a = np.array([0, 0xFF], dtype=np.uint64)
    b = np.array([0, 1, 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    assert dedup.hamming(a, b).tolist() == [[0, 1, 64], [8, 7, 56]]


def test_groups_join_pairs_transitively_and_keep_exact_groups():
    # 0-1 and 1-2 are pairs: one group; 3 and 5 share pixels; 4 stays alone
    groups = dedup.groups_from_pairs(6, np.array([[0, 1], [1, 2]]), exact=np.array([0, 1, 2, 3, 4, 3]))
    assert groups.tolist() == [0, 0, 0, 1, 2, 1]
    assert dedup.groups_from_pairs(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


def test_duplicate_groups_modes():
    rng = np.random.default_rng(0)
    images = np.stack([blob_image(i % 4, 32, rng)[..., None] for i in range(4)])
    digests = ["a", "b", "a", "c"]
    assert dedup.duplicate_groups(digests, images, "none").tolist() == [0, 1, 2, 3]
    assert dedup.duplicate_groups(digests, images, "exact").tolist() == [0, 1, 0, 2]
    near = dedup.duplicate_groups(digests, images, "near", threshold=0)
    assert near[0] == near[2]  # exact copies always share a group


@pytest.mark.parametrize("groups, expected", [([0, 1, 0, 2, 1], (2, 4)), ([0, 1, 2], (0, 0)), ([], (0, 0))])
def test_counting_groups(groups, expected):
    g = np.asarray(groups, dtype=np.int64)
    assert dedup.multi_member_groups(g) == expected[0]
    assert dedup.count_groups(g) == expected


def test_phash_sees_a_reencoded_copy_as_near(tmp_path):
    rng = np.random.default_rng(1)
    arr = np.asarray(Image.fromarray((rng.random((6, 6)) * 200).astype(np.uint8)).resize((64, 64), Image.BICUBIC))
    other = np.asarray(Image.fromarray((rng.random((6, 6)) * 200).astype(np.uint8)).resize((64, 64),
                                                                                          Image.BICUBIC))
    h = dedup.phashes(np.stack([arr, arr // 2 * 2, other])[..., None])
    d = dedup.hamming(h, h)
    assert d[0, 1] <= DEFAULT_NEAR_THRESHOLD < d[0, 2]


def test_copies_of_finds_exact_copies_of_a_reference_folder(tmp_path):
    rng = np.random.default_rng(2)
    ref = tmp_path / "train"
    for label, c in enumerate(CLASSES):
        (ref / c).mkdir(parents=True)
        Image.fromarray(blob_image(label, 48, rng)).save(ref / c / "0.png")
    query = tmp_path / "q"
    query.mkdir()
    Image.open(ref / "glioma" / "0.png").save(query / "copy.png")
    Image.fromarray((rng.random((48, 48)) * 255).astype(np.uint8)).save(query / "noise.png")
    (query / "broken.png").write_bytes(b"not a png")
    paths = [str(query / n) for n in ("copy.png", "noise.png", "broken.png")]
    mask, rows = dedup.copies_of(ref, paths)
    assert mask.tolist() == [True, False, False]
    assert rows == [{"path": paths[0], "copy_of": str(ref / "glioma" / "0.png"), "distance": 0, "kind": "exact"}]


def test_join_groups_keeps_the_slices_of_one_volume_together():
    from braintumor.dedup import join_groups
    from braintumor.volumes import volume_of

    ids = ["a.png", "b.png", "vol.nii.gz#3", "vol.nii.gz#4", "c.png", "vol.nii.gz#5"]
    groups = np.array([0, 1, 2, 3, 1, 4])  # b.png and c.png are copies; three slices of one volume apart
    joined = join_groups(groups, [volume_of(i) for i in ids])
    assert joined[2] == joined[3] == joined[5] and joined[1] == joined[4]
    assert len({joined[0], joined[1], joined[2]}) == 3  # nothing else merged
