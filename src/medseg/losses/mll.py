"""MLL (multi-level structural loss, ``methods.md`` §4.3): PointRend-sampled pixel term and Eq. 11.

Point sampling follows Kirillov et al., "PointRend: Image Segmentation as Rendering", CVPR 2020
(detectron2 ``point_features.get_uncertain_point_coords_with_randomness``), ``methods.md`` §1.6.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.losses import register_loss
from medseg.losses._common import (LossInputError, Schedule, as_float, foreground, get_label, main_logits,
                                   prepare_target, probabilities, soft_dice)
from medseg.losses.boundary import BoundaryLoss


def point_sample(x: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``x`` (``N x C x *spatial``) at ``coords`` (``N x P x d`` in [0, 1], spatial axis order) with
    ``grid_sample(align_corners=False)``; returns ``N x C x P``."""
    n, p, d = coords.shape
    grid = (coords.flip(-1) * 2 - 1).view(n, p, *([1] * (d - 1)), d).to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, align_corners=False).view(n, x.shape[1], p)


def point_uncertainty(values: torch.Tensor) -> torch.Tensor:
    """``−|z|`` for one channel (binary), ``z_2nd − z_best`` for several (``N x C x P`` -> ``N x P``)."""
    if values.shape[1] == 1:
        return -values[:, 0].abs()
    top2 = values.topk(2, dim=1).values
    return top2[:, 1] - top2[:, 0]


def sample_uncertain_points(logits: torch.Tensor, num_points: int, oversample: float = 3.0,
                            importance: float = 0.75, generator: torch.Generator | None = None,
                            return_candidates: bool = False) -> Any:
    """PointRend training points: ``k·N`` uniform candidates, the ``int(m·N)`` most uncertain of them plus
    ``N − int(m·N)`` chosen at random among the other candidates. No gradient. Returns ``B x N x d``
    coordinates in [0, 1] (and the candidates ``B x kN x d`` and their uncertainty if asked)."""
    if oversample < 1 or not 0 <= importance <= 1 or num_points < 1:
        raise ValueError(f"point sampling needs oversample >= 1, 0 <= importance <= 1, num_points >= 1; got "
                         f"{oversample}, {importance}, {num_points}")
    b, dims = logits.shape[0], logits.ndim - 2
    n_cand = int(num_points * oversample)
    with torch.no_grad():
        cand = torch.rand(b, n_cand, dims, generator=generator, device="cpu").to(logits.device)
        unc = point_uncertainty(point_sample(logits.detach(), cand))
        n_imp = int(importance * num_points)
        idx_imp = unc.topk(n_imp, dim=1).indices
        score = torch.rand(b, n_cand, generator=generator, device="cpu").to(logits.device)
        score.scatter_(1, idx_imp, -1.0)
        idx_rand = score.topk(num_points - n_imp, dim=1).indices
        idx = torch.cat([idx_imp, idx_rand], 1)
        coords = cand.gather(1, idx.unsqueeze(-1).expand(-1, -1, dims))
    return (coords, cand, unc) if return_candidates else coords


@register_loss("mll_point")
class MLLPointLoss(nn.Module):
    """MLL pixel term ``E_P`` (Eq. 10): mean BCE at PointRend-sampled uncertain points.

    Logits at any stride (``output_key``); each channel is its own binary map (sigmoid, float label
    ``B x C x H x W`` at full resolution), or softmax CE for K >= 2 with an int64 label (uncertainty
    = second-best − best logit). Prediction at a point: bilinear sample of the logits; target: nearest
    sample of the full-resolution label at the same normalised coordinate. N = 1024 points per map,
    oversampling k = 3, importance m = 0.75 (detectron2 semantic defaults).
    """

    def __init__(self, num_points: int = 1024, oversample: float = 3.0, importance: float = 0.75,
                 output_key: str | None = None) -> None:
        super().__init__()
        self.num_points, self.oversample, self.importance = num_points, oversample, importance
        self.output_key = output_key

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, self.output_key, "mll_point"))
        label = get_label(batch, "mll_point")
        loss = self.point_loss(logits, label)
        return {"loss": loss, "point": loss}

    def point_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        b, c = logits.shape[:2]
        if label.ndim != logits.ndim and not (logits.shape[1] > 1 and label.ndim == logits.ndim - 1):
            raise LossInputError(f"loss 'mll_point': label {tuple(label.shape)} and logits {tuple(logits.shape)} "
                                 f"need the same number of spatial dims")
        if label.is_floating_point():
            if label.shape[:2] != (b, c):
                raise LossInputError(f"loss 'mll_point': binary label {tuple(label.shape)} needs one channel per "
                                     f"logit channel of {tuple(logits.shape)}")
            flat = logits.reshape(b * c, 1, *logits.shape[2:])
            coords = sample_uncertain_points(flat, self.num_points, self.oversample, self.importance)
            pred = point_sample(flat, coords)
            truth = point_sample(label.reshape(b * c, 1, *label.shape[2:]).to(flat), coords, mode="nearest")
            return F.binary_cross_entropy_with_logits(pred, truth)
        if c < 2:
            raise LossInputError(f"loss 'mll_point': one logit channel needs a float 0/1 label, got {label.dtype}")
        label = label[:, 0] if label.ndim == logits.ndim else label
        if int(label.min()) < 0 or int(label.max()) >= c:
            raise LossInputError(f"loss 'mll_point': label values outside [0, {c}) for {c} logit channels")
        coords = sample_uncertain_points(logits, self.num_points, self.oversample, self.importance)
        pred = point_sample(logits, coords)
        truth = point_sample(label.unsqueeze(1).to(logits), coords, mode="nearest")[:, 0].round().long()
        return F.cross_entropy(pred, truth)


def region_dice(prob: torch.Tensor, truth: torch.Tensor, smooth: float = 1e-6) -> torch.Tensor:
    """RSTN ``E_R``: ``1 − (2Σ v·p + s)/(Σ(v + p) + s)`` per sample (pooled over channels), batch mean."""
    return (1 - soft_dice(prob, truth, range(1, prob.ndim), smooth)).mean()


@register_loss("mll")
class MLLLoss(nn.Module):
    """MLL, Eq. 11: ``L = ω1·E_R(P_c) + ω2·[E_R(P_f) + α_e·E_B(P_f) + β_e·E_P(L_f)]``.

    ``E_R``: RSTN soft Dice per 3-slice unit (smooth 1e-6) on the coarse (``coarse_key``) and fine
    (``fine_key``) full-slice outputs; ``E_B``: Kervadec boundary loss on the fine probabilities
    (``batch["sdf"]``); ``E_P``: the PointRend pixel term on the ``point_key`` logits. By default these are
    the fine model's logits at its output stride (``outputs["logits"]``, stride 4 for ``c2f_fine``) when the
    output dict has them, as the paper says, else the ``fine_key`` output; the label stays at full
    resolution (points are sampled at the same normalised coordinates; ``batch["label_crop"]``, when given,
    is the label of the crop the ``"logits"`` cover). In epochs with β_e = 0 the pixel
    term is not computed at all (no sampling; ``"point"`` is reported as 0).
    ω1 = 0.3, ω2 = 2/3; α_e = min(1, 0.2·e), β_e = 0 before epoch 12 then 1 (``set_epoch``).
    ``coarse_key=None`` drops the coarse term (single-output models).
    """

    def __init__(self, omega1: float = 0.3, omega2: float = 2.0 / 3.0, alpha: dict | None = None,
                 beta: dict | None = None, coarse_key: str | None = "coarse", fine_key: str = "out",
                 point_key: str | None = None, num_points: int = 1024, oversample: float = 3.0,
                 importance: float = 0.75, spacing: str = "pixel") -> None:
        super().__init__()
        self.omega1, self.omega2 = omega1, omega2
        self.alpha = Schedule.build(alpha or {"start": 0.0, "step": 0.2, "max": 1.0})
        self.beta = Schedule.build(beta or {"from_epoch": 12})
        self.coarse_key, self.fine_key, self.point_key = coarse_key, fine_key, point_key
        self.boundary = BoundaryLoss(spacing=spacing, output_key=fine_key)
        self.point = MLLPointLoss(num_points, oversample, importance, output_key=point_key)
        self.requires = set(self.boundary.requires)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def point_logits_key(self, outputs: Any) -> str | None:
        """``point_key`` if set, else the output-stride logits when present (``"crop_logits"``, the crop's logits
        in the coarse-to-fine training step, or ``"logits"``), else ``fine_key``."""
        if self.point_key is not None:
            return self.point_key
        for key in ("crop_logits", "logits"):
            if isinstance(outputs, dict) and key in outputs:
                return key
        return self.fine_key

    def pixel_term(self, outputs: Any, batch: dict) -> torch.Tensor:
        """``E_P`` on the logits named by :meth:`point_logits_key` against the full-resolution label of their
        frame: ``batch["label_crop"]`` for the crop's ``"logits"`` when the batch has it (the coarse-to-fine
        training step), else ``batch["label"]``."""
        key = self.point_logits_key(outputs)
        logits = as_float(main_logits(outputs, key, "mll"))
        in_crop = key in ("logits", "crop_logits") and "label_crop" in batch
        label = batch["label_crop"] if in_crop else get_label(batch, "mll")
        return self.point.point_loss(logits, label)

    def region(self, outputs: Any, batch: dict, key: str) -> torch.Tensor:
        logits = as_float(main_logits(outputs, key, "mll"))
        target = prepare_target(logits, get_label(batch, "mll"), "mll")
        return region_dice(foreground(probabilities(logits, target), target), foreground(target.onehot, target))

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        alpha, beta = self.alpha(self.epoch), self.beta(self.epoch)
        fine = self.region(outputs, batch, self.fine_key)
        boundary = self.boundary(outputs, batch)["boundary"]
        point = self.pixel_term(outputs, batch) if beta else fine.new_zeros(())
        total = self.omega2 * (fine + alpha * boundary + beta * point)
        out = {"region_fine": fine, "boundary": boundary, "point": point}
        if self.coarse_key is not None:
            coarse = self.region(outputs, batch, self.coarse_key)
            total = total + self.omega1 * coarse
            out["region_coarse"] = coarse
        return {"loss": total, **out}
