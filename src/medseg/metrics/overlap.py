"""Overlap metrics from one confusion count per case (NumPy, or torch on the tensors' device).

Every metric here is a function of the counts TP, FP, FN, TN of a binary mask pair, so one
``bincount`` over ``gt * K + pred`` gives all of them for all K classes at once.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medseg.metrics._policy import Policy

IFE_F_BETA2 = 0.3


# ------------------------------------------------------------------------------------------ counts
def binary_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``[TP, FP, FN, TN]`` (int64) of two boolean masks, from three ``count_nonzero`` passes."""
    tp = np.count_nonzero(np.logical_and(pred, gt))
    sp = np.count_nonzero(pred)
    sg = np.count_nonzero(gt)
    return np.array([tp, sp - tp, sg - tp, pred.size - sp - sg + tp], dtype=np.int64)


def confusion_matrix(pred: Any, gt: Any, num_labels: int) -> np.ndarray:
    """``num_labels x num_labels`` counts (rows: GT label, columns: predicted label) of two label maps.

    One ``bincount`` of ``gt * K + pred``, formed in the smallest unsigned type that holds ``K² - 1``
    (uint8 up to K = 16, uint16 up to K = 256: a half to a quarter of the int64 memory traffic); torch
    tensors are counted on their device.
    """
    if _is_tensor(pred) or _is_tensor(gt):
        return batch_confusion(pred.reshape(1, -1), gt.reshape(1, -1), num_labels)[0].cpu().numpy()
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    _check_labels(pred, num_labels, "prediction")
    _check_labels(gt, num_labels, "ground truth")
    kind = np.uint8 if num_labels <= 16 else np.uint16 if num_labels <= 256 else np.int64
    index = gt.astype(kind, copy=False).ravel() * kind(num_labels) + pred.astype(kind, copy=False).ravel()
    return np.bincount(index, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def class_counts(matrix: np.ndarray, classes: list[int]) -> np.ndarray:
    """Per-class ``[TP, FP, FN, TN]`` rows (shape ``len(classes) x 4``) from a confusion matrix."""
    total = matrix.sum()
    tp = np.diag(matrix)[classes]
    fp = matrix.sum(0)[classes] - tp
    fn = matrix.sum(1)[classes] - tp
    return np.stack([tp, fp, fn, total - tp - fp - fn], axis=-1).astype(np.int64)


def _check_labels(labels: np.ndarray, num_labels: int, what: str) -> None:
    if labels.dtype == bool or labels.size == 0:
        return
    lo, hi = labels.min(), labels.max()
    if lo < 0 or hi >= num_labels:
        raise ValueError(f"{what} holds label values in [{lo}, {hi}] but only 0..{num_labels - 1} are "
                         f"valid; set num_classes to the number of labels (background included)")


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


# --------------------------------------------------------------------------- tensors (validation)
def batch_confusion(pred: Any, gt: Any, num_labels: int) -> Any:
    """``B x K x K`` confusion counts of label tensors ``B x *spatial`` on their device (one bincount).

    Labels outside ``0..K-1`` (an ignore value) are counted in neither rows nor columns.
    """
    import torch

    b = pred.shape[0]
    pred = pred.reshape(b, -1).long()
    gt = gt.reshape(b, -1).long()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size")
    k = num_labels + 1  # one extra bin collects labels outside 0..K-1 (e.g. an ignore value)
    pred = torch.where((pred >= 0) & (pred < num_labels), pred, num_labels)
    gt = torch.where((gt >= 0) & (gt < num_labels), gt, num_labels)
    offset = torch.arange(b, device=pred.device).view(b, 1) * (k * k)
    counts = torch.bincount((offset + gt * k + pred).reshape(-1), minlength=b * k * k)
    return counts.view(b, k, k)[:, :num_labels, :num_labels]


def batch_dice(pred: Any, gt: Any, num_classes: int) -> Any:
    """Per-case, per-foreground-class Dice ``2TP/(2TP+FP+FN)`` of label tensors, on their device.

    Returns ``B x C'`` (float64): C' = 1 for binary (``num_classes == 1``, foreground label 1) else the
    K-1 foreground classes; NaN where the class is absent from both prediction and GT (not applicable).
    """
    import torch

    k = 2 if num_classes == 1 else num_classes
    cm = batch_confusion(pred, gt, k).double()
    tp = torch.diagonal(cm, dim1=1, dim2=2)
    den = cm.sum(1) + cm.sum(2)  # |G_c| + |P_c|
    dice = torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.full_like(tp, float("nan")))
    return dice[:, 1:]


# --------------------------------------------------------------------------------- definitions
def _split(counts: np.ndarray) -> tuple[np.ndarray, ...]:
    c = np.asarray(counts, dtype=np.float64)
    return c[..., 0], c[..., 1], c[..., 2], c[..., 3]


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def dice_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """Dice similarity coefficient ``DSC = 2TP / (2TP + FP + FN)`` (Dice 1945; Sørensen 1948).

    Both masks empty: 1 (policy), NaN (``empty="nan"``), 0 (IFE code), NaN (medpy 0.5.2 ``dc``).
    """
    tp, fp, fn, _ = _split(counts)
    den = 2 * tp + fp + fn
    return policy.fill(_div(2 * tp, den), den == 0, 1.0, ife=0.0, medpy=np.nan, what="dice")


def iou_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """Jaccard index / IoU ``TP / (TP + FP + FN)`` (Jaccard 1912); both empty as for Dice (medpy ``jc``: 1)."""
    tp, fp, fn, _ = _split(counts)
    den = tp + fp + fn
    return policy.fill(_div(tp, den), den == 0, 1.0, ife=0.0, medpy=1.0, what="iou")


def precision_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """Precision (positive predictive value) ``TP / (TP + FP)``.

    Empty prediction: 1 if the GT is empty too, else 0 (a miss never earns a perfect precision);
    medpy 0.5.2 returns NaN there.
    """
    tp, fp, fn, _ = _split(counts)
    den = tp + fp
    both_empty = (tp + fp + fn) == 0
    return policy.fill(_div(tp, den), den == 0, np.where(both_empty, 1.0, 0.0), ife=0.0, medpy=np.nan,
                       what="precision")


def recall_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """Recall (sensitivity, true positive rate) ``TP / (TP + FN)``; empty GT as for precision."""
    tp, fp, fn, _ = _split(counts)
    den = tp + fn
    both_empty = (tp + fp + fn) == 0
    return policy.fill(_div(tp, den), den == 0, np.where(both_empty, 1.0, 0.0), ife=0.0, medpy=np.nan,
                       what="recall")


def specificity_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """Specificity (true negative rate) ``TN / (TN + FP)``.

    GT without background: 1 if the prediction has no background either, else 0 (medpy: NaN).
    """
    tp, fp, fn, tn = _split(counts)
    den = tn + fp
    return policy.fill(_div(tn, den), den == 0, np.where(fn == 0, 1.0, 0.0), ife=0.0, medpy=np.nan,
                       what="specificity")


def f1_ife_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """IFE's "F1": Achanta's F-beta on the binary mask, ``1.3·Pr·Re / (0.3·Pr + Re + 1e-4)``.

    Not the harmonic-mean F1: beta^2 = 0.3 (Achanta et al., CVPR 2009) with IFE's 1e-4 smoothing
    (``utils/eval_metrics.py::F1_score`` of yezi-66/IFE); Pr and Re follow the empty-mask policy.
    """
    pr = precision_from_counts(counts, policy)
    re = recall_from_counts(counts, policy)
    return (1 + IFE_F_BETA2) * pr * re / (IFE_F_BETA2 * pr + re + 1e-4)


def conformity_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """Conformity ``1 - (FP + FN) / TP = (3·DSC - 2) / DSC`` (Chang et al., NeuroImage 2009), in (-inf, 1].

    TP = 0 with a non-empty mask is -inf, reported as NaN (counted as excluded); both empty: 1.
    ``compat="ife"``: 0 when DSC <= 0.01 (IFE's ``conformity``), with IFE's Dice (0 when both empty).
    """
    tp, fp, fn, _ = _split(counts)
    if policy.compat == "ife":
        dsc = dice_from_counts(counts, policy)
        safe = np.where(dsc > 0.01, dsc, 1.0)
        return np.where(dsc > 0.01, (3 * safe - 2) / safe, 0.0)
    value = 1.0 - _div(fp + fn, tp)
    both_empty = (tp + fp + fn) == 0
    value = np.where((tp == 0) & ~both_empty, np.nan, value)
    return policy.fill(value, both_empty, 1.0, ife=0.0, medpy=1.0, what="conformity")


def rvd_from_counts(counts: np.ndarray, policy: Policy = Policy()) -> np.ndarray:
    """Relative volume difference ``RVD = (|P| - |G|) / |G|`` (signed; medpy ``ravd``).

    Empty GT: 0 if the prediction is empty too, else +inf reported as NaN (counted as excluded).
    ``compat="ife"``: IFE's absolute ``|(|P| / |G|) - 1|`` (the paper prints it x100), 0 on empty GT.
    ``compat="medpy"``: raises on an empty GT as medpy does.
    """
    tp, fp, fn, _ = _split(counts)
    sp, sg = tp + fp, tp + fn
    value = _div(sp - sg, sg)
    if policy.compat == "ife":
        value = np.abs(value)
    default = np.where(sp == 0, 0.0, np.nan)
    return policy.fill(value, sg == 0, default, ife=0.0, medpy=None, what="rvd")
