"""Evaluate a checkpoint on a split at the original resolution: per-case CSV + summary JSON."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medseg.engine.checkpoint import atomic_write_text, resolve_checkpoint
from medseg.engine.infer import case_logits, labels_from_probabilities, resize_logits
from medseg.engine.runtime import make_runtime
from medseg.engine.runtime import progress as progress_bar
from medseg.engine.trainer import model_from_checkpoint
from medseg.errors import UserError


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(buf.getvalue(), path)


def evaluate_run(run_dir: str | Path, split: str = "test", *, checkpoint: str = "best",
                 metrics: Sequence[str] | None = None, save_predictions: bool = True,
                 output: str | Path | None = None, progress: bool = True,
                 tta: str | None = None) -> dict[str, Any]:
    """Predict every case of ``split`` with the run's checkpoint and score it at original size.

    Writes ``metrics/<split>_per_case.csv`` and ``metrics/<split>_summary.json`` (and ``per_case.csv``
    / ``summary.json`` for the test split) and, when asked, prediction PNG/NIfTI files. ``tta="flip"``
    averages mirrored predictions (:mod:`medseg.engine.ensemble`); its files are named
    ``<split>_tta_flip_*`` (predictions in ``predictions/<split>_tta_flip/``), so the run's plain
    ``summary.json`` is kept.
    """
    from medseg.data import build_dataset
    from medseg.data.io import write_prediction
    from medseg.data.loader import require_cases
    from medseg.engine.ensemble import is_cv_folder, member_probabilities, tta_flips
    from medseg.metrics import MetricSuite

    run_dir = Path(run_dir)
    if is_cv_folder(run_dir):
        raise UserError(f"{run_dir} is a cross-validation folder; evaluate it with evaluate_folds (each fold on "
                        "its own split) or give one fold folder")
    tta = None if tta in (None, "none") else tta
    tta_flips(tta, 2)  # an unknown choice fails before any work
    tag = f"{split}_tta_{tta}" if tta else split
    path = resolve_checkpoint(run_dir, checkpoint)
    model, cfg = model_from_checkpoint(path)
    rt = make_runtime(cfg.train, 2)
    model = model.to(rt.device)
    out_dir = Path(output) if output else (run_dir if run_dir.is_dir() else path.parent.parent)
    metrics = list(metrics or cfg.eval.metrics)
    dataset = require_cases(build_dataset(cfg.data, split), split, cfg.data)  # never an empty table
    if cfg.eval.regions:  # BraTS WT/TC/ET from the label maps (medseg.metrics.regions)
        from medseg.metrics.regions import RegionSuite

        suite = RegionSuite(cfg.eval.regions, metrics)
    else:
        suite = MetricSuite(metrics, num_classes=cfg.data.num_classes)
    results = []
    rows: list[dict[str, Any]] = []
    pred_dir = out_dir / "predictions" / tag
    for index in progress_bar(range(len(dataset)), desc=f"evaluate {split}", disable=not progress):
        sample = dataset[index]
        gt, meta = dataset.read_original(index)
        with torch.no_grad():
            prob = member_probabilities(model, sample["image"][None],
                                        lambda m, x, **kw: case_logits(m, x, cfg, rt, **kw),
                                        lambda logits: _to_original(logits, gt.shape, meta), tta, cfg)
            if cfg.data.nifti.regions:  # sigmoid WT/TC/ET outputs: region masks scored directly (docs/cwcd.md)
                from medseg.regions import region_outputs

                scored, pred = region_outputs(prob[0].cpu().numpy(), cfg.eval.threshold, cfg.data.nifti.regions)
            else:
                pred = scored = labels_from_probabilities(prob, cfg.eval.threshold)[0].cpu().numpy()
        fg = prob[0, 0].cpu().numpy() if prob.shape[1] == 1 else None
        gt_labels = np.asarray(gt).astype(np.int64)
        case_id = str(meta.get("id", index))
        result = suite(scored, gt_labels, prob=fg, spacing=meta.get("spacing"), case=case_id)
        results.append(result)
        rows.append({"case": case_id, "dataset": meta.get("dataset", ""), **result.values})
        if save_predictions:
            source = str(meta.get("path", ""))
            nifti = source.endswith((".nii", ".nii.gz"))  # write with the input volume's affine/header
            suffix = ".nii.gz" if pred.ndim == 3 else ".png"
            write_prediction(pred.astype(np.uint8), pred_dir / f"{case_id}{suffix}", reference=source if nifti else None)
    aggregated = suite.summarize(results)
    summary = {"split": split, "checkpoint": str(path), "cases": len(rows), "metrics": aggregated["metrics"],
               "policy": aggregated.get("policy", "per case, then mean over cases (metrics-policy.md)"),
               "tta": tta or "none"}
    summary.update({k: aggregated[k] for k in ("regions", "region_notes") if k in aggregated})  # eval.regions
    if len({r["dataset"] for r in rows}) > 1:
        summary["per_dataset"] = {
            name: suite.summarize([res for res, row in zip(results, rows) if row["dataset"] == name])["metrics"]
            for name in sorted({r["dataset"] for r in rows})}
    metric_dir = out_dir / "metrics"
    metric_dir.mkdir(parents=True, exist_ok=True)
    write_table(rows, metric_dir / f"{tag}_per_case.csv")
    atomic_write_text(json.dumps(summary, indent=2), metric_dir / f"{tag}_summary.json")
    if split == "test" and not tta:
        write_table(rows, metric_dir / "per_case.csv")
        atomic_write_text(json.dumps(summary, indent=2), metric_dir / "summary.json")
    return summary


def _to_original(logits: torch.Tensor, shape: Sequence[int], meta: dict[str, Any]) -> torch.Tensor:
    """Network-grid logits -> the case's original grid: 2-D resize (and square padding removed), or the
    volume's inverse resampling (``meta["grid"]``) then a resize to the label's shape."""
    if logits.ndim == 4:
        from medseg.data.transforms import to_original_size

        return to_original_size(logits, shape, meta.get("pad"))
    from medseg.data.resample import to_original_grid  # network grid -> file grid (meta["grid"])

    return resize_logits(to_original_grid(logits, meta), shape)


def evaluate_folds(cv_dir: str | Path, split: str = "test", *, tta: str | None = None,
                   log: Callable[[str], None] | None = print, **kwargs: Any) -> dict[str, Any]:
    """A `medseg cv` folder: every fold's own checkpoint on its own ``split``, then mean ± std over folds.

    No fold ensemble is scored here: in k-fold CV fold ``i``'s test cases are training cases of every other
    fold, so an ensemble evaluated on them would be scored on data it was trained on. Each fold is an
    ordinary :func:`evaluate_run` (``kwargs``: checkpoint, metrics, save_predictions, progress);
    the table goes to ``<cv>/cv_evaluate_<split>[_tta_flip].csv|.md``.
    """
    from medseg.engine.cv import mean_std, metric_means, write_tables
    from medseg.engine.ensemble import fold_checkpoints

    cv_dir = Path(cv_dir)
    rows: list[dict[str, Any]] = []
    for k, path in enumerate(fold_checkpoints(cv_dir)):
        if log is not None:
            log(f"fold_{k}: evaluating on its own {split} split" + (f" with --tta {tta}" if tta else ""))
        summary = evaluate_run(path.parent.parent, split, tta=tta, **kwargs)
        rows.append({"fold": k, "cases": summary["cases"], **metric_means(summary)})
    keys = [k for k in rows[0] if k not in ("fold", "cases")]
    means, stds = mean_std(rows, keys)
    tag = f"{split}_tta_{tta}" if tta not in (None, "none") else split
    pm = {"fold": "mean ± std", **{k: f"{means[k]:.4f} ± {stds[k]:.4f}" for k in keys}}
    table = write_tables(rows, ["cases", *keys], "fold", cv_dir / f"cv_evaluate_{tag}",
                         csv_extra=[{"fold": "mean", **means}, {"fold": "std", **stds}], md_extra=[pm])
    return {"parent": str(cv_dir), "folds": rows, "mean": means, "std": stds, "table": table,
            "written": str(cv_dir / f"cv_evaluate_{tag}.csv")}


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':<16}{'mean':>10}{'std':>10}{'median':>10}{'n':>6}{'excl':>6}  dataset-level"]
    for key, s in summary["metrics"].items():
        extra = f"  {s['dataset']:.4f} (max of mean curve)" if "dataset" in s else ""
        lines.append(f"{key:<16}{s['mean']:>10.4f}{s['std']:>10.4f}{s['median']:>10.4f}{s['count']:>6}"
                     f"{s['excluded']:>6}{extra}")
    return "\n".join(lines)
