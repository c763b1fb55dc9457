"""Pixel-classification heads: the interchangeable "decoders" of an encoder-head network.

A head turns a list of encoder feature maps (shallow to deep, channels ``in_channels``) into logits at a
requested spatial size: ``head(features, size) -> B x K x H x W``. Heads are built by name with
:func:`create_head`; the names are those of the CHNet paper's comparisons (Wei et al., *Only Classification
Head is Sufficient for Medical Image Segmentation*, PRCV 2023):

- ``classification``: CHNet's head (paper Fig. 2, code ``model/CHNet.py``). Each feature ``E_i`` is reduced by a
  plain 1x1 conv (bias, no BN/ReLU) to 64 channels, upsampled bilinearly (``align_corners=False``) to the
  output size, the maps are concatenated (4 x 64 = 256) and classified per pixel by
  ``conv1x1(256->32) -> ReLU -> BatchNorm(32) -> conv1x1(32->K)`` (ReLU before BN, as in the code).
  With E1..E4 of Res2Net-50 (64/256/512/1024 channels) it has
  ``(64+256+512+1024)*64 + 4*64 + 256*32 + 32 + 2*32 + 32*K + K`` = 127,361 parameters for K = 1.
- ``classification3x3``: the paper's Table 6 variant, the two classifier convs are 3x3 (padding 1); the four
  reductions stay 1x1 (``methods.md`` §3.1).
- ``fcn32s``: the paper's baseline (code ``model/baseline.py``): ``conv1x1(C_last -> K)`` on the deepest
  feature, bilinear upsampling to the output size (x16 on Res2Net E4; FCN-32s of Long et al., CVPR 2015,
  upsamples x32 because it keeps the last stage).
- ``unet_decoder``: a U-Net-style decoder (Ronneberger et al., MICCAI 2015, in the form used on pretrained
  encoders): from the deepest feature, repeatedly upsample bilinearly to the next skip's size, concatenate
  the skip and apply ``(conv3x3 -> BN -> ReLU) x 2``; a last block at the output size without skip, then a
  1x1 conv to K logits.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.registry import Registry

HEADS = Registry("head")
register_head = HEADS.register

Size = Sequence[int]


def create_head(name: str, in_channels: Sequence[int], out_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Build a head by name, e.g. ``create_head("classification", [64, 256, 512, 1024], 1)``.

    An unknown name raises :class:`medseg.registry.RegistryError` listing the valid heads.
    """
    return HEADS.create(name, in_channels=list(in_channels), out_channels=out_channels, **kwargs)


def list_heads() -> dict[str, str]:
    """Head name -> first docstring line."""
    return HEADS.describe()


def _upsample(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``); a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ClassificationHead(nn.Module):
    """CHNet head: 1x1 reductions, upsample to the output size, concatenate, per-pixel classifier.

    ``logits = conv_k(hidden -> K)(BN(ReLU(conv_k(n*R -> hidden)(cat_i up(conv1x1(C_i -> R)(E_i))))))``
    with ``R = reduce_channels`` (64), ``hidden = hidden_channels`` (32), ``k = kernel_size`` (1 or 3).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 1, reduce_channels: int = 64,
                 hidden_channels: int = 32, kernel_size: int = 1) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"classification head kernel_size must be 1 or 3, got {kernel_size}")
        pad = kernel_size // 2
        self.reduce = nn.ModuleList(nn.Conv2d(c, reduce_channels, 1) for c in in_channels)
        self.classifier = nn.Sequential(
            nn.Conv2d(reduce_channels * len(in_channels), hidden_channels, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(hidden_channels),
            nn.Conv2d(hidden_channels, out_channels, kernel_size, padding=pad),
        )

    def forward(self, features: Sequence[torch.Tensor], size: Size) -> torch.Tensor:
        _check_features(features, len(self.reduce), "classification")
        maps = [_upsample(conv(f), size) for conv, f in zip(self.reduce, features)]
        return self.classifier(torch.cat(maps, dim=1))


class FCN32sHead(nn.Module):
    """FCN-32s-style baseline: ``up_bilinear(conv1x1(C_last -> K)(E_last))`` (CHNet ``model/baseline.py``)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 1) -> None:
        super().__init__()
        self.num_features = len(in_channels)
        self.classifier = nn.Conv2d(in_channels[-1], out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor], size: Size) -> torch.Tensor:
        _check_features(features, self.num_features, "fcn32s")
        return _upsample(self.classifier(features[-1]), size)


class ConvBNReLU(nn.Sequential):
    """``conv3x3 (no bias) -> BatchNorm -> ReLU``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNetDecoderHead(nn.Module):
    """U-Net decoder over encoder skips: ``x <- block_i(cat(up(x, size(E_i)), E_i))`` from deep to shallow.

    ``decoder_channels`` gives one width per block: ``len(in_channels) - 1`` skip blocks, then one block at
    the output size (no skip), then ``conv1x1 -> K``. Default (256, 128, 64, 32) for four features.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 1,
                 decoder_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(in_channels)
        widths = list(decoder_channels) if decoder_channels is not None else [256 // 2**i for i in range(n)]
        if len(widths) != n:
            raise ValueError(f"unet_decoder: decoder_channels needs {n} widths ({n - 1} skip blocks + 1 "
                             f"output block) for {n} encoder features, got {widths}")
        self.num_features = n
        blocks, cin = [], in_channels[-1]
        for skip, width in zip(reversed(in_channels[:-1]), widths[:-1]):
            blocks.append(nn.Sequential(ConvBNReLU(cin + skip, width), ConvBNReLU(width, width)))
            cin = width
        blocks.append(nn.Sequential(ConvBNReLU(cin, widths[-1]), ConvBNReLU(widths[-1], widths[-1])))
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor], size: Size) -> torch.Tensor:
        _check_features(features, self.num_features, "unet_decoder")
        x = features[-1]
        for block, skip in zip(self.blocks[:-1], reversed(features[:-1])):
            x = block(torch.cat([_upsample(x, skip.shape[-2:]), skip], dim=1))
        return self.classifier(self.blocks[-1](_upsample(x, size)))


def _check_features(features: Sequence[torch.Tensor], expected: int, head: str) -> None:
    if len(features) != expected:
        raise ValueError(f"{head} head was built for {expected} encoder features but got {len(features)}; "
                         "build the head with the encoder's feature_info.channels()")


@register_head("classification")
def classification(in_channels: Sequence[int], out_channels: int = 1, reduce_channels: int = 64,
                   hidden_channels: int = 32) -> ClassificationHead:
    """CHNet pixel-classification head: 1x1 reductions to 64, upsample, concat, 1x1 256->32, ReLU, BN, 1x1."""
    return ClassificationHead(in_channels, out_channels, reduce_channels, hidden_channels, kernel_size=1)


@register_head("classification3x3")
def classification3x3(in_channels: Sequence[int], out_channels: int = 1, reduce_channels: int = 64,
                      hidden_channels: int = 32) -> ClassificationHead:
    """CHNet head with 3x3 classifier convs (paper Table 6 ablation)."""
    return ClassificationHead(in_channels, out_channels, reduce_channels, hidden_channels, kernel_size=3)


@register_head("fcn32s")
def fcn32s(in_channels: Sequence[int], out_channels: int = 1) -> FCN32sHead:
    """FCN-32s baseline: 1x1 conv on the deepest feature, bilinear upsampling (paper Table 6 baseline)."""
    return FCN32sHead(in_channels, out_channels)


@register_head("unet_decoder")
def unet_decoder(in_channels: Sequence[int], out_channels: int = 1,
                 decoder_channels: Sequence[int] | None = None) -> UNetDecoderHead:
    """U-Net-style decoder: upsample, concat skip, (conv3x3-BN-ReLU) x2 per level; widths 256/128/64/32."""
    return UNetDecoderHead(in_channels, out_channels, decoder_channels)
