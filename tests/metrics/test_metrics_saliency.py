"""SOD / polyp metrics against PySODMetrics (per image and dataset-level curves), MAE compat, edges."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from medseg.metrics import MetricSuite, summarize
from medseg.metrics.saliency import mae_ife

sys.path.insert(0, str(Path(__file__).parent))
from metrics_helpers import pysod_meters, pysod_step  # noqa: E402

REL = 1e-6
MAP_METRICS = ["mae", "s_measure", "wf_measure", "f_measure_max", "f_measure_mean", "f_measure_adp",
               "e_measure_max", "e_measure_mean", "e_measure_adp", "polyp_mdice", "polyp_miou"]


def _soft(gt: np.ndarray, rng: np.random.Generator, shift: int = 5) -> np.ndarray:
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 3)
    soft = np.roll(soft, shift, axis=1) + rng.normal(0, 0.08, gt.shape)
    return (np.clip(soft, 0, 1) * 255).astype(np.uint8)


def _pysod(maps: list[np.ndarray], gts: list[np.ndarray]) -> tuple[list[dict], dict]:
    meters = pysod_meters()
    per = [pysod_step(meters, pm, g) for pm, g in zip(maps, gts)]
    f, e = meters[:2]
    dataset = {"f_measure_max": f.get_results()["fm"]["curve"].max(), "e_measure_max": e.get_results()["em"]["curve"].max()}
    return per, dataset


def _check(maps: list[np.ndarray], gts: list[np.ndarray]) -> None:
    suite = MetricSuite(MAP_METRICS)
    results = [suite(None, g, prob=pm) for pm, g in zip(maps, gts)]
    per, dataset = _pysod(maps, gts)
    for res, ref in zip(results, per):
        for key, value in ref.items():
            assert res.values[key] == pytest.approx(value, rel=REL, abs=1e-12), key
    summary = summarize(results)["metrics"]
    for key, value in dataset.items():
        assert summary[key]["dataset"] == pytest.approx(value, rel=REL)


def test_random_blobs_match_pysodmetrics() -> None:
    rng = np.random.default_rng(0)
    gts, maps = [], []
    for i in range(5):
        g = np.zeros((60 + i, 70), bool)
        cv2.circle(g.view(np.uint8), (20 + 5 * i, 30), 9 + i, 1, -1)
        cv2.rectangle(g.view(np.uint8), (40, 5), (55, 20 + i), 1, -1)
        gts.append(g)
        maps.append(_soft(g, rng, shift=i))
    _check(maps, gts)


def test_real_kvasir_match_pysodmetrics(real_dataset) -> None:
    folder = real_dataset("kvasir-seg")
    rng = np.random.default_rng(1)
    gts, maps = [], []
    for path in sorted((folder / "masks").glob("*.jpg"))[5:8]:
        g = cv2.imread(str(path), 0) > 128
        gts.append(g)
        maps.append(_soft(g, rng, shift=11))
    _check(maps, gts)


def test_edge_cases_match_pysodmetrics() -> None:
    rng = np.random.default_rng(2)
    empty = np.zeros((30, 40), bool)
    full = np.ones((30, 40), bool)
    some = empty.copy()
    some[5:15, 10:30] = True
    maps = [_soft(some, rng), np.zeros((30, 40), np.uint8), _soft(some, rng), np.full((30, 40), 200, np.uint8),
            (some * 255).astype(np.uint8)]
    _check(maps, [empty, empty, full, some, some])


def test_mae_ife_uint8_wraparound_by_hand() -> None:
    gt = np.zeros((10, 10), bool)
    gt[0:5] = True
    pred = np.zeros((10, 10), bool)
    pred[2:8] = True  # FN rows 0-1 (20 px), FP rows 5-7 (30 px)
    expected = (20 * 1 + 30 * 255) / (100 * 255.0 + 1e-4)  # FN wraps to 1, FP counts 255
    assert mae_ife(pred, gt) == pytest.approx(expected, rel=1e-12)
    assert MetricSuite(["mae"], compat="ife")(pred, gt).values["mae"] == pytest.approx(expected, rel=1e-12)
    assert MetricSuite(["mae"])(pred, gt).values["mae"] == pytest.approx(50 / 100)


def test_saliency_rejects_multiclass_and_bad_maps() -> None:
    with pytest.raises(ValueError, match="binary foreground map"):
        MetricSuite(["s_measure"], num_classes=3)
    g = np.zeros((8, 8), bool)
    g[2:5, 2:5] = True
    with pytest.raises(ValueError, match="outside"):
        MetricSuite(["mae"])(None, g, prob=np.full((8, 8), 1.5))
    with pytest.raises(ValueError, match="2-D"):
        MetricSuite(["s_measure"])(None, np.zeros((4, 4, 4), bool), prob=np.zeros((4, 4, 4)))


def test_soft_dice_and_ife_minmax_binarisation_by_hand() -> None:
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    prob = np.zeros((4, 4))
    prob[0] = 0.4
    prob[1, :2] = 0.2  # max 0.4 -> min-max normalised: row 0 = 1, row 1 left = 0.5
    s = prob / 0.4
    expected = (2 * (s * gt).sum() + 1e-5) / (s.sum() + gt.sum() + 1e-5)
    assert MetricSuite(["soft_dice"])(None, gt, prob=prob).values["soft_dice"] == pytest.approx(expected, rel=1e-12)
    # default: prob > 0.5 -> empty prediction; IFE protocol: min-max first -> row 0 predicted
    assert MetricSuite(["dice"])(None, gt, prob=prob).values["dice"] == 0.0
    assert MetricSuite(["dice"], compat="ife")(None, gt, prob=prob).values["dice"] == pytest.approx(2 * 4 / (4 + 8))
