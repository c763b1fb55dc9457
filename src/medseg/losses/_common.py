"""Helpers shared by the loss modules: output/label normalisation, validation, reductions, schedules."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from medseg.errors import UserError
from medseg.ops.morphology import label_channels

REDUCTIONS = ("mean", "sum", "none")


class LossInputError(UserError, ValueError):
    """Outputs or batch that a loss cannot use; the message names the loss, the shapes and the fix."""


def main_logits(outputs: Any, key: str | None = None, loss: str = "loss") -> torch.Tensor:
    """The tensor a loss reads: ``outputs[key]`` if ``key`` is given, else ``outputs["out"]`` or ``outputs``."""
    if isinstance(outputs, dict):
        key = key or "out"
        if key not in outputs:
            raise LossInputError(f"loss '{loss}': the model output has no '{key}' (keys: {sorted(outputs)})")
        return outputs[key]
    if key not in (None, "out"):
        raise LossInputError(f"loss '{loss}' reads output '{key}' but the model returned a single tensor "
                             f"of shape {tuple(outputs.shape)}")
    return outputs


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Half precision -> float32; float32/float64 kept (float64 for gradcheck)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point() else x


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


@dataclass
class Target:
    """A label normalised against the logits: ``binary`` (sigmoid per channel, float ``B x C x *spatial``)
    or multi-class (softmax, ``index`` int64 ``B x *spatial``, ``onehot`` float ``B x K x *spatial``)."""

    binary: bool
    onehot: torch.Tensor  # B x C x *spatial: the binary maps, or the one-hot of the classes
    index: torch.Tensor | None = None  # int64 class map (multi-class only), ignore_index kept
    valid: torch.Tensor | None = None  # B x 1 x *spatial float mask of non-ignored voxels (multi-class)


def get_label(batch: dict, loss: str) -> torch.Tensor:
    if "label" not in batch:
        raise LossInputError(f"loss '{loss}': the batch has no 'label' (keys: {sorted(batch)})")
    return batch["label"]


def prepare_target(logits: torch.Tensor, label: torch.Tensor, loss: str, ignore_index: int | None = None,
                   allow_binary: bool = True, allow_multiclass: bool = True) -> Target:
    """Validate ``label`` against ``logits`` ``B x K x *spatial`` and build a :class:`Target`.

    ``K = 1`` (or a float label with as many channels as logits): binary, sigmoid per channel.
    ``K >= 2`` with an int64 label ``B x *spatial`` (or ``B x 1 x *spatial``): softmax over K classes.
    """
    shape, k = tuple(logits.shape), logits.shape[1]
    if logits.ndim < 3:
        raise LossInputError(f"loss '{loss}': logits must be B x K x *spatial, got {shape}")
    if label.is_floating_point():
        if k >= 2 and label.shape != logits.shape and allow_multiclass:
            raise LossInputError(f"loss '{loss}': {k} softmax channels need an int64 class-index label "
                                 f"B x *spatial, got a {label.dtype} label of shape {tuple(label.shape)} (for "
                                 f"binary segmentation use one output channel; else cast the label to long)")
        if not allow_binary:
            raise LossInputError(f"loss '{loss}' needs K >= 2 softmax logits and an int64 label B x *spatial, "
                                 f"got logits {shape} and a float label {tuple(label.shape)}")
        return _binary_target(logits, label, loss)
    if k == 1:
        if not allow_binary:
            raise LossInputError(f"loss '{loss}' needs K >= 2 softmax channels, got logits {shape}; "
                                 f"use the binary loss (e.g. 'bce') for one logit channel")
        if label.ndim == logits.ndim - 1:
            label = label.unsqueeze(1)
        return _binary_target(logits, label.to(logits.dtype), loss)
    if not allow_multiclass:
        raise LossInputError(f"loss '{loss}' is binary: it needs one logit channel per binary map and a float "
                             f"label of the same shape, got logits {shape} and label {tuple(label.shape)}")
    if label.ndim == logits.ndim and label.shape[1] == 1:
        label = label[:, 0]
    if label.shape != logits.shape[:1] + logits.shape[2:]:
        raise LossInputError(f"loss '{loss}': label shape {tuple(label.shape)} does not match logits {shape} "
                             f"(expected {(shape[0], *shape[2:])})")
    label = label.long()
    valid = torch.ones_like(label, dtype=torch.bool) if ignore_index is None else label != ignore_index
    bad = valid & ((label < 0) | (label >= k))
    if bool(bad.any()):
        values = torch.unique(label[bad])[:8].tolist()
        raise LossInputError(f"loss '{loss}': label values {values} are outside [0, {k}) for logits with {k} "
                             f"channels (wrong num_classes / out_channels, or set ignore_index)")
    onehot = label_channels(torch.where(valid, label, 0), k).to(logits.dtype) * valid.unsqueeze(1)
    return Target(False, onehot, label, valid.unsqueeze(1).to(logits.dtype))


def _binary_target(logits: torch.Tensor, label: torch.Tensor, loss: str) -> Target:
    if label.shape != logits.shape:
        raise LossInputError(f"loss '{loss}': binary label shape {tuple(label.shape)} does not match logits "
                             f"{tuple(logits.shape)} (one float 0/1 map per logit channel)")
    bad = (label < 0) | (label > 1)
    if bool(bad.any()):
        raise LossInputError(f"loss '{loss}': binary label values must lie in [0, 1], found "
                             f"{torch.unique(label[bad])[:8].tolist()}")
    return Target(True, label.to(logits.dtype))


def probabilities(logits: torch.Tensor, target: Target) -> torch.Tensor:
    return torch.sigmoid(logits) if target.binary else logits.softmax(1)


def foreground(x: torch.Tensor, target: Target, include_background: bool = False) -> torch.Tensor:
    """Drop channel 0 (background) for softmax targets unless asked to keep it."""
    return x if target.binary or include_background else x[:, 1:]


def need_target(batch: dict, key: str, loss: str, what: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """``batch[key]`` or a clear error saying how to produce it."""
    if key not in batch:
        raise LossInputError(
            f"loss '{loss}' needs batch['{key}'] ({what}) but the batch has only {sorted(batch)}; call "
            f"medseg.ops.prepare_targets(batch, loss.requires, num_classes) after moving the batch to the "
            f"device, or add it in the data pipeline")
    value = batch[key]
    if like is not None and (value.shape[0] != like.shape[0] or value.shape[2:] != like.shape[2:]):
        raise LossInputError(f"loss '{loss}': batch['{key}'] has shape {tuple(value.shape)} but the outputs "
                             f"are {tuple(like.shape)} (same batch and spatial size expected)")
    return value


def dice_sums(prob: torch.Tensor, truth: torch.Tensor, dims: Sequence[int]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Σ p·t, Σ p, Σ t)`` over ``dims`` (all of them when ``dims`` covers every axis: 0-d tensors)."""
    dims = list(dims)
    keep = [d for d in range(prob.ndim) if d not in dims]
    if not keep:
        return (prob * truth).sum(), prob.sum(), truth.sum()
    return (prob * truth).sum(dims), prob.sum(dims), truth.sum(dims)


def dice_from_sums(tp: torch.Tensor, ps: torch.Tensor, ts: torch.Tensor, smooth_nr: float = 1e-5,
                   smooth_dr: float | None = None) -> torch.Tensor:
    """Soft Dice coefficient ``(2·tp + s_nr) / (Σp + Σt + s_dr)`` (Milletari et al., V-Net, 3DV 2016);
    ``s_dr`` defaults to ``s_nr``."""
    return (2 * tp + smooth_nr) / (ps + ts + (smooth_nr if smooth_dr is None else smooth_dr))


def soft_dice(prob: torch.Tensor, truth: torch.Tensor, dims: Sequence[int], smooth_nr: float = 1e-5,
              smooth_dr: float | None = None) -> torch.Tensor:
    """The one soft-Dice kernel of medseg's losses: ``(2Σ p·t + s_nr) / (Σp + Σt + s_dr)`` summed over
    ``dims``, one value per remaining index (e.g. ``dims = [0, 2, 3]``: one per channel, batch pooled)."""
    return dice_from_sums(*dice_sums(prob, truth, dims), smooth_nr, smooth_dr)


def resize_like(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear/trilinear resize of logits to ``size`` (no-op when equal)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


@dataclass
class Schedule:
    """Epoch-dependent weight ``w(e) = 0`` if ``e < from_epoch`` else
    ``clip(start + step·(e − from_epoch), min, max)``.

    Examples: MLL's α ramp ``Schedule(start=0, step=0.2, max=1)``; its β switch-on
    ``Schedule(from_epoch=12)``; Kervadec's StealWeight region weight ``Schedule(start=1, step=-0.01, min=0.1)``.
    """

    start: float = 1.0
    step: float = 0.0
    min: float = float("-inf")
    max: float = float("inf")
    from_epoch: int = 0

    def __call__(self, epoch: int) -> float:
        if epoch < self.from_epoch:
            return 0.0
        value = self.start + self.step * (epoch - self.from_epoch)
        return float(min(self.max, max(self.min, value)))

    @classmethod
    def build(cls, spec: Any) -> "Schedule | None":
        if spec is None or isinstance(spec, Schedule):
            return spec
        if not isinstance(spec, dict):
            raise ValueError(f"a schedule is a mapping with keys start, step, min, max, from_epoch; got {spec!r}")
        bad = set(spec) - {"start", "step", "min", "max", "from_epoch"}
        if bad:
            raise ValueError(f"unknown schedule key(s) {sorted(bad)} (valid: start, step, min, max, from_epoch)")
        return cls(**spec)
