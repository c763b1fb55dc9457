"""2-D datasets: image/mask folders paired by file stem, and the synthetic 2-D generator.

Both share :class:`Base2D`: a case is decoded once at its original size, resized to
``cfg.image_size`` (image bilinear, label nearest) and, with ``cfg.cache``, kept in memory at that size
as its source dtype (uint8 for 8-bit files). ``__getitem__`` then augments (train split, per-sample
seed), normalises and returns the sample dict. ``read_original(i)`` gives the label at original size.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.config import DataConfig
from medseg.data.io import IMAGE_EXTS, check_labels, mask_to_binary, mask_to_labels, read_image
from medseg.data.splits import split_ids
from medseg.data.synthetic import make_case
from medseg.data.transforms import (
    apply_augment_2d,
    build_augment_2d,
    match_channels,
    normalize_image,
    pad_to_square,
    sample_seed,
    square_pad_widths,
    to_unit_float,
)
from medseg.errors import DataError

Case = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def _resize(arr: np.ndarray, size: Sequence[int], nearest: bool) -> np.ndarray:
    """cv2 resize of ``H x W (x C)`` to ``size = (H, W)``; keeps the channel axis for one channel."""
    h, w = int(size[0]), int(size[1])
    if arr.shape[:2] == (h, w):
        return arr
    out = cv2.resize(arr, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)
    return out[..., None] if arr.ndim == 3 and out.ndim == 2 else out


def _label_storage(label: np.ndarray) -> np.ndarray:
    if label.dtype == np.uint8:
        return label
    hi = int(label.max(initial=0))
    return label.astype(np.uint8 if hi < 256 else np.uint16)


def resize_to_input(image: np.ndarray, cfg: DataConfig, pad: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A raw ``H x W (x C)`` image on the network's input grid, as training sees it: square zero padding
    (``pad``, when ``data.pad_square``), channels matched to ``in_channels``, resized to ``image_size``."""
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)  # bool, int32, float64: types cv2.resize may not take
    if pad is not None:
        image = pad_to_square(image, pad)
    return _resize(match_channels(image, cfg.in_channels), cfg.image_size[:2], nearest=False)


def unit_tensor(image: np.ndarray) -> torch.Tensor:
    """``H x W x C`` array -> ``C x H x W`` float tensor scaled to [0, 1] by its dtype (before normalisation)."""
    return torch.from_numpy(np.ascontiguousarray(to_unit_float(image).transpose(2, 0, 1)))


class Base2D(Dataset, ABC):
    """Shared 2-D sample pipeline; subclasses implement ``_decode(i) -> (image, label, meta)``."""

    spatial_dims = 2

    def __init__(self, cfg: DataConfig, split: str, ids: list[str], name: str) -> None:
        if len(cfg.image_size) != 2:
            raise DataError(f"data.image_size must have 2 entries for a 2-D dataset, got {cfg.image_size}")
        self.cfg = cfg
        self.split = split
        self.ids = list(ids)
        self.name = name
        self.train = split == "train"
        self.binary = cfg.num_classes == 1
        self.size = tuple(cfg.image_size)
        self.augment = build_augment_2d(cfg.augment, self.size, cfg.in_channels) if self.train else None
        self._cache: dict[int, Case] = {}

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ decoding and caching
    @abstractmethod
    def _decode(self, i: int) -> Case:
        """``(image H x W (x C), label H x W, meta)`` of case ``i`` at its original size."""

    def _checked(self, i: int) -> Case:
        image, label, meta = self._decode(i)
        if image.shape[:2] != label.shape[:2]:
            raise DataError(
                f"case '{self.ids[i]}': image {meta.get('path', '')} is {image.shape[:2]} but its mask "
                f"{meta.get('mask_path', '')} is {label.shape[:2]}; image and mask must have the same size"
            )
        return image, label, meta

    def _prepared(self, i: int) -> Case:
        if i in self._cache:
            return self._cache[i]
        image, label, meta = self._checked(i)
        pad = None
        if self.cfg.pad_square:
            pad = square_pad_widths(label.shape)
            label = pad_to_square(label, pad)
            meta = dict(meta, pad=pad)
        image = resize_to_input(image, self.cfg, pad)
        label = _resize(_label_storage(label), self.size, nearest=True)
        case = (image, label, meta)
        if self.cfg.cache:
            self._cache[i] = case
        return case

    def warm_cache(self, threads: int = 4) -> None:
        """Decode every case into the cache now (in this process, so forked workers share it)."""
        if not self.cfg.cache:
            return
        todo = [i for i in range(len(self)) if i not in self._cache]
        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(self._prepared, todo))

    def read_original(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The label at original resolution (binary uint8 0/1 or int64 labels) and the case meta
        (with ``pad`` when ``pad_square``: map outputs back with :func:`to_original_size`)."""
        _, label, meta = self._checked(i)
        if self.cfg.pad_square:
            meta = dict(meta, pad=square_pad_widths(label.shape))
        return label, dict(meta)

    # ------------------------------------------------------------------------------ samples
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = key if isinstance(key, tuple) else (int(key), sample_seed(0, 0, int(key), 0))
        image_np, label_np, meta = self._prepared(i)
        image = unit_tensor(image_np)
        label = torch.from_numpy(label_np.astype(np.int64))
        if self.augment is not None:
            image, label = apply_augment_2d(self.augment, image, label, seed)
        image = normalize_image(image.float(), self.cfg.normalize)
        meta = dict(meta)
        if self.train:
            meta["aug_seed"] = seed
        label = label[None].float() if self.binary else label.long()
        return {"image": image.contiguous(), "label": label.contiguous(), "meta": meta}

    def _meta(self, i: int, shape: Sequence[int], path: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.ids[i],
            "dataset": self.name,
            "modality": self.cfg.modality or "",
            "spacing": (1.0, 1.0),
            "original_shape": tuple(int(s) for s in shape[:2]),
            "path": path,
            **extra,
        }


# ------------------------------------------------------------------------------ synthetic 2-D
class Synthetic2D(Base2D):
    """Seeded synthetic 2-D cases (see :mod:`medseg.data.synthetic`) at ``cfg.image_size``."""

    def __init__(self, cfg: DataConfig, split: str) -> None:
        s = cfg.synthetic
        n = {"train": s.n_train, "val": s.n_val, "test": s.n_test}[split]
        super().__init__(cfg, split, [f"synth2d_{split}_{k:04d}" for k in range(n)], cfg.name or "synthetic2d")

    def _decode(self, i: int) -> Case:
        s = self.cfg.synthetic
        image, label = make_case(
            self.size, seed=s.seed, split=self.split, index=i, num_classes=self.cfg.num_classes,
            channels=self.cfg.in_channels, noise=s.noise, contrast=s.contrast,
        )
        return image.transpose(1, 2, 0), label, self._meta(i, self.size, f"synthetic://{self.ids[i]}")


# ------------------------------------------------------------------------------ folder pairs
def pair_folder(root: Path, images_dir: str, masks_dir: str, mask_suffix: str = "") -> list[tuple[str, Path, Path]]:
    """``(stem, image_path, mask_path)`` for every image in ``root/images_dir`` with a mask
    ``root/masks_dir/<stem><mask_suffix>.<ext>``; errors name the folder and the first unpaired files."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} (set data.root to the folder holding {images_dir}/ and {masks_dir}/)")
    img_dir, msk_dir = root / images_dir, root / masks_dir
    for d, key in ((img_dir, "images_dir"), (msk_dir, "masks_dir")):
        if not d.is_dir():
            raise DataError(f"folder not found: {d} (set data.{key}; found {sorted(p.name for p in root.iterdir())[:10]})")
    images = _by_stem(img_dir, "")
    masks = _by_stem(msk_dir, mask_suffix)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in {img_dir}: the dataset has no pairs")
    unpaired = sorted(s for s in images if s not in masks)
    if unpaired:
        names = [images[s].name for s in unpaired[:5]]
        raise DataError(
            f"{len(unpaired)} of {len(images)} images in {img_dir} have no mask in {msk_dir} "
            f"(expected <stem>{mask_suffix}.<ext>), first: {names}; add the masks, remove the images "
            "or set data.mask_suffix"
        )
    return [(s, images[s], masks[s]) for s in sorted(images)]


def _by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS or p.name.startswith("."):
            continue
        stem = p.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in out:
            raise DataError(f"{folder}: two files share the stem '{stem}': {out[stem].name} and {p.name}; keep one")
        out[stem] = p
    return out


class Folder2D(Base2D):
    """``root/images/<stem>.<ext>`` + ``root/masks/<stem><mask_suffix>.<ext>`` pairs.

    Binary masks (channel max for RGB masks): with ``mask_threshold`` unset, 1-bit, {0, 1}, {0, 255} and
    JPEG-noisy 0/255 masks are read and any other mask (e.g. {0, 1, 2}: a label map) raises a
    :class:`DataError` naming the file, its values and the fixes; ``mask_threshold: T`` gives
    ``value > T`` (1-bit and 0/1 masks as they are). See :func:`medseg.masks.binary_mask`.
    ``mask_mode: labels``: the stored values (palette PNG indices) are the classes, checked against
    ``num_classes``. Grey images are repeated to ``in_channels``; RGB to grey by luma when ``in_channels`` is 1.
    """

    def __init__(self, cfg: DataConfig, split: str) -> None:
        if cfg.root is None:
            raise DataError("data.kind is 'folder2d' but data.root is not set; give the dataset folder")
        root = Path(cfg.root).expanduser()
        pairs = pair_folder(root, cfg.images_dir, cfg.masks_dir, cfg.mask_suffix)
        by_id = {s: (ip, mp) for s, ip, mp in pairs}
        ids = split_ids(list(by_id), cfg.split, split, root)
        super().__init__(cfg, split, ids, cfg.name or root.name)
        self.paths = [by_id[s] for s in ids]

    def _decode(self, i: int) -> Case:
        img_path, mask_path = self.paths[i]
        image = read_image(img_path)
        raw = read_image(mask_path)
        if self.cfg.mask_mode == "labels" or self.cfg.num_classes > 1:
            label = mask_to_labels(raw, self.cfg.num_classes, mask_path)
        else:
            label = mask_to_binary(raw, self.cfg.mask_threshold, mask_path)
        check_labels(label, self.cfg.num_classes, mask_path)
        meta = self._meta(i, image.shape, str(img_path), mask_path=str(mask_path))
        return image, label, meta
