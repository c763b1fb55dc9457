"""Per-case metric functions (``from medseg.metrics import hd95``): the bottom layer of ``medseg.metrics``.

Each function takes two binary masks (bool or 0/1; saliency metrics a map in [0, 1], or uint8, as ``prob``)
and returns a float under the empty-mask policy of ``docs/metrics.md``; the keyword options are those of
:class:`medseg.metrics.Policy`. A function checks its inputs (:func:`binary_case`), builds the shared input of
its metric's kind (:func:`shared_input`: counts, surface distances, a :class:`MapCase` or the mask pair) and
applies the kernel: the ``*_from_counts`` / ``*_from`` functions of :mod:`overlap` and :mod:`distance`
(formulas and references in their docstrings), the ``*_of`` kernels below (:mod:`saliency`,
:mod:`effort`). :class:`~medseg.metrics.MetricSuite` builds each shared input once per case for many
metrics and applies the same kernels, named in :mod:`medseg.metrics.names`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np

from medseg.metrics import distance as dist
from medseg.metrics import overlap as ov
from medseg.metrics import saliency as sal
from medseg.metrics._policy import Policy, as_policy, check_pair, check_prob
from medseg.metrics.effort import hce as hce_count

Kernel = Callable[[Any, Policy], Any]


# ------------------------------------------------------------------------------------------ inputs
def is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def to_numpy(x: Any) -> np.ndarray:
    if is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_binary(mask: Any, what: str, case: str = "") -> np.ndarray:
    """A boolean mask from bool / 0-1 arrays; any other value is an error naming the case and values."""
    arr = to_numpy(mask)
    if arr.dtype == bool:
        return arr
    if arr.size and (arr.min() < 0 or arr.max() > 1 or (arr.dtype.kind == "f" and not np.all((arr == 0) | (arr == 1)))):
        found = np.unique(arr)
        shown = ", ".join(f"{v:g}" for v in found[:8]) + (" ..." if found.size > 8 else "")
        where = f"case '{case}': " if case else ""
        raise ValueError(f"{where}the {what} is not binary (values {shown}); binary metrics need 0/1 masks: "
                         f"binarise it, or set num_classes to the number of labels for a label map")
    return arr.astype(bool)


@dataclass
class BinaryCase:
    """One binary case after the input checks: boolean masks, the map if any, spacing and the raw inputs
    (tensors are counted on their device)."""

    pred: np.ndarray
    gt: np.ndarray
    prob: np.ndarray | sal.ByteMap | None
    spacing: Sequence[float] | float | None
    name: str
    raw_pred: Any
    raw_gt: Any


def binary_case(pred: Any, gt: Any, prob: Any, spacing: Any, policy: Policy, case: str = "") -> BinaryCase:
    """Check and convert one case. ``pred`` None: the mask is ``prob > policy.threshold`` (after a per-image
    min-max normalisation under ``compat="ife"``, IFE's test protocol); an 8-bit ``prob`` keeps its bytes
    (:class:`~medseg.metrics.saliency.ByteMap`), so every map metric works on 256 values."""
    gt_np = as_binary(gt, "ground truth", case)
    prob_np: np.ndarray | sal.ByteMap | None = None
    if prob is not None:
        raw = to_numpy(prob)
        prob_np = sal.ByteMap(raw) if raw.dtype == np.uint8 else check_prob(raw, case)
        check_pair(raw, gt_np, case)
    if pred is None:
        if prob_np is None:
            raise ValueError(f"case '{case}': give a prediction mask or a probability map")
        if isinstance(prob_np, sal.ByteMap):
            source = prob_np.normalized() if policy.compat == "ife" else prob_np
            pred_np = source.above(policy.threshold)
        else:
            source = sal.normalize_map(prob_np) if policy.compat == "ife" else prob_np
            pred_np = source > policy.threshold
    else:
        pred_np = as_binary(pred, "prediction", case)
    check_pair(pred_np, gt_np, case)
    return BinaryCase(pred_np, gt_np, prob_np, spacing, case, pred, gt)


# ----------------------------------------------------------------------------------- shared inputs
def overlap_counts(c: BinaryCase) -> np.ndarray:
    """Binary ``[TP, FP, FN, TN]``: on the tensors' device when both inputs are tensors, else NumPy."""
    if is_tensor(c.raw_pred) and is_tensor(c.raw_gt):
        matrix = ov.confusion_matrix(c.raw_pred.long(), c.raw_gt.long(), 2)
        return ov.class_counts(matrix, [1])[0]
    return ov.binary_counts(c.pred, c.gt)


class MapCase:
    """The shared input of the map metrics of one case: the map (min-max normalised when ``policy.minmax``;
    the prediction mask as floats when no map is given), as 8-bit :class:`~saliency.ByteMap` or float array,
    with its byte histograms, 256-threshold counts and curves computed on first use.

    ``blocks``: count the S-measure's four block histograms in the same pass as the image's.
    """

    def __init__(self, c: BinaryCase, policy: Policy, blocks: bool = False) -> None:
        self.pred, self.gt, self.case, self.blocks = c.pred, c.gt, c.name, blocks
        if isinstance(c.prob, sal.ByteMap):
            self.map: np.ndarray | sal.ByteMap = c.prob.normalized() if policy.minmax else c.prob
        elif c.prob is None:
            self.map = c.pred.astype(np.float64)
        else:
            self.map = sal.normalize_map(c.prob) if policy.minmax else c.prob
        self.is_bytes = isinstance(self.map, sal.ByteMap)

    def require_2d(self, what: str) -> None:
        if self.gt.ndim != 2:
            raise ValueError(f"case '{self.case}': {what} is a 2-D metric, got shape {self.gt.shape}")

    @cached_property
    def histograms(self) -> tuple[np.ndarray, np.ndarray, list | None]:
        """8-bit maps: ``(hist over G, hist over all, S-measure blocks or None)``."""
        if self.blocks:
            return sal.quadrant_histograms(self.map.data, self.gt)
        return (*sal.byte_histograms(self.map.data, self.gt), None)

    @cached_property
    def stats(self) -> sal.MapStats:
        if self.is_bytes:
            h_fg, h_all, _ = self.histograms
            return sal.map_stats_bytes(self.map, h_fg, h_all)
        return sal.map_stats(self.map, self.gt)

    @cached_property
    def f_curve(self) -> np.ndarray:
        return sal.f_measure_curve(self.stats)

    @cached_property
    def e_curve(self) -> np.ndarray:
        return sal.e_measure_curve(self.stats)

    def curves(self) -> dict[str, np.ndarray]:
        """The threshold curves computed so far (``"f"``, ``"e"``), kept for the dataset value."""
        return {key: self.__dict__[attr] for key, attr in (("f", "f_curve"), ("e", "e_curve")) if attr in self.__dict__}


def shared_input(kind: str, c: BinaryCase, policy: Policy, blocks: bool = False) -> Any:
    """What every metric of ``kind`` reads (see :mod:`medseg.metrics.names`): ``overlap`` -> counts,
    ``distance`` -> :class:`~distance.SurfaceDistances`, ``map`` -> :class:`MapCase`, ``mask`` -> ``(pred, gt)``."""
    if kind == "overlap":
        return overlap_counts(c)
    if kind == "distance":
        return dist.surface_distances(c.pred, c.gt, c.spacing, c.name)
    if kind == "map":
        return MapCase(c, policy, blocks)
    if kind == "mask":
        return c.pred, c.gt
    raise ValueError(f"unknown metric kind '{kind}'")


# -------------------------------------------------------------------------- map and mask kernels
def mae_of(m: MapCase, policy: Policy) -> float:
    """Mean absolute error ``mean |map - G|`` (Perazzi et al. 2012); ``compat="ife"``: IFE's uint8 MAE."""
    if policy.compat == "ife":
        return sal.mae_ife(m.pred, m.gt)
    if m.is_bytes:
        h_fg, h_all, _ = m.histograms
        return sal.mae_bytes(m.map, h_fg, h_all)
    return sal.mae(m.map, m.gt)


def s_measure_of(m: MapCase, policy: Policy) -> float:
    """Structure measure S-alpha (Fan et al. 2017), :func:`saliency.s_measure`."""
    m.require_2d("s_measure")
    if m.is_bytes:
        return sal.s_measure_bytes(m.map, m.gt, *m.histograms)
    return sal.s_measure(m.map, m.gt)


def wf_measure_of(m: MapCase, policy: Policy) -> float:
    """Weighted F-measure (Margolin et al. 2014), :func:`saliency.weighted_f_measure`."""
    m.require_2d("wf_measure")
    return sal.weighted_f_measure(m.map, m.gt)


def soft_dice_of(m: MapCase, policy: Policy) -> float:
    """Soft Dice ``(2·Σ s·g + 1e-5) / (Σ s + Σ g + 1e-5)`` (CHNet ``eval.py``), :func:`saliency.soft_dice`."""
    if m.is_bytes:
        h_fg, h_all, _ = m.histograms
        t = m.map.table
        return float((2 * np.dot(h_fg, t) + 1e-5) / (np.dot(h_all, t) + h_fg.sum() + 1e-5))
    return sal.soft_dice(m.map, m.gt)


def f_measure_max_of(m: MapCase, policy: Policy) -> float:
    """Max of the 256-threshold F-beta curve (beta^2 = 0.3; Achanta et al. 2009)."""
    return float(m.f_curve.max())


def f_measure_mean_of(m: MapCase, policy: Policy) -> float:
    return float(m.f_curve.mean())


def f_measure_adp_of(m: MapCase, policy: Policy) -> float:
    return sal.f_measure_adaptive(m.stats)


def e_measure_max_of(m: MapCase, policy: Policy) -> float:
    """Max of the 256-threshold E-measure curve (Fan et al. 2018)."""
    return float(m.e_curve.max())


def e_measure_mean_of(m: MapCase, policy: Policy) -> float:
    return float(m.e_curve.mean())


def e_measure_adp_of(m: MapCase, policy: Policy) -> float:
    return sal.e_measure_adaptive(m.stats)


def polyp_mdice_of(m: MapCase, policy: Policy) -> float:
    """Dice at each of 256 thresholds, averaged (PraNet's ``meanDic``)."""
    return float(sal.polyp_dice_curve(m.stats).mean())


def polyp_miou_of(m: MapCase, policy: Policy) -> float:
    return float(sal.polyp_iou_curve(m.stats).mean())


def hce_of(masks: tuple[np.ndarray, np.ndarray], policy: Policy) -> float:
    """Human correction effort (Qin et al. 2022), :func:`effort.hce` in ``policy.hce`` mode."""
    return hce_count(*masks, mode=policy.hce)


# ---------------------------------------------------------------------------------- per-case API
def _value(kind: str, kernel: Kernel, pred: Any, gt: Any, prob: Any = None, spacing: Any = None,
           blocks: bool = False, policy: Policy | None = None, **options: Any) -> float:
    pol = as_policy(policy, **options)
    shared = shared_input(kind, binary_case(pred, gt, prob, spacing, pol), pol, blocks)
    return float(kernel(shared, pol))


def dice(pred: Any, gt: Any, **options: Any) -> float:
    """Dice ``2TP/(2TP+FP+FN)``; both empty -> 1 (see ``overlap.dice_from_counts``)."""
    return _value("overlap", ov.dice_from_counts, pred, gt, **options)


def iou(pred: Any, gt: Any, **options: Any) -> float:
    """IoU / Jaccard ``TP/(TP+FP+FN)``; both empty -> 1."""
    return _value("overlap", ov.iou_from_counts, pred, gt, **options)


jaccard = iou


def precision(pred: Any, gt: Any, **options: Any) -> float:
    """Precision ``TP/(TP+FP)``; empty prediction -> 1 if GT empty too, else 0."""
    return _value("overlap", ov.precision_from_counts, pred, gt, **options)


def recall(pred: Any, gt: Any, **options: Any) -> float:
    """Recall ``TP/(TP+FN)``; empty GT -> 1 if prediction empty too, else 0."""
    return _value("overlap", ov.recall_from_counts, pred, gt, **options)


def specificity(pred: Any, gt: Any, **options: Any) -> float:
    """Specificity ``TN/(TN+FP)``."""
    return _value("overlap", ov.specificity_from_counts, pred, gt, **options)


def f1_ife(pred: Any, gt: Any, **options: Any) -> float:
    """IFE's F1 ``1.3·Pr·Re/(0.3·Pr + Re + 1e-4)`` (Achanta F-beta, beta^2 = 0.3)."""
    return _value("overlap", ov.f1_ife_from_counts, pred, gt, **options)


def conformity(pred: Any, gt: Any, **options: Any) -> float:
    """Conformity ``1 - (FP+FN)/TP`` (Chang et al. 2009)."""
    return _value("overlap", ov.conformity_from_counts, pred, gt, **options)


def rvd(pred: Any, gt: Any, **options: Any) -> float:
    """Relative volume difference ``(|P|-|G|)/|G|`` (signed, medpy ``ravd``)."""
    return _value("overlap", ov.rvd_from_counts, pred, gt, **options)


def hd(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """Hausdorff distance between the surfaces, in physical units (``spacing``)."""
    return _value("distance", dist.hd_from, pred, gt, spacing=spacing, **options)


def hd95(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """95th-percentile Hausdorff distance (``hd95_mode="pooled"`` medpy / ``"max_directed"`` MONAI)."""
    return _value("distance", dist.hd95_from, pred, gt, spacing=spacing, **options)


def asd(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """Average surface distance from the prediction surface to the GT surface."""
    return _value("distance", dist.asd_from, pred, gt, spacing=spacing, **options)


def assd(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """Average symmetric surface distance (``assd_mode="pooled"`` medpy 0.5 / ``"mean_of_directed"``)."""
    return _value("distance", dist.assd_from, pred, gt, spacing=spacing, **options)


def nsd(pred: Any, gt: Any, spacing: Any = None, nsd_tolerance: float = 1.0, **options: Any) -> float:
    """Normalised surface Dice at ``nsd_tolerance`` (physical units)."""
    return _value("distance", dist.nsd_from, pred, gt, spacing=spacing, nsd_tolerance=nsd_tolerance, **options)


def mae(prob: Any, gt: Any, **options: Any) -> float:
    """Mean absolute error of the (min-max normalised) map."""
    return _value("map", mae_of, None, gt, prob=prob, **options)


def s_measure(prob: Any, gt: Any, **options: Any) -> float:
    """Structure measure S-alpha (Fan et al. 2017)."""
    return _value("map", s_measure_of, None, gt, prob=prob, blocks=True, **options)


_E_KINDS = {"max": e_measure_max_of, "mean": e_measure_mean_of, "adp": e_measure_adp_of}
_F_KINDS = {"max": f_measure_max_of, "mean": f_measure_mean_of, "adp": f_measure_adp_of}


def _curve_kernel(kernels: dict[str, Kernel], kind: str, what: str) -> Kernel:
    if kind not in kernels:
        raise ValueError(f"{what} kind '{kind}' is not valid; choose one of {', '.join(kernels)}")
    return kernels[kind]


def e_measure(prob: Any, gt: Any, kind: str = "max", **options: Any) -> float:
    """E-measure of one image: ``kind`` = ``max``/``mean`` over its 256-threshold curve or ``adp``."""
    return _value("map", _curve_kernel(_E_KINDS, kind, "e_measure"), None, gt, prob=prob, **options)


def f_measure(prob: Any, gt: Any, kind: str = "max", **options: Any) -> float:
    """F-beta (beta^2 = 0.3) of one image: ``kind`` = ``max``/``mean``/``adp``."""
    return _value("map", _curve_kernel(_F_KINDS, kind, "f_measure"), None, gt, prob=prob, **options)


def weighted_f_measure(prob: Any, gt: Any, **options: Any) -> float:
    """Weighted F-measure (Margolin et al. 2014)."""
    return _value("map", wf_measure_of, None, gt, prob=prob, **options)


def polyp_mdice(prob: Any, gt: Any, **options: Any) -> float:
    """Polyp-benchmark mDice of one image: Dice averaged over 256 thresholds."""
    return _value("map", polyp_mdice_of, None, gt, prob=prob, **options)


def polyp_miou(prob: Any, gt: Any, **options: Any) -> float:
    """Polyp-benchmark mIoU of one image: IoU averaged over 256 thresholds."""
    return _value("map", polyp_miou_of, None, gt, prob=prob, **options)


def soft_dice(prob: Any, gt: Any, **options: Any) -> float:
    """Soft Dice of the map (CHNet ``eval.py``'s "mDice")."""
    return _value("map", soft_dice_of, None, gt, prob=prob, **options)


def hce(pred: Any, gt: Any, **options: Any) -> float:
    """Human correction effort (DIS definition; ``hce_mode="ife64"`` for IFE's variant)."""
    return _value("mask", hce_of, pred, gt, **options)
