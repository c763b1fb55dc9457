"""Inference: whole-image forward with padding to the model's divisor, MONAI sliding windows for volumes,
probabilities and label maps."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.engine.runtime import Runtime, memory_format


def main_output(outputs: Any) -> torch.Tensor:
    """The main logits of a model output (a tensor, or the ``"out"`` entry of a dict)."""
    return outputs["out"] if isinstance(outputs, dict) else outputs


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial dims up to multiples of ``divisor``; returns the padded tensor and the crop back."""
    spatial = x.shape[2:]
    target = [((s + divisor - 1) // divisor) * divisor for s in spatial]
    pads: list[int] = []
    for s, t in reversed(list(zip(spatial, target))):
        pads += [0, t - s]
    crop = (slice(None), slice(None), *[slice(0, s) for s in spatial])
    if not any(pads):
        return x, crop
    return F.pad(x, pads), crop


def forward_logits(model: nn.Module, images: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """fp32 logits of a batch at its own size (padded to the model's divisor and cropped back)."""
    divisor = int(getattr(model, "input_divisor", 1))
    dims = images.ndim - 2
    x, crop = pad_to_multiple(images.to(rt.device), divisor)
    x = x.contiguous(memory_format=memory_format(rt, dims)) if dims in (2, 3) else x
    with rt.autocast():
        out = main_output(model(x))
    return out.float()[crop]


def sliding_window_logits(model: nn.Module, volume: torch.Tensor, roi_size: Sequence[int], overlap: float,
                          rt: Runtime, sw_batch_size: int = 2) -> torch.Tensor:
    """MONAI's sliding-window inference (Gaussian blending) for a ``B x C x D x H x W`` volume."""
    from monai.inferers import sliding_window_inference

    divisor = int(getattr(model, "input_divisor", 1))
    roi = [max(divisor, (min(r, s) // divisor) * divisor) for r, s in zip(roi_size, volume.shape[2:])]
    x, crop = pad_to_multiple(volume.to(rt.device), divisor)

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        with rt.autocast():
            return main_output(model(patch)).float()

    out = sliding_window_inference(x, roi, sw_batch_size, predictor, overlap=overlap, mode="gaussian")
    return out[crop]


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid for one channel (binary), softmax over channels otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(1)


def labels_from_probabilities(prob: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``B x *spatial`` int64 labels: ``prob >= threshold`` (binary) or argmax."""
    if prob.shape[1] == 1:
        return (prob[:, 0] >= threshold).long()
    return prob.argmax(1)


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear/trilinear resize of logits to an original size (before the sigmoid/softmax)."""
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    mode = "bilinear" if logits.ndim == 4 else "trilinear"
    return F.interpolate(logits, size=tuple(int(s) for s in size), mode=mode, align_corners=False)
