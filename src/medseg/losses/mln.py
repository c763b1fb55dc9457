"""MLN loss (Eq. 13): region, boundary, pixel and fusion terms of the ``mln`` network (``docs/mll.md``).

``L = ω1·E_R(P_c) + ω2·[E_R(P_region) + α·E_B^S(P_b) + β·E_P(L_pixel) + γ·E_R(P_fusion)]`` with
``E_B^S(P_b) = E_B(σ(P_b)) + mean((P_b − goal)²)`` (Kervadec boundary loss on the sigmoid of the boundary
regression, plus the regression towards the signed distance, positive inside, outer ring kept:
:func:`medseg.losses.boundary.sdf_regression_goal`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.losses import register_loss
from medseg.losses._common import (LossInputError, Schedule, as_float, foreground, get_label, main_logits,
                                   prepare_target, probabilities)
from medseg.losses.boundary import BoundaryLoss, SignedDistanceL2Loss
from medseg.losses.mll import point_sample, region_dice


@register_loss("mln")
class MLNLoss(nn.Module):
    """MLN, Eq. 13, on the output dict of ``create_model("mln")`` (plus the coarse output).

    Terms (all binary, one sigmoid map per slice channel, float label ``B x C x H x W``). Frames: the branch
    outputs cover the fine network's crop; when the batch has ``label_crop`` (and ``box``, as the
    coarse-to-fine training step gives) they are compared with it and with the full-slice signed distances
    cut to the box, otherwise with ``batch["label"]``; the coarse output is compared with ``batch["label"]``.

    - ``region_coarse``: RSTN soft Dice of ``outputs[coarse_key]`` against ``batch[coarse_label_key]``
      (skipped with ``coarse_key=None``);
    - ``region``: soft Dice of ``outputs["region"]``;
    - ``boundary`` + ``sdf_l2``: ``E_B^S`` of the regression ``outputs["boundary"]`` (``batch["sdf"]``, pixel
      units, optional ``clip`` D on both parts);
    - ``pixel``: mean BCE of ``outputs["pixel_logits"]`` (``B x C x N``) against the label sampled (nearest)
      at ``outputs["pixel_coords"]``;
    - ``fusion``: soft Dice of ``outputs["fusion"]``.

    ω1 = 0.3, ω2 = 2/3; α = 1 from the start, β = γ = 0 before epoch 12 and 1 from then on (schedules as in
    :class:`medseg.losses._common.Schedule`, ``set_epoch``). A term whose weight is 0 in the current epoch
    is not computed (reported as 0), so the pixel and fusion outputs may be absent then.
    """

    def __init__(self, omega1: float = 0.3, omega2: float = 2.0 / 3.0, alpha: dict | None = None,
                 beta: dict | None = None, gamma: dict | None = None, coarse_key: str | None = "coarse",
                 coarse_label_key: str = "label", clip: float | None = None, spacing: str = "pixel") -> None:
        super().__init__()
        self.omega1, self.omega2 = omega1, omega2
        self.alpha = Schedule.build(alpha or {"start": 1.0})
        self.beta = Schedule.build(beta or {"from_epoch": 12})
        self.gamma = Schedule.build(gamma or {"from_epoch": 12})
        self.coarse_key, self.coarse_label_key = coarse_key, coarse_label_key
        self.boundary = BoundaryLoss(spacing=spacing, clip=clip, output_key="boundary")
        self.sdf_l2 = SignedDistanceL2Loss(clip=clip, spacing=spacing, output_key="boundary")
        self.requires = set(self.boundary.requires) | set(self.sdf_l2.requires)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def weights(self, epoch: int | None = None) -> tuple[float, float, float]:
        """``(α, β, γ)`` of ``epoch`` (default the current one)."""
        e = self.epoch if epoch is None else epoch
        return self.alpha(e), self.beta(e), self.gamma(e)

    @staticmethod
    def dice(outputs: Any, key: str, label: torch.Tensor) -> torch.Tensor:
        logits = as_float(main_logits(outputs, key, "mln"))
        target = prepare_target(logits, label, "mln")
        return region_dice(foreground(probabilities(logits, target), target), foreground(target.onehot, target))

    @staticmethod
    def pixel(outputs: Any, label: torch.Tensor) -> torch.Tensor:
        logits = as_float(main_logits(outputs, "pixel_logits", "mln"))
        coords = main_logits(outputs, "pixel_coords", "mln")
        if not label.is_floating_point() or label.shape[1] != logits.shape[1] or coords.shape[:2] != (
                logits.shape[0], logits.shape[2]):
            raise LossInputError(f"loss 'mln': pixel term needs a float label with one map per logit channel "
                                 f"and B x N x 2 coordinates; got label {tuple(label.shape)} {label.dtype}, "
                                 f"pixel_logits {tuple(logits.shape)}, pixel_coords {tuple(coords.shape)}")
        truth = point_sample(label.to(logits), coords.to(logits), mode="nearest")
        return F.binary_cross_entropy_with_logits(logits, truth)

    def fine_batch(self, batch: dict) -> dict:
        """The batch in the fine network's frame: ``label_crop`` (if given) as the label, and the signed
        distances of the full-slice label cut to ``batch["box"]`` when they are still full-slice."""
        if "label_crop" not in batch:
            return batch
        label = batch["label_crop"]
        out = {"label": label}
        for key in self.requires:
            if key in batch:
                sdf = batch[key]
                if sdf.shape[2:] != label.shape[2:] and "box" in batch:
                    y0, y1, x0, x1 = batch["box"]
                    sdf = sdf[..., y0:y1, x0:x1]
                out[key] = sdf
        return out

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        alpha, beta, gamma = self.weights()
        fine_batch = self.fine_batch(batch)
        label = get_label(fine_batch, "mln")
        region = self.dice(outputs, "region", label)
        zero = region.new_zeros(())
        boundary = self.boundary(outputs, fine_batch)["boundary"] if alpha else zero
        sdf_l2 = self.sdf_l2(outputs, fine_batch)["sdf_l2"] if alpha else zero
        pixel = self.pixel(outputs, label) if beta else zero
        fusion = self.dice(outputs, "fusion", label) if gamma else zero
        total = self.omega2 * (region + alpha * (boundary + sdf_l2) + beta * pixel + gamma * fusion)
        out = {"region": region, "boundary": boundary, "sdf_l2": sdf_l2, "pixel": pixel, "fusion": fusion}
        if self.coarse_key is not None:
            coarse_label = batch.get(self.coarse_label_key)
            if coarse_label is None:
                raise LossInputError(f"loss 'mln': the batch has no '{self.coarse_label_key}' for the coarse term "
                                     f"(keys: {sorted(batch)}); set coarse_label_key or coarse_key=None")
            coarse = self.dice(outputs, self.coarse_key, coarse_label)
            total = total + self.omega1 * coarse
            out["region_coarse"] = coarse
        return {"loss": total, **out}
