"""Overlap metrics: medpy oracle, the empty-mask table by hand, compat modes, tensors and multi-class."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from medpy.metric import binary as mb

from medseg.metrics import (EmptyMaskError, MetricSuite, batch_confusion, batch_dice, confusion_matrix, dice,
                            evaluate_case, iou, precision, recall, rvd, specificity)

REL = 1e-6


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    from scipy.ndimage import binary_opening

    return binary_opening(rng.random(shape) < p)


@pytest.mark.parametrize("shape", [(37, 53), (12, 15, 9)])
def test_overlap_equals_medpy(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(8):
        pred, gt = _blobs(rng, shape, 0.55), _blobs(rng, shape, 0.55)
        assert dice(pred, gt) == pytest.approx(mb.dc(pred, gt), rel=REL)
        assert iou(pred, gt) == pytest.approx(mb.jc(pred, gt), rel=REL)
        assert precision(pred, gt) == pytest.approx(mb.precision(pred, gt), rel=REL)
        assert recall(pred, gt) == pytest.approx(mb.recall(pred, gt), rel=REL)
        assert specificity(pred, gt) == pytest.approx(mb.specificity(pred, gt), rel=REL)
        assert rvd(pred, gt) == pytest.approx(mb.ravd(pred, gt), rel=REL)


def test_real_kvasir_overlap(real_dataset) -> None:
    import cv2

    folder = real_dataset("kvasir-seg")
    for path in sorted((folder / "masks").glob("*.jpg"))[:3]:
        gt = cv2.imread(str(path), 0) > 128
        pred = np.roll(cv2.erode(gt.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool), 6, axis=0)
        values = evaluate_case(pred.astype(np.int64), gt.astype(np.int64), ["dice", "iou", "rvd"], 1)
        assert values["dice"] == pytest.approx(mb.dc(pred, gt), rel=REL)
        assert values["iou"] == pytest.approx(mb.jc(pred, gt), rel=REL)
        assert values["rvd"] == pytest.approx(mb.ravd(pred, gt), rel=REL)


# the policy table, worked by hand on a 4x4 image
E = np.zeros((4, 4), bool)
F = np.zeros((4, 4), bool)
F[1:3, 1:3] = True

TABLE = [  # pred, gt, metric, default, empty="nan", compat="ife"
    (E, E, "dice", 1.0, np.nan, 0.0), (F, E, "dice", 0.0, 0.0, 0.0), (E, F, "dice", 0.0, 0.0, 0.0),
    (E, E, "iou", 1.0, np.nan, 0.0), (F, E, "iou", 0.0, 0.0, 0.0),
    (E, E, "precision", 1.0, np.nan, 0.0), (F, E, "precision", 0.0, 0.0, 0.0), (E, F, "precision", 0.0, np.nan, 0.0),
    (E, E, "recall", 1.0, np.nan, 0.0), (F, E, "recall", 0.0, np.nan, 0.0), (E, F, "recall", 0.0, 0.0, 0.0),
    (E, E, "rvd", 0.0, np.nan, 0.0), (F, E, "rvd", np.nan, np.nan, 0.0), (E, F, "rvd", -1.0, -1.0, 1.0),
    (E, E, "conformity", 1.0, np.nan, 0.0), (E, F, "conformity", np.nan, np.nan, 0.0),
]


@pytest.mark.parametrize("pred,gt,name,default,nan_mode,ife", TABLE)
def test_empty_mask_table(pred, gt, name, default, nan_mode, ife) -> None:
    for options, expected in (({}, default), ({"empty": "nan"}, nan_mode), ({"compat": "ife"}, ife)):
        value = MetricSuite([name], **options)(pred, gt).values[name]
        if np.isnan(expected):
            assert np.isnan(value), (name, options)
        else:
            assert value == pytest.approx(expected), (name, options)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_compat_medpy_matches_medpy_including_empty() -> None:
    full = np.ones((4, 4), bool)
    for p, g in ((E, E), (F, E), (E, F), (F, F), (full, full), (F, full)):
        for name, fn in (("dice", mb.dc), ("iou", mb.jc), ("precision", mb.precision), ("recall", mb.recall),
                         ("specificity", mb.specificity)):
            ours = MetricSuite([name], compat="medpy")(p, g).values[name]
            np.testing.assert_equal(ours, float(fn(p, g)), err_msg=name)
    with pytest.raises(EmptyMaskError):
        MetricSuite(["rvd"], compat="medpy")(F, E)


def test_conformity_formula_and_ife_cutoff() -> None:
    pred = np.zeros((10, 10), bool)
    gt = np.zeros((10, 10), bool)
    pred[0:4, 0:5] = True
    gt[2:6, 0:5] = True  # TP 10, FP 10, FN 10 -> 1 - 20/10 = -1, DSC 0.5 -> (1.5-2)/0.5 = -1
    assert MetricSuite(["conformity"])(pred, gt).values["conformity"] == pytest.approx(-1.0)
    assert MetricSuite(["conformity"], compat="ife")(pred, gt).values["conformity"] == pytest.approx(-1.0)
    tiny = np.zeros((100, 100), bool)
    tiny[0, 0] = True
    big = np.zeros((100, 100), bool)
    big[0:20, 0:20] = True  # DSC = 2/401 < 0.01 -> IFE gives 0
    assert MetricSuite(["conformity"], compat="ife")(tiny, big).values["conformity"] == 0.0
    assert MetricSuite(["f1_ife"])(big, big).values["f1_ife"] == pytest.approx(1.3 / 1.3001)


def test_batch_dice_matches_loop_and_nan_for_absent_class() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (3, 9, 11), generator=g)
    gt = torch.randint(0, 4, (3, 9, 11), generator=g)
    gt[0][gt[0] == 3] = 0
    pred[0][pred[0] == 3] = 0
    out = batch_dice(pred, gt, 4)
    assert out.shape == (3, 3)
    for b in range(3):
        for c in range(1, 4):
            p, t = (pred[b] == c).numpy(), (gt[b] == c).numpy()
            if not p.any() and not t.any():
                assert torch.isnan(out[b, c - 1])
            else:
                assert out[b, c - 1].item() == pytest.approx(mb.dc(p, t), rel=REL)
    binary = batch_dice((pred > 1).long(), (gt > 1).long(), 1)
    assert binary.shape == (3, 1)
    assert binary[1, 0].item() == pytest.approx(mb.dc((pred[1] > 1).numpy(), (gt[1] > 1).numpy()), rel=REL)


def test_confusion_tensor_equals_numpy_and_ignores_out_of_range() -> None:
    rng = np.random.default_rng(1)
    p = rng.integers(0, 5, (2, 6, 7))
    t = rng.integers(0, 5, (2, 6, 7))
    cm = batch_confusion(torch.from_numpy(p), torch.from_numpy(t), 5).numpy()
    for b in range(2):
        np.testing.assert_array_equal(cm[b], confusion_matrix(p[b], t[b], 5))
        ref = np.zeros((5, 5), int)
        np.add.at(ref, (t[b].ravel(), p[b].ravel()), 1)
        np.testing.assert_array_equal(cm[b], ref)
    t_ignore = torch.from_numpy(t).clone()
    t_ignore[0, 0, 0] = 255
    assert batch_confusion(torch.from_numpy(p), t_ignore, 5)[0].sum() == p[0].size - 1


@pytest.mark.parametrize("num_labels, dtype", [(k, t) for k in (2, 16, 17, 256, 257)
                                                for t in (np.uint8, np.int32, np.int64) if np.iinfo(t).max >= k - 1])
def test_confusion_matrix_at_the_index_type_edges(num_labels: int, dtype) -> None:
    """The index ``gt·K + pred`` is formed in uint8 up to K = 16 and uint16 up to K = 256: the largest labels
    (K - 1 in both maps, index K² - 1) must land in the last cell, not wrap around."""
    rng = np.random.default_rng(num_labels)
    gt = rng.integers(0, num_labels, 3000).astype(dtype)
    pred = rng.integers(0, num_labels, 3000).astype(dtype)
    gt[:5] = pred[:5] = num_labels - 1
    ref = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(ref, (gt.astype(np.int64), pred.astype(np.int64)), 1)
    np.testing.assert_array_equal(confusion_matrix(pred, gt, num_labels), ref)


def test_multiclass_per_class_and_mean() -> None:
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 3, (20, 20))
    pred = np.where(rng.random((20, 20)) < 0.8, gt, rng.integers(0, 3, (20, 20)))
    values = evaluate_case(pred, gt, ["dice", "iou", "hd95"], num_classes=4)
    for c in (1, 2):
        assert values[f"dice_{c}"] == pytest.approx(mb.dc(pred == c, gt == c), rel=REL)
        assert values[f"hd95_{c}"] == pytest.approx(mb.hd95(pred == c, gt == c), rel=REL)
    assert np.isnan(values["dice_3"])  # absent from both: not applicable, not a free 1
    assert values["dice"] == pytest.approx((values["dice_1"] + values["dice_2"]) / 2)
    torch_values = evaluate_case(torch.from_numpy(pred), torch.from_numpy(gt), ["dice"], num_classes=4)
    assert torch_values["dice"] == pytest.approx(values["dice"])


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="not binary"):
        dice(np.zeros((4, 4)), np.full((4, 4), 2))
    with pytest.raises(ValueError, match=r"case 'c7'.*\(4, 4\).*\(4, 5\)"):
        MetricSuite(["dice"])(np.zeros((4, 4), bool), np.zeros((4, 5), bool), case="c7")
    with pytest.raises(ValueError, match="labels|label values"):
        evaluate_case(np.full((4, 4), 5), np.zeros((4, 4), int), ["dice"], num_classes=3)
    with pytest.raises(ValueError, match="NaN"):
        MetricSuite(["mae"])(None, F, prob=np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="empty="):
        MetricSuite(["dice"], empty="zero")


def test_multiclass_absent_class_does_not_raise_under_medpy_compat() -> None:
    gt = np.zeros((6, 6), int)
    gt[1:3, 1:3] = 1
    values = evaluate_case(gt.copy(), gt, ["dice", "rvd"], num_classes=3, compat="medpy")
    assert values["dice_1"] == 1.0 and values["rvd_1"] == 0.0
    assert np.isnan(values["dice_2"]) and np.isnan(values["rvd_2"])
