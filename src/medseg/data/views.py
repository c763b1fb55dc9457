"""3-slice units of a CT volume along one view, and the pieces of the coarse-to-fine (MLL/MLN) data path.

The coarse-to-fine pipeline (``docs/mll.md``) trains one 2-D network per view on *units*: three consecutive
slices of a view stacked as 3 channels, the label being the matching 3-slice stack.

- :func:`view_axis`: which array axis a view (``axial``, ``coronal``, ``sagittal``) runs along, read from the
  affine's orientation (nibabel ``aff2axcodes``), so an LPS, RAS or permuted file gives the right axis.
- :func:`extract_units` / :func:`reassemble_units`: the unit centred on every slice ``i`` is slices
  ``(i-1, i, i+1)`` clamped to the volume (the first and last units repeat the edge slice); reassembly
  averages the overlapping unit outputs per slice using only the genuine (non-repeated) channels, so a slice
  is the mean of 3 outputs inside the volume and of 2 at the ends. Extraction followed by reassembly is the
  identity.
- :func:`window_scale`: HU clip to a per-recipe window then scale to [0, 1] (no mean subtraction).
- :func:`training_slices`: RSTN's slice-sampling rule (``slice_threshold = 0.98``).
- :func:`read_spacing`: the voxel spacing from the raw header, refusing a header with no spacing.
- :func:`binary_target`, :func:`downsample`, :func:`foreground_box`: the target from a set of label values
  (e.g. BraTS tumour core), integer block downsampling, and the crop to the voxels above the window.
"""
from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import DataError

VIEWS = ("axial", "coronal", "sagittal")
_VIEW_LETTERS = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}
_OFFSETS = np.array([-1, 0, 1])


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise DataError(f"unknown view '{view}'; use one of {', '.join(VIEWS)}")


def view_axis(view: str, affine: np.ndarray | None = None) -> int:
    """The array axis of a 3-D volume that ``view``'s slices are taken along.

    With an affine the axis is the one whose world direction is superior/inferior (axial), anterior/posterior
    (coronal) or left/right (sagittal). Without one the array is taken as stored in a canonical (RAS-like)
    NIfTI: sagittal = axis 0, coronal = axis 1, axial = axis 2.
    """
    _check_view(view)
    if affine is None:
        return {"sagittal": 0, "coronal": 1, "axial": 2}[view]
    import nibabel as nib

    codes = nib.orientations.aff2axcodes(np.asarray(affine, dtype=np.float64))
    return next(i for i, c in enumerate(codes) if c in _VIEW_LETTERS[view])


def unit_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, genuine)``, both ``n x 3``: the slice index of each unit channel (clamped to the volume)
    and whether that channel is its own slice (False where an edge slice is repeated)."""
    raw = np.arange(n)[:, None] + _OFFSETS[None, :]
    return np.clip(raw, 0, n - 1), (raw >= 0) & (raw < n)


def extract_units(volume: np.ndarray, axis: int, source: str | Path = "volume") -> np.ndarray:
    """All 3-slice units of a 3-D ``volume`` along ``axis``: an ``n x 3 x *in-plane`` array (unit ``i`` is
    centred on slice ``i``). ``source`` names the file in the error for a view with fewer than 3 slices."""
    if volume.ndim != 3:
        raise DataError(f"{source}: expected a 3-D volume, got shape {volume.shape}")
    n = volume.shape[axis]
    if n < 3:
        raise DataError(
            f"{source}: only {n} slice{'s' if n != 1 else ''} along axis {axis} (shape {volume.shape}); 3-slice "
            "units need at least 3. Use another view for this dataset, or resample the volume"
        )
    idx, _ = unit_indices(n)
    moved = np.moveaxis(volume, axis, 0)
    return moved[idx]


def reassemble_units(units: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of :func:`extract_units`: per slice, the mean of the unit channels that hold that slice.

    ``units`` is ``n x 3 x *in-plane`` (e.g. per-unit probabilities); the result is the 3-D volume with the
    slices along ``axis``.
    """
    n = units.shape[0]
    idx, genuine = unit_indices(n)
    total = np.zeros((n, *units.shape[2:]), dtype=np.result_type(units.dtype, np.float32))
    np.add.at(total, idx[genuine], units[genuine])
    counts = np.bincount(idx[genuine], minlength=n).astype(total.dtype)
    out = total / counts.reshape(n, *([1] * (units.ndim - 2)))
    return np.moveaxis(out, 0, axis)


def window_scale(image: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Clip to ``window = (low, high)`` HU and scale to [0, 1]: ``(clip(x) - low) / (high - low)``."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise DataError(f"HU window {tuple(window)}: high must be greater than low (e.g. [-100, 240])")
    return ((np.clip(image, low, high) - low) / (high - low)).astype(np.float32)


def training_slices(label: np.ndarray, axis: int, threshold: float = 0.98) -> np.ndarray:
    """Centre slices used for training along ``axis`` (RSTN's rule), as sorted indices.

    Let ``P`` be the number of slices with target voxels and ``k = floor(threshold * P)``. A slice is used
    when its target area is at least the ``k``-th largest area (RSTN's ``sorted(areas)[-k]``), so the
    smallest ~2 % of positive slices are never centres; target-free slices never are either (their
    neighbours in a unit may be empty). For ``P = 1``, ``k = 0`` and RSTN's index picks the smallest area
    (0), which would admit every slice; the explicit "area > 0" condition keeps just the positive one. A
    label with no target gives an empty array (the caller skips the case).
    """
    areas = np.count_nonzero(np.moveaxis(label, axis, 0).reshape(label.shape[axis], -1), axis=1)
    positive = int(np.count_nonzero(areas))
    if positive == 0:
        return np.zeros(0, dtype=np.int64)
    k = int(np.floor(threshold * positive))
    min_area = np.sort(areas)[-k]
    return np.flatnonzero((areas >= min_area) & (areas > 0))


def read_spacing(path: str | Path) -> tuple[float, float, float]:
    """The spatial voxel spacing (mm) of a NIfTI file from its raw header (``pixdim[1:4]``).

    nibabel silently replaces zero ``pixdim`` entries by 1 mm on load; a distance in mm (HD95, the
    physical size of the target) would then be wrong without notice, so a header whose spatial spacing is
    missing (0), negative or not finite is a :class:`DataError` naming the file and the fix.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIfTI file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            header = nib.Nifti1Header.from_fileobj(fh, check=False)
    except Exception as err:  # truncated gzip, not a NIfTI file
        raise DataError(f"cannot read the NIfTI header of {path}: {err}") from None
    spacing = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise DataError(
            f"{path}: the header has no valid voxel spacing (pixdim[1:4] = {spacing.tolist()}); distances in mm "
            "and the physical crop size depend on it. Re-export the volume with its spacing (e.g. "
            "nibabel header.set_zooms) or pass the spacing explicitly (load_ct_volume(..., spacing=(sx, sy, sz)))"
        )
    return tuple(float(s) for s in spacing)


def load_ct_volume(path: str | Path, window: Sequence[float] | None = None,
                   spacing: Sequence[float] | None = None) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """``(volume, spacing, affine)`` of a 3-D NIfTI: HU window-scaled to [0, 1] when ``window`` is given,
    else the raw values (e.g. a label). ``spacing`` overrides the header's (the documented fallback for a
    header without one); otherwise :func:`read_spacing` checks it."""
    from medseg.data.nifti_io import load_nifti

    sp = tuple(float(s) for s in spacing) if spacing is not None else read_spacing(path)
    array, _, affine, _ = load_nifti(path, np.float32)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    return (window_scale(array, window) if window is not None else array), sp, affine


def binary_target(label: np.ndarray, values: Sequence[int] | None = None, source: str | Path = "label") -> np.ndarray:
    """The binary target (uint8) of a label map: ``label > 0`` when ``values`` is None, else
    ``label in values`` (e.g. BraTS tumour core = labels {1, 3, 4}).

    Label maps stored as floats (BraTS's ``OTMultiClass.nii.gz`` is float32) are rounded to integers first; a
    value further than 1e-3 from an integer means the file is not a label map (e.g. an image or a resampled,
    interpolated label) and is a :class:`DataError` naming ``source``.
    """
    if values is None:
        return (label > 0).astype(np.uint8)
    rounded = np.rint(label)
    if not np.all(np.abs(label - rounded) <= 1e-3):
        bad = label[np.abs(label - rounded) > 1e-3].flat[0]
        raise DataError(f"{source}: not a label map (value {float(bad)} is not an integer); data.label_values needs "
                        "integer labels (an interpolated or resampled label must be re-exported with nearest neighbour)")
    return np.isin(rounded, np.asarray(list(values), dtype=rounded.dtype)).astype(np.uint8)


def downsample(image: np.ndarray, label: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Both volumes reduced by an integer ``factor`` along every axis, by blocks of ``factor^3`` voxels: the
    image is the block mean, the label the block majority (mean >= 0.5). Voxels beyond the last whole block
    of an axis are dropped. ``factor = 1`` returns the inputs unchanged."""
    if factor == 1:
        return image, label
    shape = [s // factor for s in image.shape]
    if min(shape) < 1:
        raise DataError(f"data.downsample = {factor} is larger than the volume {image.shape}; lower it")

    def blocks(x: np.ndarray) -> np.ndarray:
        x = x[tuple(slice(0, s * factor) for s in shape)].astype(np.float32)
        return x.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean((1, 3, 5))

    return blocks(image), (blocks(label) >= 0.5).astype(np.uint8)


def foreground_box(image: np.ndarray, label: np.ndarray, source: str | Path = "volume") -> tuple[slice, ...]:
    """The bounding box of the voxels above the window's lower bound (``image > 0`` after
    :func:`window_scale`; e.g. the brain in a skull-stripped MRI whose background is its minimum), as slices.

    The target must lie inside it: a label voxel outside (the window cuts part of the organ) is a
    :class:`DataError` naming ``source``, rather than a silently shrunken target. An image with no voxel above
    the window keeps its full extent.
    """
    inside = image > 0
    if not inside.any():
        return tuple(slice(0, s) for s in image.shape)
    box = []
    for axis in range(image.ndim):
        hit = np.flatnonzero(inside.any(tuple(a for a in range(image.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    box = tuple(box)
    lost = int(label.sum()) - int(label[box].sum())
    if lost:
        raise DataError(f"{source}: {lost} target voxel(s) lie outside the voxels above the window's lower bound, "
                        "so data.crop_foreground would cut them; lower data.window[0] or set crop_foreground: false")
    return box


def load_case(image_path: str | Path, label_path: str | Path, window: Sequence[float],
              spacing: Sequence[float] | None = None, label_values: Sequence[int] | None = None,
              ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], np.ndarray]:
    """``(image in [0, 1], binary label uint8, spacing, affine)`` of one case (CT in HU, or any intensity
    the window suits, e.g. z-scored MRI); the target is :func:`binary_target` of the label with
    ``label_values``.

    The label must have the image's shape and affine (to 1e-3 mm); otherwise a :class:`DataError` names both
    files, as a label resampled or exported from another series would silently mark the wrong voxels.
    """
    image, sp, affine = load_ct_volume(image_path, window, spacing)
    label, _, lab_affine = load_ct_volume(label_path, None, sp)
    if label.shape != image.shape:
        raise DataError(f"label {label_path} has shape {label.shape} but image {image_path} has {image.shape}; "
                        "export the label on the image's grid")
    if not np.allclose(lab_affine, affine, atol=1e-3):
        raise DataError(f"label {label_path} and image {image_path} have different affines (voxel-to-world "
                        "geometry); resample the label onto the image grid or fix its header")
    return image, binary_target(label, label_values, label_path), sp, affine


def training_units(labels: dict[str, str | Path], view: str,
                   threshold: float = 0.98) -> tuple[list[tuple[str, int]], list[str]]:
    """The training units of one view over several cases: ``([(case id, centre slice), ...], skipped ids)``.

    ``labels`` maps case ids to label files; each label's affine gives the view's axis. A case with no
    target voxels has no training slice: it is skipped, and one warning gives the count and the first ids.
    """
    import warnings

    from medseg.data.nifti_io import load_nifti

    units: list[tuple[str, int]] = []
    skipped: list[str] = []
    for case_id, path in labels.items():
        label, _, affine, _ = load_nifti(path)
        centres = training_slices(label > 0, view_axis(view, affine), threshold)
        if centres.size == 0:
            skipped.append(case_id)
        units.extend((case_id, int(i)) for i in centres)
    if skipped:
        warnings.warn(f"{len(skipped)} of {len(labels)} training cases have no target voxels and are skipped "
                      f"(first: {skipped[:5]})", stacklevel=2)
    return units, skipped
