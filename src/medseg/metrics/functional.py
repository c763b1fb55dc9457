"""Plain per-case metric functions (``from medseg.metrics import hd95``) and ``create_metric``.

Each function takes two binary masks (bool or 0/1; saliency metrics a map in [0, 1] as ``prob``) and
returns a float under the empty-mask policy of ``metrics-policy.md``; the keyword options are those of
:class:`medseg.metrics.Policy`. The formulas and references are in the docstrings of the
``*_from_counts`` / ``*_from`` functions of :mod:`overlap`, :mod:`distance` and :mod:`saliency`.
"""
from __future__ import annotations

from typing import Any, Sequence

from medseg.metrics.suite import SPECS, MetricSuite, resolve_names
from medseg.registry import Registry

METRICS = Registry("metric")


class Metric:
    """One named metric with fixed options: ``metric(pred, gt, prob=None, spacing=None) -> float``."""

    def __init__(self, name: str, num_classes: int = 1, **options: Any) -> None:
        (self.name,) = resolve_names(name)
        self.spec = SPECS[self.name]
        self.higher_is_better = self.spec.higher_is_better
        self._suite = MetricSuite([self.name], num_classes=num_classes, **options)

    def __call__(self, pred: Any, gt: Any, prob: Any = None, spacing: Sequence[float] | float | None = None) -> float:
        return self._suite(pred, gt, prob=prob, spacing=spacing).values[self.name]

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {self._suite.policy})"


def _register(name: str) -> None:
    def factory(num_classes: int = 1, **options: Any) -> Metric:
        return Metric(name, num_classes=num_classes, **options)

    factory.__doc__ = SPECS[name].summary
    factory.__name__ = name
    METRICS.register(name)(factory)


for _name in SPECS:
    _register(_name)


def create_metric(name: str, **options: Any) -> Metric:
    """A metric by name or alias, e.g. ``create_metric("hd95", hd95_mode="max_directed")``."""
    from medseg.metrics.suite import ALIASES

    return METRICS.create(ALIASES.get(name.lower(), name), **options)


def list_metrics() -> dict[str, str]:
    """Name -> one-line description of every registered metric."""
    return METRICS.describe()


def _value(name: str, pred: Any, gt: Any, prob: Any = None, spacing: Any = None, **options: Any) -> float:
    return MetricSuite([name], **options)(pred, gt, prob=prob, spacing=spacing).values[name]


def dice(pred: Any, gt: Any, **options: Any) -> float:
    """Dice ``2TP/(2TP+FP+FN)``; both empty -> 1 (see ``overlap.dice_from_counts``)."""
    return _value("dice", pred, gt, **options)


def iou(pred: Any, gt: Any, **options: Any) -> float:
    """IoU / Jaccard ``TP/(TP+FP+FN)``; both empty -> 1."""
    return _value("iou", pred, gt, **options)


jaccard = iou


def precision(pred: Any, gt: Any, **options: Any) -> float:
    """Precision ``TP/(TP+FP)``; empty prediction -> 1 if GT empty too, else 0."""
    return _value("precision", pred, gt, **options)


def recall(pred: Any, gt: Any, **options: Any) -> float:
    """Recall ``TP/(TP+FN)``; empty GT -> 1 if prediction empty too, else 0."""
    return _value("recall", pred, gt, **options)


def specificity(pred: Any, gt: Any, **options: Any) -> float:
    """Specificity ``TN/(TN+FP)``."""
    return _value("specificity", pred, gt, **options)


def f1_ife(pred: Any, gt: Any, **options: Any) -> float:
    """IFE's F1 ``1.3·Pr·Re/(0.3·Pr + Re + 1e-4)`` (Achanta F-beta, beta^2 = 0.3)."""
    return _value("f1_ife", pred, gt, **options)


def conformity(pred: Any, gt: Any, **options: Any) -> float:
    """Conformity ``1 - (FP+FN)/TP`` (Chang et al. 2009)."""
    return _value("conformity", pred, gt, **options)


def rvd(pred: Any, gt: Any, **options: Any) -> float:
    """Relative volume difference ``(|P|-|G|)/|G|`` (signed, medpy ``ravd``)."""
    return _value("rvd", pred, gt, **options)


def hd(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """Hausdorff distance between the surfaces, in physical units (``spacing``)."""
    return _value("hd", pred, gt, spacing=spacing, **options)


def hd95(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """95th-percentile Hausdorff distance (``hd95_mode="pooled"`` medpy / ``"max_directed"`` MONAI)."""
    return _value("hd95", pred, gt, spacing=spacing, **options)


def asd(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """Average surface distance from the prediction surface to the GT surface."""
    return _value("asd", pred, gt, spacing=spacing, **options)


def assd(pred: Any, gt: Any, spacing: Any = None, **options: Any) -> float:
    """Average symmetric surface distance (``assd_mode="pooled"`` medpy 0.5 / ``"mean_of_directed"``)."""
    return _value("assd", pred, gt, spacing=spacing, **options)


def nsd(pred: Any, gt: Any, spacing: Any = None, nsd_tolerance: float = 1.0, **options: Any) -> float:
    """Normalised surface Dice at ``nsd_tolerance`` (physical units)."""
    return _value("nsd", pred, gt, spacing=spacing, nsd_tolerance=nsd_tolerance, **options)


def mae(prob: Any, gt: Any, **options: Any) -> float:
    """Mean absolute error of the (min-max normalised) map."""
    return _value("mae", None, gt, prob=prob, **options)


def s_measure(prob: Any, gt: Any, **options: Any) -> float:
    """Structure measure S-alpha (Fan et al. 2017)."""
    return _value("s_measure", None, gt, prob=prob, **options)


def e_measure(prob: Any, gt: Any, kind: str = "max", **options: Any) -> float:
    """E-measure of one image: ``kind`` = ``max``/``mean`` over its 256-threshold curve or ``adp``."""
    return _value(f"e_measure_{kind}", None, gt, prob=prob, **options)


def f_measure(prob: Any, gt: Any, kind: str = "max", **options: Any) -> float:
    """F-beta (beta^2 = 0.3) of one image: ``kind`` = ``max``/``mean``/``adp``."""
    return _value(f"f_measure_{kind}", None, gt, prob=prob, **options)


def weighted_f_measure(prob: Any, gt: Any, **options: Any) -> float:
    """Weighted F-measure (Margolin et al. 2014)."""
    return _value("wf_measure", None, gt, prob=prob, **options)


def polyp_mdice(prob: Any, gt: Any, **options: Any) -> float:
    """Polyp-benchmark mDice of one image: Dice averaged over 256 thresholds."""
    return _value("polyp_mdice", None, gt, prob=prob, **options)


def polyp_miou(prob: Any, gt: Any, **options: Any) -> float:
    """Polyp-benchmark mIoU of one image: IoU averaged over 256 thresholds."""
    return _value("polyp_miou", None, gt, prob=prob, **options)


def hce(pred: Any, gt: Any, **options: Any) -> float:
    """Human correction effort (DIS definition; ``hce_mode="ife64"`` for IFE's variant)."""
    return _value("hce", pred, gt, **options)
