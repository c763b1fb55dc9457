"""Shape checks shared by the 3-D networks (``vnet``, ``unetr``, ``deeplabv3_3d``) and ``sinet_v2``.

A bad input shape fails before the first convolution with a message naming the model, the shape it got,
its ``input_divisor`` (or its fixed size) and the size to pad or crop to.
"""
from __future__ import annotations

from typing import Sequence

import torch


def check_volume(name: str, x: torch.Tensor, in_channels: int, divisor: int,
                 fixed: Sequence[int] | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is ``B x in_channels x D x H x W`` with every spatial size a
    multiple of ``divisor`` (and equal to ``fixed`` when the model has a fixed input size)."""
    if x.ndim != 5:
        raise ValueError(f"{name} is a 3-D network: it takes B x C x D x H x W, got shape {tuple(x.shape)}"
                         + (" (a 4-D image? split its channels into C)" if x.ndim == 6 else ""))
    if x.shape[1] != in_channels:
        raise ValueError(f"{name} was built with in_channels={in_channels} but got {x.shape[1]} channels "
                         f"(shape {tuple(x.shape)}); set model.kwargs.in_channels")
    spatial = tuple(int(s) for s in x.shape[2:])
    if fixed is not None and spatial != tuple(fixed):
        raise ValueError(f"{name} takes exactly img_size={tuple(fixed)} (its position embedding is fixed; "
                         f"input_divisor={divisor}), got {spatial}; use sliding-window inference with this "
                         f"window, or rebuild with img_size={spatial}")
    check_divisible(name, spatial, divisor)


def check_divisible(name: str, spatial: Sequence[int], divisor: int) -> None:
    """Raise ``ValueError`` naming the size to pad or crop to unless every size in ``spatial`` is a multiple
    of ``divisor`` (2-D and 3-D networks alike)."""
    spatial = tuple(int(s) for s in spatial)
    if any(s % divisor for s in spatial):
        fix = tuple(-(-s // divisor) * divisor for s in spatial)
        raise ValueError(f"{name}: spatial size {spatial} must be divisible by input_divisor={divisor}; "
                         f"pad or crop to e.g. {fix}")
