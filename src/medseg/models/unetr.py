"""UNETR (Hatamizadeh et al., WACV 2022) from MONAI (``monai.networks.nets.UNETR``), multi-class.

A ViT encoder on 16^3 patches with a learned position embedding for one input size (``img_size``), so the
network accepts exactly that size; volumes go through sliding-window inference with ``img_size`` windows
(``medseg.engine.sliding_window``). ``input_divisor = 16`` (the patch size); ``fixed_input_size`` is
``img_size``. Defaults are MONAI's (ViT-B: hidden 768, 12 heads, MLP 3072, feature size 16).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from medseg.models import register_model
from medseg.models._inputs import check_volume


class UNETR3D(nn.Module):
    """MONAI UNETR with input checks; see the module docstring."""

    spatial_dims = 3
    input_divisor = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 2, img_size: Sequence[int] | int = 96,
                 feature_size: int = 16, hidden_size: int = 768, mlp_dim: int = 3072, num_heads: int = 12,
                 norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        from monai.networks.nets import UNETR

        size = (img_size,) * 3 if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(size) != 3 or any(s % self.input_divisor for s in size):
            raise ValueError(f"unetr: img_size {img_size} must be 3 sizes, each a multiple of the 16^3 patch "
                             f"(input_divisor=16)")
        if hidden_size % num_heads:
            raise ValueError(f"unetr: hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.in_channels = in_channels
        self.fixed_input_size = size
        self.net = UNETR(in_channels, out_channels, size, feature_size=feature_size, hidden_size=hidden_size,
                         mlp_dim=mlp_dim, num_heads=num_heads, norm_name=norm, dropout_rate=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume("unetr", x, self.in_channels, self.input_divisor, self.fixed_input_size)
        return self.net(x)


@register_model("unetr")
def unetr(in_channels: int = 1, out_channels: int = 2, img_size: Sequence[int] | int = 96, feature_size: int = 16,
          hidden_size: int = 768, mlp_dim: int = 3072, num_heads: int = 12, norm: str = "instance",
          dropout: float = 0.0) -> UNETR3D:
    """UNETR (MONAI), multi-class; takes exactly ``img_size`` (multiples of 16), use sliding windows."""
    return UNETR3D(in_channels, out_channels, img_size, feature_size, hidden_size, mlp_dim, num_heads, norm, dropout)
