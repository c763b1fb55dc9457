"""The 3-D surface-distance scan (``distance._slice_scan``), each of its paths on the sizes that select it.

Oracles: SciPy's exact Euclidean distance transform for the chamfer bounds, a KD-tree over the sites for the
scan, medpy for the whole metric on a liver-sized organ and on a real 41-organ CT label map
(TotalSegmentator's example, from ../shared/data; skipped with the reason when absent). Spies check that each
case takes the path it is named after, so a case cannot silently drift onto another path.
"""
from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest
from medpy.metric import binary as mb
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree

from medseg.metrics import MetricSuite, distance


def _site_images(rng: np.random.Generator) -> list[np.ndarray]:
    """uint8 images, 0 at the sites: a few points, scattered points, thin rings, lines (every direction)."""
    out = []
    for t in range(160):
        h, w = (int(v) for v in rng.integers(2, 260, 2))
        img = np.ones((h, w), np.uint8)
        kind = t % 4
        if kind == 0:
            img.reshape(-1)[rng.integers(0, h * w, int(rng.integers(1, 5)))] = 0
        elif kind == 1:
            img.reshape(-1)[rng.integers(0, h * w, max(1, h * w // int(rng.integers(2, 3000))))] = 0
        elif kind == 2:
            yy, xx = np.ogrid[:h, :w]
            r = np.hypot(yy - rng.uniform(0, h), (xx - rng.uniform(0, w)) * rng.uniform(0.3, 3))
            img[np.abs(r - rng.uniform(1, max(h, w))) < rng.uniform(0.3, 2)] = 0
            img[0, 0] = 0  # never empty
        else:
            for _ in range(int(rng.integers(1, 4))):
                p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.line(img, p0, (int(rng.integers(0, w)), int(rng.integers(0, h))), 0, 1)
        out.append(img)
    return out


def test_chamfer_bounds_hold_against_scipy_edt() -> None:
    """``ceil((c/H)²) <= k <= floor((c/L)²)`` for OpenCV's 5x5 chamfer value ``c`` at every pixel."""
    rng = np.random.default_rng(31)
    low_f = (1 - distance._FLOAT32_SLACK) / distance._CHAMFER_HIGH ** 2
    high_f = (1 + distance._FLOAT32_SLACK) / distance._CHAMFER_LOW ** 2
    single = total = 0
    for img in _site_images(rng):
        c = cv2.distanceTransform(img, cv2.DIST_L2, cv2.DIST_MASK_5).astype(np.float64)
        k = np.rint(distance_transform_edt(img) ** 2)
        low, high = np.ceil(c * c * low_f), np.floor(c * c * high_f)
        assert (low <= k).all() and (k <= high).all(), img.shape
        single += int((low == high).sum())
        total += k.size
    assert 0 < single < total  # both the one-integer answers and the searched intervals occur
    assert distance._CHAMFER_LOW == pytest.approx(0.98248, abs=1e-5)
    assert distance._CHAMFER_HIGH == pytest.approx(1.01920, abs=1e-5)


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts of the points that went through each exact path of ``_SlicedSites``."""
    seen: Counter = Counter()
    for name in ("_search", "_precise", "grow"):
        original = getattr(distance._SlicedSites, name)

        def spy(self, z, *args, _original=original, _name=name):
            seen[_name] += int(np.asarray(z).size)
            return _original(self, z, *args)

        monkeypatch.setattr(distance._SlicedSites, name, spy)
    switch = distance._SlicedSites.use_exact_transforms

    def count_switch(self):
        seen["use_exact_transforms"] += 1
        return switch(self)

    monkeypatch.setattr(distance._SlicedSites, "use_exact_transforms", count_switch)
    return seen


def _kd_oracle(sites: np.ndarray, queries: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    return cKDTree(np.argwhere(sites) * spacing).query(np.argwhere(queries) * spacing)[0]


def _scan(sites: np.ndarray, queries: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    return distance._stacked_distances(sites, queries, spacing, 0)


def test_scan_searches_offsets_on_a_liver_sized_organ(paths: Counter) -> None:
    """Most points: the one-integer interval or the offset search (distances within the margin)."""
    zz, yy, xx = np.ogrid[:40, :120, :110]
    gt = ((zz - 20) / 16) ** 2 + ((yy - 60) / 50) ** 2 + ((xx - 55) / 45) ** 2 <= 1
    pred = ((zz - 21) / 15) ** 2 + ((yy - 57) / 52) ** 2 + ((xx - 58) / 44) ** 2 + 0.1 * np.sin(yy / 4.0) <= 1
    sp = np.array([2.5, 0.8, 0.8])
    border_g, border_p = distance.surface(gt), distance.surface(pred)
    np.testing.assert_allclose(_scan(border_g, border_p, sp), _kd_oracle(border_g, border_p, sp), rtol=1e-13)
    np.testing.assert_allclose(_scan(border_p, border_g, sp), _kd_oracle(border_p, border_g, sp), rtol=1e-13)
    assert paths["_search"] > 1000 and paths["_precise"] == 0


def test_scan_grows_windows_for_reads_outside_them(paths: Counter) -> None:
    """Queries many slices away from a small site cluster, off to the side in-plane: the site slices'
    windows do not hold them, so their reads there must grow those windows."""
    rng = np.random.default_rng(32)
    sites = np.zeros((30, 40, 40), bool)
    sites[14:16, 18:22, 18:22] = True  # sites on two slices only
    queries = np.zeros_like(sites)
    for z0 in (0, 25):
        queries[z0 + rng.integers(0, 5, 80), rng.integers(0, 6, 80), 30 + rng.integers(0, 10, 80)] = True
    sp = np.array([0.7, 1.0, 1.0])  # thin slices: the nearest site is many slices away
    np.testing.assert_allclose(_scan(sites, queries, sp), _kd_oracle(sites, queries, sp), rtol=1e-13)
    assert paths["grow"] > 0


def test_site_box_bound_keeps_a_read_that_is_nearer() -> None:
    """Hand-worked: the site box bound must not prune a read that wins by a little.

    Query at (z, y, x) = (16, 15, 5), unit spacing. Site A at (10, 5, 5): 6² + 10² = 136, read on slice 10
    outside its window (which holds only A), box bound exactly 10² + 6² = 136. Site B on the query's own
    slice at (16, 15, 17): 12² = 144, whose chamfer upper bound is 149. The answer is sqrt(136).
    """
    sites = np.zeros((20, 20, 20), bool)
    sites[10, 5, 5] = True
    sites[16, 15, 17] = True
    queries = np.zeros_like(sites)
    queries[16, 15, 5] = True
    assert _scan(sites, queries, np.ones(3)) == pytest.approx([np.sqrt(136)], rel=1e-15)


def test_scan_uses_the_exact_transform_beyond_the_search_margin(paths: Counter) -> None:
    """In-plane distances longer than the margin (a far false blob) come from OpenCV's exact transform,
    while most queries, near the sites, keep the chamfer path."""
    sites = np.zeros((6, 120, 130), bool)
    sites[2:4, 5:8, 5:8] = True
    sites[2:4, 110:113, 120:123] = True
    queries = np.zeros_like(sites)
    queries[2:4, 3:11, 3:11] = True  # around the first site block
    queries[2:4, 108:116, 118:126] = True  # around the second
    queries[2:4, 40:80:9, 30:100:17] = True  # 30-90 voxels from either block
    sp = np.array([3.0, 0.6, 0.6])
    np.testing.assert_allclose(_scan(sites, queries, sp), _kd_oracle(sites, queries, sp), rtol=1e-13)
    assert paths["_precise"] > 0 and paths["use_exact_transforms"] == 0


def test_scan_switches_to_exact_transforms_for_surfaces_far_apart(paths: Counter) -> None:
    """When most queries lie beyond the search margin (a prediction of the wrong place), every window
    takes OpenCV's exact transform at once."""
    zz, yy, xx = np.ogrid[:24, :90, :120]
    sites = distance.surface(((zz - 12) / 9) ** 2 + ((yy - 45) / 30) ** 2 + ((xx - 30) / 20) ** 2 <= 1)
    queries = distance.surface(((zz - 14) / 8) ** 2 + ((yy - 40) / 28) ** 2 + ((xx - 95) / 18) ** 2 <= 1)
    sp = np.array([2.0, 0.7, 0.7])
    np.testing.assert_allclose(_scan(sites, queries, sp), _kd_oracle(sites, queries, sp), rtol=1e-13)
    assert paths["use_exact_transforms"] == 1 and paths["_search"] == paths["_precise"] == 0


def test_liver_sized_organ_matches_medpy(paths: Counter) -> None:
    """The whole metric, through the suite, on a 10 %-of-volume organ with a false blob, against medpy."""
    zz, yy, xx = np.ogrid[:96, :100, :48]
    gt = ((zz - 48) / 40) ** 2 + ((yy - 50) / 38) ** 2 + ((xx - 24) / 20) ** 2 <= 1
    pred = ((zz - 50) / 41) ** 2 + ((yy - 48) / 36) ** 2 + ((xx - 25) / 19) ** 2 + 0.12 * np.cos(zz / 5.0) <= 1
    pred[85:90, 5:9, 40:42] = True
    spacing = (0.8, 0.8, 2.5)
    ours = MetricSuite(["hd", "hd95", "assd"])(pred, gt, spacing=spacing).values
    assert ours["hd"] == pytest.approx(mb.hd(pred, gt, voxelspacing=spacing), rel=1e-12)
    assert ours["hd95"] == pytest.approx(mb.hd95(pred, gt, voxelspacing=spacing), rel=1e-12)
    assert ours["assd"] == pytest.approx(mb.assd(pred, gt, voxelspacing=spacing), rel=1e-12)
    assert paths["_search"] > 0


def test_real_multi_organ_ct_matches_medpy(real_dataset, paths: Counter) -> None:
    """TotalSegmentator's example CT labels (41 organs, 3 mm): a prediction that moves every label by one
    voxel in-plane and drops one slice of the liver, per-class HD95 and ASSD against medpy."""
    import nibabel as nib

    folder = real_dataset("totalsegmentator-example-ct")
    img = nib.load(str(folder / "masks" / "example_seg.nii.gz"))
    gt = np.asanyarray(img.dataobj).astype(np.int64)
    spacing = tuple(float(v) for v in img.header.get_zooms()[:3])
    pred = np.roll(gt, 1, axis=1)
    z_liver = np.flatnonzero((gt == 5).any(axis=(0, 1)))
    pred[..., z_liver[len(z_liver) // 2]][pred[..., z_liver[len(z_liver) // 2]] == 5] = 0
    labels = [int(c) for c in np.unique(gt) if c]
    suite = MetricSuite(["hd95", "assd"], num_classes=int(gt.max()) + 1)
    ours = suite(pred, gt, spacing=spacing).values
    for c in labels:
        p, g = pred == c, gt == c
        assert ours[f"hd95_{c}"] == pytest.approx(mb.hd95(p, g, voxelspacing=spacing), rel=1e-12), c
        assert ours[f"assd_{c}"] == pytest.approx(mb.assd(p, g, voxelspacing=spacing), rel=1e-12), c
    assert len(labels) == 41 and paths["_search"] > 0


def test_many_class_label_map_crops_by_find_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """From CROP_BY_FIND_OBJECTS classes on, per-class crops come from one find_objects pass per map; the
    values equal the two-masks-per-class path and medpy, including a class missing from the prediction
    (the image diagonal, not the crop's) and one missing from the GT."""
    from medseg.metrics import suite as suite_module

    rng = np.random.default_rng(33)
    gt = np.zeros((40, 48, 20), np.uint8)
    for c in range(1, 16):
        z, y, x = rng.integers(4, 36), rng.integers(4, 44), rng.integers(3, 17)
        gt[z - 3:z + 3, y - 3:y + 4, x - 2:x + 2] = c
    pred = np.roll(gt, 1, axis=0)
    pred[pred == 7] = 0  # class 7 only in the GT
    pred[1:3, 1:3, 1:3] = 16  # class 16 only in the prediction
    spacing = (0.8, 0.8, 2.5)
    calls = []
    original = distance.label_crops
    monkeypatch.setattr(distance, "label_crops", lambda *a: calls.append(1) or original(*a))
    suite = MetricSuite(["hd95", "assd"], num_classes=17)
    with_crops = suite(pred, gt, spacing=spacing).values
    assert calls, "the find_objects path was not taken"
    monkeypatch.setattr(suite_module, "CROP_BY_FIND_OBJECTS", 10 ** 6)
    with_masks = suite(pred, gt, spacing=spacing).values
    assert len(calls) == 1
    for key, value in with_masks.items():
        assert with_crops[key] == value or (np.isnan(value) and np.isnan(with_crops[key])), key
    for c in (1, 5, 12):
        assert with_crops[f"hd95_{c}"] == pytest.approx(mb.hd95(pred == c, gt == c, voxelspacing=spacing), rel=1e-12)
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(gt.shape, spacing))))
    assert with_crops["hd95_7"] == pytest.approx(diagonal) and with_crops["hd95_16"] == pytest.approx(diagonal)
    # the crops themselves: the box of the class in either map, one voxel around, clipped; None if missing
    crops = distance.label_crops(pred, gt, list(range(1, 17)))
    for c, crop in zip(range(1, 17), crops):
        if c in (7, 16):
            assert crop is None
            continue
        where = np.argwhere((pred == c) | (gt == c))
        expected = tuple(slice(max(0, lo - 1), min(n, hi + 2))
                         for lo, hi, n in zip(where.min(0), where.max(0), gt.shape))
        assert crop == expected, c
