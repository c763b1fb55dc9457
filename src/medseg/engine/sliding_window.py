"""Sliding-window inference for volumes: Gaussian blending, mirroring TTA, memory-bounded aggregation.

The window grid and the Gaussian importance map are MONAI's (``monai.inferers.sliding_window_inference``,
``mode="gaussian"``, ``sigma_scale=0.125``): same starts, same weights, so on the same model the result
equals MONAI's within float tolerance (``tests/engine/test_engine_sliding_window.py``).

What differs is the aggregation. MONAI keeps a float32 buffer ``K x D x H x W`` for the whole volume
(plus a weight map), which for K = 100 classes on 128^3 is 800 MiB before the output is even normalised.
Here the windows are visited slab by slab along the first spatial axis; a slab of depth ``roi[0]`` is the
only accumulation buffer, and every plane the remaining windows can no longer reach is finalised at once:

* ``output="labels"``: the plane's argmax is written to a ``uint8`` (``int16`` for more than 256 classes)
  label map, so the float buffer never exceeds ``K x roi[0] x H x W`` in the accumulation dtype
  (``float16`` by default for labels of 16 classes or more, float32 below) -- for 100 classes, 128^3
  and 32^3 windows: 102 MiB instead of MONAI's 800 MiB of float32 sums.
  Before a window is added, each voxel's logits are shifted by that window's maximum over classes: the
  shift is the same for every class of a voxel, so the argmax of the blended sum is unchanged, and the
  classes that compete for the argmax sit near 0, where float16 resolves differences far below the
  logits' own scale (without the shift, 100-class label maps of a random network differed from
  float32's in ~0.2 % of voxels; with it, see ``benchmarks/README.md``);
* ``output="logits"``: the weighted sums accumulate in the float32 output itself (which the caller asked
  for) and each finished plane is divided by its weight sum in place: no second full-volume buffer, and
  the weights need one ``roi[0] x H x W`` slab instead of MONAI's full-volume count map.

Mirroring test-time augmentation (``mirror_axes``, as nnU-Net): every subset of the given spatial axes is
flipped, predicted and flipped back, and the window's logits are the mean of the ``2^n`` passes.
See ``docs/cwcd.md`` (inference).
"""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], Any]

OUTPUTS = ("logits", "labels")
#: labels with at least this many classes accumulate in float16 by default (fewer: float32, which is small)
HALF_PRECISION_FROM_CLASSES = 16


def gaussian_importance(roi: Sequence[int], sigma_scale: float = 0.125, device: Any = None) -> torch.Tensor:
    """MONAI's Gaussian importance map of a window: separable ``exp(-x^2 / 2 sigma^2)`` centred at
    ``(n - 1) / 2`` with ``sigma = sigma_scale * n`` per axis, clamped below at ``max(min, 1e-3)``."""
    out = torch.ones((), device=device)
    for n in roi:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0
        g = torch.exp(x ** 2 / (-2 * (sigma_scale * n) ** 2))
        out = out[..., None] * g
    return out.clamp_(min=max(float(out.min()), 1e-3))


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis, as MONAI's ``dense_patch_slices``: step ``int(roi (1 - overlap))``
    (the whole axis when ``roi == size``), the last window moved back to end at the border."""
    step = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    n = next((i for i in range(math.ceil(size / step)) if i * step + roi >= size), 0) + 1
    return [i * step - max(i * step + roi - size, 0) for i in range(n)]


def mirror_flips(mirror_axes: Sequence[int] | None, spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of ``mirror_axes`` (spatial axes 0..dims-1) as tensor dims to flip, the empty one first."""
    if not mirror_axes:
        return [()]
    axes = sorted({int(a) for a in mirror_axes})
    if axes[0] < 0 or axes[-1] >= spatial_dims:
        raise ValueError(f"mirror_axes {tuple(mirror_axes)} must be spatial axes 0..{spatial_dims - 1}")
    return [tuple(a + 2 for a in combo) for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def _logits(predictor: Predictor, x: torch.Tensor) -> torch.Tensor:
    out = predictor(x)
    return (out["out"] if isinstance(out, dict) else out).float()


def predict_window(predictor: Predictor, x: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    """Logits of a window batch, averaged over the mirrored passes ``flips``."""
    total = None
    for dims in flips:
        y = _logits(predictor, x.flip(dims) if dims else x)
        y = y.flip(dims) if dims else y
        total = y if total is None else total.add_(y)
    return total / len(flips) if len(flips) > 1 else total


def _pad_to_roi(volume: torch.Tensor, roi: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad (constant 0, split evenly as MONAI does) axes shorter than the window; say so once."""
    spatial = volume.shape[2:]
    diffs = [max(r - s, 0) for r, s in zip(roi, spatial)]
    if not any(diffs):
        return volume, tuple(slice(None) for _ in spatial)
    warnings.warn(f"sliding window: the volume {tuple(spatial)} is smaller than the window {tuple(roi)}; "
                  f"it is zero-padded to {tuple(max(r, s) for r, s in zip(roi, spatial))} and the result is "
                  f"cropped back", UserWarning, stacklevel=3)
    pads: list[int] = []
    for d in reversed(diffs):
        pads += [d // 2, d - d // 2]
    crop = tuple(slice(d // 2, d // 2 + s) for d, s in zip(diffs, spatial))
    return F.pad(volume, pads), crop


def sliding_window_inference(volume: torch.Tensor, predictor: Predictor, roi_size: Sequence[int],
                             overlap: float = 0.25, sw_batch_size: int = 1, *, output: str = "logits",
                             mirror_axes: Sequence[int] | None = None, sigma_scale: float = 0.125,
                             acc_dtype: torch.dtype | None = None, compute_device: Any = None,
                             stats: dict[str, int] | None = None) -> torch.Tensor:
    """Gaussian-blended sliding-window prediction of a ``B x C x D x H x W`` volume.

    Args:
        volume: the input batch (any device; the aggregation stays on its device).
        predictor: ``patch -> logits`` (a model, or a closure adding autocast); a dict's ``"out"`` is used.
        roi_size: the window (D, H, W); axes of the volume shorter than it are zero-padded (with a warning).
        overlap: fraction of the window shared by neighbours (MONAI's definition), in [0, 1).
        sw_batch_size: windows per forward.
        output: ``"logits"`` (float32 ``B x K x D x H x W``) or ``"labels"`` (``B x D x H x W`` uint8, or
            int16 above 256 classes; argmax, or ``logit > 0`` for one channel).
        mirror_axes: spatial axes (0, 1, 2) for mirroring TTA; None = no TTA.
        acc_dtype: dtype of the slab accumulator; default float32, but float16 for labels with 16 or more
            classes (half precision: the logits are shifted per voxel first, see the module docstring).
        compute_device: where the windows run (default: the volume's device).
        stats: if a dict is given, ``buffer_bytes`` (peak bytes of the aggregation buffers, output
            excluded), ``output_bytes`` and ``windows`` are written into it.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got '{output}'")
    if volume.ndim != 5:
        raise ValueError(f"sliding-window inference takes B x C x D x H x W volumes, got shape {tuple(volume.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    roi = [int(r) for r in roi_size]
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi_size must be 3 positive sizes, got {tuple(roi_size)}")
    x, crop = _pad_to_roi(volume, roi)
    with torch.no_grad():
        outs = [_one_volume(x[b:b + 1], predictor, roi, overlap, sw_batch_size, output, mirror_flips(mirror_axes, 3),
                            sigma_scale, acc_dtype, compute_device, stats) for b in range(x.shape[0])]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)  # one volume: no copy of the output
    return out[(slice(None), *crop)] if output == "labels" else out[(slice(None), slice(None), *crop)]


def _one_volume(x: torch.Tensor, predictor: Predictor, roi: list[int], overlap: float, sw_batch_size: int,
                output: str, flips: list[tuple[int, ...]], sigma_scale: float, acc_dtype: torch.dtype | None,
                compute_device: Any, stats: dict[str, int] | None) -> torch.Tensor:
    """The slab-streamed aggregation of one ``1 x C x D x H x W`` volume (see the module docstring)."""
    device = x.device
    compute_device = compute_device or device
    depth, height, width = x.shape[2:]
    rd, rh, rw = roi
    d_starts = window_starts(depth, rd, overlap)
    hw_starts = list(itertools.product(window_starts(height, rh, overlap), window_starts(width, rw, overlap)))
    weight = gaussian_importance(roi, sigma_scale, compute_device)
    half_from = HALF_PRECISION_FROM_CLASSES
    acc: torch.Tensor | None = None  # K x rd x H x W, allocated once K is known
    wsum = torch.zeros(rd, height, width, dtype=torch.float32, device=device)
    result: torch.Tensor | None = None
    n_windows = 0
    for i, z in enumerate(d_starts):
        for j in range(0, len(hw_starts), sw_batch_size):
            starts = hw_starts[j:j + sw_batch_size]
            patch = torch.cat([x[:, :, z:z + rd, h:h + rh, w:w + rw] for h, w in starts]).to(compute_device)
            pred = predict_window(predictor, patch, flips)
            if result is None:
                k = pred.shape[1]
                result = _new_output(output, k, x.shape[2:], device)
                if output == "labels":  # the slab; for logits the output itself accumulates
                    acc_dtype = acc_dtype or (torch.float16 if k >= half_from else torch.float32)
                    acc = torch.zeros(k, rd, height, width, dtype=acc_dtype, device=device)
            if output == "logits":
                acc = result[0, :, z:z + rd]
            if output == "labels" and k > 1 and acc.element_size() < 4:  # keep the argmax contest near 0
                pred -= pred.amax(1, keepdim=True)
            pred.mul_(weight)
            for b, (h, w) in enumerate(starts):
                acc[:, :, h:h + rh, w:w + rw] += pred[b].to(device=device, dtype=acc.dtype)
                wsum[:, h:h + rh, w:w + rw] += weight.to(device)
            n_windows += len(starts)
        done = (d_starts[i + 1] - z) if i + 1 < len(d_starts) else rd
        _finalise(acc, wsum, result, z, done, output)
        _shift(acc if output == "labels" else None, wsum, done)
    if stats is not None:
        slab = acc.nbytes if output == "labels" else 0
        stats.update(buffer_bytes=slab + wsum.nbytes, output_bytes=result.nbytes, windows=n_windows)
    return result


def _new_output(output: str, k: int, spatial: Sequence[int], device: Any) -> torch.Tensor:
    if output == "logits":  # accumulates the weighted sums, normalised plane by plane when finished
        return torch.zeros(1, k, *spatial, dtype=torch.float32, device=device)
    dtype = torch.uint8 if k <= 256 else torch.int16
    return torch.empty(1, *spatial, dtype=dtype, device=device)


def _finalise(acc: torch.Tensor, wsum: torch.Tensor, result: torch.Tensor, z: int, n: int, output: str) -> None:
    """Write the ``n`` finished planes ``z .. z + n`` of the slab into ``result``: logits one plane at a
    time (no float32 temporary larger than ``K x H x W``), labels ``max(1, K // 4)`` planes at a time (the
    int64 argmax temporary stays below one plane of the accumulator)."""
    if output == "logits":  # acc is the output's slab view
        for p in range(n):
            acc[:, p] /= wsum[p]
        return
    step = max(1, acc.shape[0] // 4)
    for p in range(0, n, step):
        q = min(p + step, n)
        if acc.shape[0] == 1:
            result[0, z + p:z + q] = (acc[0, p:q] > 0).to(result.dtype)
        else:  # the weight sum is one positive number per voxel: it does not change the argmax
            result[0, z + p:z + q] = acc[:, p:q].argmax(0).to(result.dtype)


def _shift(acc: torch.Tensor | None, wsum: torch.Tensor, n: int) -> None:
    """Move the slab (and the weight slab) forward by ``n`` planes (plane by plane, no overlapping
    copies) and zero the rest; ``acc`` None: only the weights (logits accumulate in the output)."""
    depth = wsum.shape[0]
    for p in range(depth - n):
        if acc is not None:
            acc[:, p].copy_(acc[:, p + n])
        wsum[p].copy_(wsum[p + n])
    if acc is not None:
        acc[:, max(depth - n, 0):].zero_()
    wsum[max(depth - n, 0):].zero_()
