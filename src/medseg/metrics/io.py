"""Light readers for ``medseg metrics``: PNG/JPEG/BMP (OpenCV), TIFF (tifffile), NIfTI (nibabel).

No torch. Every failure is a :class:`~medseg.errors.DataError` naming the file; a JPEG that stops
before its end marker is refused (OpenCV would half-decode it with a warning that names no file). A
prediction file is a mask (values {0, 1} or {0, 255}, or integer labels) or a probability map (any other
8-bit or float values in [0, 1]). A binary GT is read by the rule shared with training
(:func:`medseg.masks.binary_mask`: {0, 1}, {0, 255} or 0/255 with JPEG-like noise, else an error naming
the file, the values and the fixes ``--num-classes K`` / ``--gt-threshold T``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.masks import CLI_FIXES, binary_mask
from medseg.metrics.saliency import ByteMap

MASK_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz")
_JPEG_NOISE = 32


@dataclass
class Loaded:
    """An array read from ``path`` with its spacing (NIfTI header zooms, else None)."""

    path: Path
    array: np.ndarray
    spacing: tuple[float, ...] | None


def case_name(path: Path) -> str:
    """File name without its extension (``.nii.gz`` counts as one)."""
    name = path.name
    for ext in sorted(MASK_EXTS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def list_cases(folder: Path, suffix: str = "") -> dict[str, Path]:
    """``{case: path}`` of the mask files in ``folder``; ``suffix`` (e.g. ``_mask``) is cut off names."""
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(MASK_EXTS):
            continue
        name = case_name(path)
        if suffix and name.endswith(suffix):
            name = name[: -len(suffix)]
        if name in out:
            raise DataError(f"two files for case '{name}' in {folder}: {out[name].name} and {path.name}; keep one")
        out[name] = path
    if not out:
        raise DataError(f"no mask files ({', '.join(MASK_EXTS)}) in {folder}")
    return out


def read_array(path: Path) -> Loaded:
    """Decode one file to a NumPy array (2-D images: one channel; NIfTI: the volume and its spacing)."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
            if arr.ndim == 4 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
            return Loaded(path, np.asarray(arr), zooms)
        if name.endswith((".tif", ".tiff")):
            import tifffile

            arr = tifffile.imread(str(path))
        else:
            import cv2

            if name.endswith((".jpg", ".jpeg")):
                _check_jpeg_complete(path)  # before OpenCV, which would print an anonymous warning
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise DataError(f"cannot decode {path} (not an image, or truncated)")
    except DataError:
        raise
    except Exception as err:  # nibabel/tifffile/cv2 raise many types
        raise DataError(f"cannot read {path}: {err}") from err
    return Loaded(path, _one_channel(arr, path), None)


def _check_jpeg_complete(path: Path) -> None:
    """Raise when the JPEG ``path`` is truncated. Fast path: the file ends with the EOI marker (FF D9,
    which cannot occur inside entropy-coded data); otherwise Pillow decodes it strictly (it tolerates
    bytes after EOI and raises on missing data unless ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 2))
        if f.read(2) == b"\xff\xd9":
            return
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
    except Exception as err:  # OSError "image file is truncated", SyntaxError, ...
        raise DataError(f"{path} is truncated or corrupt ({err}); OpenCV decodes only part of it. Re-export "
                        f"or remove the file") from err


def _one_channel(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        colour = arr[..., :3]
        if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2]):
            return np.ascontiguousarray(colour[..., 0])
        diff = np.abs(colour.astype(np.int32) - colour[..., :1]).max()
        if diff <= _JPEG_NOISE:  # JPEG-compressed grey saved as RGB
            return np.ascontiguousarray(colour.mean(axis=-1).round().astype(arr.dtype))
        raise DataError(f"{path}: a colour image ({arr.shape}) is not a mask; save masks as one channel")
    if arr.ndim != 2:
        raise DataError(f"{path}: shape {arr.shape} is not a 2-D mask")
    return arr


def as_prediction(arr: np.ndarray, num_classes: int, threshold: float, case: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mask_or_labels, prob_or_None)`` of a prediction file (see the module docstring); an 8-bit map is
    returned as its bytes (value ``byte / 255``), a float map as float64."""
    if num_classes > 1:
        return _labels(arr, num_classes, "prediction", case), None
    if arr.dtype == bool:
        return arr, None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"case '{case}': the prediction holds NaN/inf values")
    values = np.unique(arr) if arr.dtype.kind != "f" or arr.size < 4_000_000 else None
    if values is not None and set(values.tolist()) <= {0, 1}:
        return arr.astype(bool), None
    if arr.dtype == np.uint8:
        if values is not None and set(values.tolist()) <= {0, 255}:
            return arr > 127, None
        if values is not None and values.size <= 16 and values.max() < 16:
            raise DataError(f"case '{case}': the prediction holds the labels {values.tolist()}: a label map, not a "
                            f"binary mask or probability map; pass --num-classes K for label maps")
        # the bytes go on as the map: MetricSuite scores 8-bit maps from their byte histograms (saliency.ByteMap)
        return ByteMap(arr).above(threshold), arr
    elif arr.dtype.kind == "f":
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise DataError(f"case '{case}': the prediction spans [{lo:.4g}, {hi:.4g}]; a probability map must "
                            f"lie in [0, 1] (or be an 8-bit image)")
        prob = arr.astype(np.float64)
    elif arr.dtype == np.uint16 and values is not None and set(values.tolist()) <= {0, 65535}:
        return arr > 0, None
    else:
        raise DataError(f"case '{case}': prediction values {values[:8].tolist() if values is not None else ''} are "
                        f"neither a binary mask nor a probability map; use --num-classes for label maps")
    return prob > threshold, prob


def as_ground_truth(arr: np.ndarray, num_classes: int, case: str, threshold: float | None = None,
                    path: Path | str | None = None) -> np.ndarray:
    """A boolean GT mask (binary) or int64 labels (multi-class).

    Binary: :func:`medseg.masks.binary_mask` (``threshold``: ``--gt-threshold``, foreground where value >
    T); a GT that is not binary raises naming ``path`` (or the case), the values and the fixes.
    """
    if num_classes > 1:
        return _labels(arr, num_classes, "ground truth", case)
    where = f"case '{case}': {path}" if path is not None else f"case '{case}'"
    return binary_mask(arr, threshold, path=where, fixes=CLI_FIXES, what="ground truth")


def _labels(arr: np.ndarray, num_classes: int, what: str, case: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.allclose(arr, rounded, atol=1e-3):
            raise DataError(f"case '{case}': the {what} holds non-integer values; a label map is needed for "
                            f"num_classes={num_classes}")
        arr = rounded
    labels = arr.astype(np.int64)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"case '{case}': the {what} holds labels {lo}..{hi} but num_classes={num_classes} allows "
                        f"0..{num_classes - 1}; set --num-classes to the number of labels (background included)")
    return labels
