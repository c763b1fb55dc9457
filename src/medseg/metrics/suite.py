"""``MetricSuite``: many metrics of one case from shared intermediates, and their aggregation.

One confusion count serves every overlap metric, one surface-distance pass (per class) serves HD,
HD95, ASD, ASSD and NSD, one 2 x 256 histogram serves every threshold curve. Aggregation follows
``metrics-policy.md``: per case, then mean over cases, with std, median, count and the number of
excluded (NaN) cases side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from medseg.metrics import distance as dist
from medseg.metrics import overlap as ov
from medseg.metrics import saliency as sal
from medseg.metrics._policy import Policy, as_policy, check_pair, check_prob
from medseg.metrics.effort import hce as hce_fn


@dataclass(frozen=True)
class MetricSpec:
    """What a metric needs and how it reads: ``group`` (overlap/distance/map/hce), direction, curve."""

    name: str
    group: str
    higher_is_better: bool
    summary: str
    curve: str | None = None  # "f" or "e": the dataset value is the max of the mean curve


SPECS: dict[str, MetricSpec] = {s.name: s for s in [
    MetricSpec("dice", "overlap", True, "Dice 2TP/(2TP+FP+FN)"),
    MetricSpec("iou", "overlap", True, "IoU / Jaccard TP/(TP+FP+FN)"),
    MetricSpec("precision", "overlap", True, "precision TP/(TP+FP)"),
    MetricSpec("recall", "overlap", True, "recall / sensitivity TP/(TP+FN)"),
    MetricSpec("specificity", "overlap", True, "specificity TN/(TN+FP)"),
    MetricSpec("f1_ife", "overlap", True, "IFE's F1: Achanta F-beta (beta^2=0.3) on the binary mask"),
    MetricSpec("conformity", "overlap", True, "conformity 1-(FP+FN)/TP (Chang 2009)"),
    MetricSpec("rvd", "overlap", False, "relative volume difference (|P|-|G|)/|G| (signed)"),
    MetricSpec("hd", "distance", False, "Hausdorff distance (physical units)"),
    MetricSpec("hd95", "distance", False, "95th-percentile Hausdorff distance (pooled, medpy; or max_directed)"),
    MetricSpec("asd", "distance", False, "average surface distance, prediction -> GT"),
    MetricSpec("assd", "distance", False, "average symmetric surface distance"),
    MetricSpec("nsd", "distance", True, "normalised surface Dice at nsd_tolerance"),
    MetricSpec("mae", "map", False, "mean absolute error of the map"),
    MetricSpec("s_measure", "map", True, "structure measure S-alpha (Fan 2017)"),
    MetricSpec("wf_measure", "map", True, "weighted F-measure (Margolin 2014)"),
    MetricSpec("f_measure_max", "map", True, "max F-beta over 256 thresholds (beta^2=0.3)", curve="f"),
    MetricSpec("f_measure_mean", "map", True, "mean F-beta over 256 thresholds"),
    MetricSpec("f_measure_adp", "map", True, "F-beta at the adaptive threshold 2*mean"),
    MetricSpec("e_measure_max", "map", True, "max E-measure over 256 thresholds (Fan 2018)", curve="e"),
    MetricSpec("e_measure_mean", "map", True, "mean E-measure over 256 thresholds"),
    MetricSpec("e_measure_adp", "map", True, "E-measure at the adaptive threshold 2*mean"),
    MetricSpec("polyp_mdice", "map", True, "polyp-benchmark mDice: Dice averaged over 256 thresholds"),
    MetricSpec("polyp_miou", "map", True, "polyp-benchmark mIoU: IoU averaged over 256 thresholds"),
    MetricSpec("soft_dice", "map", True, "soft Dice of the map, (2*sum(s*g)+1e-5)/(sum(s)+sum(g)+1e-5) (CHNet eval.py)"),
    MetricSpec("hce", "hce", False, "human correction effort (DIS), raw count"),
]}

ALIASES = {"dsc": "dice", "dc": "dice", "jaccard": "iou", "jc": "iou", "sensitivity": "recall", "tpr": "recall",
           "ppv": "precision", "tnr": "specificity", "ravd": "rvd", "surface_dice": "nsd", "sm": "s_measure",
           "smeasure": "s_measure", "wfm": "wf_measure", "weighted_f": "wf_measure", "mdice": "polyp_mdice",
           "miou": "polyp_miou", "fm_max": "f_measure_max", "em_max": "e_measure_max"}

METRIC_SETS: dict[str, list[str]] = {
    # IFE tables: Con, Dice, JC, F1, HCE, MAE, HD, ASD (= ASSD), RVD
    "ife": ["conformity", "dice", "iou", "f1_ife", "hce", "mae", "hd", "assd", "rvd"],
    # CHNet / PraNet polyp tables plus the SOD set, with HCE
    "chnet": ["polyp_mdice", "polyp_miou", "s_measure", "e_measure_max", "e_measure_mean", "e_measure_adp",
              "wf_measure", "f_measure_max", "f_measure_mean", "f_measure_adp", "mae", "hce"],
    "overlap": ["dice", "iou", "precision", "recall", "specificity"],
    "distance": ["hd", "hd95", "asd", "assd", "nsd"],
    "volume": ["dice", "iou", "hd95", "assd", "nsd", "rvd"],
}


def resolve_names(metrics: str | Iterable[str]) -> list[str]:
    """Canonical metric names from names, aliases and set names (``"ife"``, ``"chnet"`` ...), in order."""
    from medseg.registry import unknown_name_message

    items = [metrics] if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for item in items:
        for part in str(item).replace(",", " ").split():
            key = part.lower()
            names = METRIC_SETS.get(key) or [ALIASES.get(key, key)]
            for name in names:
                if name not in SPECS:
                    valid = sorted([*SPECS, *ALIASES, *METRIC_SETS])
                    raise ValueError(unknown_name_message("metric", part, valid))
                if name not in out:
                    out.append(name)
    return out


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
        groups = {SPECS[n].group for n in self.names}
        if num_classes > 1 and groups & {"map", "hce"}:
            bad = [n for n in self.names if SPECS[n].group in ("map", "hce")]
            raise ValueError(f"metrics {bad} are defined for a binary foreground map; use num_classes=1")
        self.groups = groups

    # ------------------------------------------------------------------------------------ per case
    def __call__(self, pred: Any, gt: Any, prob: Any = None, spacing: Sequence[float] | float | None = None,
                 case: str = "") -> CaseResult:
        """Metrics of one case. ``pred``: mask/label map (None: ``prob > threshold``); ``prob``: the
        continuous foreground map in [0, 1] (or uint8) for saliency metrics."""
        if self.num_classes == 1:
            return self._binary(pred, gt, prob, spacing, case)
        return self._multiclass(pred, gt, spacing, case)

    def _binary(self, pred: Any, gt: Any, prob: Any, spacing: Any, case: str) -> CaseResult:
        gt_np = as_binary(gt, "ground truth", case)
        prob_np: np.ndarray | sal.ByteMap | None = None
        if prob is not None:
            raw = _to_numpy(prob)
            # an 8-bit map keeps its bytes: every map metric then works on 256 values (saliency.ByteMap)
            prob_np = sal.ByteMap(raw) if raw.dtype == np.uint8 else check_prob(raw, case)
            check_pair(raw, gt_np, case)
        if pred is None:
            if prob_np is None:
                raise ValueError(f"case '{case}': give a prediction mask or a probability map")
            # IFE's test protocol min-max normalises each map before thresholding (methods.md §2.5)
            if isinstance(prob_np, sal.ByteMap):
                source = prob_np.normalized() if self.policy.compat == "ife" else prob_np
                pred_np = source.above(self.policy.threshold)
            else:
                source = sal.normalize_map(prob_np) if self.policy.compat == "ife" else prob_np
                pred_np = source > self.policy.threshold
        else:
            pred_np = as_binary(pred, "prediction", case)
        check_pair(pred_np, gt_np, case)
        values: dict[str, float] = {}
        curves: dict[str, np.ndarray] = {}
        pol = self.policy
        if "overlap" in self.groups:
            counts = _counts(pred, gt, pred_np, gt_np)
            for name in self._of("overlap"):
                values[name] = float(ov.OVERLAP_FUNCTIONS[name](counts, pol))
        if "distance" in self.groups:
            sd = dist.surface_distances(pred_np, gt_np, spacing, case)
            for name in self._of("distance"):
                values[name] = dist.DISTANCE_FUNCTIONS[name](sd, pol)
        if "map" in self.groups:
            values.update(self._map_metrics(pred_np, gt_np, prob_np, curves, case))
        if "hce" in self.groups:
            values["hce"] = hce_fn(pred_np, gt_np, mode=pol.hce)
        return CaseResult(case, {n: values[n] for n in self.names}, curves)

    def _map_metrics(self, pred: np.ndarray, gt: np.ndarray, prob: np.ndarray | sal.ByteMap | None,
                     curves: dict[str, np.ndarray], case: str) -> dict[str, float]:
        names = self._of("map")
        need_2d = {"s_measure", "wf_measure"} & set(names)
        if need_2d and gt.ndim != 2:
            raise ValueError(f"case '{case}': {sorted(need_2d)} are 2-D metrics, got shape {gt.shape}")
        if isinstance(prob, sal.ByteMap):
            return self._byte_map_metrics(names, pred, gt, prob.normalized() if self.policy.minmax else prob, curves)
        out: dict[str, float] = {}
        if prob is None:
            prob = pred.astype(np.float64)
        elif self.policy.minmax:
            prob = sal.normalize_map(prob)
        if "mae" in names:
            out["mae"] = sal.mae_ife(pred, gt) if self.policy.compat == "ife" else sal.mae(prob, gt)
        if "s_measure" in names:
            out["s_measure"] = sal.s_measure(prob, gt)
        if "wf_measure" in names:
            out["wf_measure"] = sal.weighted_f_measure(prob, gt)
        if "soft_dice" in names:
            out["soft_dice"] = sal.soft_dice(prob, gt)
        curve_names = [n for n in names if n.startswith(("f_measure", "e_measure", "polyp"))]
        if curve_names:
            self._curves(curve_names, sal.map_stats(prob, gt), curves, out)
        return out

    def _byte_map_metrics(self, names: list[str], pred: np.ndarray, gt: np.ndarray, bm: sal.ByteMap,
                          curves: dict[str, np.ndarray]) -> dict[str, float]:
        """The map metrics of an 8-bit map from its (byte, GT) histograms (equal to the float path)."""
        blocks = None
        if "s_measure" in names:  # the S-measure's four blocks come with the image's histograms
            h_fg, h_all, blocks = sal.quadrant_histograms(bm.data, gt)
        else:
            h_fg, h_all = sal.byte_histograms(bm.data, gt)
        out: dict[str, float] = {}
        if "mae" in names:
            out["mae"] = sal.mae_ife(pred, gt) if self.policy.compat == "ife" else sal.mae_bytes(bm, h_fg, h_all)
        if "s_measure" in names:
            out["s_measure"] = sal.s_measure_bytes(bm, gt, h_fg, h_all, blocks)
        if "wf_measure" in names:
            out["wf_measure"] = sal.weighted_f_measure(bm, gt)
        if "soft_dice" in names:
            out["soft_dice"] = float((2 * np.dot(h_fg, bm.table) + 1e-5) / (np.dot(h_all, bm.table) + h_fg.sum() + 1e-5))
        curve_names = [n for n in names if n.startswith(("f_measure", "e_measure", "polyp"))]
        if curve_names:
            self._curves(curve_names, sal.map_stats_bytes(bm, h_fg, h_all), curves, out)
        return out

    @staticmethod
    def _curves(curve_names: list[str], st: sal.MapStats, curves: dict[str, np.ndarray], out: dict[str, float]) -> None:
        if any(n.startswith("f_measure_") and n != "f_measure_adp" for n in curve_names):
            curves["f"] = sal.f_measure_curve(st)
        if any(n.startswith("e_measure_") and n != "e_measure_adp" for n in curve_names):
            curves["e"] = sal.e_measure_curve(st)
        for name in curve_names:
            out[name] = _curve_value(name, st, curves)

    def _multiclass(self, pred: Any, gt: Any, spacing: Any, case: str) -> CaseResult:
        k = self.num_classes
        classes = list(range(1, k))
        if pred is None:
            raise ValueError(f"case '{case}': a multi-class case needs a predicted label map")
        pred_np, gt_np = _to_numpy(pred), _to_numpy(gt)
        check_pair(pred_np, gt_np, case)
        matrix = ov.confusion_matrix(pred if _is_tensor(pred) else pred_np, gt if _is_tensor(gt) else gt_np, k)
        counts = ov.class_counts(matrix, classes)
        present = (counts[:, 0] + counts[:, 1] + counts[:, 2]) > 0
        per_class: dict[str, np.ndarray] = {}
        for name in self._of("overlap"):  # classes absent from both are not applicable: never evaluated
            per_class[name] = np.full(len(classes), np.nan)
            if present.any():
                per_class[name][present] = ov.OVERLAP_FUNCTIONS[name](counts[present], self.policy)
        if "distance" in self.groups:
            for name in self._of("distance"):
                per_class[name] = np.full(len(classes), np.nan)
            for i, c in enumerate(classes):
                if present[i]:
                    sd = dist.surface_distances(pred_np == c, gt_np == c, spacing, case)
                    for name in self._of("distance"):
                        per_class[name][i] = dist.DISTANCE_FUNCTIONS[name](sd, self.policy)
        values: dict[str, float] = {}
        for name in self.names:
            vals = np.where(present, per_class[name], np.nan)
            finite = vals[~np.isnan(vals)]
            values[name] = float(finite.mean()) if finite.size else float("nan")
            for c, v in zip(classes, vals):
                values[f"{name}_{c}"] = float(v)
        return CaseResult(case, values)

    def _of(self, group: str) -> list[str]:
        return [n for n in self.names if SPECS[n].group == group]

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


# ---------------------------------------------------------------------------------------- helpers
def _curve_value(name: str, st: sal.MapStats, curves: dict[str, np.ndarray]) -> float:
    if name == "f_measure_adp":
        return sal.f_measure_adaptive(st)
    if name == "e_measure_adp":
        return sal.e_measure_adaptive(st)
    if name == "polyp_mdice":
        return float(sal.polyp_dice_curve(st).mean())
    if name == "polyp_miou":
        return float(sal.polyp_iou_curve(st).mean())
    curve = curves["f" if name.startswith("f_") else "e"]
    return float(curve.max() if name.endswith("_max") else curve.mean())


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _counts(pred: Any, gt: Any, pred_np: np.ndarray, gt_np: np.ndarray) -> np.ndarray:
    """Binary TP/FP/FN/TN: on the tensors' device when both inputs are tensors, else NumPy."""
    if _is_tensor(pred) and _is_tensor(gt):
        matrix = ov.confusion_matrix(pred.long(), gt.long(), 2)
        return ov.class_counts(matrix, [1])[0]
    return ov.binary_counts(pred_np, gt_np)


def as_binary(mask: Any, what: str, case: str = "") -> np.ndarray:
    """A boolean mask from bool / 0-1 arrays; any other value is an error naming the case and values."""
    arr = _to_numpy(mask)
    if arr.dtype == bool:
        return arr
    if arr.size and (arr.min() < 0 or arr.max() > 1 or (arr.dtype.kind == "f" and not np.all((arr == 0) | (arr == 1)))):
        found = np.unique(arr)
        shown = ", ".join(f"{v:g}" for v in found[:8]) + (" ..." if found.size > 8 else "")
        where = f"case '{case}': " if case else ""
        raise ValueError(f"{where}the {what} is not binary (values {shown}); binary metrics need 0/1 masks: "
                         f"binarise it, or set num_classes to the number of labels for a label map")
    return arr.astype(bool)
