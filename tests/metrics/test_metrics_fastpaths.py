"""Fast paths, each against its oracle on the sizes that select it.

- HCE with GT masks above 40 k px (our own Zhang-Suen frontier thinning, and its hand-off to
  scikit-image once the changing box is small) against PySODMetrics and ``skimage.skeletonize``;
- 8-bit maps (``saliency.ByteMap``: histogram sums) against PySODMetrics and against the float path;
- the weighted F-measure's table of B(d) and its large-image fallback against PySODMetrics;
- 3-D surface distances with two equal spacings (per-slice OpenCV transforms combined across
  slices, every stack axis, empty slices) against medpy and a KD-tree.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics as sod
import pytest
from medpy.metric import binary as mb
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from medseg.metrics import MetricSuite, distance, effort, hce, saliency

sys.path.insert(0, str(Path(__file__).parent))
from metrics_helpers import pysod_hce, pysod_meters, pysod_step  # noqa: E402

MAPS = ["mae", "s_measure", "wf_measure", "f_measure_max", "f_measure_mean", "f_measure_adp", "e_measure_max",
        "e_measure_mean", "e_measure_adp", "polyp_mdice", "polyp_miou", "soft_dice"]


def _big_shapes(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A GT whose bounding box is well above 40 k px (a thick blob with a thin arm) and a perturbed pred."""
    gt = np.zeros((h, w), np.uint8)
    cv2.ellipse(gt, (w // 2, h // 2), (int(w * 0.4), int(h * 0.35)), int(rng.integers(0, 180)), 0, 360, 1, -1)
    cv2.line(gt, (2, 2), (w // 2, h // 2), 1, 3)
    pred = np.roll(gt, int(rng.integers(-6, 7)), axis=int(rng.integers(0, 2))).copy()
    pred = cv2.erode(pred, np.ones((5, 5), np.uint8)) if rng.random() < 0.5 else pred
    for _ in range(4):
        y, x = rng.integers(5, h - 12), rng.integers(5, w - 12)
        pred[y:y + 7, x:x + 9] = 1 - pred[y:y + 7, x:x + 9]
    return pred.astype(bool), gt.astype(bool)


def test_hce_above_the_scikit_image_size_matches_pysodmetrics() -> None:
    rng = np.random.default_rng(5)
    effort._CACHE.clear()
    for i in range(3):
        pred, gt = _big_shapes(rng, 260 + 20 * i, 300)
        rows, cols = np.flatnonzero(gt.any(1)), np.flatnonzero(gt.any(0))
        assert (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) > effort._SMALL  # our thinning
        assert hce(pred, gt) == pysod_hce(pred, gt)


def test_skeleton_hand_off_equals_scikit_image(monkeypatch) -> None:
    calls = {"tried": 0, "taken": 0}
    original = effort._hand_off

    def spy(*args):
        calls["tried"] += 1
        taken = original(*args)
        calls["taken"] += taken
        return taken

    monkeypatch.setattr(effort, "_hand_off", spy)
    rng = np.random.default_rng(6)
    masks = []
    for radius in (110, 140):
        disk = np.zeros((2 * radius + 20, 2 * radius + 30), np.uint8)
        cv2.circle(disk, (radius + 15, radius + 10), radius, 1, -1)
        cv2.line(disk, (0, 0), (radius, radius), 1, 2)  # a stub that keeps the foreground box large
        masks.append(disk.astype(bool))
    noisy = cv2.morphologyEx((rng.random((240, 260)) < 0.7).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    masks.append(noisy.astype(bool))
    for area in (1, 20_000, 60_000, 10**9):  # never, late, default, at the first look
        monkeypatch.setattr(effort, "_HANDOFF_AREA", area)
        for mask in masks:
            np.testing.assert_array_equal(effort.skeleton(mask), skeletonize(mask))
    assert calls["taken"] > 0 and calls["tried"] > calls["taken"]


def test_hand_off_refuses_when_the_frame_would_change() -> None:
    img = np.zeros((40, 40), np.uint8)
    img[5:35, 5:35] = 1  # a filled square: its rim is removable, so thinning inside a tight box must touch it
    before = img.copy()
    active = np.flatnonzero(img.ravel())
    assert not effort._hand_off(img, active[(active // 40 > 10) & (active // 40 < 30)], 40)
    np.testing.assert_array_equal(img, before)  # nothing written


def _soft(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 4)
    soft = np.roll(soft, 7, axis=1) + rng.normal(0, 0.06, gt.shape)
    return (np.clip(soft, 0, 1) * 255).astype(np.uint8)


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for h, w in ((90, 120), (61, 77)):
        g = np.zeros((h, w), np.uint8)
        cv2.ellipse(g, (w // 3, h // 2), (w // 5, h // 4), 20, 0, 360, 1, -1)
        cv2.rectangle(g, (w - 30, 5), (w - 10, 30), 1, -1)
        out.append((_soft(g.astype(bool), rng), g.astype(bool)))
    g = np.zeros((50, 60), bool)
    g[:, -1] = True  # GT centroid on the last column: an empty S-measure block
    out.append((_soft(g, rng), g))
    g = np.zeros((40, 50), bool)
    g[10:20, 10:30] = True
    out.append((np.full((40, 50), 77, np.uint8), g))  # a constant map
    return out


def test_byte_maps_match_pysodmetrics() -> None:
    suite = MetricSuite(MAPS)
    for pm, gt in _cases():
        ours = suite(None, gt, prob=pm).values
        for key, value in pysod_step(pysod_meters(), pm, gt).items():
            if np.isnan(value):  # PySODMetrics' S-measure with an empty block; medseg's float path gives 0 too
                continue
            assert ours[key] == pytest.approx(value, rel=1e-10, abs=1e-13), key


@pytest.mark.parametrize("options", [{}, {"minmax": False}, {"compat": "ife"}, {"threshold": 0.3}])
def test_byte_path_equals_float_path(options) -> None:
    suite = MetricSuite(["dice", "hd", *MAPS], **options)
    for pm, gt in _cases():
        fast = suite(None, gt, prob=pm).values
        slow = suite(None, gt, prob=pm / 255.0).values  # a float map takes the per-pixel path
        for key in fast:
            assert fast[key] == pytest.approx(slow[key], rel=1e-12, abs=1e-14), (key, options)


def test_weighted_f_table_and_large_image_fallback_match_pysodmetrics() -> None:
    rng = np.random.default_rng(8)
    for h, w in ((300, 420), (1100, 1000)):  # B from the table; h^2 + w^2 >= 2^21: per-pixel B
        g = np.zeros((h, w), np.uint8)
        cv2.circle(g, (w // 3, h // 2), min(h, w) // 6, 1, -1)
        pm = _soft(g.astype(bool), rng)
        ref = sod.WeightedFmeasure()
        ref.step(pm, g * 255)
        assert MetricSuite(["wf_measure"])(None, g.astype(bool), prob=pm).values["wf_measure"] == pytest.approx(
            ref.weighted_fms[-1], rel=1e-10)
    assert saliency._B_TABLE[0] == 0.0 and saliency._B_TABLE[25] == pytest.approx(2 - 0.5)  # B(d=5) = 1.5


def _organs(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    zz, yy, xx = np.ogrid[tuple(slice(0, n) for n in shape)]
    c = np.array(shape) / 2
    gt = ((zz - c[0]) / (shape[0] * 0.3)) ** 2 + ((yy - c[1]) / (shape[1] * 0.35)) ** 2 + ((xx - c[2]) / (shape[2] * 0.3)) ** 2 <= 1
    pred = np.roll(gt, (1, -2, 1), axis=(0, 1, 2)) & (rng.random(shape) < 0.97)
    pred[2:4, 2:5, 1:3] = True  # a far false blob
    return pred, gt


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 2.5), (3.0, 0.7, 0.7), (0.9, 2.0, 0.9), (1.0, 1.0, 1.0)])
def test_stacked_3d_distances_match_medpy(spacing) -> None:
    assert distance._stack_axis(np.array(spacing)) is not None  # the per-slice path
    rng = np.random.default_rng(9)
    pred, gt = _organs(rng, (30, 34, 26))
    ours = MetricSuite(["hd", "hd95", "asd", "assd"])(pred, gt, spacing=spacing).values
    assert ours["hd"] == pytest.approx(mb.hd(pred, gt, voxelspacing=spacing), rel=1e-12)
    assert ours["hd95"] == pytest.approx(mb.hd95(pred, gt, voxelspacing=spacing), rel=1e-12)
    assert ours["asd"] == pytest.approx(mb.asd(pred, gt, voxelspacing=spacing), rel=1e-12)
    assert ours["assd"] == pytest.approx(mb.assd(pred, gt, voxelspacing=spacing), rel=1e-12)


def test_stacked_distances_with_empty_slices_equal_a_kd_tree() -> None:
    rng = np.random.default_rng(10)
    border = np.zeros((12, 20, 18), bool)
    border[2, 3:9, 4] = True
    border[9, 15, 2:16] = True  # slices 0-1, 3-8, 10-11 hold no border voxel
    at = rng.random(border.shape) < 0.05
    sp = np.array([2.5, 0.6, 0.6])
    expected = cKDTree(np.argwhere(border) * sp).query(np.argwhere(at) * sp)[0]
    np.testing.assert_allclose(distance._stacked_distances(border, at, sp, 0), expected, rtol=1e-13)
    moved = np.moveaxis(border, 0, 2)
    at_moved = np.moveaxis(at, 0, 2)
    sp_moved = np.array([0.6, 0.6, 2.5])
    expected = cKDTree(np.argwhere(moved) * sp_moved).query(np.argwhere(at_moved) * sp_moved)[0]
    np.testing.assert_allclose(distance._stacked_distances(moved, at_moved, sp_moved, 2), expected, rtol=1e-13)


def test_byte_map_accepts_strided_views() -> None:
    pm, gt = _cases()[0]
    suite = MetricSuite(MAPS)
    for view in (lambda a: a.T, lambda a: a[:, ::-2], lambda a: a[5:-3, 4:]):
        fast = suite(None, view(gt), prob=view(pm)).values
        slow = suite(None, np.ascontiguousarray(view(gt)), prob=np.ascontiguousarray(view(pm)) / 255.0).values
        for key in fast:
            assert fast[key] == pytest.approx(slow[key], rel=1e-12, abs=1e-14), key
