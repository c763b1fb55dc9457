"""Local fast paths of HCE and the weighted F-measure, each against its oracle on inputs that select it.

- ``effort.skeleton_on``: the GT skeleton decided on a few pixels by a light-cone-limited thinning
  (scikit-image ``skeletonize`` is the oracle), with a spy telling which path ran: decided locally, or
  handed to the whole skeleton when a pixel is too deep to be decided within the margin;
- HCE through that path (PySODMetrics), border-touching objects included;
- ``saliency._weighted_background_error``: the distance transform on G's box grown by 266 px plus
  ``2·Σ map`` beyond, the table of B and its exact fallback (PySODMetrics ``WeightedFmeasure``);
- the nearest-G-pixel ring scan and the separable Gaussian (PySODMetrics);
- the S-measure's four block histograms in one (byte, block) histogram, OpenCV and NumPy (PySODMetrics).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics as sod
import pytest
from skimage.morphology import skeletonize

from medseg.metrics import MetricSuite, effort, hce, saliency

sys.path.insert(0, str(Path(__file__).parent))
from metrics_helpers import pysod_hce  # noqa: E402


def _count_calls(monkeypatch, module, name: str) -> dict[str, int]:
    """Replace ``module.name`` by a spy that counts its calls (``calls["n"]``)."""
    calls = {"n": 0}
    original = getattr(module, name)

    def spy(*args):
        calls["n"] += 1
        return original(*args)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.fixture
def fallbacks(monkeypatch) -> dict[str, int]:
    """Counts the calls of the whole-skeleton fallback of ``skeleton_on``."""
    return _count_calls(monkeypatch, effort, "gt_skeleton")


def _blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Ellipses, a thin arm and a bar along the image border (objects touching the edge)."""
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), (w // 3, h // 3), int(rng.integers(0, 180)), 0, 360, 1, -1)
    cv2.ellipse(m, (w // 5, h // 4), (w // 8, h // 6), 30, 0, 360, 1, -1)
    cv2.line(m, (0, h - 1), (w // 2, h // 2), 1, 2)
    m[:, -6:] = 1
    return m.astype(bool)


def _rim(mask: np.ndarray, rng: np.random.Generator, depth: int) -> np.ndarray:
    """Random mask pixels within ``depth`` px of the background (where HCE asks for the skeleton)."""
    inner = cv2.erode(mask.view(np.uint8), np.ones((2 * depth + 1,) * 2, np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).view(bool)
    return mask & ~inner & (rng.random(mask.shape) < 0.3)


def test_skeleton_on_rim_is_decided_locally_and_equals_scikit_image(fallbacks) -> None:
    rng = np.random.default_rng(11)
    for i in range(4):
        mask = _blobs(rng, 120 + 17 * i, 150)
        region = _rim(mask, rng, 5)
        region[0, :] = True  # pixels outside the mask stay False
        np.testing.assert_array_equal(effort.skeleton_on(mask, region), skeletonize(mask) & region)
    assert fallbacks["n"] == 0


def test_skeleton_on_deep_pixels_fall_back_to_the_whole_skeleton(fallbacks) -> None:
    mask = np.zeros((160, 170), bool)
    cv2.circle(mask.view(np.uint8), (85, 80), 70, 1, -1)
    region = np.zeros_like(mask)
    region[70:90, 75:95] = True  # the centre: 60 px deep, not decided within 12 sub-passes
    np.testing.assert_array_equal(effort.skeleton_on(mask, region), skeletonize(mask) & region)
    assert fallbacks["n"] == 1
    empty = effort.skeleton_on(mask, np.zeros_like(mask))
    assert not empty.any() and fallbacks["n"] == 1


@pytest.mark.parametrize("margin", [1, 3, 6])
def test_skeleton_on_small_margins_stay_exact(margin) -> None:
    """Few sub-passes: most pixels undecided (fallback), the decided ones must still be right."""
    rng = np.random.default_rng(12)
    noisy = cv2.morphologyEx((rng.random((90, 110)) < 0.75).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    for mask in (noisy.astype(bool), _blobs(rng, 100, 120)):
        region = _rim(mask, rng, 3)
        np.testing.assert_array_equal(effort.skeleton_on(mask, region, margin), skeletonize(mask) & region)


def _shifted(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pred = np.roll(gt, (int(rng.integers(-5, 6)), int(rng.integers(-5, 6))), axis=(0, 1))
    pred = cv2.erode(pred.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    for _ in range(3):
        y, x = rng.integers(2, gt.shape[0] - 9), rng.integers(2, gt.shape[1] - 9)
        pred[y:y + 6, x:x + 7] ^= True
    return pred


@pytest.mark.parametrize("margin, fallbacks_expected", [(effort.LOCAL_MARGIN, 0), (1, 3)])
def test_hce_through_the_local_skeleton_matches_pysodmetrics(margin, fallbacks_expected, fallbacks,
                                                             monkeypatch) -> None:
    """Default margin: decided locally; margin 1 (1 then 3 sub-passes): undecided, the whole skeleton."""
    monkeypatch.setattr(effort, "LOCAL_MARGIN", margin)
    rng = np.random.default_rng(13)
    for i in range(3):
        gt = _blobs(rng, 150 + 20 * i, 180)
        pred = _shifted(gt, rng)
        assert hce(pred, gt) == pysod_hce(pred, gt)
    assert fallbacks["n"] == fallbacks_expected


def test_hce_diagonal_crack_is_one_8_connected_region() -> None:
    """An FN crack inside TP, 8-connected only: one independent region (scikit-image's labelling)."""
    gt = np.zeros((150, 160), bool)
    cv2.circle(gt.view(np.uint8), (80, 75), 65, 1, -1)
    pred = gt.copy()
    i = np.arange(40)
    pred[55 + i, 50 + i] = False
    assert hce(pred, gt) == pysod_hce(pred, gt)


def test_hce_local_skeleton_on_strided_views_matches_pysodmetrics() -> None:
    rng = np.random.default_rng(19)
    gt = _blobs(rng, 150, 170)
    pred = _shifted(gt, rng)
    for view in (lambda a: a.T, lambda a: a[::-1, ::2]):
        assert hce(view(pred), view(gt)) == pysod_hce(np.ascontiguousarray(view(pred)), np.ascontiguousarray(view(gt)))


def _pysod_wf(pm: np.ndarray, gt: np.ndarray) -> float:
    ref = sod.WeightedFmeasure()
    ref.step(pm, gt.astype(np.uint8) * 255)
    return float(ref.weighted_fms[-1])


def _noisy_map(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 3) + rng.uniform(0, 0.3, gt.shape)
    return (np.clip(soft, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("where", ["corner", "border", "centre"])
def test_weighted_f_far_from_the_gt_matches_pysodmetrics(where) -> None:
    """A small GT in a 640 x 760 image: pixels beyond 266 px take B = 2 without a transform."""
    rng = np.random.default_rng(14)
    gt = np.zeros((640, 760), bool)
    y, x = {"corner": (20, 30), "border": (0, 300), "centre": (300, 360)}[where]
    gt[y:y + 40, x:x + 55] = True
    gt[y + 10:y + 12, x + 55:x + 90] = True
    assert saliency._gt_box(gt, saliency._B_IS_TWO) != (slice(0, 640), slice(0, 760))  # the cropped path
    pm = _noisy_map(gt, rng)
    expected = _pysod_wf(pm, gt)
    suite = MetricSuite(["wf_measure"])
    assert suite(None, gt, prob=pm).values["wf_measure"] == pytest.approx(expected, rel=1e-12)
    assert suite(None, gt, prob=pm / 255.0).values["wf_measure"] == pytest.approx(expected, rel=1e-12)


def test_weighted_f_exact_fallback_above_the_table_matches_pysodmetrics(monkeypatch) -> None:
    rng = np.random.default_rng(15)
    gt = np.zeros((200, 230), bool)
    gt[40:90, 50:120] = True
    pm = _noisy_map(gt, rng)
    expected = _pysod_wf(pm, gt)
    calls = _count_calls(monkeypatch, saliency, "_distance_to_fg")
    monkeypatch.setattr(saliency, "_K_EXACT", 100)  # squared distances above 100: the per-pixel B
    assert MetricSuite(["wf_measure"])(None, gt, prob=pm).values["wf_measure"] == pytest.approx(expected, rel=1e-12)
    assert calls["n"] == 1


def test_smoothed_nearest_error_matches_pysodmetrics_intermediate() -> None:
    """E_A = gauss7 * E_t (PySODMetrics' own steps: scipy EDT indices, scipy convolve) at every G pixel."""
    from scipy.ndimage import convolve, distance_transform_edt

    rng = np.random.default_rng(16)
    gt = np.zeros((70, 90), bool)
    cv2.ellipse(gt.view(np.uint8), (40, 35), (25, 18), 25, 0, 360, 1, -1)
    gt[3:6, 60:88] = True  # a thin bar: ring pixels with G on two sides (tie order)
    gt[:, 0] = True  # touching the border
    err = np.abs(rng.random(gt.shape) - gt)
    _, idx = distance_transform_edt(~gt, return_indices=True)
    et = err.copy()
    et[~gt] = err[idx[0][~gt], idx[1][~gt]]
    expected = convolve(et, weights=sod.WeightedFmeasure().matlab_style_gauss2D((7, 7), sigma=5), mode="constant")
    ours = saliency._smoothed_nearest_error(err, gt)
    np.testing.assert_allclose(ours[gt], expected[gt], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("counter", ["opencv", "numpy"])
def test_s_measure_block_histograms_match_pysodmetrics(counter, monkeypatch) -> None:
    if counter == "numpy":
        monkeypatch.setattr(saliency, "_CALCHIST_MAX", 0)  # the bincount branch (images of 2^24 px and more)
    rng = np.random.default_rng(18)
    for h, w, box in ((90, 130, (slice(10, 50), slice(70, 120))), (80, 60, (slice(0, 80), slice(0, 12)))):
        gt = np.zeros((h, w), bool)
        gt[box] = True
        gt[60:70, 5:30] = True  # off-centre: four blocks of different sizes
        pm = _noisy_map(gt, rng)
        for view in (lambda a: a, lambda a: a.T):
            value = MetricSuite(["s_measure"])(None, view(gt), prob=view(pm)).values["s_measure"]
            ref = sod.Smeasure()
            ref.step(np.ascontiguousarray(view(pm)), np.ascontiguousarray(view(gt)).astype(np.uint8) * 255)
            assert value == pytest.approx(ref.sms[-1], rel=1e-12)
