"""MLN: the multi-branch fine network of the MLL/MLN coarse-to-fine pipeline (``docs/mll.md``, section MLN).

The fine model ``c2f_fine`` (ResNet-18 at output stride 4 + ASPP + two 1x1 convs, from
:mod:`medseg.models.c2f`) is the **region branch**; MLN adds

- a **boundary branch**: a second ASPP on the same backbone output and two 1x1 convs, one regression map per
  slice, trained towards the signed distance, positive inside (loss ``mln``);
- a **pixel branch**: points on the regular grid of the region logits (the ``importance·N`` most uncertain
  cells plus random other cells in training), backbone layer-1 features sampled at the cell centres
  concatenated with the region logits there, a linear map to ``width``, one Transformer encoder layer over
  the point tokens and a shared MLP (a linear map) to one logit per slice. Option ``pixel_head="mlp"``: the
  Table 9 replacement, PointRend's point head of four shared MLPs;
- **multi-level saliency guidance (MLSG)**: region feature ``R`` and boundary feature ``B`` upsampled to the
  input size, the pixel features scattered into a zero map (each stride-4 cell fills its 4x4 block);
  ``S = B + P``; two depthwise 1x1 convs + sigmoid give ``W_b``, ``W_p``; ``[R·W_b·B, R·W_p·P]`` (2·width) ->
  1x1 conv + BN + ReLU -> 1x1 conv -> fusion logits. Option ``fusion="conv"``: the Table 9 replacement,
  ``[R, B, P]`` (3·width) through four 3x3 convs.

The pixel branch and the fusion run only when enabled (``set_epoch(e)`` with ``e >= branches_from_epoch``,
12 as in the paper, or ``enable_branches(True)``); before that the network is the fine model plus the
boundary branch and costs nothing more.

Output dict (superset of ``c2f_fine``'s): ``out`` (the fine prediction at the input size: the region logits
upsampled before the branches are enabled, the fusion logits after), ``logits`` (region logits at output
stride 4, always), ``region`` / ``region_logits``, ``boundary`` / ``boundary_logits`` (regression maps at the
input size / at stride 4); when the branches run also ``pixel_logits`` (``B x C x N``), ``pixel_coords``
(``B x N x 2``, cell centres as (y, x) in [0, 1]), ``pixel_index`` (``B x N`` flat cell indices) and
``fusion`` (logits at the input size).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import UserError
from medseg.models import register_model
from medseg.models.c2f import C2FNet
from medseg.modules.aspp import ASPP

PIXEL_HEADS = ("transformer", "mlp")
FUSIONS = ("mlsg", "conv")


class MLNOptionError(UserError, ValueError):
    """An ``mln`` model option (``model.*`` in a recipe) with an invalid value."""


def _head(width: int, out_channels: int) -> nn.Sequential:
    """Two 1x1 convs (``width -> width`` + BN + ReLU, ``width -> out_channels``), as the region head."""
    return nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.Conv2d(width, out_channels, 1))


def grid_points(logits: torch.Tensor, num_points: int, importance: float = 0.75,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells of the ``h x w`` grid of ``logits`` (``B x C x h x w``) for the pixel branch, without gradient.

    ``N = min(num_points, h·w // 2)`` (at least 1) cells: the ``int(importance·N)`` most uncertain (largest
    ``−|z|`` over the channels, i.e. the slice closest to probability 0.5) and ``N − int(importance·N)``
    random other cells. Returns the flat cell indices ``B x N`` and the cell centres ``B x N x 2`` as (y, x)
    in [0, 1] (``align_corners=False`` convention).
    """
    b, _, h, w = logits.shape
    n = max(1, min(int(num_points), (h * w) // 2))
    with torch.no_grad():
        unc = (-logits.detach().abs()).amax(1).flatten(1)
        n_imp = int(importance * n)
        idx_imp = unc.topk(n_imp, dim=1).indices
        score = torch.rand(b, h * w, generator=generator).to(logits.device)
        score.scatter_(1, idx_imp, -1.0)
        idx = torch.cat([idx_imp, score.topk(n - n_imp, dim=1).indices], 1)
        coords = torch.stack([(idx // w + 0.5) / h, (idx % w + 0.5) / w], -1).to(logits.dtype)
    return idx, coords


def sample_at(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` (``B x C x H x W``) at ``coords`` (``B x N x 2``, (y, x) in [0, 1]): ``B x C x N``."""
    grid = (coords.flip(-1) * 2 - 1).unsqueeze(2).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False)[..., 0]


class PointTransformerLayer(nn.Module):
    """One post-LayerNorm Transformer encoder layer over point tokens ``B x N x d``: multi-head
    self-attention with residual, then a point-wise linear map (a 1x1 conv) + ReLU with residual."""

    def __init__(self, width: int = 256, heads: int = 8) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.point = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, x, x, need_weights=False)[0])
        return self.norm2(x + F.relu(self.point(x)))


class PixelBranch(nn.Module):
    """Point tokens -> ``(features B x width x N, logits B x out_channels x N)``.

    ``head="transformer"``: ``[layer-1 feature, region logit]`` -> linear to ``width`` -> one
    :class:`PointTransformerLayer` -> shared linear map to ``out_channels``. ``head="mlp"`` (Table 9):
    PointRend's head, four shared linear layers + ReLU, each fed the region logits again, then the predictor.
    """

    def __init__(self, feature_channels: int, out_channels: int = 3, width: int = 256, heads: int = 8,
                 head: str = "transformer") -> None:
        super().__init__()
        if head not in PIXEL_HEADS:
            raise MLNOptionError(f"mln: model.pixel_head must be one of {PIXEL_HEADS}, got {head!r}")
        self.kind, self.in_channels = head, feature_channels + out_channels
        if head == "transformer":
            self.embed = nn.Linear(self.in_channels, width)
            self.encoder = PointTransformerLayer(width, heads)
            self.predict = nn.Linear(width, out_channels)
        else:
            self.mlps = nn.ModuleList([nn.Linear(self.in_channels if i == 0 else width + out_channels, width)
                                       for i in range(4)])
            self.predict = nn.Linear(width + out_channels, out_channels)

    def forward(self, feats: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats`` ``B x F x N``, ``logits`` ``B x C x N`` (region logits at the points)."""
        z = logits.transpose(1, 2)
        x = torch.cat([feats.transpose(1, 2), z], -1)
        if self.kind == "transformer":
            x = self.encoder(self.embed(x))
            out = self.predict(x)
        else:
            for i, mlp in enumerate(self.mlps):
                x = F.relu(mlp(x if i == 0 else torch.cat([x, z], -1)))
            out = self.predict(torch.cat([x, z], -1))
        return x.transpose(1, 2), out.transpose(1, 2)


def scatter_blocks(values: torch.Tensor, index: torch.Tensor, grid: Sequence[int], size: Sequence[int],
                   stride: int) -> torch.Tensor:
    """``values`` (``B x D x N``) at flat cells ``index`` (``B x N``) of a ``grid`` (h, w) map, zeros elsewhere,
    each cell filling its ``stride x stride`` block of the ``size`` (H, W) map (``H <= stride·h``)."""
    b, d, _ = values.shape
    h, w = int(grid[0]), int(grid[1])
    flat = values.new_zeros(b, d, h * w).scatter(2, index.unsqueeze(1).expand(-1, d, -1), values)
    dense = flat.view(b, d, h, w).repeat_interleave(stride, 2).repeat_interleave(stride, 3)
    if dense.shape[2] < size[0] or dense.shape[3] < size[1]:
        raise ValueError(f"mln: a {h}x{w} grid at stride {stride} does not cover {tuple(size)}")
    return dense[:, :, :size[0], :size[1]]


class MLSGFusion(nn.Module):
    """Multi-level saliency guidance: ``S = B + P``; ``W_b, W_p = σ(dw1x1(S))``;
    ``[R·W_b·B, R·W_p·P]`` (2·width) -> 1x1 conv + BN + ReLU -> 1x1 conv -> ``out_channels``."""

    def __init__(self, width: int = 256, out_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = 2 * width
        self.weight_b = nn.Conv2d(width, width, 1, groups=width)
        self.weight_p = nn.Conv2d(width, width, 1, groups=width)
        self.out = nn.Sequential(nn.Conv2d(self.in_channels, width, 1, bias=False), nn.BatchNorm2d(width),
                                 nn.ReLU(inplace=True), nn.Conv2d(width, out_channels, 1))

    def forward(self, r: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        s = b + p
        a_b, a_p = torch.sigmoid(self.weight_b(s)) * b, torch.sigmoid(self.weight_p(s)) * p
        return self.out(torch.cat([r * a_b, r * a_p], 1))


class ConvFusion(nn.Module):
    """Table 9 replacement of MLSG: ``[R, B, P]`` (3·width) -> four 3x3 convs (BN + ReLU after the first
    three) -> ``out_channels``."""

    def __init__(self, width: int = 256, out_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = 3 * width
        layers: list[nn.Module] = []
        for cin in (self.in_channels, width, width):
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.out = nn.Sequential(*layers, nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, r: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([r, b, p], 1))


class MLN(C2FNet):
    """MLN fine network: the ``c2f_fine`` region branch plus boundary and pixel branches and MLSG fusion."""

    def __init__(self, in_channels: int = 6, out_channels: int = 3, pretrained: bool | str = False,
                 rates: Sequence[int] = (6, 12, 18), aspp_dropout: float = 0.5, width: int = 256,
                 num_points: int = 1024, importance: float = 0.75, heads: int = 8, pixel_head: str = "transformer",
                 fusion: str = "mlsg", branches_from_epoch: int = 12) -> None:
        super().__init__(in_channels, out_channels, 4, pretrained, rates, aspp_dropout, width)
        if fusion not in FUSIONS:
            raise MLNOptionError(f"mln: model.fusion must be one of {FUSIONS}, got {fusion!r}")
        if num_points < 1 or not 0 <= importance <= 1:
            raise MLNOptionError(f"mln: model.num_points must be >= 1 and model.importance in [0, 1], got "
                                 f"{num_points}, {importance}")
        channels = self.backbone.feature_info.channels()
        self.boundary_aspp = ASPP(channels[-1], width, tuple(rates), aspp_dropout)
        self.boundary_head = _head(width, out_channels)
        self.pixel = PixelBranch(channels[0], out_channels, width, heads, pixel_head)
        self.fusion = MLSGFusion(width, out_channels) if fusion == "mlsg" else ConvFusion(width, out_channels)
        self.num_points, self.importance = int(num_points), float(importance)
        self.branches_from_epoch = int(branches_from_epoch)
        self.branches_on = False

    def set_epoch(self, epoch: int) -> None:
        """Enable the pixel branch and the fusion from ``branches_from_epoch`` on (12 in the paper)."""
        self.enable_branches(epoch >= self.branches_from_epoch)

    def enable_branches(self, on: bool = True) -> None:
        self.branches_on = bool(on)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low, deep = self.backbone(x)
        size = x.shape[2:]
        r, b = self.aspp(deep), self.boundary_aspp(deep)
        region_logits, boundary_logits = self.head(r), self.boundary_head(b)
        region, boundary = (F.interpolate(z, size=size, mode="bilinear", align_corners=False)
                            for z in (region_logits, boundary_logits))
        out = {"out": region, "logits": region_logits, "region": region, "region_logits": region_logits,
               "boundary": boundary, "boundary_logits": boundary_logits}
        if not self.branches_on:
            return out
        importance = self.importance if self.training else 1.0  # at test: the most uncertain cells only
        index, coords = grid_points(region_logits, self.num_points, importance)
        at_points = region_logits.flatten(2).gather(2, index.unsqueeze(1).expand(-1, region_logits.shape[1], -1))
        feats, pixel_logits = self.pixel(sample_at(low, coords), at_points)
        p_map = scatter_blocks(feats, index, region_logits.shape[2:], size, self.output_stride)
        up = [F.interpolate(z, size=size, mode="bilinear", align_corners=False) for z in (r, b)]
        fusion = self.fusion(up[0], up[1], p_map)
        out.update(out=fusion, fusion=fusion, pixel_logits=pixel_logits, pixel_coords=coords, pixel_index=index)
        return out


@register_model("mln")
def mln(in_channels: int = 6, out_channels: int = 3, pretrained: bool | str = False,
        rates: Sequence[int] = (6, 12, 18), aspp_dropout: float = 0.5, num_points: int = 1024,
        importance: float = 0.75, heads: int = 8, pixel_head: str = "transformer", fusion: str = "mlsg",
        branches_from_epoch: int = 12) -> MLN:
    """MLN fine network (region, boundary and pixel branches + multi-level saliency guidance fusion);
    ``pixel_head="mlp"`` / ``fusion="conv"`` are the paper's Table 9 replacements."""
    return MLN(in_channels, out_channels, pretrained, rates, aspp_dropout, 256, num_points, importance, heads,
               pixel_head, fusion, branches_from_epoch)
