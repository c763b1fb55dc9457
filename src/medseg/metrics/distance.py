"""Surface-distance metrics: HD, HD95, ASD, ASSD and normalised surface Dice from one pass per case.

Surfaces are the voxels of an object that touch the background through a face (the object minus its
erosion by the connectivity-1 cross, with the outside of the image as background), as in medpy. The
pass works inside the bounding box of prediction ∪ GT plus a 1-voxel margin: every surface voxel lies
in it and Euclidean distances do not depend on the crop, so the result is exact. Distances are exact
Euclidean distance transforms (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``; for
2-D isotropic images OpenCV's exact ``DIST_MASK_PRECISE`` transform, whose squared distances are
integers and are recovered exactly before the square root; for volumes with two equal spacings, the
usual scan geometry, OpenCV's 2-D transform per slice combined across slices only at the surface
voxels, see ``_stacked_distances``, about 9x faster than the 3-D transform on a liver-sized organ).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medseg.metrics._policy import Policy, check_pair, check_spacing, diagonal

_CV2_MAX_SQ = 4_000_000  # float32 distances stay exactly invertible below this squared distance


@dataclass
class SurfaceDistances:
    """Distances from each prediction surface voxel to the GT surface (``pred_to_gt``) and back.

    ``diagonal`` is the worst value (image diagonal in physical units) used when one mask is empty.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray
    pred_empty: bool
    gt_empty: bool
    diagonal: float

    @property
    def both_empty(self) -> bool:
        return self.pred_empty and self.gt_empty

    @property
    def one_empty(self) -> bool:
        return self.pred_empty != self.gt_empty


# ---------------------------------------------------------------------------------- bounding box
def bounding_box(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """``[(start, stop), ...]`` per axis of the non-zero voxels of a boolean mask, or None if empty.

    The first axis is found on a ``uint64`` view of the flattened rows (8 voxels per test), the other
    axes on the (small) slab between the first and last non-empty rows.
    """
    if mask.ndim == 1:
        nz = np.flatnonzero(mask)
        return [(int(nz[0]), int(nz[-1]) + 1)] if nz.size else None
    rows = mask.reshape(mask.shape[0], -1)
    if rows.shape[1] % 8 == 0 and rows.flags.c_contiguous:
        occupied = rows.view(np.uint64).any(axis=1)
    else:
        occupied = rows.any(axis=1)
    nz = np.flatnonzero(occupied)
    if nz.size == 0:
        return None
    box = [(int(nz[0]), int(nz[-1]) + 1)]
    slab = mask[box[0][0]:box[0][1]]
    for axis in range(1, mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(slab.any(axis=other))
        box.append((int(nz[0]), int(nz[-1]) + 1))
    return box


def union_box(a: list[tuple[int, int]] | None, b: list[tuple[int, int]] | None, shape: Sequence[int],
              margin: int = 1) -> tuple[slice, ...] | None:
    """Slices of the bounding box of two boxes grown by ``margin`` voxels, clipped to ``shape``."""
    boxes = [x for x in (a, b) if x is not None]
    if not boxes:
        return None
    return tuple(slice(max(0, min(x[i][0] for x in boxes) - margin), min(n, max(x[i][1] for x in boxes) + margin))
                 for i, n in enumerate(shape))


# ---------------------------------------------------------------------------------------- surfaces
def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: ``mask & ~erode(mask, cross)`` with the outside as background (medpy's border)."""
    if mask.ndim == 2:
        import cv2

        m = np.ascontiguousarray(mask).view(np.uint8)
        inner = cv2.erode(m, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return (m & (inner ^ 1)).view(bool)
    padded = np.pad(mask, 1)
    inner = mask.copy()
    center = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for shift in (slice(0, -2), slice(2, None)):
            view = list(center)
            view[axis] = shift
            inner &= padded[tuple(view)]
    return mask & ~inner


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


def _distances_at(border: np.ndarray, at: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Euclidean distances (physical units) from the voxels of ``at`` to the nearest ``border`` voxel."""
    if border.ndim == 2 and spacing[0] == spacing[1]:
        import cv2

        d32 = cv2.distanceTransform((border ^ True).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[at]
        sq = np.rint(d32.astype(np.float64) ** 2)  # exact integer squared distances
        if sq.size == 0 or sq.max() < _CV2_MAX_SQ:
            dist = np.sqrt(sq)
            return dist * spacing[0] if spacing[0] != 1 else dist
    if border.ndim == 3:
        stack = _stack_axis(spacing)
        if stack is not None and max(border.shape[a] for a in range(3) if a != stack) ** 2 * 2 < _CV2_MAX_SQ:
            return _stacked_distances(border, at, spacing, stack)
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~border, sampling=spacing)[at]


def _stack_axis(spacing: np.ndarray) -> int | None:
    """The axis whose two partners share one spacing (0 when all three do), else None."""
    for axis in range(3):
        a, b = (i for i in range(3) if i != axis)
        if spacing[a] == spacing[b]:
            return axis
    return None


def _stacked_distances(border: np.ndarray, at: np.ndarray, spacing: np.ndarray, stack: int) -> np.ndarray:
    """Exact 3-D distances from the voxels of ``at`` to ``border`` when two axes share a spacing.

    Per slice across the ``stack`` axis, OpenCV's exact 2-D transform gives the squared in-plane distance
    ``k`` (an integer, recovered exactly from float32) to the slice's border voxels; the 3-D squared
    distance of a voxel is ``min_dz k(z + dz)·s² + (dz·s_z)²``, scanned over dz = 0, ±1, ±2 ... only at
    the voxels of ``at`` and only until ``(dz·s_z)²`` passes the best value found (no further slice can
    be nearer). The same minimum as the 3-D transform, at a fraction of its cost (no full 3-D pass).
    """
    import cv2

    plane = [a for a in range(3) if a != stack]
    s_in2 = float(spacing[plane[0]]) ** 2
    s_z = float(spacing[stack])
    src = np.ascontiguousarray(np.moveaxis(border, stack, 0))
    n = src.shape[0]
    occupied = src.reshape(n, -1).any(axis=1)
    planes = np.empty(src.shape, dtype=np.float32)
    inv = (src ^ True).view(np.uint8)
    for z in np.flatnonzero(occupied):
        planes[z] = cv2.distanceTransform(inv[z], cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    planes[~occupied] = np.inf
    coords = np.nonzero(at)  # the order of ``transform[at]``
    zs, ys, xs = coords[stack], coords[plane[0]], coords[plane[1]]

    def squared(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        d = planes[z, y, x].astype(np.float64)
        return np.rint(d * d) * s_in2  # inf stays inf

    best = squared(zs, ys, xs)
    pending = np.arange(zs.size)
    dz = 1
    while pending.size and dz < n:
        reach = (dz * s_z) ** 2
        pending = pending[best[pending] > reach]
        for z2 in (zs[pending] - dz, zs[pending] + dz):
            ok = (z2 >= 0) & (z2 < n)
            idx = pending[ok]
            if idx.size:
                best[idx] = np.minimum(best[idx], squared(z2[ok], ys[idx], xs[idx]) + reach)
        dz += 1
    return np.sqrt(best)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None,
                      case: str = "") -> SurfaceDistances:
    """Both directed surface-distance sets of two binary masks in one pass (bounding-box crop).

    Args:
        pred, gt: boolean (or 0/1) arrays of the same 2-D or 3-D shape.
        spacing: voxel size per axis in physical units (mm); None means 1 (pixel units).
    """
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    check_pair(pred, gt, case)
    sp = check_spacing(spacing, pred.ndim, case)
    box_p, box_g = bounding_box(pred), bounding_box(gt)
    diag = diagonal(pred.shape, sp)
    empty = np.empty(0)
    if box_p is None or box_g is None:
        return SurfaceDistances(empty, empty, box_p is None, box_g is None, diag)
    crop = union_box(box_p, box_g, pred.shape, margin=1)
    border_p, border_g = surface(pred[crop]), surface(gt[crop])
    return SurfaceDistances(_distances_at(border_g, border_p, sp), _distances_at(border_p, border_g, sp),
                            False, False, diag)


# ----------------------------------------------------------------------------------- definitions
def _edge(sd: SurfaceDistances, policy: Policy, what: str, both: float = 0.0) -> float | None:
    """The policy value when a mask is empty (None when both surfaces exist)."""
    if not (sd.pred_empty or sd.gt_empty):
        return None
    default = both if sd.both_empty else sd.diagonal
    return float(policy.fill(np.array(np.nan), np.array(True), default, ife=0.0, medpy=None, what=what))


def hd_from(sd: SurfaceDistances, policy: Policy = Policy()) -> float:
    """Hausdorff distance ``max(max_{a∈∂P} d(a, ∂G), max_{b∈∂G} d(b, ∂P))`` (Huttenlocher et al., 1993)."""
    edge = _edge(sd, policy, "hd")
    return edge if edge is not None else float(max(sd.pred_to_gt.max(), sd.gt_to_pred.max()))


def hd95_from(sd: SurfaceDistances, policy: Policy = Policy()) -> float:
    """95th-percentile Hausdorff distance.

    ``pooled`` (default, medpy ``hd95``): ``P95(D(∂P→∂G) ∪ D(∂G→∂P))``; ``max_directed`` (MONAI):
    ``max(P95(D(∂P→∂G)), P95(D(∂G→∂P)))``; percentiles with linear interpolation.
    """
    edge = _edge(sd, policy, "hd95")
    if edge is not None:
        return edge
    if policy.hd95_mode == "max_directed":
        return float(max(np.percentile(sd.pred_to_gt, 95), np.percentile(sd.gt_to_pred, 95)))
    return float(np.percentile(np.concatenate([sd.pred_to_gt, sd.gt_to_pred]), 95))


def asd_from(sd: SurfaceDistances, policy: Policy = Policy()) -> float:
    """Average surface distance, directed from prediction to GT: ``mean_{a∈∂P} d(a, ∂G)`` (medpy ``asd``)."""
    edge = _edge(sd, policy, "asd")
    return edge if edge is not None else float(sd.pred_to_gt.mean())


def assd_from(sd: SurfaceDistances, policy: Policy = Policy()) -> float:
    """Average symmetric surface distance.

    ``pooled`` (default; medpy 0.5 ``assd`` and MONAI): the mean of all distances of both directions,
    ``(Σ_{∂P} d + Σ_{∂G} d) / (|∂P| + |∂G|)``; ``mean_of_directed`` (medpy <= 0.4, IFE's "ASD"):
    ``(ASD(P→G) + ASD(G→P)) / 2``.
    """
    edge = _edge(sd, policy, "assd")
    if edge is not None:
        return edge
    if policy.assd == "mean_of_directed":
        return float((sd.pred_to_gt.mean() + sd.gt_to_pred.mean()) / 2)
    return float(np.concatenate([sd.pred_to_gt, sd.gt_to_pred]).mean())


def nsd_from(sd: SurfaceDistances, policy: Policy = Policy()) -> float:
    """Normalised surface Dice at tolerance τ (Nikolov et al., 2021; MONAI ``compute_surface_dice``).

    ``NSD = (|{a∈∂P: d(a,∂G) <= τ}| + |{b∈∂G: d(b,∂P) <= τ}|) / (|∂P| + |∂G|)`` with surfaces counted
    in voxels; τ = ``policy.nsd_tolerance`` in physical units. One empty mask: 0; both empty: 1.
    """
    if sd.both_empty:
        return float(policy.fill(np.array(np.nan), np.array(True), 1.0, ife=0.0, medpy=None, what="nsd"))
    if sd.one_empty:
        return 0.0
    tau = policy.nsd_tolerance
    good = np.count_nonzero(sd.pred_to_gt <= tau) + np.count_nonzero(sd.gt_to_pred <= tau)
    return float(good / (sd.pred_to_gt.size + sd.gt_to_pred.size))
