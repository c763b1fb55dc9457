"""V-Net (Milletari et al., 3DV 2016) from MONAI (``monai.networks.nets.VNet``), multi-class.

MONAI's input block adds the input, repeated ``16 / in_channels`` times, to its 16-channel output, so it
accepts only ``in_channels`` dividing 16. For other channel counts (3 MRI sequences, say) ours puts a
1x1x1 convolution ``in_channels -> 16`` in front and runs MONAI's V-Net with 16 input channels; that stem is
the only difference from MONAI's network (``docs/cwcd.md``). Four stride-2 down transitions:
``input_divisor = 16``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from medseg.models import register_model
from medseg.models._inputs import check_volume


class VNet3D(nn.Module):
    """MONAI V-Net (ELU, PReLU-free, dropout as MONAI) with an optional 1x1x1 channel stem.

    Args:
        in_channels: image channels (any; a stem is added when 16 is not a multiple of it).
        out_channels: logit channels K (K >= 2 softmax; 1 sigmoid).
        dropout: MONAI's ``dropout_prob_down`` and ``dropout_prob_up`` (MONAI's default 0.5).
    """

    spatial_dims = 3
    input_divisor = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        from monai.networks.nets import VNet

        self.in_channels = in_channels
        stem_needed = 16 % in_channels != 0
        self.stem = nn.Conv3d(in_channels, 16, 1) if stem_needed else nn.Identity()
        self.net = VNet(spatial_dims=3, in_channels=16 if stem_needed else in_channels, out_channels=out_channels,
                        dropout_prob_down=dropout, dropout_prob_up=(dropout, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume("vnet", x, self.in_channels, self.input_divisor)
        return self.net(self.stem(x))


@register_model("vnet")
def vnet(in_channels: int = 1, out_channels: int = 2, dropout: float = 0.5) -> VNet3D:
    """3-D V-Net (MONAI), multi-class; input sizes multiples of 16."""
    return VNet3D(in_channels, out_channels, dropout)
