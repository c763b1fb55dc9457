"""Metrics (bootstrap: the metric-suite issue replaces this module, keeping these signatures).

``batch_dice(pred_labels, gt_labels, num_classes)`` -> ``B x C'`` per-case per-class Dice on tensors
(C' = 1 for binary, K-1 foreground classes otherwise; NaN where the class is absent from both).
``evaluate_case(pred, gt, metrics, num_classes, spacing=None, prob=None)`` -> ``{name: value}``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def batch_dice(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-case, per-foreground-class Dice ``2TP/(2TP+FP+FN)``; both empty -> NaN (class not applicable)."""
    classes = [1] if num_classes == 1 else list(range(1, num_classes))
    b = pred.shape[0]
    pred = pred.reshape(b, -1)
    gt = gt.reshape(b, -1)
    out = []
    for c in classes:
        p, g = pred == c, gt == c
        tp = (p & g).sum(1).double()
        denom = p.sum(1).double() + g.sum(1).double()
        out.append(torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.full_like(tp, float("nan"))))
    return torch.stack(out, 1)


def evaluate_case(pred: np.ndarray, gt: np.ndarray, metrics: Sequence[str], num_classes: int,
                  spacing: Sequence[float] | None = None, prob: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one case from label maps (bootstrap: dice and iou, mean over foreground classes)."""
    classes = [1] if num_classes == 1 else list(range(1, num_classes))
    out: dict[str, float] = {}
    for name in metrics:
        values = []
        for c in classes:
            p, g = pred == c, gt == c
            tp, sp, sg = float((p & g).sum()), float(p.sum()), float(g.sum())
            if sp + sg == 0:
                values.append(1.0 if num_classes == 1 else np.nan)
                continue
            values.append(2 * tp / (sp + sg) if name == "dice" else tp / (sp + sg - tp))
        out[name] = float(np.nanmean(values)) if not all(np.isnan(values)) else float("nan")
    return out
