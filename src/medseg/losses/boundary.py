"""Distance-based losses: Kervadec boundary loss, signed-distance regression, Hausdorff-distance loss.

Signed distance maps come from the batch (derived target ``sdf``: Kervadec's convention, negative inside;
see :mod:`medseg.ops.distance`), produced by :func:`medseg.ops.prepare_targets` or by the data pipeline.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from medseg.losses import register_loss
from medseg.losses._common import (LossInputError, Schedule, as_float, check_reduction, foreground,
                                   get_label, main_logits, need_target, prepare_target, probabilities, reduce)
from medseg.ops.distance import unsigned_boundary_distance
from medseg.ops.targets import foreground_channels, target_key


def _sdf_key(spacing: str, clip: float | None = None) -> str:
    return target_key("sdf", spacing=spacing, clip="none" if clip is None else float(clip))


def _match_channels(pred: torch.Tensor, sdf: torch.Tensor, loss: str) -> torch.Tensor:
    """Foreground channels of ``pred`` aligned with the ``sdf`` channels (drop background if K = C_fg + 1)."""
    if pred.shape[1] == sdf.shape[1]:
        return pred
    if pred.shape[1] == sdf.shape[1] + 1:
        return pred[:, 1:]
    raise LossInputError(f"loss '{loss}': batch['sdf'] has {sdf.shape[1]} channels but the output has "
                         f"{pred.shape[1]} (expected the foreground channels, or K = channels + 1)")


@register_loss("boundary")
class BoundaryLoss(nn.Module):
    """Boundary loss ``L_B = mean_{x, c ∈ fg} s_θ(x, c)·φ_c(x)`` (Kervadec et al., MIDL 2019 / MedIA 2021).

    ``s_θ``: softmax (K >= 2, background dropped) or sigmoid probabilities; ``φ``: signed distance of each
    foreground channel (``batch["sdf"]``; negative inside, 0 for absent classes). The mean over voxels and
    channels (the paper's Σ is normalised so the term is scale-free). ``schedule`` (optional) multiplies the
    loss by an epoch-dependent weight, e.g. MLL's ramp ``{"start": 0, "step": 0.2, "max": 1}``.
    ``spacing="meta"`` asks for maps in physical units from each sample's ``meta["spacing"]``; ``clip``
    (default none, as Kervadec) bounds ``|φ|`` and makes the on-the-fly maps much cheaper to compute.
    """

    def __init__(self, schedule: dict | None = None, spacing: str = "pixel", clip: float | None = None,
                 reduction: str = "mean", output_key: str | None = None) -> None:
        super().__init__()
        self.key = _sdf_key(spacing, clip)
        self.requires = {self.key}
        self.schedule = Schedule.build(schedule)
        self.epoch = 0
        self.reduction, self.output_key = check_reduction(reduction), output_key

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "boundary"))
        target = prepare_target(logits, get_label(batch, "boundary"), "boundary")
        sdf = need_target(batch, self.key, "boundary", "signed distance maps B x C_fg x *spatial", logits)
        prob = foreground(probabilities(logits, target), target)
        sdf = sdf.to(prob)
        prob = _match_channels(prob, sdf, "boundary")
        per = (prob * sdf).flatten(1).mean(1)
        loss = reduce(per, self.reduction)
        weight = self.schedule(self.epoch) if self.schedule else 1.0
        return {"loss": weight * loss, "boundary": loss}


def sdf_regression_goal(sdf: torch.Tensor, label: torch.Tensor, clip: float | None = None) -> torch.Tensor:
    """Signed-distance regression goal, positive inside: ``clip(M − φ, ±D)``.

    ``sdf``: Kervadec's φ per foreground channel (``B x C_fg x *spatial``, 0 on the object's outer ring);
    ``label``: the label it was computed from (float ``B x C_fg x ...`` maps, or int64 classes), giving the
    mask ``M``. Inside the object the goal is the distance to the background (``1 − φ``, >= one voxel on the
    outer ring), outside it is minus the distance to the object (``−φ``), so ``goal > 0`` is exactly ``M``.
    A channel whose object is absent gives 0 everywhere, a channel that fills the view 1 (φ ≡ 0 there).
    """
    mask = foreground_channels(label, sdf.shape[1] + 1)
    if mask.shape != sdf.shape:
        raise LossInputError(f"signed-distance goal: label maps {tuple(mask.shape)} do not match batch['sdf'] "
                             f"{tuple(sdf.shape)} (one map per foreground channel)")
    goal = mask.to(sdf) - sdf
    return goal if clip is None else goal.clamp(-clip, clip)


@register_loss("sdf_l2")
class SignedDistanceL2Loss(nn.Module):
    """Signed-distance regression ``mean (r − (−clip(φ, ±D)))²`` (MLN's boundary branch, ``methods.md`` §4.4).

    The output ``r`` (``output_key``, one channel per foreground map) regresses the signed distance with
    positive inside (``−φ``), in pixels (or mm with ``spacing="meta"``), optionally clipped to ``|φ| <= clip``
    (D = 20 px suggested for stability; the clipped map is then computed on cropped boxes, which is much
    cheaper); ``r > 0`` is the predicted mask. The goal is :func:`sdf_regression_goal`: ``M − φ``, i.e. the
    distance to the background inside the object (>= 1 px on its outer ring) and minus the distance to the
    object outside, so ``goal > 0`` is exactly the mask. (Kervadec's ``−φ`` alone is 0 on the object's outer
    ring, and ``r > 0`` would then learn to drop that ring.)
    """

    def __init__(self, clip: float | None = None, spacing: str = "pixel", reduction: str = "mean",
                 output_key: str | None = None) -> None:
        super().__init__()
        self.key = _sdf_key(spacing, clip)
        self.requires = {self.key}
        self.clip = clip
        self.reduction, self.output_key = check_reduction(reduction), output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        pred = as_float(main_logits(outputs, self.output_key, "sdf_l2"))
        sdf = need_target(batch, self.key, "sdf_l2", "signed distance maps B x C_fg x *spatial", pred).to(pred)
        pred = _match_channels(pred, sdf, "sdf_l2")
        goal = sdf_regression_goal(sdf, get_label(batch, "sdf_l2"), self.clip)
        loss = reduce(((pred - goal) ** 2).flatten(1).mean(1), self.reduction)
        return {"loss": loss, "sdf_l2": loss}


@register_loss("hausdorff")
class HausdorffDTLoss(nn.Module):
    """Hausdorff-distance loss (Karimi & Salcudean, IEEE TMI 2019): ``mean (p − g)²·(d_g^α + d_p^α)``.

    HD-DT form: ``L = mean_x (p − g)²·(d_g(x)^α + d_p(x)^α)``, α = 2.

    ``d_g``/``d_p``: distance to the boundary of the ground truth / of the thresholded prediction
    (``p > 0.5``, recomputed each step without gradient; 0 for empty or full masks), per sample and
    foreground channel; mean over voxels, then over samples and channels. Equals MONAI's
    ``HausdorffDTLoss``. Distances are exact (scipy on CPU, the torch EDT on CUDA).
    """

    def __init__(self, alpha: float = 2.0, include_background: bool = False, reduction: str = "mean",
                 output_key: str | None = None) -> None:
        super().__init__()
        self.alpha, self.include_background = alpha, include_background
        self.reduction, self.output_key = check_reduction(reduction), output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "hausdorff"))
        target = prepare_target(logits, get_label(batch, "hausdorff"), "hausdorff")
        prob = foreground(probabilities(logits, target), target, self.include_background)
        truth = foreground(target.onehot, target, self.include_background)
        with torch.no_grad():
            distance = (unsigned_boundary_distance(prob > 0.5) ** self.alpha
                        + unsigned_boundary_distance(truth > 0.5) ** self.alpha).to(prob)
        per = ((prob - truth) ** 2 * distance).flatten(2).mean(-1)
        loss = reduce(per, self.reduction)
        return {"loss": loss, "hausdorff": loss}
