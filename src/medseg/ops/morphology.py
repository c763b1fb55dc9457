"""Binary erosion by min-pooling and contour maps, on tensors (any device), 2-D and 3-D.

CWCD (Huang et al., contour-weighted CE + separable Dice; ``methods.md`` §5.1): ``C_k = G_k − erode(G_k)``
for every class channel of the one-hot label, with the min-pool erosion ``erode(x) = −maxpool(−x)``.
Erosion by a cube ``k`` iterated ``n`` times equals one erosion by a cube of side ``L = n·(k − 1) + 1`` (boxes
compose by Minkowski sum), and a box min-pool of a binary map is separable into a logical AND along each
axis, computed with van Herk-style doubling (windows 1, 2, 4, ... combined): ``O(d·log L)`` boolean ANDs per
voxel instead of ``O(n·k^d)`` comparisons. Voxels outside the array count as foreground (no erosion at the
crop border), which is ``scipy.ndimage.binary_erosion(..., border_value=1)``; an even kernel covers offsets
``−k//2 .. (k−1)//2`` (scipy's origin-0 convention, e.g. ``{−1, 0}`` for ``k = 2``).
"""
from __future__ import annotations

import torch


def label_channels(label: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One binary channel per class: ``B x K x *spatial`` from an int64 ``B x *spatial`` label (values outside
    ``[0, K)`` give all-zero channels), or ``[1 − g, g]`` (background, foreground) from a float binary
    ``B x 1 x *spatial`` label; a float label with several channels (multi-label) gets the background
    ``1 − max_c g_c`` prepended."""
    if label.is_floating_point():
        fg = label > 0.5
        return torch.cat([~fg.any(1, keepdim=True), fg], 1).to(dtype)
    classes = torch.arange(num_classes, device=label.device).view(1, -1, *([1] * (label.ndim - 1)))
    return (label.unsqueeze(1) == classes).to(dtype)


def _window(x: torch.Tensor, axis: int, size: int, left: int, right: int, op, fill) -> torch.Tensor:
    """``op``-reduction (AND, max or min) of ``x`` over the window ``[i − left, i + right]`` along ``axis``;
    outside the array the neutral ``fill`` is used. Van Herk-style doubling: windows 1, 2, 4, ... are
    combined, ``log2(size) + 1`` elementwise ops per axis."""
    n = x.shape[axis]
    shape = list(x.shape)
    pads = []
    for count in (left, right):
        shape[axis] = count
        pads.append(torch.full(shape, fill, dtype=x.dtype, device=x.device))
    y = torch.cat([pads[0], x, pads[1]], axis)
    width = 1
    while 2 * width <= size:  # y[i] = op over the window [i, i + 2·width)
        y = op(y.narrow(axis, 0, y.shape[axis] - width), y.narrow(axis, width, y.shape[axis] - width))
        width *= 2
    if width < size:
        y = op(y.narrow(axis, 0, n), y.narrow(axis, size - width, n))
    return y.narrow(axis, 0, n)


def _box(kernel: int, iterations: int) -> tuple[int, int, int]:
    """Side and left/right reach of the cube equivalent to ``iterations`` erosions by a ``kernel`` cube."""
    return iterations * (kernel - 1) + 1, iterations * (kernel // 2), iterations * ((kernel - 1) // 2)


def erode(mask: torch.Tensor, kernel: int = 3, iterations: int = 1) -> torch.Tensor:
    """Binary erosion of ``mask`` (``B x C x *spatial``, values in {0, 1}, any dtype; the same dtype is
    returned) by a cube of side ``kernel``, ``iterations`` times; no erosion at the array border."""
    if kernel < 1 or iterations < 0:
        raise ValueError(f"erode needs kernel >= 1 and iterations >= 0, got {kernel}, {iterations}")
    if mask.ndim not in (3, 4, 5):
        raise ValueError(f"erode expects B x C x *spatial with 1-3 spatial dims, got {tuple(mask.shape)}")
    x = mask > 0.5 if mask.is_floating_point() else mask.bool()
    if iterations > 0 and kernel > 1:
        size, left, right = _box(kernel, iterations)
        for axis in range(2, x.ndim):
            x = _window(x, axis, size, left, right, torch.bitwise_and, True)
    return x.to(mask.dtype)


def contour(channels: torch.Tensor, kernel: int = 3, iterations: int = 6) -> torch.Tensor:
    """Contour band ``C = G − erode(G)`` of each channel of ``channels`` (``B x K x *spatial`` binary), float.

    Paper default: cube 3, 6 iterations; released code (``compat``): cube 2, 1 iteration.
    """
    fg = channels > 0.5 if channels.is_floating_point() else channels.bool()
    out = fg & ~erode(fg, kernel, iterations)
    return out.to(channels.dtype if channels.is_floating_point() else torch.float32)


def label_contour(label: torch.Tensor, num_classes: int, kernel: int = 3, iterations: int = 6) -> torch.Tensor:
    """Per-class contour bands of a label, bool ``B x max(K, 2) x *spatial`` (as :func:`contour` of
    :func:`label_channels`), computed without eroding K channels.

    The classes partition the image, so a voxel of class k survives the erosion of ``G_k`` iff every voxel
    of its window (inside the array) has its label: ``C_k = G_k ∧ ¬[max_window(label) = min_window(label)]``.
    Window max and min are separable, so the work is two filters on one channel plus the one-hot. A float
    label with several channels (independent binary maps) takes the per-channel path.
    """
    if label.is_floating_point() and label.shape[1] > 1:
        return contour(label_channels(label, num_classes, torch.bool), kernel, iterations)
    classes = max(num_classes, 2)
    if label.is_floating_point():
        label = (label[:, 0] > 0.5).long()
    dtype = torch.uint8 if classes < 255 else torch.int32
    top = torch.iinfo(dtype).max
    index = torch.where((label >= 0) & (label < classes), label, classes).to(dtype)  # out of range: own value
    channels = torch.arange(classes, device=label.device, dtype=dtype).view(1, -1, *([1] * (label.ndim - 1)))
    if iterations == 0 or kernel == 1:
        return torch.zeros((label.shape[0], classes, *label.shape[1:]), dtype=torch.bool, device=label.device)
    size, left, right = _box(kernel, iterations)
    hi = lo = index.unsqueeze(1)
    for axis in range(2, hi.ndim):
        hi = _window(hi, axis, size, left, right, torch.maximum, 0)
        lo = _window(lo, axis, size, left, right, torch.minimum, top)
    band_index = torch.where(hi != lo, index.unsqueeze(1), classes)  # class on the band, else no class
    return band_index == channels
