"""The coarse and fine 2-D networks of the coarse-to-fine (MLL/MLN, RSTN-based) pipeline, and the crop box.

Both are ResNet-18 (timm) + DeepLab-v3 ASPP (rates 6/12/18, ``medseg.modules.aspp``) + two 1x1 convs, on
3-slice units (3 channels in, one logit map per slice out). Following the MLL paper's chosen row:

- ``c2f_coarse``: output stride 8: stem conv stride 2, max-pool, layer2 stride 2; layer3 and layer4 lose their
  strides and use dilation 2 and 4;
- ``c2f_fine``: output stride 4: as the coarse model but the stem conv has stride 1 (the max-pool is kept).
  Its input has 6 channels, ``[image * F_S(coarse prob), image]`` (``medseg.modules.saliency``).

Dilated blocks use dilation ``d`` in *both* 3x3 convs (padding ``d``). timm's ``output_stride=8`` gives the
first block of a dilated stage the previous stage's dilation in its first conv (torchvision's convention);
we set it to the stage's own dilation, as the spec asks. Weights are unchanged by this, so ImageNet ResNet-18
weights load as they are.

``pretrained`` is ``False`` or the path of a local ResNet-18 state dict (``medseg.modules.encoders``); there
is no download. With weights and a 6-channel input, the RGB stem kernel is copied to both halves and halved,
so the stem's response to ``[x, x]`` equals the pretrained stem's response to ``x``.

``forward(x)`` returns ``{"out": logits at the input size (bilinear), "logits": logits at the output
stride}``; the MLL pixel term samples the stride-4 ``"logits"``.

Crop helpers (RSTN): :func:`crop_box` (bounding box of ``prob >= 0.5`` over the three slices, margin K = 20,
optional jitter), :func:`crop` and :func:`uncrop` (outside the box the logits are -1e7, probability 0).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.modules.aspp import ASPP
from medseg.modules.encoders import timm_encoder

MARGIN = 20
FILL_LOGIT = -1e7
Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open, in pixels


def set_stage_dilation(stage: nn.Module, dilation: int) -> None:
    """Every 3x3 conv of a ResNet stage (timm ``BasicBlock``s) gets ``dilation`` and padding ``dilation``."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            module.dilation, module.padding = (dilation, dilation), (dilation, dilation)


def expand_stem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` (a multiple of its own): the kernel repeated along the
    input channels and divided by the repeat count, so ``[x, x]`` gives the response the original gives to ``x``."""
    repeat, rest = divmod(in_channels, conv.in_channels)
    if rest or repeat < 1:
        raise ValueError(f"cannot expand a {conv.in_channels}-channel stem to {in_channels} input channels")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.repeat(1, repeat, 1, 1) / repeat)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class C2FNet(nn.Module):
    """ResNet-18 + ASPP + two 1x1 convs at output stride 8 (coarse) or 4 (fine)."""

    spatial_dims = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3, output_stride: int = 8,
                 pretrained: bool | str = False, rates: Sequence[int] = (6, 12, 18), aspp_dropout: float = 0.5,
                 width: int = 256) -> None:
        super().__init__()
        if output_stride not in (4, 8):
            raise ValueError(f"c2f: output_stride must be 4 (fine) or 8 (coarse), got {output_stride}")
        stem_in = 3 if pretrained else in_channels  # weights are RGB: load at 3, then expand
        self.backbone = timm_encoder("resnet18", (1, 4), pretrained, output_stride=8, in_chans=stem_in)
        if stem_in != in_channels:
            self.backbone.conv1 = expand_stem(self.backbone.conv1, in_channels)
        if output_stride == 4:
            self.backbone.conv1.stride = (1, 1)
        set_stage_dilation(self.backbone.layer3, 2)
        set_stage_dilation(self.backbone.layer4, 4)
        self.output_stride = self.input_divisor = output_stride
        self.aspp = ASPP(self.backbone.feature_info.channels()[-1], width, tuple(rates), aspp_dropout)
        self.head = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.Conv2d(width, out_channels, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _, deep = self.backbone(x)
        logits = self.head(self.aspp(deep))
        out = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
        return {"out": out, "logits": logits}


@register_model("c2f_coarse")
def c2f_coarse(in_channels: int = 3, out_channels: int = 3, pretrained: bool | str = False,
               rates: Sequence[int] = (6, 12, 18), aspp_dropout: float = 0.5) -> C2FNet:
    """Coarse model of the MLL coarse-to-fine pipeline (ResNet-18 + ASPP, output stride 8, 3-slice units)."""
    return C2FNet(in_channels, out_channels, 8, pretrained, rates, aspp_dropout)


@register_model("c2f_fine")
def c2f_fine(in_channels: int = 6, out_channels: int = 3, pretrained: bool | str = False,
             rates: Sequence[int] = (6, 12, 18), aspp_dropout: float = 0.5) -> C2FNet:
    """Fine model of the MLL coarse-to-fine pipeline (output stride 4; saliency-weighted + raw slices in)."""
    return C2FNet(in_channels, out_channels, 4, pretrained, rates, aspp_dropout)


# ------------------------------------------------------------------------------------------ crop box
def crop_box(mask: torch.Tensor | np.ndarray, margin: int = MARGIN, jitter: bool = False,
             rng: np.random.Generator | None = None) -> Box | None:
    """Bounding box of the non-zero pixels of ``mask`` (``... x H x W``, all leading channels jointly),
    extended by ``margin`` on each side and clipped to the slice; ``None`` when the mask is empty (the
    caller then uses the ground-truth box in training, or skips the unit at test time).

    ``jitter`` (RSTN training): with probability 0.5 the margin stays ``margin``; otherwise each side gets an
    independent random integer in ``[0, 2 * margin]`` from ``rng``.
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    plane = m.reshape(-1, *m.shape[-2:]).any(axis=0)
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if rows.size == 0:
        return None
    sides = np.full(4, margin)
    if jitter:
        rng = rng if rng is not None else np.random.default_rng()
        if rng.random() >= 0.5:
            sides = rng.integers(0, 2 * margin + 1, size=4)
    h, w = plane.shape
    return (max(0, int(rows[0] - sides[0])), min(h, int(rows[-1] + 1 + sides[1])),
            max(0, int(cols[0] - sides[2])), min(w, int(cols[-1] + 1 + sides[3])))


def crop(x: torch.Tensor, box: Box) -> torch.Tensor:
    """The ``box`` region of the last two axes of ``x`` (native resolution, no resizing)."""
    y0, y1, x0, x1 = box
    return x[..., y0:y1, x0:x1]


def uncrop(logits: torch.Tensor, box: Box, size: Sequence[int], fill: float = FILL_LOGIT) -> torch.Tensor:
    """Full-slice logits of spatial ``size`` with ``logits`` placed at ``box`` and ``fill`` (-1e7, probability
    0) elsewhere; differentiable with respect to ``logits``."""
    y0, y1, x0, x1 = box
    if tuple(logits.shape[-2:]) != (y1 - y0, x1 - x0):
        raise ValueError(f"uncrop: logits {tuple(logits.shape[-2:])} do not fit box {box}")
    h, w = int(size[0]), int(size[1])
    return F.pad(logits, (x0, w - x1, y0, h - y1), value=fill)
