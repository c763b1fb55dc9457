"""The one table of metric names: each metric once, with its kind, direction, kernel, aliases and sets.

Everything else that names metrics is derived from :data:`TABLE`: :data:`SPECS`, :data:`ALIASES`,
:data:`METRIC_SETS`, the per-kind kernel tables (:data:`OVERLAP_FUNCTIONS` ...), the ``create_metric``
registry (:mod:`medseg.metrics.suite`) and the list in ``docs/metrics.md`` (checked by
``tests/metrics/test_metrics_names.py``).

A metric's ``kind`` names the shared input its kernel reads (built by
:func:`medseg.metrics.functional.shared_input`, once per case for every metric of that kind):

- ``overlap``: the counts ``[TP, FP, FN, TN]`` (:mod:`overlap`; rows of counts for multi-class),
- ``distance``: the two directed surface-distance sets, :class:`~medseg.metrics.distance.SurfaceDistances`,
- ``map``: the continuous map with its histograms and threshold curves, :class:`~medseg.metrics.functional.MapCase`,
- ``mask``: the boolean ``(pred, gt)`` pair (HCE).

A kernel is ``fn(shared_input, policy) -> value``. ``sets`` gives each named set the metric belongs to and
its column position there (the published tables' order).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from medseg.metrics import distance as dist
from medseg.metrics import functional as fn
from medseg.metrics import overlap as ov

KINDS = ("overlap", "distance", "map", "mask")
UP, DOWN = True, False  # higher / lower is better


@dataclass(frozen=True)
class MetricSpec:
    """One metric: name, kind (its shared input), direction, one-line summary, kernel, aliases, sets, curve."""

    name: str
    kind: str
    higher_is_better: bool
    summary: str
    fn: Callable[[Any, Any], Any]
    aliases: tuple[str, ...] = ()
    sets: Mapping[str, int] = field(default_factory=dict)  # set name -> column position (1-based)
    curve: str | None = None  # "f" or "e": the dataset value is the max of the mean curve

    @property
    def group(self) -> str:
        """The kind under its former name (``regions.py`` and older callers read ``group``)."""
        return self.kind


#: named sets, in the order ``medseg metrics --list`` shows them; members come from the rows below
SET_SUMMARIES: dict[str, str] = {
    "ife": "IFE tables: Con, Dice, JC, F1, HCE, MAE, HD, ASD (= ASSD), RVD",
    "chnet": "CHNet / PraNet polyp tables plus the SOD set, with HCE",
    "overlap": "confusion-count metrics",
    "distance": "surface-distance metrics",
    "volume": "3-D segmentation tables: overlap, distances, volume",
}

TABLE: tuple[MetricSpec, ...] = (
    MetricSpec("dice", "overlap", UP, "Dice 2TP/(2TP+FP+FN)", ov.dice_from_counts, ("dsc", "dc"),
               {"ife": 2, "overlap": 1, "volume": 1}),
    MetricSpec("iou", "overlap", UP, "IoU / Jaccard TP/(TP+FP+FN)", ov.iou_from_counts, ("jaccard", "jc"),
               {"ife": 3, "overlap": 2, "volume": 2}),
    MetricSpec("precision", "overlap", UP, "precision TP/(TP+FP)", ov.precision_from_counts, ("ppv",),
               {"overlap": 3}),
    MetricSpec("recall", "overlap", UP, "recall / sensitivity TP/(TP+FN)", ov.recall_from_counts,
               ("sensitivity", "tpr"), {"overlap": 4}),
    MetricSpec("specificity", "overlap", UP, "specificity TN/(TN+FP)", ov.specificity_from_counts, ("tnr",),
               {"overlap": 5}),
    MetricSpec("f1_ife", "overlap", UP, "IFE's F1: Achanta F-beta (beta^2=0.3) on the binary mask",
               ov.f1_ife_from_counts, (), {"ife": 4}),
    MetricSpec("conformity", "overlap", UP, "conformity 1-(FP+FN)/TP (Chang 2009)", ov.conformity_from_counts, (),
               {"ife": 1}),
    MetricSpec("rvd", "overlap", DOWN, "relative volume difference (|P|-|G|)/|G| (signed)", ov.rvd_from_counts,
               ("ravd",), {"ife": 9, "volume": 6}),
    MetricSpec("hd", "distance", DOWN, "Hausdorff distance (physical units)", dist.hd_from, (),
               {"ife": 7, "distance": 1}),
    MetricSpec("hd95", "distance", DOWN, "95th-percentile Hausdorff distance (pooled, medpy; or max_directed)",
               dist.hd95_from, (), {"distance": 2, "volume": 3}),
    MetricSpec("asd", "distance", DOWN, "average surface distance, prediction -> GT", dist.asd_from, (),
               {"distance": 3}),
    MetricSpec("assd", "distance", DOWN, "average symmetric surface distance", dist.assd_from, (),
               {"ife": 8, "distance": 4, "volume": 4}),
    MetricSpec("nsd", "distance", UP, "normalised surface Dice at nsd_tolerance", dist.nsd_from, ("surface_dice",),
               {"distance": 5, "volume": 5}),
    MetricSpec("mae", "map", DOWN, "mean absolute error of the map", fn.mae_of, (), {"ife": 6, "chnet": 11}),
    MetricSpec("s_measure", "map", UP, "structure measure S-alpha (Fan 2017)", fn.s_measure_of, ("sm", "smeasure"),
               {"chnet": 3}),
    MetricSpec("wf_measure", "map", UP, "weighted F-measure (Margolin 2014)", fn.wf_measure_of,
               ("wfm", "weighted_f"), {"chnet": 7}),
    MetricSpec("f_measure_max", "map", UP, "max F-beta over 256 thresholds (beta^2=0.3)", fn.f_measure_max_of,
               ("fm_max",), {"chnet": 8}, curve="f"),
    MetricSpec("f_measure_mean", "map", UP, "mean F-beta over 256 thresholds", fn.f_measure_mean_of, (),
               {"chnet": 9}),
    MetricSpec("f_measure_adp", "map", UP, "F-beta at the adaptive threshold 2*mean", fn.f_measure_adp_of, (),
               {"chnet": 10}),
    MetricSpec("e_measure_max", "map", UP, "max E-measure over 256 thresholds (Fan 2018)", fn.e_measure_max_of,
               ("em_max",), {"chnet": 4}, curve="e"),
    MetricSpec("e_measure_mean", "map", UP, "mean E-measure over 256 thresholds", fn.e_measure_mean_of, (),
               {"chnet": 5}),
    MetricSpec("e_measure_adp", "map", UP, "E-measure at the adaptive threshold 2*mean", fn.e_measure_adp_of, (),
               {"chnet": 6}),
    MetricSpec("polyp_mdice", "map", UP, "polyp-benchmark mDice: Dice averaged over 256 thresholds",
               fn.polyp_mdice_of, ("mdice",), {"chnet": 1}),
    MetricSpec("polyp_miou", "map", UP, "polyp-benchmark mIoU: IoU averaged over 256 thresholds", fn.polyp_miou_of,
               ("miou",), {"chnet": 2}),
    MetricSpec("soft_dice", "map", UP,
               "soft Dice of the map, (2*sum(s*g)+1e-5)/(sum(s)+sum(g)+1e-5) (CHNet eval.py)", fn.soft_dice_of),
    MetricSpec("hce", "mask", DOWN, "human correction effort (DIS), raw count", fn.hce_of, (),
               {"ife": 5, "chnet": 12}),
)


# ---------------------------------------------------------------------------------- derived views
def derive(table: Iterable[MetricSpec], set_names: Iterable[str]) -> tuple[dict[str, MetricSpec], dict[str, str],
                                                                         dict[str, list[str]]]:
    """SPECS, ALIASES and METRIC_SETS of a table; a clash (a name or alias twice, an unknown kind or set, two
    metrics at one set position, an empty set) is an error, at import time for :data:`TABLE`."""
    specs: dict[str, MetricSpec] = {}
    aliases: dict[str, str] = {}
    members: dict[str, dict[int, str]] = {s: {} for s in set_names}
    for spec in table:
        if spec.kind not in KINDS:
            raise ValueError(f"metric '{spec.name}': kind '{spec.kind}' is not one of {KINDS}")
        for key in (spec.name, *spec.aliases):
            if key in specs or key in aliases or key in members:
                raise ValueError(f"metric name or alias '{key}' ({spec.name}) is already taken")
            if key != spec.name:
                aliases[key] = spec.name
        specs[spec.name] = spec
        for set_name, position in spec.sets.items():
            if set_name not in members or position in members[set_name]:
                raise ValueError(f"metric '{spec.name}': set '{set_name}' position {position} is unknown or taken")
            members[set_name][position] = spec.name
    empty = [s for s, m in members.items() if not m]
    if empty:
        raise ValueError(f"metric sets {empty} have no members")
    return specs, aliases, {s: [m[p] for p in sorted(m)] for s, m in members.items()}


SPECS, ALIASES, METRIC_SETS = derive(TABLE, SET_SUMMARIES)


def functions_of(kind: str) -> dict[str, Callable[[Any, Any], Any]]:
    """Name -> kernel of every metric of one kind, in table order."""
    return {s.name: s.fn for s in TABLE if s.kind == kind}


OVERLAP_FUNCTIONS = functions_of("overlap")
DISTANCE_FUNCTIONS = functions_of("distance")
MAP_FUNCTIONS = functions_of("map")


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
