"""Joint image/label augmentation, normalisation and resizing, reproducible under a per-sample seed.

2-D augmentation is torchvision ``transforms.v2`` (image as ``tv_tensors.Image``, label as
``tv_tensors.Mask``, so geometric transforms move both and the mask uses nearest interpolation).
Every random draw happens inside :func:`seeded`, which forks the global torch RNG and seeds it from
the sample's key, so a sample's augmentation depends only on ``(seed, epoch, index)`` and not on the
worker process that produced it or on the trainer's own RNG use.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medseg.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (``seed, epoch, index, position``) via NumPy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU torch RNG seeded to ``seed``; the outer RNG state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------ normalisation
def to_unit_float(image: np.ndarray) -> np.ndarray:
    """``H x W (x C)`` array -> float32 scaled by the dtype's range (uint8 /255, uint16 /65535); floats kept."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == bool:
        return image.astype(np.float32)
    return image.astype(np.float32)


def normalize_image(image: torch.Tensor, mode: str) -> torch.Tensor:
    """Intensity normalisation of a ``C x *spatial`` float tensor.

    - ``imagenet``: ``(x - mean_c) / std_c`` with the ImageNet RGB statistics (grey: their averages);
    - ``zscore``: ``(x - mean) / std`` over the whole image (std floored at 1e-6);
    - ``minmax``: ``(x - min) / (max - min)``;
    - ``none``: unchanged.
    """
    if mode == "none":
        return image
    if mode == "imagenet":
        c = image.shape[0]
        mean = torch.tensor(IMAGENET_MEAN if c == 3 else [sum(IMAGENET_MEAN) / 3] * c, dtype=image.dtype)
        std = torch.tensor(IMAGENET_STD if c == 3 else [sum(IMAGENET_STD) / 3] * c, dtype=image.dtype)
        shape = (c,) + (1,) * (image.ndim - 1)
        return (image - mean.view(shape)) / std.view(shape)
    if mode == "zscore":
        return (image - image.mean()) / image.std().clamp_min(1e-6)
    if mode == "minmax":
        lo, hi = image.min(), image.max()
        return (image - lo) / (hi - lo).clamp_min(1e-6)
    raise ValueError(f"unknown normalisation '{mode}' (use imagenet, zscore, minmax or none)")


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``H x W (x C)`` -> ``H x W x channels``: grey is repeated, RGB -> grey by ITU-R 601 luma."""
    if image.ndim == 2:
        image = image[..., None]
    c = image.shape[-1]
    if c == channels:
        return image
    if c == 1:
        return np.repeat(image, channels, axis=-1)
    if c == 3 and channels == 1:
        luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return luma[..., None].astype(image.dtype) if image.dtype != np.float32 else luma[..., None]
    raise ValueError(f"cannot convert a {c}-channel image to {channels} channels (set data.in_channels={c})")


# ----------------------------------------------------------------------------------- resizing
def resize_batch(images: torch.Tensor, labels: torch.Tensor, size: Sequence[int], binary: bool) -> tuple:
    """Resize a batch: images bilinear (align_corners=False); binary labels bilinear then ``>= 0.5``
    (keeps them 0/1, thin structures survive better than nearest); multi-class labels nearest."""
    size = tuple(int(s) for s in size)
    if tuple(images.shape[2:]) == size:
        return images, labels
    mode = "bilinear" if images.ndim == 4 else "trilinear"
    images = F.interpolate(images, size=size, mode=mode, align_corners=False)
    if binary:
        labels = (F.interpolate(labels.float(), size=size, mode=mode, align_corners=False) >= 0.5).float()
    else:
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return images, labels


# -------------------------------------------------------------------------------- 2-D augment
def build_augment_2d(cfg: AugmentConfig, size: Sequence[int], channels: int):
    """torchvision v2 pipeline for ``(tv_tensors.Image, tv_tensors.Mask)`` pairs, or None when disabled."""
    from torchvision.transforms import v2

    if not cfg.enabled:
        return None
    ops: list = []
    if cfg.crop_scale is not None:
        ops.append(v2.RandomResizedCrop(tuple(size), scale=tuple(cfg.crop_scale), antialias=True))
    if cfg.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip > 0:
        ops.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.rotate_deg > 0 and cfg.rotate_p > 0:
        rot = v2.RandomRotation(cfg.rotate_deg, interpolation=v2.InterpolationMode.BILINEAR, fill=0)
        ops.append(v2.RandomApply([rot], p=cfg.rotate_p))
    if (cfg.brightness > 0 or cfg.contrast > 0) and channels in (1, 3):
        ops.append(v2.ColorJitter(brightness=cfg.brightness or None, contrast=cfg.contrast or None))
    return v2.Compose(ops) if ops else None


def apply_augment_2d(pipeline, image: torch.Tensor, label: torch.Tensor, seed: int) -> tuple:
    """Apply ``pipeline`` jointly to ``image`` (C x H x W float in [0, 1]) and ``label`` (H x W int)."""
    if pipeline is None:
        return image, label
    from torchvision import tv_tensors

    with seeded(seed):
        img, msk = pipeline(tv_tensors.Image(image), tv_tensors.Mask(label))
    return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)


def random_flip_nd(
    image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator, p: Sequence[float]
) -> tuple:
    """Flip each spatial axis ``d`` with probability ``p[d]`` (image ``C x *S``, label ``*S`` or ``1 x *S``)."""
    spatial = image.ndim - 1
    axes = [d for d in range(spatial) if rng.random() < p[d]]
    if not axes:
        return image, label
    off = label.ndim - spatial
    return image.flip([1 + d for d in axes]), label.flip([off + d for d in axes])


# ------------------------------------------------------------------------------ square padding
def square_pad_widths(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` zero padding that centres an ``H x W`` image in a square."""
    h, w = int(shape[0]), int(shape[1])
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return top, side - h - top, left, side - w - left


def pad_to_square(arr: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Zero-pad ``H x W (x C)`` by ``pad = (top, bottom, left, right)``."""
    top, bottom, left, right = pad
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, widths) if any(pad) else arr


def to_original_size(logits: torch.Tensor, original_shape: Sequence[int], pad: Sequence[int] | None = None) -> torch.Tensor:
    """Map ``B x K x h x w`` network outputs back to the original ``H x W`` of a 2-D case.

    Without ``pad``: bilinear resize to ``original_shape``. With ``pad = (top, bottom, left, right)``
    (``meta["pad"]`` when ``data.pad_square``): resize to the padded square, then crop the padding, as
    IFE's test protocol does (it uses ``align_corners=True`` here; we keep ``False`` as in training).
    """
    h, w = int(original_shape[0]), int(original_shape[1])
    if not pad or not any(pad):
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    top, bottom, left, right = (int(p) for p in pad)
    full = F.interpolate(logits, size=(h + top + bottom, w + left + right), mode="bilinear", align_corners=False)
    return full[..., top:top + h, left:left + w]
