"""Volume geometry with MONAI: reorientation to a canonical orientation, resampling to a target spacing, and
the way back to the file's grid for predictions and metrics.

The network grid of a case is described by ``meta["grid"] = {"affine", "spacing", "shape"}``; the file's
own geometry stays in ``meta["affine"]``, ``meta["spacing"]`` and ``meta["original_shape"]`` (what metrics
and saved predictions use). Without ``data.nifti.orientation`` and ``data.nifti.target_spacing`` nothing is
resampled and no ``grid`` is recorded. See ``docs/cwcd.md`` (Data pipeline).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medseg.errors import DataError


def _meta_tensor(array: np.ndarray | torch.Tensor, affine: np.ndarray):
    from monai.data import MetaTensor

    data = torch.as_tensor(array)
    return MetaTensor(data, affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)))


def to_network_grid(image: np.ndarray, label: np.ndarray | None, affine: np.ndarray,
                    orientation: str | None, spacing: Sequence[float] | None
                    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any] | None]:
    """Reorient (MONAI ``Orientation``) and resample (MONAI ``Spacing``: image linear, label nearest) a
    ``C x *S`` image and its ``*S`` label; returns ``(image, label, grid)`` with ``grid`` the new
    ``affine`` / ``spacing`` / ``shape`` (None, and the inputs unchanged, when neither is asked)."""
    if orientation is None and spacing is None:
        return image, label, None
    from monai.transforms import Orientation, Spacing

    img = _meta_tensor(image.astype(np.float32, copy=False), affine)
    lab = None if label is None else _meta_tensor(label[None].astype(np.float32), affine)
    if orientation is not None:
        ori = Orientation(axcodes=orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
        img = ori(img)
        lab = None if lab is None else ori(lab)
    if spacing is not None:
        img = Spacing(pixdim=tuple(spacing), mode="bilinear", padding_mode="border")(img)
        lab = None if lab is None else Spacing(pixdim=tuple(spacing), mode="nearest")(lab)
    new_affine = img.affine.numpy().astype(np.float64)
    grid = {"affine": new_affine.tolist(), "spacing": tuple(float(s) for s in np.linalg.norm(new_affine[:3, :3], axis=0)),
            "shape": tuple(int(s) for s in img.shape[1:])}
    out_lab = None if lab is None else np.rint(lab.as_tensor().numpy()[0]).astype(np.int64)
    return np.ascontiguousarray(img.as_tensor().numpy().astype(np.float32)), out_lab, grid


def to_original_grid(x: torch.Tensor | np.ndarray, meta: dict[str, Any], mode: str | None = None):
    """Map ``x`` from the network grid (``meta["grid"]``) back to the file's grid (``meta["affine"]``,
    ``meta["original_shape"]``) with MONAI ``SpatialResample``.

    ``x`` is ``*S`` (a label map: nearest), ``C x *S`` or ``B x C x *S`` (logits or probabilities: linear);
    ``mode`` overrides ("nearest" / "bilinear"). Returns the same kind (tensor or array) and dtype as given.
    Without ``meta["grid"]`` (no resampling was done) ``x`` is returned unchanged.
    """
    grid = meta.get("grid")
    if not grid:
        return x
    from monai.transforms import SpatialResample

    is_np = isinstance(x, np.ndarray)
    t = torch.as_tensor(x)
    dtype, lead = t.dtype, t.ndim - 3
    if lead not in (0, 1, 2):
        raise ValueError(f"to_original_grid: expected *S, C x *S or B x C x *S, got shape {tuple(t.shape)}")
    if tuple(t.shape[-3:]) != tuple(grid["shape"]):
        raise DataError(f"case '{meta.get('id')}': array of spatial shape {tuple(t.shape[-3:])} is not on the "
                        f"network grid {tuple(grid['shape'])} recorded for {meta.get('path')}")
    mode = mode or ("nearest" if lead == 0 else "bilinear")
    flat = t.reshape(-1, *t.shape[-3:]).float()
    resample = SpatialResample(mode=mode, padding_mode="border")
    out = resample(_meta_tensor(flat.cpu(), np.asarray(grid["affine"])),
                   dst_affine=torch.as_tensor(np.asarray(meta["affine"], dtype=np.float64)),
                   spatial_size=tuple(int(s) for s in meta["original_shape"])).as_tensor()
    out = out.reshape(*t.shape[:-3], *out.shape[-3:])
    out = (out.round() if not dtype.is_floating_point else out).to(dtype).to(t.device)
    return out.numpy() if is_np else out


def network_grid_volume(volume: torch.Tensor, path, orientation: str | None, spacing: Sequence[float] | None
                        ) -> tuple[torch.Tensor, dict[str, Any]]:
    """A ``1 x C x *S`` volume read from ``path`` on the network grid, and the meta that
    :func:`to_original_grid` needs to map its outputs back (unchanged, meta without ``grid``, when neither
    ``orientation`` nor ``spacing`` is set)."""
    import nibabel as nib

    affine = np.asarray(nib.load(str(path)).affine, dtype=np.float64)
    meta: dict[str, Any] = {"id": str(path), "path": str(path), "affine": affine.tolist(),
                            "original_shape": tuple(int(s) for s in volume.shape[2:])}
    image, _, grid = to_network_grid(volume[0].cpu().numpy(), None, affine, orientation, spacing)
    if grid is None:
        return volume, meta
    meta["grid"] = grid
    return torch.from_numpy(image)[None].to(volume.device), meta
