"""U-Net (Ronneberger et al., MICCAI 2015) in 2-D and 3-D, with an optional timm encoder.

Double ``conv3 -> norm -> ReLU`` blocks, max-pool downsampling, transposed-conv (stride 2) upsampling,
skip concatenation, 1x1 head. ``base=64, depth=4`` gives the 64-128-256-512-1024 layout used by the
IFE paper's UNet.

Encoder option (2-D, as segmentation_models_pytorch's ``tu-`` encoders; ``docs/models.md``):
``create_model("unet", encoder="tu-resnet18", depth=4)`` replaces the double-conv encoder by timm's
``resnet18`` (:func:`medseg.modules.encoders.timm_encoder`: ``features_only``, ``out_indices=0..depth``,
``in_chans`` adaptation, strict local weights). The decoder is the same U-Net decoder built on the encoder's
feature widths ``C_l`` and reductions ``s_l`` (timm ``feature_info``): level ``l`` is upsampled by a
transposed conv of kernel = stride ``s_l / s_{l-1}``, concatenated with skip ``l-1``, double conv to
``C_{l-1}``; the logits at stride ``s_0`` are resized bilinearly to the input size.

IFE option (Liu et al., MICCAI 2023; ``docs/ife.md``, section Networks): ``create_model("unet",
ife="curvature", ife_ratio=(0.75, 0.5))`` enhances the skip features c2 (level 1, 128 ch, stride 2) and c3
(level 2, 256 ch, stride 4) with ``cat([skip, top-k(skip)], dim=1)`` before they join the decoder, so the
decoder blocks take ``int(128 (2 + r0)) = 352`` and ``int(256 (2 + r1)) = 640`` channels for (0.75, 0.5)
(baseline 256 and 512). The released code concatenates along the batch axis; we use the channel axis.
Levels count from 0 (:class:`medseg.modules.ife.IFESpec`); with an encoder, level ``l`` is its ``l``-th
feature.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.modules.encoders import timm_encoder
from medseg.modules.ife import IFESpec, build_ife

TIMM_PREFIX = "tu-"


def conv_nd(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def norm_nd(dims: int, kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"unknown norm '{kind}' (valid: batch, instance, group)")


class DoubleConv(nn.Sequential):
    """(conv3 -> norm -> ReLU) x 2."""

    def __init__(self, cin: int, cout: int, dims: int = 2, norm: str = "batch") -> None:
        conv = conv_nd(dims)
        super().__init__(
            conv(cin, cout, 3, padding=1, bias=False), norm_nd(dims, norm, cout), nn.ReLU(inplace=True),
            conv(cout, cout, 3, padding=1, bias=False), norm_nd(dims, norm, cout), nn.ReLU(inplace=True),
        )


def unet_timm_encoder(encoder: str, depth: int, in_channels: int, pretrained: bool | str | None) -> nn.Module:
    """The timm encoder of ``encoder="tu-<timm name>"`` giving features ``0..depth`` (errors name the key)."""
    if not isinstance(encoder, str) or not encoder.startswith(TIMM_PREFIX):
        raise ValueError(f"unet: encoder={encoder!r} is not supported; use 'tu-<timm model name>' (e.g. "
                         f"'tu-resnet18') or null for the plain UNet")
    try:
        return timm_encoder(encoder[len(TIMM_PREFIX):], range(depth + 1), pretrained, in_chans=in_channels)
    except ValueError as err:
        raise ValueError(f"unet: encoder={encoder!r}: {err}") from None


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; widths ``base * 2**level``; optional IFE on the skips, optional encoder.

    Args:
        in_channels: image channels.
        out_channels: logit channels (1 for binary, K for K-class softmax).
        base: width of the first level (64 in the original / IFE paper).
        depth: number of poolings (4 in the original: 5 levels); with ``encoder``, features ``0..depth``.
        spatial_dims: 2 or 3.
        norm: ``batch`` | ``instance`` | ``group``.
        widths: explicit per-level widths (overrides ``base``/``depth``).
        ife: the :class:`~medseg.modules.ife.IFESpec` of the skips (levels 0..n-2, 0 = shallowest); ``None``.
        encoder: ``"tu-<timm name>"`` (2-D): a timm encoder replaces the double-conv encoder (module
            docstring); its parameters are ``encoder.*``. ``None``: the plain UNet.
        pretrained: the encoder's weights (``False``, ``True`` = timm hub, or a local file path).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base: int = 64, depth: int = 4,
                 spatial_dims: int = 2, norm: str = "batch", widths: Sequence[int] | None = None,
                 ife: IFESpec | None = None, encoder: str | None = None,
                 pretrained: bool | str | None = False) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.encoder: nn.Module | None = None
        if encoder is not None:
            if spatial_dims != 2 or widths is not None:
                raise ValueError(f"unet: encoder={encoder!r} needs a 2-D UNet without widths= (the encoder "
                                 f"gives the widths)")
            self.encoder = unet_timm_encoder(encoder, depth, in_channels, pretrained)
            widths = self.encoder.feature_info.channels()
            reductions = self.encoder.feature_info.reduction()
            if any(b < a or b % a for a, b in zip(reductions, reductions[1:])):
                raise ValueError(f"unet: encoder={encoder!r} gives features at strides {reductions}; the UNet "
                                 f"decoder needs each stride to be a multiple of the previous one")
        else:
            widths = list(widths) if widths is not None else [base * 2**i for i in range(depth + 1)]
            reductions = [2**i for i in range(len(widths))]
        if len(widths) < 2:
            raise ValueError("a UNet needs at least two levels (depth >= 1)")
        self.spatial_dims = spatial_dims
        self.widths = list(widths)
        self.reductions = list(reductions)
        self.input_divisor = max(reductions)
        if encoder is None:
            self.encoders = nn.ModuleList()
            cin = in_channels
            for w in widths:
                self.encoders.append(DoubleConv(cin, w, spatial_dims, norm))
                cin = w
            self.pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims](2)
        self.ife, skip_widths = build_ife(ife, widths[:-1], [f"unet.skip{lv}" for lv in range(len(widths) - 1)],
                                          "raw_first", "skip connection")
        up = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(widths) - 1, 0, -1):
            stride = reductions[level] // reductions[level - 1]
            self.ups.append(up(widths[level], widths[level - 1], stride, stride=stride))
            self.decoders.append(
                DoubleConv(skip_widths[level - 1] + widths[level - 1], widths[level - 1], spatial_dims, norm))
        self.head = conv_nd(spatial_dims)(widths[0], out_channels, 1)

    def decoder_in_channels(self, level: int) -> int:
        """Input width of the decoder block joining skip ``level``: ``2 C + floor(r C)`` (``2 C`` without IFE)."""
        return self.decoders[len(self.decoders) - 1 - level][0].in_channels

    def check_input(self, x: torch.Tensor) -> None:
        spatial = x.shape[2:]
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"{type(self).__name__} is {self.spatial_dims}-D but got input of shape "
                             f"{tuple(x.shape)}")
        bad = [s for s in spatial if s % self.input_divisor]
        if bad:
            fix = [((s + self.input_divisor - 1) // self.input_divisor) * self.input_divisor for s in spatial]
            raise ValueError(f"{type(self).__name__}: spatial size {tuple(spatial)} must be divisible by "
                             f"{self.input_divisor}; pad or resize to {tuple(fix)}")

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The features of every level, shallowest first."""
        if self.encoder is not None:
            return list(self.encoder(x))
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        size = x.shape[2:]
        skips = self.encode(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            skip = self.ife.enhance(len(skips) - 1, skips.pop())
            x = dec(torch.cat([skip, up(x)], dim=1))
        x = self.head(x)
        if self.reductions[0] != 1:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def _build(in_channels: int, out_channels: int, base: int, depth: int, dims: int, norm: str,
           widths: Sequence[int] | None, ife: str | None, ife_ratio: Sequence[float], ife_entropy_mode: str,
           ife_levels: Sequence[int], encoder: str | None = None, pretrained: bool | str | None = False) -> UNet:
    spec = IFESpec.from_kwargs("unet" if dims == 2 else "unet3d", ife, ife_ratio, ife_levels, ife_entropy_mode)
    return UNet(in_channels, out_channels, base, depth, dims, norm, widths, spec, encoder, pretrained)


@register_model("unet")
def unet(in_channels: int = 3, out_channels: int = 1, base: int = 64, depth: int = 4, norm: str = "batch",
         widths: Sequence[int] | None = None, ife: str | None = None, ife_ratio: Sequence[float] = (0.75, 0.5),
         ife_entropy_mode: str = "hist1d", ife_levels: Sequence[int] = (1, 2), encoder: str | None = None,
         pretrained: bool | str | None = False) -> UNet:
    """2-D U-Net (base 64, depth 4 = the 64-128-256-512-1024 layout of the IFE paper); ``ife=`` adds IFE on
    the skips ``ife_levels`` (0-based, 0 = full resolution); ``encoder="tu-<timm name>"`` uses a timm encoder
    (features ``0..depth``, ``pretrained`` = its weights)."""
    return _build(in_channels, out_channels, base, depth, 2, norm, widths, ife, ife_ratio, ife_entropy_mode,
                  ife_levels, encoder, pretrained)


@register_model("unet3d")
def unet3d(in_channels: int = 1, out_channels: int = 2, base: int = 16, depth: int = 4, norm: str = "instance",
           widths: Sequence[int] | None = None, ife: str | None = None, ife_ratio: Sequence[float] = (0.75, 0.5),
           ife_entropy_mode: str = "hist1d", ife_levels: Sequence[int] = (1, 2)) -> UNet:
    """3-D U-Net (base 16, depth 4 by default, instance norm); ``ife=`` adds IFE on 3-D skips."""
    return _build(in_channels, out_channels, base, depth, 3, norm, widths, ife, ife_ratio, ife_entropy_mode,
                  ife_levels)
