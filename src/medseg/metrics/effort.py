"""Human Correction Effort (HCE), the DIS definition (Qin et al., "Highly Accurate Dichotomous Image
Segmentation", ECCV 2022; ``xuebinqin/DIS`` ``IS-Net/hce_metric_main.py``; PySODMetrics
``HumanCorrectionEffortMeasure``).

HCE = FP points + FP independent regions + FN points + FN independent regions, a raw count (lower is
better). The error regions are relaxed with ``relax = 5`` erosions of P ∪ G and 5 dilations (disk(1))
constrained to ¬G (FP) or ¬P (FN), so thin rims along true boundaries are forgiven; GT-skeleton pixels
missed by P are forced back into FN. For each relaxed region the contour stretches that border TP ∪ FN
(FP) or true background (FN) are simplified with Ramer-Douglas-Peucker (ε = 2) and their points
counted; a region none of whose contour touches such area counts as one independent region.

Speed: everything runs on the bounding box of P ∪ G grown by ``relax + 1`` pixels (no path of 5
dilation steps can leave it, and OpenCV's border rules are kept at true image edges), and the
per-contour-point bookkeeping of the reference code is vectorised; only the RDP call stays per stretch.
The GT skeleton is needed only on the few FN pixels the relaxation leaves out, near the GT border, and is
decided there by a light-cone-limited thinning (:func:`skeleton_on`), with the whole skeleton as fallback.
``mode="ife64"`` reproduces IFE's variant: both 0/255 masks resized to 64x64 (bilinear, no
re-binarisation) with uint8 subtraction, so interpolated rim pixels count as FP/FN.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import numpy as np

RELAX = 5
EPSILON = 2.0

# Zhang-Suen thinning as scikit-image's ``skeletonize`` (2-D) computes it: the 256-entry table of
# scikit-image's ``_fast_skeletonize`` (BSD-3) maps the 8-neighbour code (NW=1, N=2, NE=4, E=8, SE=16,
# S=32, SW=64, W=128) to 1 (removable in the first sub-pass), 2 (second), 3 (both) or 0.
_ZS_TABLE = np.array([0, 0, 0, 1, 0, 0, 1, 3, 0, 0, 3, 1, 1, 0, 1, 3, 0, 0, 0, 0, 0, 0,
       0, 0, 2, 0, 2, 0, 3, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0,
       0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 2, 2, 0, 0,
       0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
       0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0,
       0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 2, 0, 0, 0, 3, 1,
       0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
       0, 0, 0, 0, 0, 1, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
       2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 1, 3, 0, 0,
       1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
       0, 0, 0, 0, 2, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3,
       0, 1, 0, 0, 0, 0, 2, 2, 0, 0, 2, 0, 0, 0], dtype=np.uint8)
_ZS_PASSES = ((_ZS_TABLE == 1) | (_ZS_TABLE == 3), (_ZS_TABLE == 2) | (_ZS_TABLE == 3))
_ZS_ANY = _ZS_TABLE != 0
_SMALL = 40_000  # below this many pixels scikit-image's full raster passes are cheaper


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen skeleton identical to ``skimage.morphology.skeletonize`` for 2-D masks.

    Same parallel sub-passes (each decides from the image at its start), but each pass visits only the
    candidate pixels (foreground with a removable neighbourhood code, re-queued when a neighbour goes)
    instead of the whole image, so the cost follows the object's perimeter, not its area (small masks go
    to scikit-image directly, and the last passes go to it once the still-changing box is small, see
    :func:`_hand_off`).
    """
    if mask.size <= _SMALL:
        from skimage.morphology import skeletonize

        return skeletonize(np.ascontiguousarray(mask, dtype=bool))
    img = np.pad(mask.astype(bool, copy=False), 1).view(np.uint8)
    width = img.shape[1]
    flat = img.ravel()
    off = np.array([-width - 1, -width, -width + 1, 1, width + 1, width, width - 1, -1], dtype=np.intp)
    import cv2

    # only pixels with a background 8-neighbour can be removable (code 255 never is)
    interior = cv2.erode(img, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    active = np.flatnonzero(flat & (interior.ravel() ^ 1))
    queued = np.zeros(flat.size, dtype=np.uint8)
    queued[active] = 1
    stamp = np.zeros(flat.size, dtype=np.intp)
    idle, which, passes, next_try = 0, 0, 0, _HANDOFF_EVERY
    while idle < 2 and active.size:
        passes += 1
        if passes >= next_try and which == 0:  # a whole number of iterations done: the state is the image
            if _hand_off(img, active, width):
                break
            next_try = passes + _HANDOFF_EVERY
        codes = np.packbits(flat[active[:, None] + off], axis=1, bitorder="little")[:, 0]
        remove = _ZS_PASSES[which][codes]
        which ^= 1
        live = _ZS_ANY[codes]
        queued[active[~live]] = 0
        removed = active[remove]
        if removed.size == 0:
            idle += 1
            active = active[live]
            continue
        idle = 0
        flat[removed] = 0
        queued[removed] = 0
        near = (removed[:, None] + off).ravel()
        near = near[(flat[near] & (queued[near] ^ 1)).view(bool)]
        order = np.arange(near.size, dtype=np.intp)
        stamp[near] = order
        near = near[stamp[near] == order]  # de-duplicate without sorting
        queued[near] = 1
        active = np.concatenate([active[live & ~remove], near])
    return img[1:-1, 1:-1].view(bool).copy()


_HANDOFF_AREA = 60_000  # px of the still-changing box below which scikit-image's raster passes are cheaper
_HANDOFF_EVERY = 24  # sub-passes between two looks at that box


def _hand_off(img: np.ndarray, active: np.ndarray, width: int) -> bool:
    """Finish the thinning with scikit-image inside the box of the still-changing pixels, if small enough.

    The box is the bounding box of the queued pixels grown by 3, so its outer 2-pixel frame holds no
    queued pixel: every foreground pixel there has a non-removable neighbourhood. Scikit-image sees
    background outside the box; when its result leaves that frame unchanged, no pixel of the frame was
    ever removable (its neighbourhood never changed) in the crop or in the whole image, nothing outside
    the box can change, and the decisions inside the box saw the true neighbourhoods: the result is
    ZS on the whole image. Otherwise nothing is written and the caller carries on (returns False).
    """
    rows, cols = np.divmod(active, width)
    r0, r1 = max(int(rows.min()) - 3, 0), min(int(rows.max()) + 4, img.shape[0])
    c0, c1 = max(int(cols.min()) - 3, 0), min(int(cols.max()) + 4, width)
    if (r1 - r0) * (c1 - c0) > _HANDOFF_AREA:
        return False
    from skimage.morphology import skeletonize

    sub = img[r0:r1, c0:c1]
    done = skeletonize(np.ascontiguousarray(sub).view(bool)).view(np.uint8)
    frame = np.ones(sub.shape, dtype=bool)
    frame[2:-2, 2:-2] = False
    if not np.array_equal(done[frame], sub[frame]):
        return False
    sub[...] = done
    return True


_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_CACHE_SIZE = 64


def gt_skeleton(gt: np.ndarray) -> np.ndarray:
    """:func:`skeleton` of a GT mask, cached by content (the same GT is scored for every model and epoch).

    The skeleton is computed on the mask's own bounding box (thinning only sees 3x3 neighbourhoods and the
    outside is background, so the result does not depend on the crop) and pasted back.
    """
    rows = np.flatnonzero(gt.any(axis=1))
    if rows.size == 0:
        return np.zeros_like(gt, dtype=bool)
    cols = np.flatnonzero(gt.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    sub = np.ascontiguousarray(gt[box], dtype=bool)
    key = (sub.shape, hashlib.blake2b(np.packbits(sub).tobytes(), digest_size=16).digest())
    ske = _CACHE.get(key)
    if ske is None:
        ske = skeleton(sub)
        _CACHE[key] = ske
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    out = np.zeros(gt.shape, dtype=bool)
    out[box] = ske
    return out


def _permanent_codes() -> np.ndarray:
    """``PERMANENT[c]``: no sub-neighbourhood of code ``c`` is removable in either sub-pass.

    Thinning only removes pixels, so a pixel's later codes are submasks of its present one: a present
    pixel whose code is permanent stays in the skeleton."""
    perm = np.ones(256, dtype=bool)
    for code in range(256):
        sub = code
        while True:  # every submask of ``code``
            if _ZS_ANY[sub]:
                perm[code] = False
                break
            if sub == 0:
                break
            sub = (sub - 1) & code
    return perm


_ZS_PERMANENT = _permanent_codes()
LOCAL_MARGIN = 12  # px (and sub-passes) of the local thinning around the pixels asked for


def skeleton_on(mask: np.ndarray, region: np.ndarray, margin: int = LOCAL_MARGIN) -> np.ndarray:
    """``skeleton(mask) & region`` (scikit-image's Zhang-Suen skeleton), decided locally when it can be.

    Light-cone argument: a sub-pass reads 3x3 neighbourhoods, so thinning only the pixels of
    ``W = dilate(region, (2·margin+1)²) ∩ mask`` (the rest of the mask frozen as it is at the start)
    gives every pixel of ``region`` its true state for the first ``margin`` sub-passes. A region pixel
    is decided once it is removed (pixels never come back) or when it is present with a permanent
    neighbourhood code (no submask removable, see :func:`_permanent_codes`) while its neighbours are
    still exact. Pixels not decided within ``margin`` sub-passes get a second try with three times the
    margin, and then the whole skeleton (:func:`gt_skeleton`). The HCE regions are within a few pixels
    of the GT border, so they are decided after about ten sub-passes.
    """
    out = np.zeros(mask.shape, dtype=bool)
    if not region.any():
        return out
    todo = region & mask  # region pixels outside the mask stay False
    for m in (margin, 3 * margin):
        todo = _decide_locally(mask, todo, m, out)
        if todo is None:
            return out
    return gt_skeleton(mask) & region


def _decide_locally(mask: np.ndarray, region: np.ndarray, margin: int, out: np.ndarray) -> np.ndarray | None:
    """Thin ``margin`` sub-passes around ``region`` (see :func:`skeleton_on`); skeleton pixels decided are
    set in ``out``. Returns None when every region pixel is decided, else the undecided ones."""
    import cv2

    size = 2 * margin + 1
    square = np.ones((size, size), np.uint8)
    window = cv2.dilate(region.view(np.uint8), square, borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
    # pixels more than ``margin`` px (chessboard) from the background cannot change in ``margin`` sub-passes
    deep = cv2.erode(mask.view(np.uint8), square, borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
    window &= mask & ~deep
    img = np.pad(mask, 1).astype(np.uint8)
    width = img.shape[1]
    flat = img.ravel()
    off = np.array([-width - 1, -width, -width + 1, 1, width + 1, width, width - 1, -1], dtype=np.intp)
    todo = np.flatnonzero(np.pad(region, 1).ravel())
    cand = np.flatnonzero(np.pad(window, 1).ravel())
    which = 0
    for done in range(margin + 1):  # ``done`` sub-passes so far: exact on ``region`` and its neighbours
        present = todo[flat[todo] == 1]  # removed pixels are decided (not in the skeleton)
        codes = np.packbits(flat[present[:, None] + off], axis=1, bitorder="little")[:, 0]
        permanent = _ZS_PERMANENT[codes]
        ys, xs = np.divmod(present[permanent], width)
        out[ys - 1, xs - 1] = True
        todo = present[~permanent]
        if todo.size == 0:
            return None
        if done == margin:
            break
        codes = np.packbits(flat[cand[:, None] + off], axis=1, bitorder="little")[:, 0]
        remove = _ZS_PASSES[which][codes]
        which ^= 1
        flat[cand[remove]] = 0
        cand = cand[~remove]
    undecided = np.zeros(mask.shape, dtype=bool)
    ys, xs = np.divmod(todo, width)
    undecided[ys - 1, xs - 1] = True
    return undecided


def _kernel() -> np.ndarray:
    return np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)  # skimage disk(1)


def hce(pred: np.ndarray, gt: np.ndarray, mode: str = "dis", relax: int = RELAX, epsilon: float = EPSILON) -> float:
    """HCE of two binary 2-D masks (``mode="dis"``, full resolution) or IFE's 64x64 variant (``"ife64"``)."""
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"HCE needs two 2-D masks of one shape, got {pred.shape} and {gt.shape}")
    if mode == "ife64":
        return float(_hce_ife64(pred, gt, relax, epsilon))
    if mode != "dis":
        raise ValueError(f"hce mode must be 'dis' or 'ife64', got {mode!r}")
    union = pred | gt
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return 0.0
    cols = np.flatnonzero(union.any(axis=0))
    m = relax + 1
    h, w = gt.shape
    box = (slice(max(0, rows[0] - m), min(h, rows[-1] + 1 + m)), slice(max(0, cols[0] - m), min(w, cols[-1] + 1 + m)))
    g, p = gt[box], pred[box]
    tp = g & p
    fp, fn = p & ~tp, g & ~tp
    return float(_relaxed_count(g, p, tp, fp, fn, lambda region: skeleton_on(g, region, LOCAL_MARGIN), relax,
                                epsilon))


def _relaxed_count(gt: np.ndarray, pred: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                   ske_on: Callable[[np.ndarray], np.ndarray], relax: int, epsilon: float,
                   not_gt: np.ndarray | None = None, not_pred: np.ndarray | None = None) -> int:
    """The DIS counting on boolean TP/FP/FN maps (``not_gt``/``not_pred``: the dilation constraints).

    The GT skeleton enters as ``FN_r |= ske & ~TP``; the skeleton lies in ``gt``, so only its pixels in
    ``R = gt & ~TP & ~FN_r`` can change ``FN_r``: ``ske_on(R)`` gives the skeleton on R (not called when
    R is empty).
    """
    import cv2

    kernel = _kernel()
    not_gt = ~gt if not_gt is None else not_gt
    not_pred = ~pred if not_pred is None else not_pred
    union_eroded = cv2.erode((gt | pred).view(np.uint8), kernel, iterations=relax).view(bool)
    fp_r = fp & union_eroded
    for _ in range(relax):
        fp_r = cv2.dilate(fp_r.view(np.uint8), kernel).view(bool) & not_gt
    fp_r &= fp
    fn_r = fn & union_eroded
    for _ in range(relax):
        fn_r = cv2.dilate(fn_r.view(np.uint8), kernel).view(bool) & not_pred
    fn_r &= fn
    region = gt & ~tp & ~fn_r
    if region.any():
        fn_r |= ske_on(region)
    points_fp, indep_fp = _conditional_boundaries(fp_r, tp | fn_r, epsilon)
    points_fn, indep_fn = _conditional_boundaries(fn_r, ~(tp | fp_r | fn_r), epsilon)
    return points_fp + indep_fp + points_fn + indep_fn


def _conditional_boundaries(mask: np.ndarray, condition: np.ndarray, epsilon: float) -> tuple[int, int]:
    """RDP points of the contour stretches of ``mask`` next to ``condition``, and untouched regions.

    Vectorised form of DIS ``filter_bdy_cond``: a contour point is kept when the dilated condition is set
    there and the pixel was not kept before (in contour order); kept points form stretches broken by
    rejected points; the first and last stretch of a contour are joined (first reversed, appended) when
    8-adjacent; a connected region of ``mask`` with no kept point is independent.
    """
    import cv2
    if not mask.any():
        return 0, 0
    mask_u8 = mask.view(np.uint8)
    contours, _ = cv2.findContours(mask_u8, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    n_labels, labels = cv2.connectedComponents(mask_u8, connectivity=8)  # = skimage label (8-connected)
    n_regions = n_labels - 1
    if not contours:
        return 0, n_regions
    lengths = np.array([len(c) for c in contours])
    pts = np.concatenate(contours).reshape(-1, 2)  # (col, row)
    cond = cv2.dilate(condition.view(np.uint8), _kernel())
    rows, cols = pts[:, 1], pts[:, 0]
    lin = rows.astype(np.int64) * mask.shape[1] + cols
    first = np.zeros(lin.size, dtype=bool)
    first[np.unique(lin, return_index=True)[1]] = True
    keep = (cond[rows, cols] != 0) & first
    touched = np.unique(labels[rows[keep], cols[keep]])
    independent = n_regions - int(np.count_nonzero(touched))
    return _count_stretch_points(pts, keep, lengths, epsilon), independent


def _count_stretch_points(pts: np.ndarray, keep: np.ndarray, lengths: np.ndarray, epsilon: float) -> int:
    import cv2

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    contour_id = np.repeat(np.arange(lengths.size), lengths)
    new_contour = np.zeros(keep.size, dtype=bool)
    new_contour[starts] = True
    prev_keep = np.concatenate([[False], keep[:-1]])
    run_start = np.flatnonzero(keep & (new_contour | ~prev_keep))
    next_contour = np.concatenate([new_contour[1:], [True]])
    next_keep = np.concatenate([keep[1:], [False]])
    run_end = np.flatnonzero(keep & (next_contour | ~next_keep)) + 1
    if run_start.size == 0:
        return 0
    run_contour = contour_id[run_start]
    segments = [pts[a:b] for a, b in zip(run_start, run_end)]
    # join the first and last stretch of each contour with >= 2 stretches when they are 8-adjacent
    firsts = np.flatnonzero(np.concatenate([[True], run_contour[1:] != run_contour[:-1]]))
    lasts = np.concatenate([firsts[1:] - 1, [run_contour.size - 1]])
    drop = []
    for f, last in zip(firsts, lasts):
        if last > f:
            dx, dy = np.abs(segments[f][0] - segments[last][-1])
            if max(dx, dy) == 1:
                segments[last] = np.concatenate([segments[last], segments[f][::-1]])
                drop.append(f)
    for f in drop:
        segments[f] = None
    total = 0
    for seg in segments:
        if seg is not None:
            total += len(cv2.approxPolyDP(seg.reshape(-1, 1, 2).astype(np.int32), epsilon, False))
    return total


def _hce_ife64(pred: np.ndarray, gt: np.ndarray, relax: int, epsilon: float) -> int:
    """IFE ``compute_hce``: 0/255 masks resized to 64x64 (bilinear), ``relax_HCE_new`` on uint8 values.

    ``FP = rs − TP`` in uint8 is non-zero where ``rs > 0`` and not (``TP`` and ``rs == 255``): rim pixels
    of an interpolated mask are FP (and TP) at once, as in the IFE code; the skeleton is of ``gt > 128``.
    """
    import cv2

    rs = cv2.resize(pred.astype(np.uint8) * np.uint8(255), (64, 64))
    g = cv2.resize(gt.astype(np.uint8) * np.uint8(255), (64, 64))
    ske = skeleton(g > 128)
    gb, pb = g > 0, rs > 0
    tp = gb & pb
    fp = pb & ~(tp & (rs == 255))
    fn = gb & ~(tp & (g == 255))
    return _relaxed_count(gb, pb, tp, fp, fn, lambda region: ske & region, relax, epsilon, not_gt=~(tp | fn),
                          not_pred=~(tp | fp))
