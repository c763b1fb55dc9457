"""Atrous Spatial Pyramid Pooling (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation", ECCV 2018 = DeepLabV3+), as in jfzhang95/pytorch-deeplab-xception, the code
the IFE paper builds on (``docs/ife.md``, section Networks).

Branches on the encoder output: a 1x1 conv, three 3x3 convs with dilation ``rates`` (6/12/18 at output
stride 16), and image pooling (global average, 1x1 conv); each conv -> BN -> ReLU. The five outputs are
concatenated (5 x 256 = 1280) and fused by 1x1 conv -> BN -> ReLU -> Dropout(0.5).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = 0 if kernel == 1 else dilation
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PoolBatchNorm(nn.BatchNorm2d):
    """BatchNorm for the 1x1 image-pooling branch that also trains at batch size 1.

    With one value per channel (batch 1 after global pooling) batch statistics are undefined; this layer
    then normalises with the running statistics instead of raising (it does not update them).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x[0, 0].numel() == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ASPP(nn.Module):
    """ASPP: ``in_channels -> out_channels`` at the input's resolution (DeepLabV3+ defaults)."""

    def __init__(self, in_channels: int = 2048, out_channels: int = 256, rates: Sequence[int] = (6, 12, 18),
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(in_channels, out_channels, 1)])
        self.branches.extend(conv_bn_relu(in_channels, out_channels, 3, r) for r in rates)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                  PoolBatchNorm(out_channels), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            nn.Conv2d(out_channels * (len(rates) + 2), out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True), nn.Dropout(dropout))

    def concat_branches(self, x: torch.Tensor) -> torch.Tensor:
        """The five branch outputs concatenated (``5 x out_channels``), before the 1x1 projection."""
        outs = [branch(x) for branch in self.branches]
        pooled = F.interpolate(self.pool(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        return torch.cat([*outs, pooled], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.concat_branches(x))
