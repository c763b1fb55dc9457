"""An nnU-Net-style dynamic U-Net (Isensee et al., "nnU-Net", Nature Methods 2021), 2-D or 3-D.

The topology is derived from the patch size and the voxel spacing with nnU-Net's rule
(``plan_unet``): at every stage, pool (stride 2) each axis whose feature map is still at least
``2 * min_feature_map_size`` and whose current spacing is within a factor 2 of the smallest one; an axis gets
3-wide conv kernels once its spacing is within a factor 2 of the smallest (1 before: anisotropic data starts
with ``1x3x3``); stop when no axis can be pooled (a single poolable axis must still be ``>= 3 *
min_feature_map_size``). Widths ``base * 2**stage`` capped at 512 (2-D) / 320 (3-D).

Each stage: two ``conv -> InstanceNorm(affine) -> LeakyReLU(0.01)`` (MONAI ``UnetBasicBlock``), the first one
strided (downsampling by convolution); decoder: transposed conv with kernel = stride, skip concatenation,
two convs; a 1x1 segmentation head per decoder stage for deep supervision. In training mode with
``deep_supervision=True`` the forward returns ``{"out": full-resolution logits, "aux": [lower decoder
stages, highest first, upsampled to the input size]}`` (nnU-Net weights them ``1/2**i``, see
``deep_supervision_weights``, which ``medseg train`` applies through ``losses/deep_supervision.py``; the
lowest-resolution decoder output is dropped, as nnU-Net gives it weight 0);
in eval mode it returns the logits only.

IFE (``docs/ife.md``, section Networks): ``ife="curvature"|"entropy"`` on the skips ``ife_levels=(1, 2)``
(0-based as everywhere in medseg, :class:`medseg.modules.ife.IFESpec`: skip ``l`` is the output of encoder
stage ``l + 1``, 0 = full resolution) with ``ife_ratio=(0.75, 0.5)``; the first conv of the matching decoder
stage takes ``C + floor(r C)`` skip channels plus the ``C`` upsampled ones. The older ``ife_stages=(2, 3)``
counts the same stages from 1 and is still accepted (give one of the two).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, get_conv_layer

from medseg.models import register_model
from medseg.modules.ife import IFESpec, IFESpecError, build_ife

NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


@dataclass(frozen=True)
class UNetPlan:
    """Per-stage strides and conv kernels (stage 0 has stride 1) and the widths."""

    strides: list[list[int]]
    kernels: list[list[int]]
    widths: list[int]

    @property
    def divisors(self) -> list[int]:
        """Per axis, the product of the strides: the patch must be a multiple of it."""
        return [math.prod(s[d] for s in self.strides) for d in range(len(self.strides[0]))]


def plan_unet(patch_size: Sequence[int], spacing: Sequence[float] | None = None, min_feature_map_size: int = 4,
              max_pools: int = 999, base: int = 32, max_features: int | None = None) -> UNetPlan:
    """nnU-Net's topology rule (``get_pool_and_conv_props``), see the module docstring."""
    dims = len(patch_size)
    if dims not in (2, 3):
        raise ValueError(f"nnunet: patch_size must have 2 or 3 entries, got {list(patch_size)}")
    spacing = [1.0] * dims if spacing is None else [float(s) for s in spacing]
    if len(spacing) != dims or min(spacing) <= 0:
        raise ValueError(f"nnunet: spacing {spacing} must have {dims} positive entries (one per patch axis)")
    size, sp = [float(s) for s in patch_size], list(spacing)
    kernel = [1] * dims
    strides, kernels, pools = [[1] * dims], [], [0] * dims
    while True:
        axes = [d for d in range(dims) if size[d] >= 2 * min_feature_map_size and pools[d] < max_pools]
        if not axes:
            break
        smallest = min(sp[d] for d in axes)
        axes = [d for d in axes if sp[d] / smallest < 2]
        if len(axes) == 1 and size[axes[0]] < 3 * min_feature_map_size:
            break
        kernel = [3 if kernel[d] == 3 or sp[d] / min(sp) < 2 else 1 for d in range(dims)]
        stride = [2 if d in axes else 1 for d in range(dims)]
        for d in axes:
            pools[d] += 1
            sp[d] *= 2
            size[d] = math.ceil(size[d] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    if len(strides) == 1:
        raise ValueError(f"nnunet: patch {list(patch_size)} is too small to pool even once (every axis needs "
                         f">= {2 * min_feature_map_size})")
    kernels.append([3] * dims)
    cap = max_features if max_features is not None else (512 if dims == 2 else 320)
    widths = [min(base * 2 ** i, cap) for i in range(len(strides))]
    return UNetPlan(strides, kernels, widths)


class DynamicUNet(nn.Module):
    """nnU-Net-style U-Net built from a :class:`UNetPlan` (module docstring)."""

    def __init__(self, plan: UNetPlan, in_channels: int = 1, out_channels: int = 1, deep_supervision: bool = True,
                 ife: IFESpec | None = None) -> None:
        super().__init__()
        self.plan = plan
        dims = len(plan.strides[0])
        self.spatial_dims = dims
        self.input_divisor = max(plan.divisors)
        self.deep_supervision = deep_supervision
        w = plan.widths
        n = len(w)
        self.encoders = nn.ModuleList(
            UnetBasicBlock(dims, in_channels if i == 0 else w[i - 1], w[i], plan.kernels[i], plan.strides[i], NORM, ACT)
            for i in range(n))
        self.ife, skip_widths = build_ife(ife, w[:-1], [f"nnunet.stage{i + 1}" for i in range(n - 1)], "raw_first",
                                          "skip connection")
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.heads = nn.ModuleDict()  # decoder index -> 1x1 head; the deepest decoder stage has none (weight 0)
        first_head = 1 if deep_supervision else n - 2
        for j, i in enumerate(range(n - 2, -1, -1)):  # decoder j joins skip i
            self.ups.append(get_conv_layer(dims, w[i + 1], w[i], plan.strides[i + 1], plan.strides[i + 1],
                                           conv_only=True, is_transposed=True))
            self.decoders.append(UnetBasicBlock(dims, skip_widths[i] + w[i], w[i], plan.kernels[i], 1, NORM, ACT))
            if j >= first_head or j == n - 2:
                self.heads[str(j)] = UnetOutBlock(dims, w[i], out_channels)

    @property
    def deep_supervision_weights(self) -> list[float]:
        """nnU-Net's weights for ``[out, *aux]``: ``1/2**i``, normalised to sum 1."""
        from medseg.losses.deep_supervision import nnunet_weights

        return nnunet_weights(len(self.heads))

    def check_input(self, x: torch.Tensor) -> None:
        spatial = list(x.shape[2:])
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"nnunet is {self.spatial_dims}-D but got input of shape {tuple(x.shape)}")
        div = self.plan.divisors
        if any(s % d for s, d in zip(spatial, div)):
            fix = [math.ceil(s / d) * d for s, d in zip(spatial, div)]
            raise ValueError(f"nnunet: spatial size {tuple(spatial)} must be divisible by {tuple(div)} per axis; "
                             f"pad or resize to {tuple(fix)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor | list[torch.Tensor]]:
        self.check_input(x)
        size = x.shape[2:]
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        supervise = self.deep_supervision and self.training
        last = len(self.decoders) - 1
        outs = []
        for j, (up, dec) in enumerate(zip(self.ups, self.decoders)):
            skip = self.ife.enhance(len(skips) - 1, skips.pop())
            x = dec(torch.cat([skip, up(x)], dim=1))
            if j == last or (supervise and str(j) in self.heads):
                outs.append(self.heads[str(j)](x))
        if not supervise:
            return outs[-1]
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        aux = [F.interpolate(o, size=size, mode=mode, align_corners=False) for o in outs[-2::-1]]
        return {"out": outs[-1], "aux": aux}


def nnunet_ife_spec(ife: str | None, ife_ratio: Sequence[float], ife_entropy_mode: str,
                    ife_levels: Sequence[int] | None, ife_stages: Sequence[int] | None) -> IFESpec | None:
    """The IFE spec of the factory options: ``ife_levels`` (0-based) or the older ``ife_stages`` (1-based)."""
    if ife_levels is not None and ife_stages is not None:
        raise IFESpecError(f"nnunet: give ife_levels {tuple(ife_levels)} (0-based) or ife_stages "
                           f"{tuple(ife_stages)} (the same skips counted from 1), not both")
    if ife_stages is not None:
        return IFESpec.from_kwargs("nnunet", ife, ife_ratio, ife_stages, ife_entropy_mode, levels_key="ife_stages",
                                   levels_base=1)
    return IFESpec.from_kwargs("nnunet", ife, ife_ratio, (1, 2) if ife_levels is None else ife_levels,
                               ife_entropy_mode)


@register_model("nnunet", aliases=("dynunet",))
def nnunet(in_channels: int = 1, out_channels: int = 1, patch_size: Sequence[int] = (256, 256),
           spacing: Sequence[float] | None = None, base: int = 32, max_features: int | None = None,
           min_feature_map_size: int = 4, max_pools: int = 999, deep_supervision: bool = True, ife: str | None = None,
           ife_ratio: Sequence[float] = (0.75, 0.5), ife_entropy_mode: str = "hist1d",
           ife_levels: Sequence[int] | None = None, ife_stages: Sequence[int] | None = None) -> DynamicUNet:
    """nnU-Net-style dynamic U-Net (topology from patch size and spacing); ``ife=`` adds IFE on the skips
    ``ife_levels`` (0-based; default ``(1, 2)`` = encoder stages 2 and 3). ``ife_stages`` is the older,
    1-based name of the same skips (``ife_stages=(2, 3)`` == ``ife_levels=(1, 2)``), kept for compatibility."""
    plan = plan_unet(patch_size, spacing, min_feature_map_size, max_pools, base, max_features)
    spec = nnunet_ife_spec(ife, ife_ratio, ife_entropy_mode, ife_levels, ife_stages)
    return DynamicUNet(plan, in_channels, out_channels, deep_supervision, spec)
