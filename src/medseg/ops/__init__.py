"""Shared array operations used by both ``data/`` and ``losses/`` (bottom layer: imports nothing of medseg
except ``errors``).

- :mod:`medseg.ops.distance`: exact Euclidean distance and signed distance maps (2-D/3-D, spacing).
- :mod:`medseg.ops.morphology`: min-pool erosion and contour maps on tensors (GPU-friendly).
- :mod:`medseg.ops.targets`: :func:`prepare_targets`, which adds the derived targets a loss declares in
  ``loss.requires`` (``"sdf"``, ``"contour"``, ``"dwce_weight"``) to a batch after it reaches the device.
"""
from __future__ import annotations

from medseg.ops.distance import (distance_maps, edt_squared_torch, signed_distance, signed_distance_np,
                                 unet_weight_map, unsigned_boundary_distance)
from medseg.ops.morphology import contour, erode, label_channels, label_contour
from medseg.ops.targets import parse_target, prepare_targets, target_key

__all__ = [
    "contour", "distance_maps", "label_contour", "edt_squared_torch", "erode", "label_channels", "parse_target",
    "prepare_targets", "signed_distance", "signed_distance_np", "target_key", "unet_weight_map",
    "unsigned_boundary_distance",
]
