"""Binary erosion by min-pooling and contour maps, on tensors (any device), 2-D and 3-D.

CWCD (Huang et al., contour-weighted CE + separable Dice; ``methods.md`` §5.1): ``C_k = G_k − erode(G_k)``
for every class channel of the one-hot label. Erosion by a cube ``k`` iterated ``n`` times equals one
erosion by a cube of side ``n·(k − 1) + 1`` (boxes compose by Minkowski sum), and a box min-pool is
separable, so the whole erosion is one 1-D min-pool per axis: ``O(d·n·k)`` per voxel instead of
``O(n·k^d)``. Voxels outside the array count as foreground (no erosion at the crop border), which is
``scipy.ndimage.binary_erosion(..., border_value=1)``; an even kernel covers offsets ``−k//2 .. (k−1)//2``
(scipy's origin-0 convention, e.g. ``{−1, 0}`` for ``k = 2``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_channels(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One binary channel per class: ``B x K x *spatial`` float from an int64 ``B x *spatial`` label, or
    ``[1 − g, g]`` (background, foreground) from a float binary ``B x 1 x *spatial`` label; a float label
    with several channels (multi-label) gets the background ``1 − max_c g_c`` prepended."""
    if label.is_floating_point():
        fg = (label > 0.5).float()
        bg = 1.0 - fg.amax(1, keepdim=True)
        return torch.cat([bg, fg], 1)
    label = label.long()
    valid = (label >= 0) & (label < num_classes)
    onehot = F.one_hot(label.clamp(0, num_classes - 1), num_classes).movedim(-1, 1)
    return (onehot * valid.unsqueeze(1)).float()


def _min_pool_axis(x: torch.Tensor, axis: int, size: int, left: int, right: int) -> torch.Tensor:
    """1-D min-pool of ``x`` (``B x C x *spatial``) along spatial ``axis``, padding with ones."""
    dims = x.ndim - 2
    pad = [0, 0] * dims
    pad[2 * (dims - 1 - axis)] = left
    pad[2 * (dims - 1 - axis) + 1] = right
    x = F.pad(x, pad, value=1.0)
    kernel = [1] * dims
    kernel[axis] = size
    pool = F.max_pool2d if dims == 2 else F.max_pool3d
    if dims == 1:
        pool = F.max_pool1d
    return -pool(-x, kernel_size=tuple(kernel), stride=1)


def erode(mask: torch.Tensor, kernel: int = 3, iterations: int = 1) -> torch.Tensor:
    """Binary erosion of ``mask`` (``B x C x *spatial``, values in {0, 1}) by a cube of side ``kernel``,
    ``iterations`` times: ``erode(x) = −maxpool(−x)``, no erosion at the array border."""
    if kernel < 1 or iterations < 0:
        raise ValueError(f"erode needs kernel >= 1 and iterations >= 0, got {kernel}, {iterations}")
    if mask.ndim not in (3, 4, 5):
        raise ValueError(f"erode expects B x C x *spatial with 1-3 spatial dims, got {tuple(mask.shape)}")
    x = mask.float() if not mask.is_floating_point() else mask
    if iterations == 0 or kernel == 1:
        return x
    size = iterations * (kernel - 1) + 1
    left, right = iterations * (kernel // 2), iterations * ((kernel - 1) // 2)
    for axis in range(x.ndim - 2):
        x = _min_pool_axis(x, axis, size, left, right)
    return x


def contour(channels: torch.Tensor, kernel: int = 3, iterations: int = 6) -> torch.Tensor:
    """Contour band ``C = G − erode(G)`` of each channel of ``channels`` (``B x K x *spatial`` binary).

    Paper default: cube 3, 6 iterations; released code (``compat``): cube 2, 1 iteration.
    """
    channels = channels.float() if not channels.is_floating_point() else channels
    return channels - erode(channels, kernel, iterations)
