"""Derived training targets, produced on the device after augmentation: :func:`prepare_targets`.

A loss declares what it needs in ``loss.requires`` (a set of target names). A name is a base name plus
optional options in a canonical form, e.g. ``"contour"`` (cube 3, 6 iterations) or
``"contour(iterations=1,kernel=2)"`` (the CWCD code's setting); the target is stored in the batch under
exactly that name, so two losses with different settings never share a map. :func:`target_key` builds the
canonical name (default values are left out).

Targets (``K`` = ``num_classes``; a float label ``B x C x *spatial`` is ``C`` binary maps):

- ``sdf``: Kervadec signed distance per foreground channel, ``B x C_fg x *spatial`` float32 (``C_fg`` =
  ``C`` for a float label, ``K − 1`` for an int label); options ``spacing`` (``"pixel"`` or ``"meta"`` = each
  sample's ``meta["spacing"]``), ``backend`` (``auto``/``scipy``/``torch``), ``clip`` (``none`` or D:
  ``|φ| <= D``, computed on cropped boxes, several times faster for small objects).
- ``contour``: CWCD contour band of every class channel incl. background, bool ``B x max(K, 2) x *spatial``;
  options ``kernel`` (3), ``iterations`` (6).
- ``dwce_weight``: U-Net weight map per 2-D slice, ``B x 1 x *spatial``; options ``w0`` (10), ``sigma`` (5),
  ``balance`` (1), ``slice_axis`` (0, the first spatial axis of a volume).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import numpy as np
import torch

from medseg.ops.distance import signed_distance, unet_weight_map
from medseg.ops.morphology import label_channels, label_contour

DEFAULTS: dict[str, dict[str, Any]] = {
    "sdf": {"spacing": "pixel", "backend": "auto", "clip": "none"},
    "contour": {"kernel": 3, "iterations": 6},
    "dwce_weight": {"w0": 10.0, "sigma": 5.0, "balance": 1, "slice_axis": 0},
}
_NAME = re.compile(r"^([a-z_]+)(?:\((.*)\))?$")


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_target(name: str) -> tuple[str, dict[str, Any]]:
    """``"contour(kernel=2,iterations=1)"`` -> ``("contour", {"kernel": 2, "iterations": 1, ...defaults})``."""
    match = _NAME.match(name.replace(" ", ""))
    if not match or match.group(1) not in DEFAULTS:
        raise ValueError(f"unknown derived target '{name}' (valid: {', '.join(sorted(DEFAULTS))}, optionally "
                         f"with options as in 'contour(kernel=2,iterations=1)')")
    base, args = match.group(1), match.group(2)
    opts = dict(DEFAULTS[base])
    for item in filter(None, (args or "").split(",")):
        key, _, val = item.partition("=")
        if key not in opts:
            raise ValueError(f"derived target '{name}': unknown option '{key}' (valid: {', '.join(opts)})")
        opts[key] = _value(val)
    return base, opts


def target_key(base: str, **options: Any) -> str:
    """Canonical batch key of a derived target: options equal to the defaults are left out."""
    if base not in DEFAULTS:
        raise ValueError(f"unknown derived target '{base}' (valid: {', '.join(sorted(DEFAULTS))})")
    extra = {k: v for k, v in sorted(options.items()) if DEFAULTS[base].get(k) != v}
    bad = [k for k in extra if k not in DEFAULTS[base]]
    if bad:
        raise ValueError(f"derived target '{base}': unknown option(s) {bad} (valid: {', '.join(DEFAULTS[base])})")
    if not extra:
        return base
    return f"{base}({','.join(f'{k}={v}' for k, v in extra.items())})"


def prepare_targets(batch: dict, requires: Iterable[str], num_classes: int) -> dict:
    """Add each derived target named in ``requires`` to ``batch`` (in place, also returned) unless present.

    Call it after moving the batch to the device (and after any on-device augmentation): the maps are
    computed from ``batch["label"]`` on its device.
    """
    if not requires:
        return batch
    if "label" not in batch:
        raise KeyError("prepare_targets: the batch has no 'label' (derived targets are computed from it)")
    for name in sorted(requires):
        if name in batch:
            continue
        base, opts = parse_target(name)
        batch[name] = _BUILDERS[base](batch, num_classes, **opts)
    return batch


def foreground_channels(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Binary foreground maps ``B x C_fg x *spatial`` (bool): a float label as is, an int label one-hot
    without background (``K = 1`` with an int label means ``label > 0``)."""
    if label.is_floating_point():
        return label > 0.5
    if num_classes <= 1:
        return (label > 0).unsqueeze(1)
    return label_channels(label, num_classes)[:, 1:] > 0.5


def _sdf(batch: dict, num_classes: int, spacing: str = "pixel", backend: str = "auto",
         clip: Any = "none") -> torch.Tensor:
    fg = foreground_channels(batch["label"], num_classes)
    clip = None if clip in (None, "none") else float(clip)
    if spacing == "pixel":
        return signed_distance(fg, None, backend, clip)
    if spacing != "meta":
        raise ValueError(f"sdf target: spacing must be 'pixel' or 'meta', got {spacing!r}")
    metas = batch.get("meta")
    if not isinstance(metas, list) or any("spacing" not in m for m in metas):
        raise KeyError("sdf(spacing=meta) needs batch['meta'] as a list of dicts with 'spacing'")
    dims = fg.ndim - 2
    return torch.cat([signed_distance(fg[i:i + 1], tuple(metas[i]["spacing"])[-dims:], backend, clip)
                      for i in range(fg.shape[0])])


def _contour(batch: dict, num_classes: int, kernel: int = 3, iterations: int = 6) -> torch.Tensor:
    return label_contour(batch["label"], max(num_classes, 2), int(kernel), int(iterations))


def _dwce_weight(batch: dict, num_classes: int, w0: float = 10.0, sigma: float = 5.0, balance: int = 1,
                 slice_axis: int = 0) -> torch.Tensor:
    label = batch["label"]
    if label.is_floating_point():
        if label.shape[1] != 1:
            raise ValueError(f"dwce_weight: a float label must be binary B x 1 x *spatial, got {tuple(label.shape)}")
        label = (label[:, 0] > 0.5).long()
    arr = label.detach().cpu().numpy()
    out = np.zeros(arr.shape, np.float32)
    for b in range(arr.shape[0]):
        vol = arr[b] if arr.ndim == 3 else np.moveaxis(arr[b], slice_axis, 0)
        slices = [vol] if arr.ndim == 3 else list(vol)
        maps = np.stack([unet_weight_map(s, w0, sigma, bool(balance)) for s in slices])
        out[b] = maps[0] if arr.ndim == 3 else np.moveaxis(maps, 0, slice_axis)
    return torch.from_numpy(out).unsqueeze(1).to(label.device)


_BUILDERS = {"sdf": _sdf, "contour": _contour, "dwce_weight": _dwce_weight}
