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
_LAZY = {  # public name -> module: imported on first use, so `import medseg.data.<module>` stays light
    "Base2D": "medseg.data.datasets2d",
    "EpochSampler": "medseg.data.loader",
    "Folder2D": "medseg.data.datasets2d",
    "IMAGE_EXTS": "medseg.data.io",
    "Mixture": "medseg.data.mixture",
    "NiftiVolumes": "medseg.data.nifti",
    "Synthetic2D": "medseg.data.datasets2d",
    "Synthetic3D": "medseg.data.volumes",
    "VolumeDataset": "medseg.data.volumes",
    "build_dataset": "medseg.data.loader",
    "build_loader": "medseg.data.loader",
    "cached_dataset": "medseg.data.loader",
    "collate": "medseg.data.loader",
    "crop_around": "medseg.data.volumes",
    "discover": "medseg.data.nifti",
    "load_nifti": "medseg.data.nifti_io",
    "make_case": "medseg.data.synthetic",
    "mask_to_binary": "medseg.data.io",
    "mask_to_labels": "medseg.data.io",
    "normalize_image": "medseg.data.transforms",
    "normalize_volume": "medseg.data.nifti",
    "pair_folder": "medseg.data.datasets2d",
    "read_image": "medseg.data.io",
    "read_mask": "medseg.data.io",
    "read_split_file": "medseg.data.splits",
    "remap_labels": "medseg.data.nifti",
    "sample_seed": "medseg.data.transforms",
    "save_nifti": "medseg.data.nifti_io",
    "split_ids": "medseg.data.splits",
    "square_pad_widths": "medseg.data.transforms",
    "to_original_size": "medseg.data.transforms",
    "write_prediction": "medseg.data.io",
}


def __getattr__(name: str):  # PEP 562: the public API without importing every reader up front
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medseg.data' has no attribute '{name}'")


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
