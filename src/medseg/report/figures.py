"""Figures of the HTML report (matplotlib, Agg): training curves, overlays, saliency curves, group bars.

Every function draws one figure and writes it with :func:`medseg.report.save_figure`; the report embeds the
PNG and keeps the file beside the HTML (``docs/report.md``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medseg.report import save_figure

VIEW_NAMES = ("axial", "coronal", "sagittal")  # slicing axis 0, 1, 2 of a D x H x W volume


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _floats(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    out = []
    for r in rows:
        v = r.get(key, "")
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.asarray(out, dtype=float)


def split_epoch_columns(keys: Sequence[str]) -> dict[str, list[str]]:
    """Columns of ``logs/epochs.csv`` by panel: loss terms, learning rate, validation metrics."""
    loss = [k for k in keys if k == "val_loss" or (k.startswith("train_") and k not in
                                                   ("train_time_s",))]
    lr = [k for k in keys if k == "lr" or k.startswith("lr_")]
    val = [k for k in keys if k.startswith("val_") and k not in ("val_loss", "val_cases")]
    return {"loss terms": loss, "learning rate": lr, "validation metrics": val}


def plot_training(epochs: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]], path: Path,
                  title: str = "") -> Path:
    """Three panels over epochs: loss terms (with the per-step loss, faint), learning rate, validation."""
    plt = _plt()
    keys: list[str] = []
    for r in epochs:
        keys += [k for k in r if k not in keys]
    panels = split_epoch_columns(keys)
    x = _floats(epochs, "epoch") + 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (name, cols) in zip(axes, panels.items()):
        if name == "loss terms" and steps:
            per_epoch = max(1, int(np.nanmax(_floats(steps, "step")) + 1))
            sx = _floats(steps, "epoch") + (_floats(steps, "step") + 1) / per_epoch  # epoch e ends at e + 1
            ax.plot(sx, _floats(steps, "loss"), color="0.8", lw=0.8, label="loss (steps)")
        for c in cols:
            ax.plot(x, _floats(epochs, c), marker="o", ms=3, label=c)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        if cols:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def largest_gt_slices(gt: np.ndarray) -> dict[int, int]:
    """For a 3-D GT (``D x H x W``), the index of the slice with the largest GT area along each axis."""
    fg = np.asarray(gt) > 0
    return {axis: int(np.argmax(fg.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3)}


def overlay_views(image: np.ndarray | None, gt: np.ndarray, pred: np.ndarray) -> list[tuple[str, Any, Any, Any]]:
    """``(view name, image, gt, pred)`` 2-D panels: the image itself (2-D), or one slice per view (3-D),
    the slice of largest GT area. ``image`` is ``H x W``, ``H x W x C`` or, for volumes, ``D x H x W``."""
    if gt.ndim == 2:
        return [("", image, gt, pred)]
    out = []
    for axis, index in largest_gt_slices(gt).items():
        take = lambda a: None if a is None else np.take(a, index, axis=axis)  # noqa: E731
        out.append((f"{VIEW_NAMES[axis]} {index}", take(image), take(gt), take(pred)))
    return out


def _display(image: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if image is None:
        return np.zeros(shape)
    img = np.asarray(image, dtype=float)
    if img.ndim == 3 and img.shape[-1] not in (3,):
        img = img[..., 0]
    lo, hi = np.nanmin(img), np.nanmax(img)
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def plot_overlays(cases: Sequence[dict[str, Any]], path: Path, metric: str) -> Path:
    """One row per case (``label``, ``case``, ``value``, ``image``, ``gt``, ``pred``): image with the GT
    contour (green) and the prediction contour (red); 3-D cases show the three views."""
    plt = _plt()
    rows = [(c, overlay_views(c["image"], c["gt"], c["pred"])) for c in cases]
    if all(len(v) == 1 for _, v in rows):  # 2-D: the cases side by side
        fig, axes = plt.subplots(1, len(rows), figsize=(3.4 * len(rows), 3.8), squeeze=False)
        axes = [[ax] for ax in axes[0]]
    else:
        cols = max(len(v) for _, v in rows)
        fig, axes = plt.subplots(len(rows), cols, figsize=(3.4 * cols, 3.4 * len(rows)), squeeze=False)
    for ax_row, (case, views) in zip(axes, rows):
        for ax, (view, img, gt, pred) in zip(ax_row, views):
            ax.imshow(_display(img, gt.shape), cmap="gray", interpolation="nearest")
            for mask, color in ((gt, "lime"), (pred, "red")):
                if np.any(mask > 0) and not np.all(mask > 0):
                    ax.contour((mask > 0).astype(float), levels=[0.5], colors=color, linewidths=1.2)
            ax.set_title(f"{case['label']}: {case['case']}\n{metric}={case['value']:.4f} {view}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in list(ax_row)[len(views):]:
            ax.axis("off")
    fig.text(0.01, 0.005, "green: ground truth, red: prediction", fontsize=8)
    return save_figure(fig, path)


def plot_saliency_curves(curves: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """PySODEvalToolkit-style: PR curve, F-measure and E-measure over the 256 thresholds, one line per run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    t = np.arange(255, -1, -1)  # curve index i is the threshold map_u8 >= 255 - i
    for name, c in curves.items():
        axes[0].plot(c["recall"], c["precision"], label=name)
        axes[1].plot(t, c["f"], label=f"{name} (max {c['f'].max():.3f})")
        axes[2].plot(t, c["e"], label=f"{name} (max {c['e'].max():.3f})")
    for ax, (title, xl, yl) in zip(axes, (("PR curve", "recall", "precision"),
                                          ("F-measure (beta^2 = 0.3)", "threshold", "F"),
                                          ("E-measure", "threshold", "E"))):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_group_bars(groups: dict[str, dict[str, dict[str, float]]], metric: str, path: Path, title: str) -> Path:
    """Grouped bars: ``groups[run][group] = {mean, std, n}``, one bar per run within each group."""
    plt = _plt()
    names = sorted({g for table in groups.values() for g in table})
    x = np.arange(len(names))
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 3.6))
    for i, (run, table) in enumerate(groups.items()):
        stats = [table.get(g, {"mean": math.nan, "std": 0.0, "n": 0}) for g in names]
        bars = ax.bar(x + (i - (len(groups) - 1) / 2) * width, [s["mean"] for s in stats], width,
                      yerr=[s["std"] for s in stats], capsize=2, label=run)
        for b, s in zip(bars, stats):
            if np.isfinite(s["mean"]):
                ax.annotate(f"{s['mean']:.3f}\nn={s['n']}", (b.get_x() + b.get_width() / 2, s["mean"]),
                            ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
