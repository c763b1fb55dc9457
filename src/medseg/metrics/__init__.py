"""Segmentation metrics: one definition each, oracle-tested against medpy, PySODMetrics and MONAI.

Usable on its own (NumPy; torch only for the tensor functions)::

    from medseg.metrics import dice, hd95, MetricSuite, create_metric, evaluate_folder
    hd95(pred, gt, spacing=(0.8, 0.8, 2.5))
    suite = MetricSuite("ife")                     # IFE's table: Con, Dice, JC, F1, HCE, MAE, HD, ASSD, RVD
    suite(pred, gt, prob=prob).values

Conventions (``metrics-policy.md``): per case, then the mean over cases with std, median, count and the
excluded count; empty masks per the policy table (``empty="nan"``, ``compat="ife" | "medpy"`` options);
HD95 pooled (medpy) unless ``hd95_mode="max_directed"`` (MONAI). See ``docs/metrics.md``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medseg.metrics._policy import EmptyMaskError, Policy
from medseg.metrics.distance import SurfaceDistances, surface_distances
from medseg.metrics.functional import (asd, assd, conformity, dice, e_measure, f1_ife, f_measure, hce, hd, hd95, iou,
                                       jaccard, mae, nsd, polyp_mdice, polyp_miou, precision, recall, rvd, s_measure,
                                       soft_dice, specificity, weighted_f_measure)
from medseg.metrics.names import ALIASES, METRIC_SETS, SPECS, MetricSpec, resolve_names
from medseg.metrics.overlap import batch_confusion, batch_dice, confusion_matrix
from medseg.metrics.suite import METRICS, CaseResult, Metric, MetricSuite, create_metric, describe, list_metrics, summarize

__all__ = [
    "ALIASES", "METRICS", "METRIC_SETS", "SPECS", "CaseResult", "EmptyMaskError", "Metric", "MetricSpec",
    "MetricSuite", "Policy", "SurfaceDistances", "asd", "assd", "batch_confusion", "batch_dice", "conformity",
    "confusion_matrix", "create_metric", "describe", "dice", "e_measure", "evaluate_case", "evaluate_folder",
    "f1_ife", "f_measure", "hce", "hd", "hd95", "iou", "jaccard", "list_metrics", "mae", "nsd", "polyp_mdice",
    "polyp_miou", "precision", "recall", "resolve_names", "rvd", "s_measure", "soft_dice", "specificity",
    "summarize", "surface_distances", "weighted_f_measure",
]


def evaluate_case(pred: np.ndarray, gt: np.ndarray, metrics: Sequence[str], num_classes: int,
                  spacing: Sequence[float] | None = None, prob: np.ndarray | None = None,
                  **options: Any) -> dict[str, float]:
    """Metrics of one case from label maps: ``{name: value}``.

    ``pred``/``gt``: label maps (binary: 0/1 with ``num_classes == 1``); ``prob``: optional continuous
    foreground map in [0, 1] for saliency metrics. Multi-class: ``dice_1``, ``dice_2`` ... per class plus
    the mean over the classes present in prediction or GT under the plain name. ``options`` are
    :class:`Policy` fields (``empty``, ``compat``, ``hd95_mode`` ...).
    """
    return MetricSuite(metrics, num_classes=num_classes, **options)(pred, gt, prob=prob, spacing=spacing).values


def evaluate_folder(*args: Any, **kwargs: Any) -> Any:
    """Evaluate a folder of predictions against a folder of GT (see :func:`medseg.metrics.folder.evaluate_folder`)."""
    from medseg.metrics.folder import evaluate_folder as run

    return run(*args, **kwargs)
