"""HCE: PySODMetrics oracle (DIS definition), scikit-image skeleton equality, IFE's 64x64 variant."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics as sod
import pytest
from skimage.morphology import disk, skeletonize

from medseg.metrics import hce
from medseg.metrics.effort import skeleton

sys.path.insert(0, str(Path(__file__).parent))
from metrics_helpers import pysod_hce  # noqa: E402


def _shapes(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((h, w), np.uint8)
    cv2.ellipse(gt, (w // 2, h // 2), (w // 4, h // 5), int(rng.integers(0, 180)), 0, 360, 1, -1)
    cv2.line(gt, (3, 3), (w // 2, h // 2), 1, 2)  # a thin structure the skeleton keeps
    pred = np.roll(gt, int(rng.integers(-4, 5)), axis=int(rng.integers(0, 2))).copy()
    pred = cv2.dilate(pred, np.ones((3, 3), np.uint8)) if rng.random() < 0.5 else cv2.erode(pred, np.ones((3, 3), np.uint8))
    for _ in range(3):  # false-positive and false-negative islands
        y, x = rng.integers(5, h - 8), rng.integers(5, w - 8)
        pred[y:y + 4, x:x + 5] = 1 - pred[y:y + 4, x:x + 5]
    return pred.astype(bool), gt.astype(bool)


def test_random_shapes_match_pysodmetrics() -> None:
    rng = np.random.default_rng(0)
    for i in range(8):
        pred, gt = _shapes(rng, 70 + 3 * i, 90)
        assert hce(pred, gt) == pysod_hce(pred, gt)
    empty = np.zeros((40, 40), bool)
    pred, _ = _shapes(rng, 40, 40)
    assert hce(pred, empty) == pysod_hce(pred, empty)
    assert hce(empty, pred) == pysod_hce(empty, pred)
    assert hce(empty, empty) == 0.0
    edge = np.zeros((40, 40), bool)
    edge[0:12, 0:20] = True  # touching the image border
    assert hce(np.roll(edge, 3, axis=1), edge) == pysod_hce(np.roll(edge, 3, axis=1), edge)


def test_real_kvasir_match_pysodmetrics(real_dataset) -> None:
    folder = real_dataset("kvasir-seg")
    for i, path in enumerate(sorted((folder / "masks").glob("*.jpg"))[10:13]):
        gt = cv2.imread(str(path), 0) > 128
        soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 6 + 2 * i)
        pred = np.roll(soft, 9, axis=1) > 0.5
        assert hce(pred, gt) == pysod_hce(pred, gt)


def test_skeleton_equals_scikit_image() -> None:
    rng = np.random.default_rng(1)
    for i in range(10):
        mask = rng.random((100, 420)) < rng.uniform(0.3, 0.9)  # > 40k px: the frontier path
        if i % 2:
            mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)).astype(bool)
        np.testing.assert_array_equal(skeleton(mask), skeletonize(mask))
    big = np.zeros((260, 240), bool)
    cv2.circle(big.view(np.uint8), (120, 130), 100, 1, -1)
    np.testing.assert_array_equal(skeleton(big), skeletonize(big))


def _ife64_reference(pred: np.ndarray, gt: np.ndarray) -> float:
    """IFE ``compute_hce`` transcribed: uint8 0/255 masks, cv2.resize to 64x64, uint8 subtraction."""
    m = sod.HumanCorrectionEffortMeasure()
    rs = cv2.resize(pred.astype(np.uint8) * 255, (64, 64))
    g = cv2.resize(gt.astype(np.uint8) * 255, (64, 64))
    ske = skeletonize(g > 128)
    tp_u8 = np.logical_and(g, rs).astype(np.uint8) * 255
    fp_u8, fn_u8 = rs - tp_u8, g - tp_u8  # uint8 wrap-around, as in the IFE code
    tp = tp_u8 > 0
    union_eroded = cv2.erode(np.logical_or(g, rs).astype(np.uint8) * 255, disk(1), iterations=5)
    fp_ = np.logical_and(fp_u8, union_eroded)
    for _ in range(5):
        fp_ = np.logical_and(cv2.dilate(fp_.astype(np.uint8) * 255, disk(1)), 1 - np.logical_or(tp, fn_u8))
    fp_ = np.logical_and(fp_u8, fp_)
    fn_ = np.logical_and(fn_u8, union_eroded)
    for _ in range(5):
        fn_ = np.logical_and(cv2.dilate(fn_.astype(np.uint8) * 255, disk(1)), 1 - np.logical_or(tp, fp_u8))
    fn_ = np.logical_or(np.logical_and(fn_u8, fn_), np.logical_xor(ske, np.logical_and(tp, ske)))
    ctr_fp, _ = cv2.findContours(fp_.astype(np.uint8) * 255, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    b_fp, i_fp = m.filter_conditional_boundary(ctr_fp, fp_, np.logical_or(tp, fn_))
    ctr_fn, _ = cv2.findContours(fn_.astype(np.uint8) * 255, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    b_fn, i_fn = m.filter_conditional_boundary(ctr_fn, fn_, 1 - np.logical_or(np.logical_or(tp, fp_), fn_))
    return float(m.count_polygon_control_points(b_fp, 2.0) + i_fp + m.count_polygon_control_points(b_fn, 2.0) + i_fn)


def test_ife64_matches_transcribed_ife_code() -> None:
    rng = np.random.default_rng(2)
    for i in range(6):
        pred, gt = _shapes(rng, 150 + 10 * i, 190)
        expected = _ife64_reference(pred, gt)
        assert hce(pred, gt, hce_mode="ife64") == expected
        assert hce(pred, gt, compat="ife") == expected


def test_hce_rejects_volumes() -> None:
    with pytest.raises(ValueError, match="2-D"):
        hce(np.zeros((3, 4, 5), bool), np.zeros((3, 4, 5), bool))


def test_cached_gt_skeleton_is_the_fresh_one() -> None:
    from medseg.metrics import effort

    rng = np.random.default_rng(3)
    pred, gt = _shapes(rng, 120, 140)
    padded = np.pad(gt, ((7, 3), (2, 9)))
    effort._CACHE.clear()
    first = effort.gt_skeleton(padded)
    np.testing.assert_array_equal(first, skeletonize(padded))
    np.testing.assert_array_equal(effort.gt_skeleton(padded), first)  # from the cache
    assert len(effort._CACHE) == 1
    assert hce(pred, gt) == pysod_hce(pred, gt) == hce(pred, gt)
