"""Distribution (per-voxel) losses: BCE, CE, focal, distance-weighted CE (U-Net), CE + Dice (CEDL).

All are computed from logits with ``log_softmax`` / ``binary_cross_entropy_with_logits`` (stable for any
logit magnitude). ``reduction="none"`` returns the per-voxel map ``B x *spatial`` (``B x C x *spatial`` for
binary/multi-label).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.losses import register_loss
from medseg.losses._common import (LossInputError, Target, as_float, check_reduction, get_label,
                                   main_logits, need_target, prepare_target, reduce,
                                   soft_dice)
from medseg.ops.targets import target_key


def voxel_ce(logits: torch.Tensor, target: Target, class_weight: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-voxel CE (softmax) or BCE (sigmoid) and the per-voxel normaliser (class weight x valid)."""
    if target.binary:
        ce = F.binary_cross_entropy_with_logits(logits, target.onehot, reduction="none")
        return ce, torch.ones_like(ce)
    log_p = logits.log_softmax(1)
    ce = -(log_p * target.onehot).sum(1)
    norm = target.valid[:, 0]
    if class_weight is not None:
        w = class_weight.to(logits)[target.index.clamp(0, logits.shape[1] - 1)]
        ce, norm = ce * w, norm * w
    return ce, norm


@register_loss("bce")
class BCELoss(nn.Module):
    """Binary cross-entropy on logits ``−[g·log σ(z) + (1 − g)·log(1 − σ(z))]``, mean over voxels.

    One logit channel (or one per binary map, multi-label); ``pos_weight`` multiplies the positive term.
    """

    def __init__(self, pos_weight: float | None = None, reduction: str = "mean",
                 output_key: str | None = None) -> None:
        super().__init__()
        self.pos_weight, self.reduction = pos_weight, check_reduction(reduction)
        self.output_key = output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "bce"))
        target = prepare_target(logits, get_label(batch, "bce"), "bce", allow_multiclass=False)
        pw = None if self.pos_weight is None else torch.tensor(self.pos_weight, dtype=logits.dtype,
                                                               device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, target.onehot, pos_weight=pw, reduction=self.reduction)
        return {"loss": loss, "bce": loss}


@register_loss("ce")
class CELoss(nn.Module):
    """Softmax cross-entropy ``−Σ_k g_k log softmax(z)_k`` with optional class weights and ``ignore_index``.

    ``mean`` divides by the summed weights of the non-ignored voxels (``torch.nn.CrossEntropyLoss``).
    Needs K >= 2 channels and an int64 label; for one channel use ``bce``.
    """

    def __init__(self, weight: Sequence[float] | None = None, ignore_index: int = -100,
                 label_smoothing: float = 0.0, reduction: str = "mean", output_key: str | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.tensor(weight, dtype=torch.float32))
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.reduction, self.output_key = check_reduction(reduction), output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "ce"))
        target = prepare_target(logits, get_label(batch, "ce"), "ce", self.ignore_index, allow_binary=False)
        if self.weight is not None and self.weight.numel() != logits.shape[1]:
            raise LossInputError(f"loss 'ce': {self.weight.numel()} class weights for {logits.shape[1]} channels")
        weight = None if self.weight is None else self.weight.to(logits)
        loss = F.cross_entropy(logits, target.index, weight=weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing, reduction=self.reduction)
        return {"loss": loss, "ce": loss}


@register_loss("focal")
class FocalLoss(nn.Module):
    """Focal loss ``−α_t·(1 − p_t)^γ·log p_t`` per voxel (Lin et al., ICCV 2017), γ = 2, mean over voxels.

    Binary: sigmoid, ``α_t = α`` for positives and ``1 − α`` for negatives (``alpha=None``: no balancing).
    Multi-class: softmax, ``alpha`` a list of per-class weights. Per voxel this is MONAI's ``FocalLoss``
    summed over channels (MONAI's mean also averages over the channel axis).
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 reduction: str = "mean", output_key: str | None = None) -> None:
        super().__init__()
        self.gamma, self.alpha = gamma, alpha
        self.reduction, self.output_key = check_reduction(reduction), output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "focal"))
        target = prepare_target(logits, get_label(batch, "focal"), "focal")
        if target.binary:
            t = target.onehot
            log_pt = -F.binary_cross_entropy_with_logits(logits, t, reduction="none")
            factor = (1 - log_pt.exp()).pow(self.gamma)
            if self.alpha is not None:
                factor = factor * (t * self.alpha + (1 - t) * (1 - self.alpha))
            loss = -factor * log_pt
        else:
            log_p = logits.log_softmax(1)
            per = -(1 - log_p.exp()).pow(self.gamma) * log_p * target.onehot
            if self.alpha is not None:
                alpha = torch.as_tensor(self.alpha, dtype=logits.dtype, device=logits.device)
                if alpha.ndim == 0 or alpha.numel() != logits.shape[1]:
                    raise LossInputError(f"loss 'focal': multi-class alpha needs {logits.shape[1]} per-class "
                                         f"weights, got {self.alpha!r}")
                per = per * alpha.view(1, -1, *([1] * (logits.ndim - 2)))
            loss = per.sum(1)
        loss = reduce(loss, self.reduction)
        return {"loss": loss, "focal": loss}


@register_loss("dwce")
class DistanceWeightedCELoss(nn.Module):
    """Distance-weighted CE (U-Net, Ronneberger et al., MICCAI 2015): ``w = w_c + w0·exp(−(d1 + d2)²/2σ²)``.

    ``L = Σ_x w(x)·CE(x) / N`` with ``w(x) = w_c(x) + w0·exp(−(d1(x) + d2(x))² / (2σ²))``.

    ``d1``/``d2``: distances to the nearest and second-nearest object (connected component of one foreground
    label), per 2-D slice (``slice_axis`` of a volume); ``w_c``: inverse class frequency normalised to mean 1
    (``balance``) or 1; w0 = 10, σ = 5 px (the paper's values; not the CWCD repository's ``DWCE``, which is
    plain CE). The map is a derived target ``dwce_weight`` (:func:`medseg.ops.prepare_targets`).
    """

    def __init__(self, w0: float = 10.0, sigma: float = 5.0, balance: bool = True, slice_axis: int = 0,
                 reduction: str = "mean", output_key: str | None = None) -> None:
        super().__init__()
        self.key = target_key("dwce_weight", w0=float(w0), sigma=float(sigma), balance=int(balance),
                              slice_axis=int(slice_axis))
        self.requires = {self.key}
        self.reduction, self.output_key = check_reduction(reduction), output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "dwce"))
        target = prepare_target(logits, get_label(batch, "dwce"), "dwce")
        weight = need_target(batch, self.key, "dwce", "U-Net weight map B x 1 x *spatial", logits).to(logits)
        ce, _ = voxel_ce(logits, target)
        w = weight if target.binary else weight[:, 0]
        loss = reduce(w * ce, self.reduction)
        return {"loss": loss, "dwce": loss}


@register_loss("cedl")
class CEDiceLoss(nn.Module):
    """CE + Dice (CEDL, the CWCD paper's baseline): ``L = λ_ce·mean CE + λ_dice·(1 − Dice_fg)``.

    Dice over the foreground classes, summed over batch and space, smooth 1e-3 (code); ``dice="pooled"``
    (code: one Dice over all foreground classes, dominated by large organs) or ``"per_class"`` (mean of
    per-class Dice; equals MONAI ``DiceCELoss(include_background=False, batch=True)``).
    """

    def __init__(self, dice: str = "pooled", lambda_ce: float = 1.0, lambda_dice: float = 1.0,
                 smooth: float = 1e-3, output_key: str | None = None) -> None:
        super().__init__()
        if dice not in ("pooled", "per_class"):
            raise ValueError(f"cedl: dice must be 'pooled' or 'per_class', got {dice!r}")
        self.pooled, self.lambda_ce, self.lambda_dice = dice == "pooled", lambda_ce, lambda_dice
        self.smooth, self.output_key = smooth, output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "cedl"))
        target = prepare_target(logits, get_label(batch, "cedl"), "cedl")
        ce, norm = voxel_ce(logits, target)
        ce = ce.sum() / norm.sum().clamp_min(1e-12)
        prob = torch.sigmoid(logits) if target.binary else logits.softmax(1)[:, 1:]
        onehot = target.onehot if target.binary else target.onehot[:, 1:]
        dims = [0, *range(2, prob.ndim)] if not self.pooled else list(range(prob.ndim))
        dice = (1 - soft_dice(prob, onehot, dims, self.smooth)).mean()
        return {"loss": self.lambda_ce * ce + self.lambda_dice * dice, "ce": ce, "dice": dice}
