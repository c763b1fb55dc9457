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
                          rt: Runtime, sw_batch_size: int = 2,
                          mirror_axes: Sequence[int] | None = None) -> torch.Tensor:
    """Sliding-window inference (MONAI's Gaussian blending, slab-bounded aggregation:
    :mod:`medseg.engine.sliding_window`) for a ``B x C x D x H x W`` volume; a model with a
    ``fixed_input_size`` (UNETR) gets exactly that window. ``mirror_axes``: mirroring TTA inside each
    window (``--tta flip``, :mod:`medseg.engine.ensemble`)."""
    from medseg.engine.sliding_window import sliding_window_inference

    divisor = int(getattr(model, "input_divisor", 1))
    roi = [max(divisor, (min(r, s) // divisor) * divisor) for r, s in zip(roi_size, volume.shape[2:])]
    roi = list(getattr(model, "fixed_input_size", None) or roi)
    x, crop = pad_to_multiple(volume.to(rt.device), divisor)

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        with rt.autocast():
            return main_output(model(patch)).float()

    out = sliding_window_inference(x, predictor, roi, overlap, sw_batch_size, mirror_axes=mirror_axes)
    return out[crop]


def probabilities(logits: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """Sigmoid for one channel (binary) or for independent channels (``sigmoid``: BraTS region outputs
    WT / TC / ET, which overlap), softmax over channels otherwise."""
    return torch.sigmoid(logits) if sigmoid or logits.shape[1] == 1 else logits.softmax(1)


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


def slicewise_logits(model: nn.Module, volume: torch.Tensor, axis: int, size: Sequence[int], rt: Runtime,
                     chunk: int = 16) -> torch.Tensor:
    """A 2-D model over every slice of a ``1 x C x D x H x W`` volume along spatial ``axis`` (0, 1, 2):
    slices resized to the training ``size``, logits resized back and restacked."""
    vol = volume[0].movedim(axis + 1, 0)  # S x C x a x b
    plane = vol.shape[2:]
    outs = []
    for start in range(0, vol.shape[0], chunk):
        part = vol[start:start + chunk]
        part = F.interpolate(part, size=tuple(size), mode="bilinear", align_corners=False)
        outs.append(resize_logits(forward_logits(model, part, rt), plane).cpu())
    logits = torch.cat(outs, 0)  # S x K x a x b
    return logits.movedim(0, axis + 1)[None]


def slice_axis(cfg: Any) -> int:
    """The spatial axis a 2-D model slices volumes along: ``data.nifti.slice_axis``, else 2."""
    return cfg.data.nifti.slice_axis if cfg.data.nifti.slice_axis is not None else 2


def case_logits(model: nn.Module, images: torch.Tensor, cfg: Any, rt: Runtime,
                mirror_axes: Sequence[int] | None = None) -> torch.Tensor:
    """Logits of a batch whatever its kind: 2-D images (one forward), volumes with a 3-D model (MONAI
    sliding window over ``eval.sliding_window`` or ``data.nifti.patch_size``; ``mirror_axes``: mirroring
    TTA inside the windows), or volumes with a 2-D model (slice by slice along ``data.nifti.slice_axis``)."""
    model_dims = int(getattr(model, "spatial_dims", images.ndim - 2))
    if images.ndim == 5 and model_dims == 2:
        axis = slice_axis(cfg)
        size = cfg.data.nifti.patch_size if cfg.data.nifti.patch_size and len(cfg.data.nifti.patch_size) == 2 \
            else cfg.data.image_size[-2:]
        return slicewise_logits(model, images, axis, size, rt)
    if images.ndim == 5:
        roi = cfg.eval.sliding_window or cfg.data.nifti.patch_size or list(images.shape[2:])
        return sliding_window_logits(model, images, roi, cfg.eval.overlap, rt, mirror_axes=mirror_axes)
    return forward_logits(model, images, rt)
