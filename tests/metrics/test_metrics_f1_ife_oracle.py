"""IFE's "F1" against independent oracles.

Definition (IFE ``F1_score``, docs/metrics.md): Achanta's F-beta with beta^2 = 0.3 on the binary mask,
``F = 1.3·Pr·Re / (0.3·Pr + Re + 1e-4)`` with ``Pr = TP/(TP+FP)`` and ``Re = TP/(TP+FN)``. It is not
symmetric in Pr and Re (it weighs precision more), so every example below has Pr != Re.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.metrics import MetricSuite, create_metric, f1_ife


def achanta(pr: float, re: float) -> float:
    return 1.3 * pr * re / (0.3 * pr + re + 1e-4)


def worked_masks() -> tuple[np.ndarray, np.ndarray]:
    """4 x 5 masks with TP = 6, FP = 2, FN = 4: Pr = 6/8 = 0.75, Re = 6/10 = 0.6."""
    gt = np.zeros((4, 5), dtype=bool)
    gt[0:2, 0:5] = True  # 10 pixels
    pred = np.zeros((4, 5), dtype=bool)
    pred[1, 0:5] = True  # 5 of them hit
    pred[0, 0] = True  # 6th hit
    pred[2, 0:2] = True  # 2 false positives
    return pred, gt


def test_hand_worked_value():
    pred, gt = worked_masks()
    # 1.3 · 0.75 · 0.6 / (0.3 · 0.75 + 0.6 + 1e-4) = 0.585 / 0.8251
    expected = 0.585 / 0.8251
    assert f1_ife(pred, gt) == pytest.approx(expected, abs=1e-12)
    # swapping the roles of prediction and GT swaps Pr and Re: 0.585 / (0.3·0.6 + 0.75 + 1e-4)
    assert f1_ife(gt, pred) == pytest.approx(0.585 / 0.9301, abs=1e-12)
    assert abs(expected - 0.585 / 0.9301) > 0.05  # the example can tell Pr from Re


def test_tensor_inputs_and_registry_agree_with_hand_value():
    pred, gt = worked_masks()
    expected = 0.585 / 0.8251
    assert create_metric("f1_ife")(pred, gt) == pytest.approx(expected, abs=1e-12)
    value = MetricSuite(["f1_ife"])(torch.from_numpy(pred), torch.from_numpy(gt)).values["f1_ife"]
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_random_3d_masks_against_medpy_precision_recall(seed):
    medpy_binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(seed)
    gt = rng.random((6, 7, 8)) < 0.3
    pred = rng.random((6, 7, 8)) < 0.5  # more predicted than true: Pr < Re
    pr, re = medpy_binary.precision(pred, gt), medpy_binary.recall(pred, gt)
    assert abs(pr - re) > 0.05
    assert f1_ife(pred, gt) == pytest.approx(achanta(pr, re), abs=1e-12)


def test_multiclass_per_class_values():
    gt = np.zeros((4, 5), dtype=np.int64)
    pred = np.zeros((4, 5), dtype=np.int64)
    p1, g1 = worked_masks()
    gt[g1], pred[p1] = 1, 1
    gt[3, 3:5] = 2  # class 2: TP = 1, FP = 0, FN = 1 -> Pr = 1, Re = 0.5
    pred[3, 4] = 2
    values = MetricSuite(["f1_ife"], num_classes=3)(pred, gt).values
    assert values["f1_ife_1"] == pytest.approx(achanta(0.75, 0.6), abs=1e-12)
    assert values["f1_ife_2"] == pytest.approx(achanta(1.0, 0.5), abs=1e-12)
    assert values["f1_ife"] == pytest.approx((achanta(0.75, 0.6) + achanta(1.0, 0.5)) / 2, abs=1e-12)


def test_empty_masks_follow_policy():
    empty, full = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    full[1:3, 1:3] = True
    assert f1_ife(empty, empty) == pytest.approx(1.3 / 1.3001)  # Pr = Re = 1 (both empty)
    assert f1_ife(empty, full) == 0.0  # a miss: Pr = Re = 0
    assert f1_ife(full, empty) == 0.0  # a false alarm
    assert f1_ife(empty, empty, compat="ife") == 0.0  # IFE: medpy's 0 on empty denominators
