"""``MetricSuite``: many metrics of one case from shared inputs, their aggregation, and ``create_metric``.

The suite sits on the per-case functions of :mod:`medseg.metrics.functional`: it checks a case once
(:func:`~medseg.metrics.functional.binary_case`), builds each kind's shared input once
(:func:`~medseg.metrics.functional.shared_input`: one confusion count serves every overlap metric, one
surface-distance pass, per class, serves HD, HD95, ASD, ASSD and NSD, one 2 x 256 histogram serves
every threshold curve) and applies the kernels the name table (:mod:`medseg.metrics.names`) lists.
Aggregation follows ``metrics-policy.md``: per case, then mean over cases, with std, median, count and
the number of excluded (NaN) cases side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from medseg.metrics import distance as dist
from medseg.metrics import overlap as ov
from medseg.metrics._policy import Policy, as_policy, check_pair
from medseg.metrics.functional import binary_case, is_tensor, shared_input
from medseg.metrics.functional import to_numpy as _to_numpy
from medseg.metrics.names import (ALIASES, DISTANCE_FUNCTIONS, METRIC_SETS, OVERLAP_FUNCTIONS, SPECS,  # noqa: F401
                                  MetricSpec, resolve_names)
from medseg.registry import Registry

CROP_BY_FIND_OBJECTS = 12  # classes present from which one find_objects pass per map beats two masks per class


@dataclass
class CaseResult:
    """Per-case values (``dice``, ``dice_1`` ...) and the threshold curves kept for dataset aggregation."""

    case: str
    values: dict[str, float]
    curves: dict[str, np.ndarray] = field(default_factory=dict)


class MetricSuite:
    """Compute a list of metrics per case from shared intermediates; aggregate per the policy.

    Example::

        suite = MetricSuite(["dice", "hd95", "nsd"], nsd_tolerance=2.0)
        result = suite(pred_mask, gt_mask, spacing=(0.8, 0.8, 2.5))     # result.values["hd95"]
        summary = suite.summarize([result, ...])

    Args:
        metrics: names, aliases or set names (``"ife"``, ``"chnet"``, ``"distance"`` ...).
        num_classes: 1 for binary (foreground label 1), else K labels with background 0; multi-class
            values are per class (``dice_1`` ...) plus the mean over the classes present in P or G.
        policy / options: the :class:`Policy` (``empty``, ``compat``, ``hd95_mode``, ``assd_mode``,
            ``hce_mode``, ``nsd_tolerance``, ``threshold``, ``minmax``).
    """

    def __init__(self, metrics: str | Iterable[str] = ("dice",), num_classes: int = 1,
                 policy: Policy | None = None, **options: Any) -> None:
        self.names = resolve_names(metrics)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1 = binary), got {num_classes}")
        self.num_classes = num_classes
        self.policy = as_policy(policy, **options)
        self.groups = {SPECS[n].kind for n in self.names}
        if num_classes > 1 and self.groups & {"map", "mask"}:
            bad = [n for n in self.names if SPECS[n].kind in ("map", "mask")]
            raise ValueError(f"metrics {bad} are defined for a binary foreground map; use num_classes=1")
        self._plan = [(n, SPECS[n].kind, SPECS[n].fn) for n in self.names]
        self._blocks = "s_measure" in self.names  # the S-measure's block histograms come with the image's

    # ------------------------------------------------------------------------------------ per case
    def __call__(self, pred: Any, gt: Any, prob: Any = None, spacing: Sequence[float] | float | None = None,
                 case: str = "") -> CaseResult:
        """Metrics of one case. ``pred``: mask/label map (None: ``prob > threshold``); ``prob``: the
        continuous foreground map in [0, 1] (or uint8) for saliency metrics."""
        if self.num_classes == 1:
            return self._binary(pred, gt, prob, spacing, case)
        return self._multiclass(pred, gt, spacing, case)

    def _binary(self, pred: Any, gt: Any, prob: Any, spacing: Any, case: str) -> CaseResult:
        c = binary_case(pred, gt, prob, spacing, self.policy, case)
        shared: dict[str, Any] = {}
        values: dict[str, float] = {}
        for name, kind, kernel in self._plan:
            if kind not in shared:
                shared[kind] = shared_input(kind, c, self.policy, blocks=self._blocks)
            values[name] = float(kernel(shared[kind], self.policy))
        curves = shared["map"].curves() if "map" in shared else {}
        return CaseResult(case, values, curves)

    def _multiclass(self, pred: Any, gt: Any, spacing: Any, case: str) -> CaseResult:
        k = self.num_classes
        classes = list(range(1, k))
        if pred is None:
            raise ValueError(f"case '{case}': a multi-class case needs a predicted label map")
        pred_np, gt_np = _to_numpy(pred), _to_numpy(gt)
        check_pair(pred_np, gt_np, case)
        matrix = ov.confusion_matrix(pred if is_tensor(pred) else pred_np, gt if is_tensor(gt) else gt_np, k)
        counts = ov.class_counts(matrix, classes)
        present = (counts[:, 0] + counts[:, 1] + counts[:, 2]) > 0
        per_class: dict[str, np.ndarray] = {}
        for name in self._of("overlap"):  # classes absent from both are not applicable: never evaluated
            per_class[name] = np.full(len(classes), np.nan)
            if present.any():
                per_class[name][present] = SPECS[name].fn(counts[present], self.policy)
        if "distance" in self.groups:
            for name in self._of("distance"):
                per_class[name] = np.full(len(classes), np.nan)
            crops = [None] * len(classes)
            if np.count_nonzero(present) >= CROP_BY_FIND_OBJECTS:  # one pass per map, not two masks per class
                crops = dist.label_crops(pred_np, gt_np, classes)
            for i, c in enumerate(classes):
                if present[i]:
                    # a crop holds the class in both maps (so the empty-mask diagonal is never needed)
                    crop = crops[i] if crops[i] is not None else ...
                    sd = dist.surface_distances(pred_np[crop] == c, gt_np[crop] == c, spacing, case)
                    for name in self._of("distance"):
                        per_class[name][i] = SPECS[name].fn(sd, self.policy)
        values: dict[str, float] = {}
        for name in self.names:
            vals = np.where(present, per_class[name], np.nan)
            finite = vals[~np.isnan(vals)]
            values[name] = float(finite.mean()) if finite.size else float("nan")
            for c, v in zip(classes, vals):
                values[f"{name}_{c}"] = float(v)
        return CaseResult(case, values)

    def _of(self, kind: str) -> list[str]:
        return [n for n in self.names if SPECS[n].kind == kind]

    # --------------------------------------------------------------------------------- aggregation
    def summarize(self, results: Sequence[CaseResult]) -> dict[str, Any]:
        """Per value column: mean, std, median over defined cases, ``count`` and ``excluded`` (NaN).

        Curve metrics (``f_measure_max``, ``e_measure_max``) add ``dataset``: the max of the mean curve
        over images (PySODMetrics / PraNet convention), which is what papers report.
        """
        return summarize(results, policy=self.policy)


def summarize(results: Sequence[CaseResult], policy: Policy | None = None) -> dict[str, Any]:
    """Aggregate :class:`CaseResult` rows (see :meth:`MetricSuite.summarize`)."""
    keys: list[str] = []
    for r in results:
        keys += [k for k in r.values if k not in keys]
    metrics: dict[str, Any] = {}
    for key in keys:
        values = np.array([r.values.get(key, np.nan) for r in results], dtype=np.float64)
        metrics[key] = describe(values)
        spec = SPECS.get(key)
        if spec is not None and spec.curve:
            stacked = [r.curves[spec.curve] for r in results if spec.curve in r.curves]
            if stacked:
                metrics[key]["dataset"] = float(np.mean(np.stack(stacked), axis=0).max())
    out: dict[str, Any] = {"cases": len(results), "metrics": metrics}
    if policy is not None:
        out["policy"] = policy.describe()
    return out


def describe(values: np.ndarray) -> dict[str, Any]:
    """mean, std (ddof=1), median over the finite values, their count and the excluded count."""
    finite = values[np.isfinite(values)]
    return {"mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "median": float(np.median(finite)) if finite.size else float("nan"),
            "count": int(finite.size), "excluded": int(values.size - finite.size)}


# --------------------------------------------------------------------------------- registry
class Metric:
    """One named metric with fixed options: ``metric(pred, gt, prob=None, spacing=None) -> float``
    (a one-metric :class:`MetricSuite`; multi-class: the mean over the classes present)."""

    def __init__(self, name: str, num_classes: int = 1, **options: Any) -> None:
        (self.name,) = resolve_names(name)
        self.spec = SPECS[self.name]
        self.higher_is_better = self.spec.higher_is_better
        self._suite = MetricSuite([self.name], num_classes=num_classes, **options)

    def __call__(self, pred: Any, gt: Any, prob: Any = None, spacing: Sequence[float] | float | None = None) -> float:
        return self._suite(pred, gt, prob=prob, spacing=spacing).values[self.name]

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {self._suite.policy})"


METRICS = Registry("metric")


def _register(spec: MetricSpec) -> None:
    def factory(num_classes: int = 1, **options: Any) -> Metric:
        return Metric(spec.name, num_classes=num_classes, **options)

    factory.__doc__ = spec.summary
    factory.__name__ = spec.name
    METRICS.register(spec.name, aliases=spec.aliases)(factory)


for _spec in SPECS.values():
    _register(_spec)


def create_metric(name: str, **options: Any) -> Metric:
    """A metric by name or alias, e.g. ``create_metric("hd95", hd95_mode="max_directed")``."""
    return METRICS.create(name, **options)


def list_metrics() -> dict[str, str]:
    """Name -> one-line description of every metric (aliases left out), sorted by name."""
    return {name: doc for name, doc in METRICS.describe().items() if name in SPECS}
