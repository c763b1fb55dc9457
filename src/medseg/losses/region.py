"""Region (overlap) losses: soft Dice, soft IoU, Tversky, focal Tversky, generalised Dice.

All take logits (sigmoid for one channel or a float multi-label target, softmax for K >= 2 with an int64
label) and reduce over space per sample and class (``batch=True``: over the batch too; ``pooled=True``:
over the classes too). With softmax the background channel is left out unless ``include_background``.
``reduction="none"`` returns the per-(sample, class) values ``B x C`` (``C x`` with ``batch=True``).
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

import torch
import torch.nn as nn

from medseg.losses import register_loss
from medseg.losses._common import (Target, as_float, check_reduction, foreground, get_label, main_logits,
                                   dice_from_sums, dice_sums, prepare_target, probabilities, reduce)


def overlap_stats(prob: torch.Tensor, target: torch.Tensor, batch: bool, pooled: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tp, Σp, Σt)`` summed over space (and batch / classes when asked); shape ``B x C``, ``C`` or ``B``."""
    dims = list(range(2, prob.ndim))
    if batch:
        dims = [0, *dims]
    if pooled:
        dims = sorted({*dims, 1})
    return dice_sums(prob, target, dims)


class _RegionLoss(nn.Module, metaclass=ABCMeta):
    """Shared plumbing: logits -> probabilities -> foreground channels -> per-class score."""

    name = "region"

    def __init__(self, include_background: bool = False, batch: bool = False, pooled: bool = False,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, reduction: str = "mean",
                 output_key: str | None = None) -> None:
        super().__init__()
        self.include_background, self.batch, self.pooled = include_background, batch, pooled
        self.smooth_nr, self.smooth_dr = smooth_nr, smooth_dr
        self.reduction = check_reduction(reduction)
        self.output_key = output_key

    def inputs(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor, Target]:
        logits = as_float(main_logits(outputs, self.output_key, self.name))
        target = prepare_target(logits, get_label(batch, self.name), self.name)
        prob = probabilities(logits, target)
        prob = foreground(prob, target, self.include_background)
        onehot = foreground(target.onehot, target, self.include_background)
        return prob, onehot, target

    @abstractmethod
    def score(self, tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """Per-(sample, class) score in [0, 1] from soft TP, prediction sum and target sum."""

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        prob, onehot, _ = self.inputs(outputs, batch)
        tp, ps, ts = overlap_stats(prob, onehot, self.batch, self.pooled)
        loss = reduce(self.score(tp, ps, ts), self.reduction)
        return {"loss": loss, self.name: loss}


@register_loss("dice")
class SoftDiceLoss(_RegionLoss):
    """Soft Dice loss ``1 − (2Σpt + s_nr)/(Σp + Σt + s_dr)`` per class (Milletari et al., V-Net, 3DV 2016).

    Per sample and class by default, then averaged; ``batch=True`` sums over the batch first, ``pooled=True``
    over the foreground classes too (one Dice for all organs, the CWCD/CEDL code's form). Equals MONAI's
    ``DiceLoss`` with the same options.
    """

    name = "dice"

    def score(self, tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return 1 - dice_from_sums(tp, ps, ts, self.smooth_nr, self.smooth_dr)


@register_loss("iou")
class SoftIoULoss(_RegionLoss):
    """Soft Jaccard loss ``1 − (Σpt + s_nr)/(Σp + Σt − Σpt + s_dr)`` (Rahman & Wang, ISVC 2016).

    Options as ``dice``. Equals MONAI's ``DiceLoss(jaccard=True)`` with doubled smoothing constants.
    """

    name = "iou"

    def score(self, tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return 1 - (tp + self.smooth_nr) / (ps + ts - tp + self.smooth_dr)


@register_loss("tversky")
class TverskyLoss(_RegionLoss):
    """Tversky loss ``1 − (TP + s_nr)/(TP + α·FP + β·FN + s_dr)`` (Salehi et al., MLMI 2017).

    ``α`` weighs false positives, ``β`` false negatives; α = 0.3, β = 0.7 (the paper's best) favour recall;
    α = β = 0.5 is Dice. Equals MONAI's ``TverskyLoss``.
    """

    name = "tversky"

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, include_background: bool = False,
                 batch: bool = False, pooled: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 reduction: str = "mean", output_key: str | None = None) -> None:
        super().__init__(include_background, batch, pooled, smooth_nr, smooth_dr, reduction, output_key)
        self.alpha, self.beta = alpha, beta

    def tversky_index(self, tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        fp, fn = ps - tp, ts - tp
        return (tp + self.smooth_nr) / (tp + self.alpha * fp + self.beta * fn + self.smooth_dr)

    def score(self, tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return 1 - self.tversky_index(tp, ps, ts)


@register_loss("focal_tversky")
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss ``(1 − TI)^γ`` per class, γ = 0.75 (Abraham & Khan, ISBI 2019).

    The paper writes the exponent as 1/γ' with γ' = 4/3; ``TI`` is the Tversky index with α = 0.3, β = 0.7.
    γ < 1 strengthens the gradient of hard classes.
    """

    name = "focal_tversky"

    def __init__(self, gamma: float = 0.75, alpha: float = 0.3, beta: float = 0.7,
                 include_background: bool = False, batch: bool = False, pooled: bool = False,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, reduction: str = "mean",
                 output_key: str | None = None) -> None:
        super().__init__(alpha, beta, include_background, batch, pooled, smooth_nr, smooth_dr, reduction,
                         output_key)
        self.gamma = gamma

    def score(self, tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        # clamp keeps the gradient of x**γ finite at a perfect score (x = 0)
        return (1 - self.tversky_index(tp, ps, ts)).clamp_min(1e-12) ** self.gamma


@register_loss("gdl")
class GeneralizedDiceLoss(_RegionLoss):
    """Generalised Dice loss (Sudre et al., DLMIA 2017) with class weights ``w_l = 1/(Σ_i t_li)²``.

    ``1 − (2·Σ_l w_l Σ_i p_li t_li + s_nr) / (Σ_l w_l Σ_i (p_li + t_li) + s_dr)``, ``w_l = 1/(Σ_i t_li)²``.

    Background excluded and sums over batch and space per class by default (``batch=True``, spec §5.5); a
    class absent from the ground truth gets the largest weight of the present classes instead of 1/0
    (MONAI's rule; the CWCD code's 1/(0 + 0.001) lets absent-class false positives dominate).
    ``w_type``: ``square`` (Sudre), ``simple`` (1/Σt), ``uniform``. Equals MONAI's ``GeneralizedDiceLoss``.
    """

    name = "gdl"

    def __init__(self, w_type: str = "square", include_background: bool = False, batch: bool = True,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, reduction: str = "mean",
                 output_key: str | None = None) -> None:
        super().__init__(include_background, batch, False, smooth_nr, smooth_dr, reduction, output_key)
        if w_type not in ("square", "simple", "uniform"):
            raise ValueError(f"gdl: w_type must be square, simple or uniform, got {w_type!r}")
        self.w_type = w_type

    def weights(self, ts: torch.Tensor) -> torch.Tensor:
        ts = ts.detach()
        if self.w_type == "uniform":
            return torch.ones_like(ts)
        w = 1.0 / (ts * ts if self.w_type == "square" else ts)
        absent = torch.isinf(w)
        w = torch.where(absent, torch.zeros_like(w), w)
        top = w.amax(-1, keepdim=True)  # per sample (batch=False) or over classes (batch=True)
        return torch.where(absent, top.expand_as(w), w)

    def score(self, tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        w = self.weights(ts)
        numer = 2 * (w * tp).sum(-1) + self.smooth_nr
        denom = (w * (ps + ts)).sum(-1) + self.smooth_dr
        return 1 - numer / denom
