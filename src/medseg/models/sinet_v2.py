"""SINet-V2 (Fan et al., "Concealed Object Detection", TPAMI 2022) as the IFE paper uses it.

Res2Net-50-v1b encoder (timm ``res2net50d``, see :mod:`medseg.modules.encoders`; ``docs/ife.md``,
section Networks): a TEM (texture enhancement module, ``RFB_modified`` in the code) on layer2/3/4 (strides 8/16/32) maps each
to 32 channels; the neighbour connection decoder (NCD) turns the raw TEM outputs into the global map ``S_g``
(stride 8); three reverse stages of group-reversal attention (GRA, 1 / 4 / 32 groups) refine it at strides
32 -> 16 -> 8 into ``S5, S4, S3``. Every ``BasicConv2d`` is conv + BN *without* ReLU, as in the code.

``forward`` returns ``{"out": S3, "aux": [S_g, S5, S4]}``, all upsampled bilinearly to the input size; the
paper trains with the unweighted sum of the structure loss over the four maps and tests with S3.

IFE (§2.4): ``ife="curvature"|"entropy"``, ``ife_ratio=(r8, r16, r32)`` (default (0.75, 0.75, 1); IFE levels 0, 1, 2
of :class:`medseg.modules.ife.IFESpec`, 0 = no IFE there) enhance the TEM outputs as ``cat([selected, raw])`` for
the reverse stages only (the NCD keeps the raw features); a reverse stage with r > 0 first maps
``32 + floor(32 r)`` channels back to 32 by a 3x3 conv with bias.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.models._inputs import check_divisible
from medseg.modules.encoders import timm_encoder
from medseg.modules.ife import IFESpec, build_ife


class BasicConv2d(nn.Sequential):
    """conv (no bias) -> BN, no activation (SINet-V2's ``BasicConv2d`` never applies its ReLU)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], padding: int | tuple[int, int] = 0,
                 dilation: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout))


class TEM(nn.Module):
    """Texture enhancement module: 4 branches (1x1; then (1x(2k+1)), ((2k+1)x1), 3x3 dilation 2k+1 for
    k = 1..3), concatenated (4 x 32), fused by 3x3 to 32, plus a 1x1 residual projection, then ReLU."""

    def __init__(self, cin: int, cout: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList([BasicConv2d(cin, cout, 1)])
        for k in (1, 2, 3):
            n = 2 * k + 1
            self.branches.append(nn.Sequential(
                BasicConv2d(cin, cout, 1), BasicConv2d(cout, cout, (1, n), padding=(0, k)),
                BasicConv2d(cout, cout, (n, 1), padding=(k, 0)), BasicConv2d(cout, cout, 3, padding=n, dilation=n)))
        self.conv_cat = BasicConv2d(4 * cout, cout, 3, padding=1)
        self.conv_res = BasicConv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([b(x) for b in self.branches], dim=1)
        return F.relu(self.conv_cat(cat) + self.conv_res(x))


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class NCD(nn.Module):
    """Neighbour connection decoder on (x32, x16, x8) TEM features -> 1-channel map at stride 8."""

    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        self.up1, self.up2, self.up3, self.up4 = (BasicConv2d(ch, ch, 3, padding=1) for _ in range(4))
        self.up5 = BasicConv2d(2 * ch, 2 * ch, 3, padding=1)
        self.cat2 = BasicConv2d(2 * ch, 2 * ch, 3, padding=1)
        self.cat3 = BasicConv2d(3 * ch, 3 * ch, 3, padding=1)
        self.conv4 = BasicConv2d(3 * ch, 3 * ch, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * ch, 1, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        x2_1 = self.up1(up2(x1)) * x2
        x3_1 = self.up2(up2(x2_1)) * self.up3(up2(x2)) * x3
        x2_2 = self.cat2(torch.cat([x2_1, self.up4(up2(x1))], dim=1))
        x3_2 = self.cat3(torch.cat([x3_1, self.up5(up2(x2_2))], dim=1))
        return self.conv5(self.conv4(x3_2))


class GRA(nn.Module):
    """Group-reversal attention: split ``x`` into ``C / subchannel`` groups, put the reverse guidance ``y``
    after each group, ``x + ReLU(conv3(.))``, then ``y + conv3(x)``."""

    def __init__(self, ch: int, subchannel: int) -> None:
        super().__init__()
        self.groups = ch // subchannel
        self.conv = nn.Sequential(nn.Conv2d(ch + self.groups, ch, 3, padding=1), nn.ReLU(inplace=True))
        self.score = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        g = self.groups
        parts = torch.cat([x.reshape(b, g, c // g, h, w), y.unsqueeze(1).expand(b, g, 1, h, w)], dim=2)
        x = x + self.conv(parts.reshape(b, c + g, h, w))
        return x, y + self.score(x)


class ReverseStage(nn.Module):
    """``y <- 1 - sigmoid(y)``, then GRA with 1, 4 and 32 groups; optional 3x3 conv for IFE-widened input."""

    def __init__(self, ch: int = 32, in_channels: int | None = None) -> None:
        super().__init__()
        self.first_conv = nn.Conv2d(in_channels, ch, 3, padding=1) if in_channels and in_channels != ch else None
        self.weak, self.medium, self.strong = GRA(ch, ch), GRA(ch, 8), GRA(ch, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = 1 - torch.sigmoid(y)
        if self.first_conv is not None:
            x = self.first_conv(x)
        x, y = self.weak(x, y)
        x, y = self.medium(x, y)
        return self.strong(x, y)[1]


class SINetV2(nn.Module):
    """SINet-V2 with optional IFE on the three TEM outputs."""

    spatial_dims = 2
    input_divisor = 32

    def __init__(self, in_channels: int = 3, out_channels: int = 1, encoder: str = "res2net50d",
                 pretrained: bool | str = False, channel: int = 32, ife: IFESpec | None = None) -> None:
        super().__init__()
        if out_channels != 1:
            raise ValueError(f"sinet_v2 predicts one binary map (out_channels=1), got out_channels={out_channels}")
        self.encoder = timm_encoder(encoder, (2, 3, 4), pretrained, in_chans=in_channels)
        c2, c3, c4 = self.encoder.feature_info.channels()
        self.tem2, self.tem3, self.tem4 = TEM(c2, channel), TEM(c3, channel), TEM(c4, channel)
        self.ncd = NCD(channel)
        self.ife, widths = build_ife(ife, [channel] * 3, [f"sinet.tem{s}" for s in (8, 16, 32)], "selected_first")
        self.rs3, self.rs4, self.rs5 = (ReverseStage(channel, w) for w in widths)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if x.ndim != 4:
            raise ValueError(f"sinet_v2 is a 2-D network: it takes B x C x H x W, got shape {tuple(x.shape)}")
        check_divisible("sinet_v2", x.shape[2:], self.input_divisor)  # the NCD adds maps of strides 8/16/32
        size = x.shape[2:]
        f2, f3, f4 = self.encoder(x)
        t2, t3, t4 = self.tem2(f2), self.tem3(f3), self.tem4(f4)
        e2, e3, e4 = (self.ife.enhance(level, t) for level, t in enumerate((t2, t3, t4)))
        s_g = self.ncd(t4, t3, t2)
        g5 = F.interpolate(s_g, size=t4.shape[2:], mode="bilinear")
        s5 = self.rs5(e4, g5) + g5
        g4 = F.interpolate(s5, size=t3.shape[2:], mode="bilinear")
        s4 = self.rs4(e3, g4) + g4
        g3 = F.interpolate(s4, size=t2.shape[2:], mode="bilinear")
        s3 = self.rs3(e2, g3) + g3
        full = [F.interpolate(s, size=size, mode="bilinear") for s in (s_g, s5, s4, s3)]
        return {"out": full[3], "aux": full[:3]}


@register_model("sinet_v2", aliases=("sinetv2",))
def sinet_v2(in_channels: int = 3, out_channels: int = 1, encoder: str = "res2net50d", pretrained: bool | str = False,
             channel: int = 32, ife: str | None = None, ife_ratio: Sequence[float] = (0.75, 0.75, 1.0),
             ife_entropy_mode: str = "hist1d") -> SINetV2:
    """SINet-V2 (Res2Net-50-v1b, TEM/NCD/GRA); returns {"out": S3, "aux": [Sg, S5, S4]}; ``ife=`` adds IFE on the
    TEM outputs at stride 8, 16, 32 with ``ife_ratio=(r8, r16, r32)`` (0 = none at that stride)."""
    spec = IFESpec.from_kwargs("sinet_v2", ife, ife_ratio, None, ife_entropy_mode)
    return SINetV2(in_channels, out_channels, encoder, pretrained, channel, spec)
