"""DeepLabV3+ (Chen et al., ECCV 2018) with a ResNet-101 encoder, as the IFE paper uses it.

Follows jfzhang95/pytorch-deeplab-xception (``docs/ife.md``, section Networks): ResNet-101 at output
stride 16 (layer4 undilated stride, multi-grid dilations ``2 x (1, 2, 4)``), ASPP (rates 6/12/18 + image
pooling -> 256 ch, Dropout 0.5); decoder: layer1 (256 ch, stride 4) -> 1x1 to 48 -> BN -> ReLU; ASPP output
upsampled bilinearly (align_corners=True) to stride 4, concatenated, then
``3x3->256, BN, ReLU, Dropout 0.5, 3x3->256, BN, ReLU, Dropout 0.1, 1x1->classes``; logits upsampled to the
input size. Kaiming-normal init in the decoder.

IFE (§2.4): ``ife="curvature"|"entropy"`` with ``ife_ratio=(r_low, r_aspp)`` enhances (a) the 48-ch
low-level feature after its 1x1+BN+ReLU and (b) the 256-ch ASPP output (stride 16, before upsampling;
``ife_aspp_pre_dropout=True`` scores the pre-dropout features instead, the released code scores the
dropout-masked ones) as ``cat([selected, raw])``; ``last_conv`` then takes
``48 + floor(48 r_low) + 256 + floor(256 r_aspp)`` channels (baseline 304; 532 for 0.75/0.75).
``ife_aspp=False`` enhances only the low-level feature (the paper's wording). The two points are IFE levels 0
(low level) and 1 (ASPP) of :class:`medseg.modules.ife.IFESpec`; a ratio of 0 means no IFE there.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.modules.aspp import ASPP
from medseg.modules.encoders import timm_encoder
from medseg.modules.ife import IFESpec, build_ife, gather_channels

LOW_LEVEL = 48
ASPP_WIDTH = 256


def apply_multi_grid(layer: nn.Sequential, dilation: int, grid: Sequence[int]) -> None:
    """Set the 3x3 conv dilations of a ResNet stage to ``dilation * grid[i]`` (DeepLab multi-grid)."""
    for i, block in enumerate(layer):
        d = dilation * grid[i % len(grid)]
        block.conv2.dilation = (d, d)
        block.conv2.padding = (d, d)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ with optional IFE; ``forward`` returns logits ``B x K x H x W``."""

    spatial_dims = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 1, encoder: str = "resnet101.tv_in1k",
                 pretrained: bool | str = False, output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                 ife: IFESpec | None = None, ife_aspp_pre_dropout: bool = False) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"deeplabv3plus: output_stride must be 8 or 16, got {output_stride}")
        self.encoder = timm_encoder(encoder, (1, 4), pretrained, output_stride=output_stride,
                                    in_chans=in_channels)
        if output_stride == 8:  # every layer3 block dilated by 2, as jfzhang95's code
            apply_multi_grid(self.encoder.layer3, 2, (1,))
        if multi_grid:
            apply_multi_grid(self.encoder.layer4, 32 // output_stride, multi_grid)
        low_ch, high_ch = self.encoder.feature_info.channels()
        self.input_divisor = output_stride
        self.aspp = ASPP(high_ch, ASPP_WIDTH, tuple(r * 16 // output_stride for r in (6, 12, 18)))
        self.low = nn.Sequential(nn.Conv2d(low_ch, LOW_LEVEL, 1, bias=False), nn.BatchNorm2d(LOW_LEVEL),
                                 nn.ReLU(inplace=True))
        self.ife, widths = build_ife(ife, (LOW_LEVEL, ASPP_WIDTH), ("deeplab.low_level", "deeplab.aspp"),
                                     "selected_first")
        self.ife_aspp_pre_dropout = ife_aspp_pre_dropout
        cin = sum(widths)
        self.last_conv = nn.Sequential(
            nn.Conv2d(cin, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True), nn.Dropout(0.1),
            nn.Conv2d(256, out_channels, 1))
        for m in [*self.low.modules(), *self.last_conv.modules(), *self.aspp.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def decoder_in_channels(self) -> int:
        return self.last_conv[0].in_channels

    def _aspp(self, x: torch.Tensor) -> torch.Tensor:
        if "1" not in self.ife or not self.ife_aspp_pre_dropout:
            return self.ife.enhance(1, self.aspp(x))
        proj = self.aspp.project
        feat = proj[:-1](self.aspp.concat_branches(x))
        _, index, _ = self.ife["1"].select(feat)  # scores on the pre-dropout features
        out = proj[-1](feat)
        return torch.cat([gather_channels(out, index), out], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        low, high = self.encoder(x)
        high = self._aspp(high)
        low = self.ife.enhance(0, self.low(low))
        high = F.interpolate(high, size=low.shape[2:], mode="bilinear", align_corners=True)
        out = self.last_conv(torch.cat([high, low], dim=1))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=True)


@register_model("deeplabv3plus", aliases=("deeplabv3+",))
def deeplabv3plus(in_channels: int = 3, out_channels: int = 1, encoder: str = "resnet101.tv_in1k",
                  pretrained: bool | str = False, output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                  ife: str | None = None, ife_ratio: Sequence[float] = (0.75, 0.75), ife_entropy_mode: str = "hist1d",
                  ife_aspp: bool = True, ife_aspp_pre_dropout: bool = False) -> DeepLabV3Plus:
    """DeepLabV3+ (ResNet-101, output stride 16); ``ife=`` adds IFE on the low-level (level 0) and ASPP (level 1)
    features with ``ife_ratio=(r_low, r_aspp)`` (0 = none there); ``ife_aspp=False`` is ``r_aspp = 0``."""
    spec = IFESpec.from_kwargs("deeplabv3plus", ife, ife_ratio, None, ife_entropy_mode)
    if spec is not None and not ife_aspp:
        spec = spec.without(1)
    return DeepLabV3Plus(in_channels, out_channels, encoder, pretrained, output_stride, multi_grid, spec,
                         ife_aspp_pre_dropout)
