"""Per-dataset and per-modality metrics of a multi-dataset (mixture) evaluation, as a table and a bar
chart PNG (the IFE paper's Fig. 6: DSC per modality of Cosmos55k).

Input: a run folder's ``metrics/<split>_per_case.csv`` (columns ``case, dataset, <metrics>``) and the
run's ``config.yaml``, whose ``data.datasets`` entries give each dataset's ``modality``. Aggregation:
per case, then the mean over the cases of each group (``metrics-policy.md``); NaN values are excluded and
counted. Several runs (e.g. UNet, +C, +E) are drawn as grouped bars.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from medseg.errors import UserError
from medseg.report import save_figure


def dataset_modalities(config: dict[str, Any]) -> dict[str, str]:
    """``dataset name -> modality`` from a run config's data section (mixture members or a single dataset)."""
    data = config.get("data", {}) or {}
    entries = data.get("datasets") or [data]
    out = {}
    for e in entries:
        name = e.get("name") or (Path(e["root"]).name if e.get("root") else e.get("kind", ""))
        modality = e.get("modality") or ((e.get("nifti") or {}).get("modality") if e.get("kind") == "nifti" else None)
        out[name] = modality or "unknown"
    return out


def read_per_case(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserError(f"per-case table not found: {path}; run `medseg evaluate RUN --split test` first")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "dataset" not in rows[0]:
        raise UserError(f"{path} has no rows or no 'dataset' column")
    return rows


def group_means(rows: list[dict[str, str]], metric: str, key) -> dict[str, dict[str, float]]:
    """``group -> {mean, std, n, excluded}`` of ``metric`` over the cases of each group."""
    if metric not in rows[0]:
        valid = [k for k in rows[0] if k not in ("case", "dataset")]
        raise UserError(f"metric '{metric}' is not in the per-case table; valid: {', '.join(valid)}")
    groups: dict[str, list[float]] = {}
    for r in rows:
        v = float(r[metric]) if r[metric] not in ("", None) else math.nan
        groups.setdefault(key(r), []).append(v)
    out = {}
    for g, values in sorted(groups.items()):
        arr = np.asarray(values, dtype=float)
        fin = arr[np.isfinite(arr)]
        out[g] = {"mean": float(fin.mean()) if fin.size else math.nan,
                  "std": float(fin.std(ddof=1)) if fin.size > 1 else 0.0,
                  "n": int(fin.size), "excluded": int(arr.size - fin.size)}
    return out


def run_tables(run_dir: str | Path, metric: str = "dice", split: str = "test") -> dict[str, Any]:
    """Per-dataset and per-modality means of ``metric`` for one evaluated run folder."""
    run_dir = Path(run_dir)
    rows = read_per_case(run_dir / "metrics" / f"{split}_per_case.csv")
    cfg_path = run_dir / "config.yaml"
    modality = dataset_modalities(yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else {}
    return {"run": run_dir.name, "metric": metric,
            "dataset": group_means(rows, metric, lambda r: r["dataset"] or "unnamed"),
            "modality": group_means(rows, metric, lambda r: modality.get(r["dataset"], "unknown")),
            "overall": group_means(rows, metric, lambda r: "all")["all"]}


def plot_groups(tables: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Grouped bar chart: per dataset (left) and per modality (right), one bar per run, mean +- std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(tables)
    for ax, level in zip(axes, ("dataset", "modality")):
        groups = sorted({g for t in tables for g in t[level]})
        x = np.arange(len(groups))
        for i, t in enumerate(tables):
            stats = [t[level].get(g, {"mean": math.nan, "std": 0.0, "n": 0}) for g in groups]
            bars = ax.bar(x + (i - (len(tables) - 1) / 2) * width, [s["mean"] for s in stats], width,
                          yerr=[s["std"] for s in stats], capsize=2, label=t["run"])
            for b, s in zip(bars, stats):
                if np.isfinite(s["mean"]):
                    ax.annotate(f"{s['mean']:.3f}\nn={s['n']}", (b.get_x() + b.get_width() / 2, s["mean"]),
                                ha="center", va="bottom", fontsize=6)
        ax.set_xticks(x, groups, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(tables[0]["metric"])
        ax.set_title(f"per {level}", fontsize=10)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def format_tables(tables: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per group, one column per run (mean, n)."""
    lines = []
    for level in ("dataset", "modality"):
        groups = sorted({g for t in tables for g in t[level]})
        lines.append(f"| {level} | " + " | ".join(t["run"] for t in tables) + " |")
        lines.append("|---" * (len(tables) + 1) + "|")
        for g in groups:
            cells = [f"{t[level][g]['mean']:.4f} (n={t[level][g]['n']})" if g in t[level] else "-" for t in tables]
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def per_dataset_report(runs: Sequence[str | Path], metric: str = "dice", split: str = "test",
                       output: str | Path | None = None) -> tuple[Path, str]:
    """Tables for each run and the bar chart; returns the PNG path and the markdown table."""
    if not runs:
        raise UserError("give at least one evaluated run folder")
    tables = [run_tables(r, metric, split) for r in runs]
    output = Path(output) if output else Path(runs[0]) / "metrics" / f"{split}_per_dataset_{metric}.png"
    return plot_groups(tables, output), format_tables(tables)
