"""NIfTI read/write that keeps the geometry (affine, voxel spacing, header) of the input."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError


def load_nifti(path: str | Path, dtype: Any = None) -> tuple[np.ndarray, tuple[float, ...], np.ndarray, Any]:
    """Read a NIfTI file.

    Returns ``(array, spacing, affine, header)``: the voxel array in file order (scaled by the header's
    slope/intercept, cast to ``dtype`` when given), the voxel spacing in mm of the spatial axes (header
    ``pixdim``), the 4x4 voxel-to-world affine and the nibabel header.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIfTI file not found: {path}")
    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt/truncated gzip streams
        raise DataError(f"cannot read NIfTI {path} (unreadable or truncated; re-export it): {err}") from None
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    ndim = min(arr.ndim, 3)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:ndim])
    return arr, spacing, np.asarray(img.affine, dtype=np.float64), img.header


def save_nifti(array: np.ndarray, path: str | Path, affine: np.ndarray | None = None, header: Any = None) -> Path:
    """Write ``array`` as NIfTI with the given affine and header (geometry of the input volume).

    The header's data type is set from ``array`` (a uint8 mask saved with a float image's header stays
    uint8) and scaling is reset, so the stored values are exactly ``array``. Without an affine the
    identity is used (spacing 1 mm).
    """
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.int64:
        array = array.astype(np.int32 if array.size and np.abs(array).max() > 32767 else np.int16)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(array, np.eye(4) if affine is None else np.asarray(affine), hdr)
    img.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    if affine is not None:
        img.set_qform(np.asarray(affine), code=max(1, int(hdr["qform_code"])) if hdr is not None else 1)
        img.set_sform(np.asarray(affine), code=max(1, int(hdr["sform_code"])) if hdr is not None else 1)
    nib.save(img, str(path))
    return path
