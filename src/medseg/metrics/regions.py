"""Per-region scores of label maps (BraTS WT / TC / ET): ``medseg metrics --regions brats`` and
``eval.regions: brats``.

Each region is a binary mask composed from the label map (:mod:`medseg.regions`); the usual binary
metrics run on it (DSC and HD95 always, plus any overlap or distance metric asked for), with the policy
of ``docs/metrics.md``: an ET absent from both prediction and GT gives DSC 1 and HD95 0 (the BraTS
challenge's convention too), a missed or spurious ET gives DSC 0 and HD95 = the volume diagonal. A GT
without ET is legitimate but is also what a wrong label convention looks like, so each such case is named
in a warning. Columns: ``dice_WT``, ``hd95_TC`` ...; the plain name (``dice``) is the mean over the three
regions.

Example::

    from medseg.metrics.regions import region_metrics
    region_metrics(pred_labels, gt_labels, "brats", spacing=(1, 1, 1))   # {"dice_WT": ..., "hd95_ET": ...}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from medseg.metrics.suite import SPECS, CaseResult, MetricSuite, _to_numpy, resolve_names, summarize
from medseg.regions import REGION_NAMES, get_scheme, region_masks

ALWAYS = ("dice", "hd95")


class RegionWarning(UserWarning):
    """A region-scoring note (a GT without enhancing tumour); the CLI prints it from the summary."""


@dataclass
class RegionCaseResult(CaseResult):
    """A case's region values plus its notes (warnings that must survive worker processes)."""

    notes: list[str] = field(default_factory=list)


class RegionSuite:
    """Binary metrics on each BraTS region of a pair of label maps (the interface of :class:`MetricSuite`).

    Args:
        regions: scheme name, ``brats`` (BraTS 2017-2021, ET = 4, or 3 once remapped) or ``brats2015``.
        metrics: overlap / distance metrics besides DSC and HD95 (map metrics do not apply to label maps).
        options: :class:`~medseg.metrics.Policy` fields (``empty``, ``compat``, ``hd95_mode`` ...).
    """

    #: label maps are read unchecked up to this value; the scheme then checks every label
    num_classes = 2 ** 15

    def __init__(self, regions: str = "brats", metrics: str | Iterable[str] = ALWAYS, **options: Any) -> None:
        self.scheme = get_scheme(regions)
        names = resolve_names([*ALWAYS, *resolve_names(metrics)])
        bad = [n for n in names if SPECS[n].group not in ("overlap", "distance")]
        if bad:
            raise ValueError(f"region scores take overlap and distance metrics; {bad} need a probability map")
        self.inner = MetricSuite(names, num_classes=1, **options)
        self.names = self.inner.names
        self.policy = self.inner.policy

    def __call__(self, pred: Any, gt: Any, prob: Any = None, spacing: Sequence[float] | float | None = None,
                 case: str = "") -> RegionCaseResult:
        """``pred``: a label map like ``gt``, or region masks ``3 x *spatial`` (WT, TC, ET; e.g. sigmoid
        outputs >= 0.5 of a model trained with ``data.nifti.regions``), scored as they are."""
        pred_masks = region_prediction(_to_numpy(pred), _to_numpy(gt).ndim, self.scheme, case)
        gt_masks, gt_has_et = region_masks(_to_numpy(gt), self.scheme, "ground truth", case)
        scores = [self.inner(pred_masks[i], gt_masks[i], spacing=spacing, case=case).values
                  for i in range(len(REGION_NAMES))]
        values: dict[str, float] = {}
        for name in self.names:  # the plain names first: the mean over the regions
            finite = [r[name] for r in scores if not np.isnan(r[name])]
            values[name] = float(np.mean(finite)) if finite else float("nan")
        values.update({f"{name}_{region}": r[name] for region, r in zip(REGION_NAMES, scores) for name in self.names})
        notes = [] if gt_has_et else [no_et_note(case, self.scheme.name)]
        return RegionCaseResult(case, values, notes=notes)

    def summarize(self, results: Sequence[CaseResult]) -> dict[str, Any]:
        """:func:`~medseg.metrics.suite.summarize`, plus the scheme, the cases without ET and their notes."""
        out = summarize(results, policy=self.policy)
        notes = [n for r in results for n in getattr(r, "notes", [])]
        out["regions"] = {**self.scheme.describe(), "cases_without_et_in_gt": len(notes),
                          "mean": "plain metric names are the mean over WT, TC, ET"}
        out["region_notes"] = notes
        return out


def region_prediction(pred: np.ndarray, gt_ndim: int, scheme: Any, case: str = "") -> np.ndarray:
    """Boolean WT/TC/ET masks ``3 x *spatial`` of a prediction: composed from a label map (``pred.ndim ==
    gt_ndim``), or taken as they are from region masks (one more leading axis of length 3)."""
    if pred.ndim == gt_ndim:
        return region_masks(pred, scheme, "prediction", case)[0]
    if pred.ndim == gt_ndim + 1 and pred.shape[0] == len(REGION_NAMES):
        return pred.astype(bool)
    raise ValueError(f"case '{case}': prediction of shape {pred.shape} is neither a label map like the ground "
                     f"truth ({gt_ndim}-D) nor region masks 3 x *spatial (WT, TC, ET)")


def region_batch_dice(pred: Any, gt: Any) -> Any:
    """Per-case Dice of each region, ``2|P∩G| / (|P| + |G|)``, for boolean masks ``B x 3 x *spatial``
    (torch, on their device): ``B x 3`` float64; a region empty in both is 1 (the BraTS convention above).
    Validation of models trained on region outputs (sigmoid >= threshold against the region targets)."""
    dims = tuple(range(2, pred.ndim))
    inter = (pred & gt).sum(dims).double()
    den = pred.sum(dims).double() + gt.sum(dims).double()
    return (2 * inter / den.clamp_min(1)).masked_fill(den == 0, 1.0)


def no_et_note(case: str, scheme: str) -> str:
    """The warning for a GT without enhancing tumour."""
    et = "label 4 (or 3 if remapped)" if scheme == "brats" else "label 4"
    return (f"case '{case}': the ground truth has no enhancing tumour ({et}); ET is empty and scored by the "
            f"empty-mask policy (prediction empty too: DSC 1, HD95 0; otherwise DSC 0, HD95 = volume diagonal). "
            f"If every case says this, check the label convention (--regions brats vs brats2015)")


def region_metrics(pred: Any, gt: Any, regions: str = "brats", metrics: str | Iterable[str] = ALWAYS,
                   spacing: Sequence[float] | float | None = None, case: str = "", **options: Any) -> dict[str, float]:
    """Per-region values of one case: ``{"dice_WT": ..., "hd95_WT": ..., ..., "dice": mean}``."""
    return RegionSuite(regions, metrics, **options)(pred, gt, spacing=spacing, case=case).values
