"""RSTN's saliency transformation module ``F_S`` (Yu et al., "Recurrent Saliency Transformation Network",
CVPR 2018), the link between the coarse and the fine model of the coarse-to-fine pipeline (``docs/mll.md``).

``conv 3x3 (C -> C, pad 1) -> ReLU -> conv 5x5 (C -> C, pad 2)`` on the coarse probability map, with RSTN's
initialisation: first conv Xavier-normal weights and bias 1; second conv zero weights and biases
``(1.0, 1.5, 2.0)`` for the three slice channels. At initialisation the output is therefore the constant
1 / 1.5 / 2 per channel whatever the input, so the fine model starts from a plainly scaled image and learns
how much of the coarse map to let through.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

RSTN_BIASES = (1.0, 1.5, 2.0)


class SaliencyTransform(nn.Module):
    """``F_S``: ``B x C x H x W`` probabilities -> ``B x C x H x W`` saliency weights (same size)."""

    def __init__(self, channels: int = 3, biases: Sequence[float] = RSTN_BIASES) -> None:
        super().__init__()
        if len(biases) != channels:
            raise ValueError(f"SaliencyTransform: {channels} channels need {channels} biases, got {tuple(biases)}")
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 5, padding=2)
        nn.init.xavier_normal_(self.conv1.weight)
        nn.init.constant_(self.conv1.bias, 1.0)
        nn.init.zeros_(self.conv2.weight)
        with torch.no_grad():
            self.conv2.bias.copy_(torch.tensor(list(biases), dtype=self.conv2.bias.dtype))

    def forward(self, prob: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(prob)))


def fine_input(image: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """The fine model's 6-channel input ``[image * saliency, image]`` (saliency-weighted and raw slices)."""
    if image.shape != saliency.shape:
        raise ValueError(f"fine_input: image {tuple(image.shape)} and saliency {tuple(saliency.shape)} differ")
    return torch.cat([image * saliency, image], dim=1)
