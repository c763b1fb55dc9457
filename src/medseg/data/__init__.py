"""Datasets, loaders and image/NIfTI I/O.

Public API::

    build_dataset(cfg.data, "train")          # torch Dataset of sample dicts
    build_loader(cfg.data, "train", seed=0, epoch=3)
    read_image(path) / read_mask(path, threshold) / write_prediction(pred, path, reference=...)
    load_nifti(path) -> (array, spacing, affine, header);  save_nifti(array, path, affine, header)

A sample is ``{"image": float32 C x *S, "label": float32 1 x *S (binary) | int64 *S, "meta": {...}}``
with meta ``id, dataset, modality, spacing, original_shape, path`` (+ ``affine`` for volumes).

Kinds (``cfg.kind``):

- ``synthetic2d`` / ``folder2d``: items resized to ``image_size`` (after zero-padding to a centred square
  when ``pad_square``, meta ``pad``); ``read_original(i)`` gives the label at original size for
  evaluation; ``to_original_size(logits, meta["original_shape"], meta.get("pad"))`` maps outputs back.
- ``nifti`` / ``synthetic3d`` (``nifti.slice_axis`` None): train items are ``nifti.patch_size`` patches
  (foreground oversampling), ``samples_per_volume`` per volume per epoch; val/test items are whole
  volumes (``whole_volumes = True``; loaders use batch 1).
- ``nifti`` with ``nifti.slice_axis``: train items are 2-D slices along that axis (cropped to a 2-entry
  ``patch_size`` when given, else resized to ``image_size``); val/test items are whole volumes
  (``nifti.slice_eval: volume``, native resolution, meta ``slice_axis``: predict slice by slice) or every
  slice as a 2-D item resized to ``image_size`` (``slice_eval: slices``, meta ``slice_index``).
- ``mixture``: several binary datasets in one, sampled by ``weight``; meta ``dataset`` and ``modality``.
"""
from medseg.data.datasets2d import Base2D, Folder2D, Synthetic2D, pair_folder
from medseg.data.io import IMAGE_EXTS, mask_to_binary, mask_to_labels, read_image, read_mask, write_prediction
from medseg.data.loader import EpochSampler, build_dataset, build_loader, cached_dataset, collate
from medseg.data.mixture import Mixture
from medseg.data.nifti import NiftiVolumes, discover, normalize_volume, remap_labels
from medseg.data.nifti_io import load_nifti, save_nifti
from medseg.data.splits import read_split_file, split_ids
from medseg.data.synthetic import make_case
from medseg.data.transforms import normalize_image, sample_seed, square_pad_widths, to_original_size
from medseg.data.volumes import Synthetic3D, VolumeDataset, crop_around

__all__ = [
    "IMAGE_EXTS",
    "Base2D",
    "EpochSampler",
    "Folder2D",
    "Mixture",
    "NiftiVolumes",
    "Synthetic2D",
    "Synthetic3D",
    "VolumeDataset",
    "build_dataset",
    "build_loader",
    "cached_dataset",
    "collate",
    "crop_around",
    "discover",
    "load_nifti",
    "make_case",
    "mask_to_binary",
    "mask_to_labels",
    "normalize_image",
    "normalize_volume",
    "pair_folder",
    "read_image",
    "read_mask",
    "read_split_file",
    "remap_labels",
    "sample_seed",
    "save_nifti",
    "split_ids",
    "square_pad_widths",
    "to_original_size",
    "write_prediction",
]
