"""Seeded synthetic segmentation cases, 2-D and 3-D, with large, small and thin structures.

Each case holds three structure types on a smooth background:

1. one large blob (ellipse / ellipsoid with a wavy boundary ``r(θ) = r0 (1 + a sin(kθ + φ))``),
2. two to four small blobs (discs / balls of radius 2-4 % of the size, at least 2 pixels),
3. one thin curved line (2-D: ``|y - (c + b sin(ωx + φ))| < t``; 3-D: a tube around a sinusoidal
   curve running through the volume), ``t`` about 1 pixel.

Binary labels are the union; multi-class labels are class 1 = large, 2 = small, 3 = thin (a later
type overwrites an earlier one; with ``num_classes`` K < 4 the types beyond K - 1 are drawn as
unlabelled distractors of the same intensity as background-plus-contrast/2). Intensity is
``0.2 + contrast * gain_type`` inside structures, plus a low-frequency background ramp, a light blur
and Gaussian noise of std ``noise``. Everything is vectorised NumPy and is a pure function of
``(seed, split, index)`` so train/val/test cases differ and repeat exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_GAIN = {1: 1.0, 2: 0.75, 3: 1.5}  # intensity step per structure type (distinct, so classes separate)


def _grid(shape: Sequence[int]) -> list[np.ndarray]:
    return list(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))


def _large_blob(grid: list[np.ndarray], shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    size = np.array(shape, dtype=np.float32)
    centre = size * rng.uniform(0.35, 0.65, len(shape))
    radii = size * rng.uniform(0.14, 0.26, len(shape))
    rel = [(g - c) / r for g, c, r in zip(grid, centre, radii)]
    dist = np.sqrt(sum(x * x for x in rel))
    theta = np.arctan2(rel[0], rel[1])
    wobble = 1.0 + 0.15 * np.sin(rng.integers(2, 5) * theta + rng.uniform(0, 2 * np.pi))
    return dist < wobble


def _small_blobs(grid: list[np.ndarray], shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        centre = np.array(shape) * rng.uniform(0.1, 0.9, len(shape))
        radius = max(2.0, min(shape) * rng.uniform(0.03, 0.05))
        out |= sum((g - c) ** 2 for g, c in zip(grid, centre)) < radius**2
    return out


def _thin_line(grid: list[np.ndarray], shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape[-2], shape[-1]
    omega = rng.uniform(1.0, 3.0) * 2 * np.pi / w
    phase = rng.uniform(0, 2 * np.pi)
    half_width = max(1.0, 0.012 * min(h, w))
    y_curve = h * rng.uniform(0.3, 0.7) + h * rng.uniform(0.1, 0.2) * np.sin(omega * grid[-1] + phase)
    near = np.abs(grid[-2] - y_curve) < half_width
    if len(shape) == 3:  # tube: the curve also moves along depth
        z_curve = shape[0] * 0.5 + shape[0] * 0.2 * np.cos(omega * grid[-1] + phase)
        near &= np.abs(grid[0] - z_curve) < max(1.0, 0.03 * shape[0])
    x_lo, x_hi = sorted(rng.uniform(0.05, 0.95, 2) * w)
    x_hi = max(x_hi, x_lo + 0.5 * w)
    return near & (grid[-1] >= x_lo) & (grid[-1] <= x_hi)


def make_case(
    shape: Sequence[int],
    *,
    seed: int,
    split: str,
    index: int,
    num_classes: int = 1,
    channels: int = 1,
    noise: float = 0.1,
    contrast: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case: ``image`` float32 ``C x *shape`` and ``label`` (uint8 0/1 for
    ``num_classes == 1``, else int64 class indices in ``[0, min(num_classes, 4))``)."""
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])
    shape = tuple(int(s) for s in shape)
    grid = _grid(shape)
    masks = {1: _large_blob(grid, shape, rng), 2: _small_blobs(grid, shape, rng), 3: _thin_line(grid, shape, rng)}
    image = np.full(shape, 0.2, dtype=np.float32)
    ramp = sum(rng.uniform(-0.05, 0.05) * g / max(shape) for g in grid)
    image += ramp.astype(np.float32)
    label = np.zeros(shape, dtype=np.int64)
    for kind, mask in masks.items():
        image[mask] = 0.2 + contrast * _GAIN[kind]
        label[mask] = kind
    image = gaussian_filter(image, 0.5)
    if num_classes == 1:
        label = (label > 0).astype(np.uint8)
    else:
        label[label >= num_classes] = 0  # types beyond the declared classes stay as unlabelled structures
    gains = 1.0 + 0.1 * np.arange(channels, dtype=np.float32)  # channels differ slightly, share structures
    image = image[None] * gains.reshape((channels,) + (1,) * len(shape))
    image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return image.astype(np.float32), label
