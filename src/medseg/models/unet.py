"""U-Net (Ronneberger et al., MICCAI 2015) in 2-D and 3-D.

Double ``conv3 -> norm -> ReLU`` blocks, max-pool downsampling, transposed-conv (stride 2) upsampling,
skip concatenation, 1x1 head. ``base=64, depth=4`` gives the 64-128-256-512-1024 layout used by the
IFE paper's UNet.

IFE option (Liu et al., MICCAI 2023; ``docs/ife.md``, section Networks): ``create_model("unet",
ife="curvature", ife_ratio=(0.75, 0.5))`` enhances the skip features c2 (level 1, 128 ch, stride 2) and c3
(level 2, 256 ch, stride 4) with ``cat([skip, top-k(skip)], dim=1)`` before they join the decoder, so the
decoder blocks take ``int(128 (2 + r0)) = 352`` and ``int(256 (2 + r1)) = 640`` channels for (0.75, 0.5)
(baseline 256 and 512). The released code concatenates along the batch axis; we use the channel axis.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from medseg.models import register_model
from medseg.modules.ife import IFE, check_ratio, selected_channels


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


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; widths ``base * 2**level``.

    Args:
        in_channels: image channels.
        out_channels: logit channels (1 for binary, K for K-class softmax).
        base: width of the first level (64 in the original / IFE paper).
        depth: number of poolings (4 in the original: 5 levels).
        spatial_dims: 2 or 3.
        norm: ``batch`` | ``instance`` | ``group``.
        widths: explicit per-level widths (overrides ``base``/``depth``).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base: int = 64, depth: int = 4,
                 spatial_dims: int = 2, norm: str = "batch", widths: Sequence[int] | None = None) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        widths = list(widths) if widths is not None else [base * 2**i for i in range(depth + 1)]
        if len(widths) < 2:
            raise ValueError("a UNet needs at least two levels (depth >= 1)")
        self.spatial_dims = spatial_dims
        self.widths = widths
        self.input_divisor = 2 ** (len(widths) - 1)
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]
        up = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoders.append(DoubleConv(cin, w, spatial_dims, norm))
            cin = w
        self.pool = pool(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(widths) - 1, 0, -1):
            self.ups.append(up(widths[level], widths[level - 1], 2, stride=2))
            self.decoders.append(
                DoubleConv(self.decoder_in_channels(level - 1), widths[level - 1], spatial_dims, norm))
        self.head = conv_nd(spatial_dims)(widths[0], out_channels, 1)

    def decoder_in_channels(self, level: int) -> int:
        """Input width of the decoder block at ``level`` (skip + upsampled); subclasses widen it."""
        return 2 * self.widths[level]

    def enhance_skip(self, level: int, skip: torch.Tensor) -> torch.Tensor:
        """Hook applied to the skip feature of ``level`` before concatenation (identity here)."""
        return skip

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            level = len(skips) - 1
            skip = self.enhance_skip(level, skips.pop())
            x = dec(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


class IFEUNet(UNet):
    """U-Net whose skip features at ``ife_levels`` go through :class:`~medseg.modules.IFE` (raw first).

    Args (besides :class:`UNet`'s):
        ife: ``"curvature"`` or ``"entropy"``.
        ife_ratio: one ratio per level in ``ife_levels`` (the paper's "(c2, c3)" pair; 0 = no IFE there).
        ife_entropy_mode: ``hist1d`` | ``batch_hist1d`` | ``unique`` | ``joint2d``.
        ife_levels: skip levels to enhance (0 = full resolution); ``(1, 2)`` = c2, c3 as in the paper.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base: int = 64, depth: int = 4,
                 spatial_dims: int = 2, norm: str = "batch", widths: Sequence[int] | None = None,
                 ife: str = "curvature", ife_ratio: Sequence[float] = (0.75, 0.5),
                 ife_entropy_mode: str = "hist1d", ife_levels: Sequence[int] = (1, 2)) -> None:
        ratios = [float(r) for r in ife_ratio]
        levels = [int(v) for v in ife_levels]
        if len(ratios) != len(levels):
            raise ValueError(f"unet: ife_ratio {tuple(ratios)} needs one ratio per level in ife_levels "
                             f"{tuple(levels)}")
        n_levels = len(widths) if widths is not None else depth + 1
        for level in levels:
            if not 0 <= level < n_levels - 1:
                raise ValueError(f"unet: ife level {level} has no skip connection; valid levels are "
                                 f"0..{n_levels - 2}")
        self._ife_ratio = {lv: r for lv, r in zip(levels, ratios) if r != 0}
        super().__init__(in_channels, out_channels, base, depth, spatial_dims, norm, widths)
        self.ife = nn.ModuleDict({
            str(lv): IFE(check_ratio(r, f"unet.skip{lv}", self.widths[lv]), ife, ife_entropy_mode,
                         channels=self.widths[lv], name=f"unet.skip{lv}", order="raw_first")
            for lv, r in self._ife_ratio.items()})

    def decoder_in_channels(self, level: int) -> int:
        """``2 C + floor(r C)`` at an enhanced level (``int(C (2 + r))`` in the paper), else ``2 C``."""
        extra = selected_channels(self._ife_ratio[level], self.widths[level]) if level in self._ife_ratio else 0
        return 2 * self.widths[level] + extra

    def enhance_skip(self, level: int, skip: torch.Tensor) -> torch.Tensor:
        key = str(level)
        return self.ife[key](skip) if key in self.ife else skip


def _build(in_channels: int, out_channels: int, base: int, depth: int, dims: int, norm: str,
           widths: Sequence[int] | None, ife: str | None, ife_ratio: Sequence[float], ife_entropy_mode: str,
           ife_levels: Sequence[int]) -> UNet:
    if ife is None or ife in ("none", "off"):
        return UNet(in_channels, out_channels, base, depth, dims, norm, widths)
    return IFEUNet(in_channels, out_channels, base, depth, dims, norm, widths, ife, ife_ratio, ife_entropy_mode,
                   ife_levels)


@register_model("unet")
def unet(in_channels: int = 3, out_channels: int = 1, base: int = 64, depth: int = 4, norm: str = "batch",
         widths: Sequence[int] | None = None, ife: str | None = None, ife_ratio: Sequence[float] = (0.75, 0.5),
         ife_entropy_mode: str = "hist1d", ife_levels: Sequence[int] = (1, 2)) -> UNet:
    """2-D U-Net (base 64, depth 4 = the 64-128-256-512-1024 layout of the IFE paper); ``ife=`` adds IFE."""
    return _build(in_channels, out_channels, base, depth, 2, norm, widths, ife, ife_ratio, ife_entropy_mode,
                  ife_levels)


@register_model("unet3d")
def unet3d(in_channels: int = 1, out_channels: int = 2, base: int = 16, depth: int = 4, norm: str = "instance",
           widths: Sequence[int] | None = None, ife: str | None = None, ife_ratio: Sequence[float] = (0.75, 0.5),
           ife_entropy_mode: str = "hist1d", ife_levels: Sequence[int] = (1, 2)) -> UNet:
    """3-D U-Net (base 16, depth 4 by default, instance norm); ``ife=`` adds IFE on 3-D skips."""
    return _build(in_channels, out_channels, base, depth, 3, norm, widths, ife, ife_ratio, ife_entropy_mode,
                  ife_levels)
