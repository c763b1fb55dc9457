"""Evaluate a folder of predictions against a folder of ground truths, in parallel over cases.

Files pair by name (extension ignored, ``.nii.gz`` included); unpaired files, unreadable files and
bad cases are collected and reported together as one :class:`~medseg.errors.DataError` naming every
case: one bad case never silently shrinks the mean. A prediction whose NIfTI header spacing differs from
its GT's is scored with the GT's spacing (or ``spacing`` when given) and a warning names both.
"""
from __future__ import annotations

import csv
import io
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medseg.errors import DataError
from medseg.metrics.io import as_ground_truth, as_prediction, list_cases, read_array
from medseg.metrics.regions import RegionSuite, RegionWarning
from medseg.metrics.suite import CaseResult, MetricSuite


@dataclass
class FolderResult:
    """Per-case results, the summary dict, and where the files were written (if anywhere)."""

    cases: list[CaseResult]
    summary: dict[str, Any]
    csv_path: Path | None = None
    json_path: Path | None = None


def pair_cases(pred_dir: Path, gt_dir: Path, pred_suffix: str = "", gt_suffix: str = "") -> list[tuple[str, Path, Path]]:
    """``(case, pred_path, gt_path)`` for every case present in both folders; unpaired files raise."""
    preds = list_cases(pred_dir, pred_suffix)
    gts = list_cases(gt_dir, gt_suffix)
    only_pred = sorted(set(preds) - set(gts))
    only_gt = sorted(set(gts) - set(preds))
    if only_pred or only_gt:
        parts = []
        if only_pred:
            parts.append(f"{len(only_pred)} prediction(s) without GT: {_names(only_pred)}")
        if only_gt:
            parts.append(f"{len(only_gt)} GT file(s) without prediction: {_names(only_gt)}")
        raise DataError("unpaired files (pairing is by file name without extension); " + "; ".join(parts)
                        + ". Use --pred-suffix/--gt-suffix if names differ by a suffix such as '_mask'.")
    return [(name, preds[name], gts[name]) for name in sorted(preds)]


def _names(names: Sequence[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" ... (+{len(names) - limit} more)" if len(names) > limit else "")


class SpacingWarning(UserWarning):
    """A prediction and its GT carry different header spacings (the message says which one was used)."""


# (case, prediction file, GT file, suite, spacing given or None, GT threshold or None): one worker job
Job = tuple[str, Path, Path, MetricSuite, Sequence[float] | None, float | None]


def _evaluate_one(job: Job) -> tuple[CaseResult | str, list[str]]:
    """One case in a worker: (a :class:`CaseResult` or the error message naming the case, warnings)."""
    case, pred_path, gt_path, suite, spacing, gt_threshold = job
    notes: list[str] = []
    try:
        pred_file = read_array(pred_path)
        gt_file = read_array(gt_path)
        gt = as_ground_truth(gt_file.array, suite.num_classes, case, gt_threshold, gt_path)
        pred, prob = as_prediction(pred_file.array, suite.num_classes, suite.policy.threshold, case)
        if pred.shape != gt.shape:
            return (f"case '{case}': prediction {pred_path.name} has shape {pred.shape} but GT {gt_path.name} has "
                    f"{gt.shape}; resample predictions to the GT grid"), notes
        use_spacing = spacing if spacing is not None else gt_file.spacing
        note = spacing_mismatch(case, pred_file.spacing, gt_file.spacing, spacing)
        if note:
            notes.append(note)
        return suite(pred, gt, prob=prob, spacing=use_spacing, case=case), notes
    except (DataError, ValueError, RuntimeError) as err:
        msg = str(err)
        return (msg if case in msg else f"case '{case}': {msg}"), notes


def spacing_mismatch(case: str, pred: Sequence[float] | None, gt: Sequence[float] | None,
                     given: Sequence[float] | None) -> str | None:
    """A warning when the prediction's and the GT's header spacings differ (relative 1e-3), else None."""
    if pred is None or gt is None:
        return None
    if len(pred) == len(gt) and np.allclose(pred, gt, rtol=1e-3, atol=1e-6):
        return None
    used = f"--spacing {_fmt(given)}" if given is not None else f"the GT's {_fmt(gt)}"
    return (f"case '{case}': the prediction's header spacing {_fmt(pred)} differs from the GT's {_fmt(gt)}; "
            f"distances use {used} (was the prediction resampled? pass --spacing to choose)")


def _fmt(spacing: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(s):g}" for s in spacing) + ")"


def evaluate_folder(pred_dir: str | Path, gt_dir: str | Path, metrics: str | Iterable[str] = ("dice",),
                    num_classes: int = 1, spacing: Sequence[float] | None = None, workers: int | None = None,
                    output: str | Path | None = None, pred_suffix: str = "", gt_suffix: str = "",
                    gt_threshold: float | None = None, regions: str | None = None, **options: Any) -> FolderResult:
    """Score every prediction in ``pred_dir`` against the same-named GT in ``gt_dir``.

    Args:
        metrics: names / aliases / sets (``"ife"``, ``"chnet"``, ``"distance"`` ...).
        spacing: voxel spacing for every case (mm); default: the NIfTI header, pixels for 2-D images.
        workers: processes (None: ``min(8, cpu_count)``; 0 or 1: in this process).
        output: per-case CSV path; the JSON summary goes beside it (``.json``).
        gt_threshold: binary GT: foreground where value > T (default: the rule of :mod:`medseg.masks`).
        regions: score region masks of label maps instead (``"brats"``, ``"brats2015"``: WT/TC/ET DSC and
            HD95 plus ``metrics``; see :mod:`medseg.metrics.regions`); ``num_classes`` is then ignored.
        options: :class:`~medseg.metrics.Policy` fields (``empty``, ``compat``, ``hd95_mode`` ...).
    """
    if gt_threshold is not None and num_classes > 1:
        raise DataError(f"--gt-threshold binarises a binary task's GT; it does not apply with "
                        f"--num-classes {num_classes} (label maps are read as labels)")
    if regions is not None:
        suite = RegionSuite(regions, metrics, **options)
    else:
        suite = MetricSuite(metrics, num_classes=num_classes, **options)
    pairs = pair_cases(Path(pred_dir), Path(gt_dir), pred_suffix, gt_suffix)
    jobs: list[Job] = [(case, p, g, suite, spacing, gt_threshold) for case, p, g in pairs]
    n_workers = min(8, os.cpu_count() or 1) if workers is None else workers
    if n_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(n_workers, len(jobs))) as pool:
            done = list(pool.map(_evaluate_one, jobs, chunksize=max(1, len(jobs) // (4 * n_workers))))
    else:
        done = [_evaluate_one(job) for job in jobs]
    outcomes = [o for o, _ in done]
    notes = [n for _, case_notes in done for n in case_notes]
    for note in notes:
        warnings.warn(note, SpacingWarning, stacklevel=2)
    errors = [o for o in outcomes if isinstance(o, str)]
    if errors:
        raise DataError(f"{len(errors)} of {len(jobs)} case(s) failed (no summary written, so no case is "
                        f"silently dropped):\n  " + "\n  ".join(errors[:20])
                        + (f"\n  ... (+{len(errors) - 20} more)" if len(errors) > 20 else ""))
    results = [o for o in outcomes if isinstance(o, CaseResult)]
    summary = suite.summarize(results)
    for note in summary.pop("region_notes", []):  # --regions: a GT without enhancing tumour, per case
        warnings.warn(note, RegionWarning, stacklevel=2)
        notes.append(note)
    summary.update({"metrics_requested": suite.names, "num_classes": num_classes, "pred_dir": str(pred_dir),
                    "gt_dir": str(gt_dir), "spacing": list(spacing) if spacing is not None else
                    "NIfTI header (volumes) / pixels (2-D images)", "gt_threshold": gt_threshold,
                    "warnings": notes})
    out = FolderResult(results, summary)
    if output is not None:
        out.csv_path = Path(output)
        out.json_path = out.csv_path.with_suffix(".json")
        write_csv(results, out.csv_path)
        out.json_path.write_text(json.dumps(summary, indent=2, default=_json_default))
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def write_csv(results: Sequence[CaseResult], path: Path) -> None:
    """One row per case: ``case`` then every value column (``repr`` floats, NaN as ``nan``)."""
    keys: list[str] = []
    for r in results:
        keys += [k for k in r.values if k not in keys]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["case", *keys])
    for r in results:
        writer.writerow([r.case, *(repr(float(r.values.get(k, np.nan))) for k in keys)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue())


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table: metric, mean, std, median, count, excluded (and the dataset value of curves)."""
    rows = summary["metrics"]
    width = max([6, *(len(k) for k in rows)]) + 2
    lines = [f"{'metric':<{width}}{'mean':>11}{'std':>11}{'median':>11}{'count':>7}{'excl':>6}  dataset"]
    for key, s in rows.items():
        extra = f"  {s['dataset']:.6g}" if "dataset" in s else ""
        lines.append(f"{key:<{width}}{s['mean']:>11.5g}{s['std']:>11.4g}{s['median']:>11.5g}{s['count']:>7}"
                     f"{s['excluded']:>6}{extra}")
    policy = summary.get("policy", {})
    if policy:
        lines.append("policy: " + ", ".join(f"{k}={v}" for k, v in policy.items()))
    lines.append("dataset = max over thresholds of the image-averaged curve (the value papers report)"
                 if any("dataset" in s for s in rows.values()) else "")
    return "\n".join(line for line in lines if line)
