"""Reading and writing 2-D images and masks (PNG, JPEG, BMP, TIFF incl. RGB TIFF).

Pillow reads most files; TIFF goes through ``tifffile`` first (Pillow cannot open RGB float or
multi-sample TIFFs), with OpenCV as the last resort for files Pillow cannot identify. A file Pillow
finds truncated is refused, never handed to OpenCV (which half-decodes a truncated JPEG, fills the rest
grey and warns without naming the file). Every failure is a :class:`DataError` that names the file.
Binary masks are read by the rule shared with ``medseg metrics`` (:func:`medseg.masks.binary_mask`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medseg.errors import DataError
from medseg.masks import CONFIG_FIXES, MaskFixes, binary_mask

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")


class _Truncated(DataError):
    """Pillow decoded part of the file: no other reader may be tried."""


def _read_pil(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        try:
            img.load()  # forces decoding, so a truncated file fails here
        except (OSError, SyntaxError, ValueError) as err:
            if "truncated" in str(err).lower() or "broken" in str(err).lower():
                raise _Truncated(f"cannot read image {path}: truncated or corrupt ({err}); re-export or remove "
                                 "it") from err
            raise
        if img.mode == "1":
            return np.array(img, dtype=bool)
        if img.mode == "P":  # palette: keep the indices, not the colours
            return np.array(img)
        if img.mode in ("RGBA", "LA"):
            img = img.convert("RGB" if img.mode == "RGBA" else "L")
        elif img.mode not in ("L", "RGB", "I;16", "I;16B", "I", "F"):
            img = img.convert("RGB")
        return np.array(img)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    arr = tifffile.imread(str(path))
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3):
        raise DataError(f"{path}: TIFF with shape {arr.shape} is not a 2-D grey or RGB image")
    return arr


def _read_cv2(path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"cannot read image {path}: OpenCV could not decode it")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB)
    return arr


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``H x W`` (grey) or ``H x W x 3`` (RGB) NumPy array, dtype kept.

    Raises :class:`DataError` naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    errors: list[str] = []
    readers = (_read_tiff, _read_pil, _read_cv2) if path.suffix.lower() in _TIFF else (_read_pil, _read_cv2)
    for reader in readers:
        try:
            return reader(path)
        except _Truncated:
            raise
        except DataError as err:
            errors.append(str(err))
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError, ImportError) as err:
            errors.append(f"{reader.__name__[6:]}: {err}")
    raise DataError(
        f"cannot read image {path} (unreadable or truncated file; re-export or remove it): " + "; ".join(errors)
    )


def mask_to_binary(arr: np.ndarray, threshold: float | None = None, path: str | Path = "",
                   fixes: MaskFixes = CONFIG_FIXES) -> np.ndarray:
    """Binary uint8 (0/1) mask by :func:`medseg.masks.binary_mask`.

    ``threshold`` None (``data.mask_threshold`` unset): {0, 1}, {0, 255} and 0/255 JPEG-noisy masks
    (Kvasir-SEG: background <= 30, polyp >= 225) are read; anything else, e.g. {0, 1, 2}, raises a
    :class:`DataError` naming ``path``, the values and the fixes (``data.num_classes: K`` with
    ``data.mask_mode: labels``, or ``data.mask_threshold: T``). A number: ``arr > threshold`` (boolean
    and 0/1 masks are kept as they are). Multi-channel masks (RGB JPEG) use the channel max. ``fixes``: how
    the error spells the two fixes for the caller (config keys by default, CLI options for a command).
    """
    if arr.ndim == 3:  # channel max (a reduce over channel planes: ~15x faster than max(axis=-1))
        arr = np.maximum.reduce([arr[..., c] for c in range(arr.shape[-1])])
    return binary_mask(arr, threshold, path=path, fixes=fixes).astype(np.uint8)


def mask_to_labels(arr: np.ndarray, num_classes: int | None = None, path: str | Path = "") -> np.ndarray:
    """Label-indexed mask (palette PNG indices or grey values) as int64, checked against ``num_classes``."""
    if arr.ndim == 3:
        if not (arr == arr[..., :1]).all():
            raise DataError(
                f"{path}: label mask has {arr.shape[-1]} different colour channels; save it as a palette "
                "or grey PNG whose values are the class indices"
            )
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(arr == np.round(arr)):
            raise DataError(f"{path}: label mask holds non-integer values; labels must be class indices")
    labels = arr.astype(np.int64)
    check_labels(labels, num_classes, path)
    return labels


def check_labels(labels: np.ndarray, num_classes: int | None, path: str | Path = "") -> None:
    """Raise :class:`DataError` when a label lies outside ``[0, num_classes)``."""
    if num_classes is None or labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= max(num_classes, 2):
        bad = np.unique(labels[(labels < 0) | (labels >= max(num_classes, 2))])[:10].tolist()
        raise DataError(
            f"{path}: label values {bad} are outside the declared classes 0..{max(num_classes, 2) - 1} "
            f"(num_classes={num_classes}); raise data.num_classes or remap them (nifti.label_map)"
        )


def read_mask(
    path: str | Path, threshold: float | str | None = "auto", num_classes: int | None = None
) -> np.ndarray:
    """Read a mask file: binary uint8 0/1 (``"auto"``: the rule of :func:`mask_to_binary`; a number:
    ``value > threshold``), or int64 labels when ``threshold`` is None."""
    arr = read_image(path)
    if threshold is None:
        return mask_to_labels(arr, num_classes, path)
    return mask_to_binary(arr, None if threshold == "auto" else float(threshold), path)


def write_prediction(
    pred: np.ndarray,
    path: str | Path,
    *,
    reference: str | Path | None = None,
    scale: bool = True,
) -> Path:
    """Write a predicted mask with the geometry of its input.

    2-D (``H x W``): PNG; a binary 0/1 mask is written 0/255 when ``scale`` (viewable), labels as their
    indices, a float probability map in [0, 1] as 8-bit grey. 3-D: NIfTI with the affine/header of
    ``reference`` (the input volume) when given. Parent folders are created.
    """
    from medseg.data.nifti_io import load_nifti, save_nifti

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pred = np.asarray(pred)
    if pred.ndim == 3 or path.name.endswith((".nii", ".nii.gz")):
        affine, header = None, None
        if reference is not None:
            _, _, affine, header = load_nifti(reference)
        save_nifti(pred, path, affine, header)
        return path
    if pred.ndim != 2:
        raise DataError(f"write_prediction: expected a 2-D (H, W) or 3-D array for {path}, got shape {pred.shape}")
    if np.issubdtype(pred.dtype, np.floating):
        out = np.clip(np.round(pred * 255.0), 0, 255).astype(np.uint8)
    elif pred.dtype == bool or (scale and pred.size and pred.max() <= 1):
        out = pred.astype(np.uint8) * (255 if scale else 1)
    else:
        if pred.max(initial=0) > 65535 or pred.min(initial=0) < 0:
            raise DataError(f"write_prediction: label values of {path} do not fit a PNG")
        out = pred.astype(np.uint8 if pred.max(initial=0) < 256 else np.uint16)
    Image.fromarray(out).save(path)
    return path
