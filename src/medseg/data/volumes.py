"""3-D datasets: the shared volume sample logic (:class:`VolumeDataset`) and synthetic 3-D cases.

NIfTI discovery and normalisation live in :mod:`medseg.data.nifti`.

Items depend on the split and on ``nifti.slice_axis``:

- no slice axis, train: ``nifti.patch_size`` patches (whole volume when None), ``samples_per_volume``
  per volume per epoch; with probability ``fg_oversample`` the patch is centred on a random foreground
  voxel (nnU-Net's oversampling; ``nifti.oversample: classes``: on a voxel of a class drawn uniformly
  among those present), otherwise anywhere; then ``data.augment3d`` (MONAI rotation, per-axis flips,
  scaling, gamma; :mod:`medseg.data.transforms3d`) or, when it is disabled, random flips on every axis
  (``augment.hflip``). A volume smaller than the patch is zero-padded, with one warning per volume.
- no slice axis, val/test: whole volumes (``whole_volumes = True``).
- slice axis, train: 2-D slices along that axis, a foreground slice with probability ``fg_oversample``;
  cropped to a 2-entry ``patch_size`` (foreground-centred likewise) or resized to ``image_size``; then
  the 2-D geometric augmentation.
- slice axis, val/test: whole volumes (``slice_eval: volume``, meta ``slice_axis``) or every slice as a
  2-D item resized to ``image_size`` (``slice_eval: slices``, meta ``slice_index``).

Intensities are normalised per volume when read (NIfTI: :func:`medseg.data.nifti.normalize_volume`), then
NIfTI volumes are reoriented / resampled to the network grid when ``nifti.orientation`` /
``nifti.target_spacing`` are set (:mod:`medseg.data.resample`); ``read_original`` gives the file's label.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medseg.config import DataConfig
from medseg.data.synthetic import make_case
from medseg.data.transforms import (
    apply_augment_2d,
    build_augment_2d,
    normalize_image,
    random_flip_nd,
    sample_seed,
)
from medseg.data.transforms3d import augment_3d, build_augment_3d
from medseg.errors import DataError

_MAX_FG = 200_000  # foreground voxel indices kept per volume for oversampling


# ------------------------------------------------------------------------------------ datasets
class VolumeDataset(Dataset, ABC):
    """Volumes read by ``_read(k) -> (image C x *S float32, label *S int64, meta)``; see module doc."""

    def __init__(self, cfg: DataConfig, split: str, ids: list[str], name: str) -> None:
        self.cfg, self.split, self.name = cfg, split, name
        self.case_ids = list(ids)
        self.train = split == "train"
        self.binary = cfg.num_classes == 1
        n = cfg.nifti
        self.axis = n.slice_axis
        self.slices_eval = self.axis is not None and not self.train and n.slice_eval == "slices"
        self.whole_volumes = not self.train and not self.slices_eval
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, dict[str, Any], np.ndarray]] = {}
        aug = cfg.augment.model_copy(update={"brightness": 0.0, "contrast": 0.0, "crop_scale": None})
        self.augment2d = build_augment_2d(aug, cfg.image_size[-2:], 1) if self.train and self.axis is not None else None
        self._slices: list[tuple[int, int]] | None = None
        self.augment3d = build_augment_3d(cfg.augment3d) if self.train and self.axis is None else None
        self._class_fg: dict[int, dict[int, np.ndarray]] = {}
        self._padded: set[int] = set()  # volumes already reported as smaller than the patch

    @property
    def _slice_index(self) -> list[tuple[int, int]]:
        """``(volume, slice)`` pairs of ``slice_eval: slices`` (reads every volume once)."""
        if self._slices is None:
            self._slices = [(k, s) for k in range(len(self.case_ids)) for s in self._slices_of(k)]
        return self._slices

    # ---------------------------------------------------------------------------- bookkeeping
    @property
    def ids(self) -> list[str]:
        if self.slices_eval:
            return [f"{self.case_ids[k]}_s{s:04d}" for k, s in self._slice_index]
        if self.train:
            spv = self.cfg.nifti.samples_per_volume
            return [f"{c}_p{j}" for c in self.case_ids for j in range(spv)]
        return list(self.case_ids)

    def __len__(self) -> int:
        if self.slices_eval:
            return len(self._slice_index)
        return len(self.case_ids) * (self.cfg.nifti.samples_per_volume if self.train else 1)

    @abstractmethod
    def _read(self, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """``(image C x D x H x W normalised, label D x H x W, meta)`` of volume ``k``."""

    def volume(self, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any], np.ndarray]:
        """``(image, label, meta, fg_index)`` of volume ``k`` (cached when ``cfg.cache``)."""
        if k in self._cache:
            return self._cache[k]
        image, label, meta = self._read(k)
        if image.shape[1:] != label.shape:
            raise DataError(
                f"case '{self.case_ids[k]}': image {meta.get('path')} has spatial shape {image.shape[1:]} but "
                f"its label {meta.get('label_path', '')} has {label.shape}; they must match"
            )
        image = self._match_channels(image, meta)
        fg = np.flatnonzero(label > 0)
        if fg.size > _MAX_FG:
            fg = fg[np.random.default_rng(0).choice(fg.size, _MAX_FG, replace=False)]
        out = (image, label, meta, fg)
        if self.cfg.cache:
            self._cache[k] = out
        return out

    def class_index(self, k: int) -> dict[int, np.ndarray]:
        """Flat voxel indices of each foreground class present in volume ``k`` (at most ``_MAX_FG`` each,
        a seeded subsample), for class-balanced oversampling (``nifti.oversample: classes``)."""
        if k in self._class_fg:
            return self._class_fg[k]
        label = self.volume(k)[1].ravel()
        fg = np.flatnonzero(label > 0)
        values = label[fg]
        order = np.argsort(values, kind="stable")
        classes, starts = np.unique(values[order], return_index=True)
        rng = np.random.default_rng(0)
        out = {}
        for c, idx in zip(classes.tolist(), np.split(fg[order], starts[1:])):
            out[int(c)] = idx if idx.size <= _MAX_FG else idx[rng.choice(idx.size, _MAX_FG, replace=False)]
        if self.cfg.cache:
            self._class_fg[k] = out
        return out

    def _match_channels(self, image: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        want = self.cfg.in_channels
        if image.shape[0] == want:
            return image
        if image.shape[0] == 1:
            return np.repeat(image, want, axis=0)
        raise DataError(
            f"case '{meta['id']}' has {image.shape[0]} channels but data.in_channels is {want}; "
            f"set data.in_channels={image.shape[0]} or pick channels with nifti.channels"
        )

    def warm_cache(self) -> None:
        if self.cfg.cache:
            for k in range(len(self.case_ids)):
                self.volume(k)

    def _slices_of(self, k: int) -> list[int]:
        _, label, _, _ = self.volume(k)
        if not self.cfg.nifti.slice_fg_only:
            return list(range(label.shape[self.axis]))
        other = tuple(d for d in range(label.ndim) if d != self.axis)
        return np.flatnonzero((label > 0).any(axis=other)).tolist()

    def read_original(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The label at original resolution: the volume (or, with ``slice_eval: slices``, the slice)."""
        if self.slices_eval:
            k, s = self._slice_index[i]
            _, label, meta, _ = self.volume(k)
            return self._out_label(np.take(label, s, axis=self.axis)), self._slice_meta(meta, s, i)
        k = i // self.cfg.nifti.samples_per_volume if self.train else i
        _, label, meta, _ = self.volume(k)
        if meta.get("grid"):  # resampled for the network: score against the label as stored in the file
            label = self._original_label(k)
        return self._out_label(label), dict(meta)

    def _original_label(self, k: int) -> np.ndarray:
        """Volume ``k``'s label on the file's grid (datasets that resample override this)."""
        return self.volume(k)[1]

    def _out_label(self, label: np.ndarray) -> np.ndarray:
        return (label > 0).astype(np.uint8) if self.binary else label

    def _slice_meta(self, meta: dict[str, Any], s: int, i: int | None = None) -> dict[str, Any]:
        plane = [d for d in range(3) if d != self.axis]
        out = dict(meta, slice_axis=self.axis, slice_index=int(s))
        out["spacing"] = tuple(meta["spacing"][d] for d in plane)
        out["original_shape"] = tuple(meta["original_shape"][d] for d in plane)
        out["volume_id"] = meta["id"]
        out["id"] = f"{meta['id']}_s{s:04d}"
        return out

    # -------------------------------------------------------------------------------- samples
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = key if isinstance(key, tuple) else (int(key), sample_seed(0, 0, int(key), 0))
        if self.slices_eval:
            k, s = self._slice_index[i]
            image, label, meta, _ = self.volume(k)
            img = torch.from_numpy(np.ascontiguousarray(np.take(image, s, axis=self.axis + 1)))
            lab = torch.from_numpy(np.ascontiguousarray(np.take(label, s, axis=self.axis)))
            img, lab = self._resize2d(img, lab)
            return self._sample(img, lab, self._slice_meta(meta, s))
        if not self.train:
            image, label, meta, _ = self.volume(i)
            meta = dict(meta, slice_axis=self.axis) if self.axis is not None else dict(meta)
            return self._sample(torch.from_numpy(image), torch.from_numpy(label), meta)
        k = i // self.cfg.nifti.samples_per_volume
        rng = np.random.default_rng(seed)
        if self.axis is None:
            return self._patch(k, rng, seed)
        return self._train_slice(k, rng, seed)

    def _sample(self, image: torch.Tensor, label: torch.Tensor, meta: dict[str, Any]) -> dict[str, Any]:
        label = (label > 0).float()[None] if self.binary else label.long()
        return {"image": image.float().contiguous(), "label": label.contiguous(), "meta": meta}

    def _centre(self, rng: np.random.Generator, shape: tuple[int, ...], fg: np.ndarray, full: tuple[int, ...],
                classes: dict[int, np.ndarray] | None = None):
        """A voxel index: with probability ``fg_oversample`` a random foreground voxel (with ``classes``:
        a class drawn uniformly among those present, then one of its voxels), else uniform."""
        if fg.size and rng.random() < self.cfg.nifti.fg_oversample:
            if classes:
                idx = list(classes.values())[int(rng.integers(len(classes)))]
                return np.unravel_index(int(idx[rng.integers(idx.size)]), full)
            return np.unravel_index(int(fg[rng.integers(fg.size)]), full)
        return tuple(int(rng.integers(s)) for s in shape)

    def _patch(self, k: int, rng: np.random.Generator, seed: int) -> dict[str, Any]:
        image, label, meta, fg = self.volume(k)
        size = self.cfg.nifti.patch_size or list(label.shape)
        if k not in self._padded and any(d < s for d, s in zip(label.shape, size)):
            self._padded.add(k)
            warnings.warn(f"case '{meta['id']}' ({meta.get('path')}): volume {tuple(label.shape)} is smaller than "
                          f"nifti.patch_size {tuple(size)}; its patches are zero-padded to the patch size", stacklevel=2)
        classes = self.class_index(k) if self.cfg.nifti.oversample == "classes" else None
        centre = self._centre(rng, label.shape, fg, label.shape, classes)
        img, lab, origin = crop_around(image, label, centre, size)
        timg, tlab = torch.from_numpy(img), torch.from_numpy(lab)
        if self.augment3d is not None:
            timg, tlab = augment_3d(self.augment3d, timg, tlab, seed)
        elif self.cfg.augment.enabled:
            timg, tlab = random_flip_nd(timg, tlab, rng, [self.cfg.augment.hflip] * 3)
        return self._sample(timg, tlab, dict(meta, patch_origin=origin, aug_seed=seed))

    def _train_slice(self, k: int, rng: np.random.Generator, seed: int) -> dict[str, Any]:
        image, label, meta, fg = self.volume(k)
        ax = self.axis
        fg_slices = np.unique(np.unravel_index(fg, label.shape)[ax]) if fg.size else np.zeros(0, int)
        candidates = fg_slices if self.cfg.nifti.slice_fg_only and fg_slices.size else None
        if fg_slices.size and (candidates is not None or rng.random() < self.cfg.nifti.fg_oversample):
            s = int(fg_slices[rng.integers(fg_slices.size)])
        else:
            s = int(rng.integers(label.shape[ax]))
        img = np.take(image, s, axis=ax + 1)
        lab = np.take(label, s, axis=ax)
        patch = self.cfg.nifti.patch_size
        if patch is not None and len(patch) == 2:
            fg2 = np.flatnonzero(lab > 0)
            centre = self._centre(rng, lab.shape, fg2, lab.shape)
            img, lab, _ = crop_around(img, lab, centre, patch)
            timg, tlab = torch.from_numpy(img), torch.from_numpy(lab)
        else:
            timg, tlab = self._resize2d(torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(np.ascontiguousarray(lab)))
        if self.augment2d is not None:
            timg, tlab = apply_augment_2d(self.augment2d, timg, tlab, seed)
        return self._sample(timg, tlab, dict(self._slice_meta(meta, s), aug_seed=seed))

    def _resize2d(self, img: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = tuple(self.cfg.image_size[-2:])
        if tuple(img.shape[-2:]) == size:
            return img, lab
        img = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        lab = F.interpolate(lab[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return img, lab


def crop_around(
    image: np.ndarray, label: np.ndarray, centre, size
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Crop ``size`` around ``centre`` (shifted to stay inside); an axis shorter than ``size`` is
    zero-padded on both sides (centred).

    ``image`` is ``C x *S``, ``label`` ``*S``; returns the crops and the start index (negative = padded).
    """
    shape = label.shape
    start = [(d - s) // 2 if d < s else int(np.clip(c - s // 2, 0, d - s)) for c, s, d in zip(centre, size, shape)]
    pad_lo = [max(0, -st) for st in start]
    src = tuple(slice(max(0, st), min(d, st + s)) for st, s, d in zip(start, size, shape))
    img = np.zeros((image.shape[0], *size), dtype=image.dtype)
    lab = np.zeros(tuple(size), dtype=label.dtype)
    dst = tuple(slice(p, p + (sl.stop - sl.start)) for p, sl in zip(pad_lo, src))
    img[(slice(None), *dst)] = image[(slice(None), *src)]
    lab[dst] = label[src]
    return img, lab, tuple(start)


class Synthetic3D(VolumeDataset):
    """Seeded synthetic 3-D cases of shape ``image_size`` (3 entries) or ``(32, H, W)`` for 2 entries."""

    def __init__(self, cfg: DataConfig, split: str) -> None:
        s = cfg.synthetic
        n = {"train": s.n_train, "val": s.n_val, "test": s.n_test}[split]
        self.shape = tuple(cfg.image_size) if len(cfg.image_size) == 3 else (32, *cfg.image_size)
        super().__init__(cfg, split, [f"synth3d_{split}_{k:04d}" for k in range(n)], cfg.name or "synthetic3d")

    def _read(self, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        s = self.cfg.synthetic
        image, label = make_case(
            self.shape, seed=s.seed, split=self.split, index=k, num_classes=self.cfg.num_classes,
            channels=self.cfg.in_channels, noise=s.noise, contrast=s.contrast,
        )
        image = normalize_image(torch.from_numpy(image), self.cfg.normalize).numpy()
        meta = {
            "id": self.case_ids[k],
            "dataset": self.name,
            "modality": self.cfg.modality or "synthetic",
            "spacing": (1.0, 1.0, 1.0),
            "original_shape": self.shape,
            "path": f"synthetic://{self.case_ids[k]}",
            "affine": np.eye(4).tolist(),
        }
        return image, label.astype(np.int64), meta
