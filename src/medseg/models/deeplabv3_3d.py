"""DeepLabV3 in 3-D (Chen et al., 2017, "Rethinking Atrous Convolution"), built from MONAI blocks.

MONAI has no 3-D DeepLabV3 and the CWCD paper names the network without describing it, so the layout is
ours (``docs/cwcd.md``):

* backbone: a residual 3-D encoder of MONAI ``ResidualUnit`` blocks (two conv-norm-act subunits and a
  projected shortcut each): widths ``base * (1, 2, 4, 8)``; the first three units use stride 2 (output
  stride 8), the last one stride 1 with dilation 2 (the atrous stage that keeps the resolution);
* ASPP-3D: MONAI ``SimpleASPP`` (1x1x1 and three 3x3x3 convolutions with dilations 2, 4, 6 on the
  stride-8 features, each conv-BN-act) plus DeepLabV3's image-pooling branch (global average, 1x1x1 conv,
  ReLU; no BatchNorm, which is undefined on one value per channel at batch size 1), concatenated and
  fused by 1x1x1 conv-BN-ReLU and dropout;
* head: 1x1x1 convolution to K classes, trilinear upsampling x8 to the input size (no decoder: V3, not V3+).

``input_divisor = 8``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.models._inputs import check_volume

NORMS = {"batch": "BATCH", "instance": "INSTANCE"}


class ASPP3D(nn.Module):
    """MONAI ``SimpleASPP`` branches plus an image-pooling branch, fused to ``channels``."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int] = (2, 4, 6),
                 norm: str = "BATCH", dropout: float = 0.1) -> None:
        super().__init__()
        from monai.networks.blocks import SimpleASPP

        self.branches = SimpleASPP(3, in_channels, channels, kernel_sizes=(1, 3, 3, 3),
                                   dilations=(1, *dilations), norm_type=norm, acti_type="RELU")
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(in_channels, channels, 1), nn.ReLU(inplace=True))
        n_branches = 1 + len(dilations) + 1
        norm_layer = nn.BatchNorm3d(channels) if norm == "BATCH" else nn.InstanceNorm3d(channels, affine=True)
        self.project = nn.Sequential(nn.Conv3d(channels * n_branches, channels, 1, bias=False), norm_layer,
                                     nn.ReLU(inplace=True), nn.Dropout3d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([self.branches(x), pooled], dim=1))


class DeepLabV3_3D(nn.Module):
    """3-D DeepLabV3: residual encoder (output stride 8, last stage dilated), ASPP-3D, x8 upsampling.

    Args:
        in_channels / out_channels: image channels / logit channels K.
        base: width of the first stage (widths ``base * (1, 2, 4, 8)``).
        aspp_channels: width of every ASPP branch and of the fused features.
        dilations: ASPP dilations of the 3x3x3 branches (at output stride 8).
        norm: ``batch`` (default) or ``instance``.
    """

    spatial_dims = 3
    input_divisor = 8

    def __init__(self, in_channels: int = 1, out_channels: int = 2, base: int = 16, aspp_channels: int = 64,
                 dilations: Sequence[int] = (2, 4, 6), norm: str = "batch", dropout: float = 0.1) -> None:
        super().__init__()
        from monai.networks.blocks import ResidualUnit

        if norm not in NORMS:
            raise ValueError(f"deeplabv3_3d: unknown norm '{norm}' (valid: {', '.join(NORMS)})")
        n = NORMS[norm]
        widths = [base, base * 2, base * 4, base * 8]
        strides = [2, 2, 2, 1]
        layers, cin = [], in_channels
        for i, (w, s) in enumerate(zip(widths, strides)):
            layers.append(ResidualUnit(3, cin, w, strides=s, subunits=2, act="RELU", norm=n,
                                       dilation=2 if i == len(widths) - 1 else 1))
            cin = w
        self.in_channels = in_channels
        self.backbone = nn.Sequential(*layers)
        self.aspp = ASPP3D(cin, aspp_channels, dilations, n, dropout)
        self.head = nn.Conv3d(aspp_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume("deeplabv3_3d", x, self.in_channels, self.input_divisor)
        logits = self.head(self.aspp(self.backbone(x)))
        return F.interpolate(logits, size=x.shape[2:], mode="trilinear", align_corners=False)


@register_model("deeplabv3_3d")
def deeplabv3_3d(in_channels: int = 1, out_channels: int = 2, base: int = 16, aspp_channels: int = 64,
                 dilations: Sequence[int] = (2, 4, 6), norm: str = "batch", dropout: float = 0.1) -> DeepLabV3_3D:
    """3-D DeepLabV3 (MONAI residual units + ASPP-3D), output stride 8; input sizes multiples of 8."""
    return DeepLabV3_3D(in_channels, out_channels, base, aspp_channels, dilations, norm, dropout)
