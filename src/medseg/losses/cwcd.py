"""CWCD: contour-weighted cross-entropy (CWCE) + separable Dice (SDL) (``methods.md`` §5).

Huang et al., contour-weighted loss for class-imbalanced medical image segmentation (code:
``huangzyong/Contour-weighted-Loss-Seg`` ``losses/BoundaryWeightedLoss.py``). Contours ``C_k = G_k − erode(G_k)``
come from the batch (derived target ``contour``, computed on the device from the augmented label by
min-pool erosion, :func:`medseg.ops.prepare_targets`): cube 3, 6 iterations (paper) or, with
``compat=True``, cube 2 and 1 iteration (the released code).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from medseg.losses import register_loss
from medseg.losses._common import (LossInputError, as_float, get_label, main_logits, need_target,
                                   prepare_target, soft_dice)
from medseg.losses.distribution import voxel_ce
from medseg.ops.targets import target_key


def contour_key(compat: bool, kernel: int | None, iterations: int | None) -> str:
    kernel = kernel if kernel is not None else (2 if compat else 3)
    iterations = iterations if iterations is not None else (1 if compat else 6)
    return target_key("contour", kernel=int(kernel), iterations=int(iterations))


def _contours(batch: dict, key: str, loss: str, logits: torch.Tensor) -> torch.Tensor:
    cont = need_target(batch, key, loss, "contour maps B x max(K, 2) x *spatial", logits).to(logits)
    expected = max(logits.shape[1], 2)
    if cont.shape[1] != expected:
        raise LossInputError(f"loss '{loss}': batch['{key}'] has {cont.shape[1]} channels, expected {expected} "
                             f"(one per class incl. background) for logits {tuple(logits.shape)}")
    return cont


class _ContourLoss(nn.Module):
    name = "cwcd"

    def __init__(self, compat: bool, kernel: int | None, iterations: int | None, output_key: str | None) -> None:
        super().__init__()
        self.compat = compat
        self.key = contour_key(compat, kernel, iterations)
        self.requires = {self.key}
        self.output_key = output_key

    def inputs(self, outputs: Any, batch: dict, ignore_index: int | None = None):
        logits = as_float(main_logits(outputs, self.output_key, self.name))
        target = prepare_target(logits, get_label(batch, self.name), self.name, ignore_index)
        return logits, target, _contours(batch, self.key, self.name, logits)


@register_loss("cwce")
class ContourWeightedCELoss(_ContourLoss):
    """Contour-weighted CE ``L = mean((1 + λ_c·U)·CE) + mean(CE)``, ``U = clip(Σ_k C_k, 0, 1)``, λ_c = 2.

    ``U`` is the union of the contour bands of all classes incl. background (so the band lies on both sides
    of every boundary): contour voxels weigh 4, the others 2 (the code's 2:1 ratio on doubled CE). Softmax
    CE (``ignore_index`` 100 as the code; means over non-ignored voxels), or BCE for one logit channel.
    """

    name = "cwce"

    def __init__(self, lambda_c: float = 2.0, ignore_index: int = 100, compat: bool = False,
                 kernel: int | None = None, iterations: int | None = None, output_key: str | None = None) -> None:
        super().__init__(compat, kernel, iterations, output_key)
        self.lambda_c, self.ignore_index = lambda_c, ignore_index

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits, target, cont = self.inputs(outputs, batch, self.ignore_index)
        ce, norm = voxel_ce(logits, target)
        union = cont.sum(1).clamp(0, 1)
        if target.binary:
            union = union.unsqueeze(1)
        count = norm.sum().clamp_min(1.0)
        loss = ((1 + self.lambda_c * union) * ce).sum() / count + ce.sum() / count
        return {"loss": loss, "cwce": loss}


@register_loss("sdl")
class SeparableDiceLoss(_ContourLoss):
    """Separable Dice (CWCD): Dice on the contour band and on the rest of each foreground channel.

    Dice on the contour region ``Ω_c`` (``C_k = 1``) and on the rest ``Ω_n`` of each
    foreground channel, ``Dice_r = (2Σ_{Ω_r} p·t + s)/(Σ_{Ω_r} p + Σ_{Ω_r} t + s)``, s = 1e-3.

    Default (paper, Eqs. 4–5): per-class Dice (summed over batch and space) averaged over the classes present
    in the batch, ``L = λ·(1 − Dice_c) + (1 − λ)·(1 − Dice_n)``, λ = 0.5. ``compat=True`` (code): Dice pooled
    over all foreground classes and the batch, ``L = (1 − Dice_c) + (1 − Dice_n)``, and the code's contours.
    """

    name = "sdl"

    def __init__(self, lam: float = 0.5, compat: bool = False, smooth: float = 1e-3, kernel: int | None = None,
                 iterations: int | None = None, output_key: str | None = None) -> None:
        super().__init__(compat, kernel, iterations, output_key)
        self.lam, self.smooth = lam, smooth

    def dice(self, prob: torch.Tensor, truth: torch.Tensor, region: torch.Tensor, present: torch.Tensor
             ) -> torch.Tensor:
        p, t = prob * region, truth * region
        if self.compat:
            return soft_dice(p, t, range(prob.ndim), self.smooth)
        per_class = soft_dice(p, t, [0, *range(2, prob.ndim)], self.smooth)
        return (per_class * present).sum() / present.sum().clamp_min(1)

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits, target, cont = self.inputs(outputs, batch)
        if target.binary:
            prob, truth = torch.sigmoid(logits), target.onehot
        else:
            prob, truth = logits.softmax(1)[:, 1:], target.onehot[:, 1:]
        cont = cont[:, 1:]
        present = (truth.sum([0, *range(2, truth.ndim)]) > 0).to(prob)
        dice_c = self.dice(prob, truth, cont, present)
        dice_n = self.dice(prob, truth, 1 - cont, present)
        if self.compat:
            loss = (1 - dice_c) + (1 - dice_n)
        else:
            loss = self.lam * (1 - dice_c) + (1 - self.lam) * (1 - dice_n)
            if not bool(present.any()):
                loss = loss * 0 + (prob * 0).sum()  # nothing to segment: no signal (keeps the graph)
        return {"loss": loss, "sdl": loss, "dice_contour": dice_c, "dice_interior": dice_n}


@register_loss("cwcd")
class CWCDLoss(nn.Module):
    """CWCD loss ``L = L_CWCE + L_SDL`` (unit weights, Eq. 11): contour-weighted CE + separable Dice.

    ``compat=True`` reproduces the released code in both terms (contours: cube 2, 1 iteration; SDL pooled,
    unit weights). Other options go to the terms: ``lambda_c``, ``lam``, ``ignore_index``.
    """

    def __init__(self, compat: bool = False, lambda_c: float = 2.0, lam: float = 0.5, ignore_index: int = 100,
                 kernel: int | None = None, iterations: int | None = None, output_key: str | None = None) -> None:
        super().__init__()
        self.cwce = ContourWeightedCELoss(lambda_c, ignore_index, compat, kernel, iterations, output_key)
        self.sdl = SeparableDiceLoss(lam, compat, kernel=kernel, iterations=iterations, output_key=output_key)
        self.requires = self.cwce.requires | self.sdl.requires

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        cwce = self.cwce(outputs, batch)["loss"]
        sdl = self.sdl(outputs, batch)["loss"]
        return {"loss": cwce + sdl, "cwce": cwce, "sdl": sdl}
