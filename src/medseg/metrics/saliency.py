"""Saliency-style metrics of a continuous foreground map in [0, 1] against a binary GT (2-D).

Conventions of PySODMetrics (lartpang/PySODMetrics, ``sod_metrics.py``), which follows the MATLAB code
of the original papers: the map is min-max normalised first (``minmax=True``); threshold curves use the
map quantised to 8 bits (``uint8(map * 255)``) and the 256 thresholds ``map_u8 >= t``, t = 0..255; the
adaptive threshold is ``min(2 * mean(map), 1)`` on the float map. All 256-threshold curves (F-beta,
E-measure, polyp mDice/mIoU) come from one 2 x 256 histogram of the quantised map split by the GT.

8-bit maps (the usual PNG prediction) take a faster, equal path (:class:`ByteMap`): every pixel's value
is one of 256 numbers (``byte / 255``, min-max normalised), so MAE, the curves, the adaptive threshold and
both S-measure terms are sums over a 2 x 256 histogram of (byte, GT) per image or block, and no float
image is made except for the weighted F-measure's error near the GT.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = np.spacing(1)  # MATLAB's eps, as PySODMetrics
F_BETA2 = 0.3


def normalize_map(prob: np.ndarray) -> np.ndarray:
    """Min-max normalisation ``(m - min) / (max - min)`` (MATLAB ``mapminmax``); constant maps unchanged."""
    lo, hi = prob.min(), prob.max()
    return (prob - lo) / (hi - lo) if hi != lo else prob


@dataclass
class MapStats:
    """Shared intermediates of one map/GT pair: cumulative counts at the 256 thresholds and adaptive ones.

    ``tp[i]``/``pp[i]``: GT-foreground / all pixels with ``map_u8 >= 255 - i`` (PySODMetrics order).
    """

    tp: np.ndarray
    pp: np.ndarray
    n_fg: int
    size: int
    tp_adaptive: int
    pp_adaptive: int


class ByteMap:
    """An 8-bit map: pixel value ``table[data]`` with ``table = arange(256) / 255`` (min-max normalised by
    :meth:`normalized` exactly as :func:`normalize_map` does the float map, value by value)."""

    def __init__(self, data: np.ndarray, table: np.ndarray | None = None) -> None:
        self.data = np.ascontiguousarray(data)
        self.table = np.arange(256) / 255.0 if table is None else table

    def normalized(self) -> "ByteMap":
        lo, hi = int(self.data.min()), int(self.data.max())
        t = self.table
        return ByteMap(self.data, (t - t[lo]) / (t[hi] - t[lo]) if t[hi] != t[lo] else t)

    def lookup(self, table: np.ndarray, where: tuple[slice, ...] | None = None) -> np.ndarray:
        """``table[data]`` (optionally on a crop); OpenCV's LUT for 2-D images."""
        data = self.data if where is None else self.data[where]
        if data.ndim == 2 and data.size:
            import cv2

            return cv2.LUT(data, table)
        return table[data]

    def values(self, where: tuple[slice, ...] | None = None) -> np.ndarray:
        """The float map (or a crop of it)."""
        return self.lookup(self.table, where)

    def above(self, threshold: float) -> np.ndarray:
        """``values() > threshold`` as a boolean mask, from a 256-entry table."""
        return self.lookup((self.table > threshold).astype(np.uint8)).view(bool)


def byte_histograms(data: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hist over GT pixels, hist over all pixels)`` of an 8-bit map, 256 int64 bins each."""
    if data.ndim == 2 and 0 < data.size < (1 << 24) and data.strides[1] == 1 and gt.strides[1] == 1:
        import cv2  # rows may be strided (a block of an image), pixels within a row may not

        fg = cv2.calcHist([data], [0], gt.view(np.uint8), [256], [0, 256]).ravel()
        every = cv2.calcHist([data], [0], None, [256], [0, 256]).ravel()
        return fg.astype(np.int64), every.astype(np.int64)  # float32 counts, exact below 2^24
    return np.bincount(data[gt], minlength=256), np.bincount(data.ravel(), minlength=256)


def map_stats_bytes(bm: ByteMap, h_fg: np.ndarray, h_all: np.ndarray) -> MapStats:
    """:func:`map_stats` from the byte histograms (same counts; the mean is a histogram sum)."""
    q = (bm.table * 255).astype(np.uint8)
    hist_fg = np.bincount(q, weights=h_fg, minlength=256).astype(np.int64)
    hist_all = np.bincount(q, weights=h_all, minlength=256).astype(np.int64)
    size = int(h_all.sum())
    threshold = min(2 * float(np.dot(h_all, bm.table)) / size, 1)
    binary = bm.table >= threshold
    return MapStats(np.cumsum(hist_fg[::-1]), np.cumsum(hist_all[::-1]), int(h_fg.sum()), size,
                    int(h_fg[binary].sum()), int(h_all[binary].sum()))


def mae_bytes(bm: ByteMap, h_fg: np.ndarray, h_all: np.ndarray) -> float:
    """:func:`mae` from the byte histograms."""
    t = bm.table
    return float((np.dot(h_all - h_fg, t) + np.dot(h_fg, 1 - t)) / h_all.sum())


def map_stats(prob: np.ndarray, gt: np.ndarray) -> MapStats:
    """Histogram the quantised map by GT class once; count the adaptive binarisation once."""
    q = (prob * 255).astype(np.uint8)
    hist_all = np.bincount(q.ravel(), minlength=256)
    hist_fg = np.bincount(q[gt], minlength=256)
    tp = np.cumsum(hist_fg[::-1])
    pp = np.cumsum(hist_all[::-1])
    threshold = min(2 * prob.mean(), 1)
    binary = prob >= threshold
    n_fg = int(np.count_nonzero(gt))
    return MapStats(tp, pp, n_fg, int(gt.size), int(np.count_nonzero(binary & gt)), int(np.count_nonzero(binary)))


# --------------------------------------------------------------------------------------- F-beta
def f_measure_curve(st: MapStats, beta2: float = F_BETA2) -> np.ndarray:
    """F-beta at the 256 thresholds, ``(1 + β²)·P·R / (β²·P + R)``, β² = 0.3 (Achanta et al., CVPR 2009).

    P = TP / max(#pred, 1), R = TP / max(#GT, 1); 0 where TP = 0 (PySODMetrics ``Fmeasure``).
    """
    precision = st.tp / np.where(st.pp == 0, 1, st.pp)
    recall = st.tp / max(st.n_fg, 1)
    num = (1 + beta2) * precision * recall
    den = np.where(num == 0, 1, beta2 * precision + recall)
    return num / den


def f_measure_adaptive(st: MapStats, beta2: float = F_BETA2) -> float:
    """F-beta at the adaptive threshold ``min(2·mean(map), 1)``; 0 when TP = 0."""
    if st.tp_adaptive == 0:
        return 0.0
    pre = st.tp_adaptive / st.pp_adaptive
    rec = st.tp_adaptive / st.n_fg
    return float((1 + beta2) * pre * rec / (beta2 * pre + rec))


# ------------------------------------------------------------------------------------ E-measure
def _enhanced_sum(tp: np.ndarray, pp: np.ndarray, n_fg: int, size: int) -> np.ndarray:
    """Sum of the enhanced alignment matrix from counts (the four TP/FP/FN/TN parts are constant)."""
    if n_fg == 0:
        return (size - pp).astype(np.float64)
    if n_fg == size:
        return pp.astype(np.float64)
    fp = pp - tp
    fn = n_fg - tp
    tn = (size - pp) - fn
    mean_pred = pp / size
    mean_gt = n_fg / size
    total = 0.0
    for part, dp, dg in ((tp, 1 - mean_pred, 1 - mean_gt), (fp, 1 - mean_pred, -mean_gt),
                         (fn, -mean_pred, 1 - mean_gt), (tn, -mean_pred, -mean_gt)):
        align = 2 * (dp * dg) / (dp ** 2 + dg ** 2 + EPS)
        total = total + (align + 1) ** 2 / 4 * part
    return total


def e_measure_curve(st: MapStats) -> np.ndarray:
    """Enhanced-alignment measure at the 256 thresholds (Fan et al., IJCAI 2018).

    ``φ = 2·(P−μ_P)(G−μ_G) / ((P−μ_P)² + (G−μ_G)² + eps)``, ``E = Σ (φ+1)²/4 / (H·W − 1)``; empty GT:
    the fraction of predicted background, full GT: of predicted foreground (PySODMetrics ``Emeasure``).
    """
    return _enhanced_sum(st.tp, st.pp, st.n_fg, st.size) / (st.size - 1 + EPS)


def e_measure_adaptive(st: MapStats) -> float:
    """E-measure at the adaptive threshold ``min(2·mean(map), 1)``."""
    value = _enhanced_sum(np.array(st.tp_adaptive), np.array(st.pp_adaptive), st.n_fg, st.size)
    return float(value / (st.size - 1 + EPS))


# -------------------------------------------------------------------------- polyp mDice / mIoU
def polyp_dice_curve(st: MapStats) -> np.ndarray:
    """Dice ``2TP / (|P_t| + |G|)`` at each of the 256 thresholds (0 when TP = 0), PraNet toolbox."""
    den = st.pp + st.n_fg
    return np.divide(2 * st.tp, den, out=np.zeros(256), where=(den > 0) & (st.tp > 0))


def polyp_iou_curve(st: MapStats) -> np.ndarray:
    """IoU ``TP / (|P_t| + |G| − TP)`` at each of the 256 thresholds (0 when TP = 0), PraNet toolbox."""
    den = st.pp + st.n_fg - st.tp
    return np.divide(st.tp, den, out=np.zeros(256), where=(den > 0) & (st.tp > 0))


def soft_dice(prob: np.ndarray, gt: np.ndarray, smooth: float = 1e-5) -> float:
    """Soft Dice of the continuous map ``(2·Σ s·g + 1e-5) / (Σ s + Σ g + 1e-5)``.

    The "mDice" of CHNet's Python ``eval.py`` (methods.md §3.4), averaged over images by the summary; the
    polyp tables use ``polyp_mdice`` (the MATLAB toolbox's mean over 256 thresholds) instead.
    """
    return float((2 * np.sum(prob * gt) + smooth) / (np.sum(prob) + np.count_nonzero(gt) + smooth))


# ------------------------------------------------------------------------------------------ MAE
def mae(prob: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error ``mean |map − G|`` (Perazzi et al., CVPR 2012)."""
    return float(np.mean(np.abs(prob - gt)))


def mae_ife(pred: np.ndarray, gt: np.ndarray) -> float:
    """IFE's MAE on the 0/255 uint8 masks: ``Σ (infer − mask mod 256) / (H·W·255 + 1e-4)``.

    The uint8 subtraction wraps, so a false negative counts 1/255 and a false positive 1 (``compat="ife"``).
    """
    p = pred.astype(np.uint8) * np.uint8(255)
    g = gt.astype(np.uint8) * np.uint8(255)
    return float(np.sum(np.abs(p - g)) * 1.0 / (g.shape[0] * g.shape[1] * 255.0 + 1e-4))


# ------------------------------------------------------------------------------------ S-measure
def _s_object(x: np.ndarray) -> float:
    mean = np.mean(x)
    std = np.std(x, ddof=1) if x.size > 1 else 0
    return 2 * mean / (mean ** 2 + 1 + std + EPS)


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    n = pred.size
    x, y = np.mean(pred), np.mean(gt)
    dx, dy = pred - x, gt - y
    sigma_x = np.sum(dx ** 2) / (n - 1 + EPS)
    sigma_y = np.sum(dy ** 2) / (n - 1 + EPS)
    sigma_xy = np.sum(dx * dy) / (n - 1 + EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x ** 2 + y ** 2) * (sigma_x + sigma_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def s_measure(prob: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure ``S = α·S_o + (1 − α)·S_r``, α = 0.5 (Fan et al., ICCV 2017).

    Object term: ``μ·O(map|G) + (1−μ)·O(1−map|¬G)`` with ``O = 2x̄ / (x̄² + 1 + σ_x)``; region term: the
    image split at the GT centroid into 4 blocks, area-weighted SSIM-like score per block. Empty GT:
    ``1 − mean(map)``; full GT: ``mean(map)`` (PySODMetrics ``Smeasure``). 2-D only.
    """
    y = np.mean(gt)
    if y == 0:
        return float(1 - np.mean(prob))
    if y == 1:
        return float(np.mean(prob))
    obj = _s_object(prob[gt]) * y + _s_object(1 - prob[~gt]) * (1 - y)
    h, w = gt.shape
    n_fg = np.count_nonzero(gt)
    cy = np.round(np.dot(np.count_nonzero(gt, axis=1), np.arange(h)) / n_fg)
    cx = np.round(np.dot(np.count_nonzero(gt, axis=0), np.arange(w)) / n_fg)
    cy, cx = int(cy) + 1, int(cx) + 1
    area = h * w
    w_lt, w_rt, w_lb = cx * cy / area, cy * (w - cx) / area, (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    region = (_ssim(prob[:cy, :cx], gt[:cy, :cx]) * w_lt + _ssim(prob[:cy, cx:], gt[:cy, cx:]) * w_rt
              + _ssim(prob[cy:, :cx], gt[cy:, :cx]) * w_lb + _ssim(prob[cy:, cx:], gt[cy:, cx:]) * w_rb)
    return float(max(0.0, alpha * obj + (1 - alpha) * region))


def _s_object_hist(h: np.ndarray, values: np.ndarray) -> float:
    """:func:`_s_object` of the pixels counted by histogram ``h`` over ``values``."""
    n = int(h.sum())
    mean = float(np.dot(h, values)) / n
    std = np.sqrt(np.dot(h, (values - mean) ** 2) / (n - 1)) if n > 1 else 0
    return 2 * mean / (mean ** 2 + 1 + std + EPS)


def _ssim_hist(h_fg: np.ndarray, h_all: np.ndarray, values: np.ndarray) -> float:
    """:func:`_ssim` of a block from its byte histograms (GT pixels, all pixels)."""
    n = int(h_all.sum())
    n_fg = int(h_fg.sum())
    x = float(np.dot(h_all, values)) / n
    y = n_fg / n
    dx = values - x
    sigma_x = np.dot(h_all, dx ** 2) / (n - 1 + EPS)
    sigma_y = (n_fg * (1 - y) ** 2 + (n - n_fg) * y ** 2) / (n - 1 + EPS)
    sigma_xy = (np.dot(h_fg, dx) * (1 - y) - np.dot(h_all - h_fg, dx) * y) / (n - 1 + EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x ** 2 + y ** 2) * (sigma_x + sigma_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def s_centroid(gt: np.ndarray, n_fg: int) -> tuple[int, int]:
    """The S-measure's split point ``(cy, cx)``: the rounded GT centroid + 1 (PySODMetrics ``centroid``)."""
    h, w = gt.shape
    cy = int(np.round(np.dot(np.count_nonzero(gt, axis=1), np.arange(h)) / n_fg)) + 1
    cx = int(np.round(np.dot(np.count_nonzero(gt, axis=0), np.arange(w)) / n_fg)) + 1
    return cy, cx


_CALCHIST_MAX = 1 << 24  # OpenCV's histogram counts are float32: exact below 2^24


def quadrant_histograms(data: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, list | None]:
    """:func:`byte_histograms` of a 2-D 8-bit map and of its four S-measure blocks, in one pass.

    Each pixel gets a label ``gt + 2·block`` (blocks: top-left, top-right, bottom-left, bottom-right of
    :func:`s_centroid`) and one 256 x 8 histogram of (byte, label) holds them all. Returns
    ``(hist over G, hist over all, [(block hist over G, block hist over all)] * 4)``; the blocks are None
    for an empty GT.
    """
    n_fg = int(np.count_nonzero(gt))
    if n_fg == 0 or data.ndim != 2:
        return (*byte_histograms(data, gt), None)
    cy, cx = s_centroid(gt, n_fg)
    label = np.empty(gt.shape, dtype=np.uint8)
    label[:cy, :cx] = 0
    label[:cy, cx:] = 2
    label[cy:, :cx] = 4
    label[cy:, cx:] = 6
    label |= gt
    if data.size < _CALCHIST_MAX:
        import cv2

        src = data if data.strides[1] == 1 else np.ascontiguousarray(data)
        hist = cv2.calcHist([src, label], [0, 1], None, [256, 8], [0, 256, 0, 8]).astype(np.int64)
    else:
        hist = np.bincount((data.astype(np.intp) * 8 + label).ravel(), minlength=2048).reshape(256, 8)
    fg, bg = hist[:, 1::2].T, hist[:, 0::2].T
    every = fg + bg
    return fg.sum(axis=0), every.sum(axis=0), [(fg[q], every[q]) for q in range(4)]


def s_measure_bytes(bm: ByteMap, gt: np.ndarray, h_fg: np.ndarray, h_all: np.ndarray, blocks: list | None = None,
                    alpha: float = 0.5) -> float:
    """:func:`s_measure` of an 8-bit map from byte histograms of the image and of its four blocks
    (``blocks`` from :func:`quadrant_histograms`, else three are counted here)."""
    t = bm.table
    size, n_fg = int(h_all.sum()), int(h_fg.sum())
    if n_fg == 0:
        return float(1 - np.dot(h_all, t) / size)
    if n_fg == size:
        return float(np.dot(h_all, t) / size)
    y = n_fg / size
    obj = _s_object_hist(h_fg, t) * y + _s_object_hist(h_all - h_fg, 1 - t) * (1 - y)
    h, w = gt.shape
    cy, cx = s_centroid(gt, n_fg)
    if min(cy, h - cy, cx, w - cx) < 1:
        return s_measure(bm.values(), gt, alpha)  # an empty block: the float path's conventions
    if blocks is None:
        corners = [(slice(None, cy), slice(None, cx)), (slice(None, cy), slice(cx, None)),
                   (slice(cy, None), slice(None, cx))]
        blocks = [byte_histograms(bm.data[b], gt[b]) for b in corners]
        blocks.append((h_fg - sum(f for f, _ in blocks), h_all - sum(a for _, a in blocks)))
    area = h * w
    w_lt, w_rt, w_lb = cx * cy / area, cy * (w - cx) / area, (h - cy) * cx / area
    weights = (w_lt, w_rt, w_lb, 1 - w_lt - w_rt - w_lb)
    region = sum(_ssim_hist(f, a, t) * wt for (f, a), wt in zip(blocks, weights))
    return float(max(0.0, alpha * obj + (1 - alpha) * region))


# ---------------------------------------------------------------------------- weighted F-measure
def _gauss7() -> np.ndarray:
    """MATLAB ``fspecial('gaussian', 7, 5)``."""
    y, x = np.ogrid[-3:4, -3:4]
    h = np.exp(-(x * x + y * y) / (2 * 5.0 * 5.0))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h / h.sum()


def _gauss7_1d() -> np.ndarray:
    """The 1-D factor of :func:`_gauss7`: ``fspecial('gaussian', 7, 5) = g gᵀ`` (no entry below eps·max)."""
    g = np.exp(-np.arange(-3, 4) ** 2 / (2 * 5.0 * 5.0))
    return g / g.sum()


_GAUSS7_1D = _gauss7_1d()


def weighted_f_measure(prob: np.ndarray, gt: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure ``F^w_β`` (Margolin et al., CVPR 2014), β = 1; 0 for an empty GT.

    E = |map − G|; a background pixel takes the error of its nearest GT pixel (E_t); E_A = 7x7 Gaussian
    (σ = 5, zero padding) of E_t, and ``min(E, E_A)`` inside G; importance ``B = 2 − exp(ln 0.5 / 5 · d)``
    outside G (d: distance to G). ``R = 1 − mean_G(E_w)``, ``P = TP_w / (TP_w + FP_w)``,
    ``F = (1+β²)RP / (R + β²P)`` (PySODMetrics ``WeightedFmeasure``).

    Only G and the pixels within 3 px of it enter E_A at G pixels, so E_t is found for that ring alone by
    scanning the offsets of squared length <= 18 in scipy's feature-transform tie order (distance, then
    column, then row); the distance for B is an exact transform on G's box grown by 266 px, beyond which
    B is 2.0 (:func:`_weighted_background_error`). ``prob`` may be a :class:`ByteMap`.
    """
    if not gt.any():
        return 0.0
    box = _gt_box(gt, margin=3)
    g_in = gt[box]
    e_in = np.abs((prob.values(box) if isinstance(prob, ByteMap) else prob[box]) - g_in)
    ea = _smoothed_nearest_error(e_in, g_in)
    err_g = e_in[g_in]
    ea_g = ea[g_in]
    min_g = np.where(ea_g < err_g, ea_g, err_g)  # MIN_E_EA inside G
    fpw = _weighted_background_error(prob, gt)
    tpw = np.count_nonzero(gt) - np.sum(min_g)
    recall = 1 - np.mean(min_g)
    precision = tpw / (tpw + fpw + EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


def _gt_box(gt: np.ndarray, margin: int) -> tuple[slice, ...]:
    rows = np.flatnonzero(gt.any(axis=1))
    cols = np.flatnonzero(gt.any(axis=0))
    h, w = gt.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


_LOG_HALF_5 = np.log(0.5) / 5
_B_TABLE = np.zeros(0)
_B_TABLE_MAX = 1 << 22  # 32 MB: squared distances of images up to ~1400 x 1400 px


def _b_table(size: int) -> np.ndarray:
    """``B(k) = 2 − exp(ln 0.5 / 5 · √k)`` for integer squared distances k, with ``B(0) = 0`` (inside G,
    where the false-positive sum skips the pixel). Grown on demand, kept for the next image."""
    global _B_TABLE
    if _B_TABLE.size < size:
        k = np.arange(max(size, min(2 * _B_TABLE.size, _B_TABLE_MAX)), dtype=np.float64)
        table = np.sqrt(k)
        np.multiply(table, _LOG_HALF_5, out=table)
        np.exp(table, out=table)
        np.subtract(2, table, out=table)
        table[0] = 0.0
        _B_TABLE = table
    return _B_TABLE


_B_IS_TWO = 266  # px: from this distance on, 2 − exp(ln 0.5 / 5 · d) rounds to 2.0 (0.5^53.2 < 2^−53)
_K_EXACT = 1 << 21  # squared distances below this are recovered exactly from OpenCV's float32 distances


def _weighted_background_error(prob: np.ndarray | ByteMap, gt: np.ndarray) -> float:
    """``FP_w = Σ_{¬G} B(d)·|map − G|``: the map's values outside G weighted by ``B`` of their distance to G.

    B is exactly 2.0 in float64 from d = 266 px on, so the distance transform runs on G's bounding box
    grown by 266 px (every G pixel is in it: distances there are those of the whole image) and the rest
    of the image adds 2·Σ map. The squared distances are integers: OpenCV's exact transform (float32)
    squared and rounded gives them exactly below 2^21, and ``B`` is then read from a table of those
    integers (the same float64 operations as computing it per pixel); larger distances use scipy's.
    """
    import cv2

    box = _gt_box(gt, margin=_B_IS_TWO)
    sub = gt[box]
    if isinstance(prob, ByteMap):
        values = prob.values(box)
    else:
        values = np.ascontiguousarray(prob[box], dtype=np.float64)
    far = 0.0
    if sub.shape != gt.shape:
        total = float(np.dot(_byte_counts(prob.data), prob.table)) if isinstance(prob, ByteMap) else float(np.sum(prob))
        far = 2 * (total - float(np.sum(values)))
    d = cv2.distanceTransform((sub ^ True).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    np.multiply(d, d, out=d)
    k_max = float(d.max())
    if k_max >= _K_EXACT:
        weight = _distance_to_fg(sub)
        np.multiply(weight, _LOG_HALF_5, out=weight)
        np.exp(weight, out=weight)
        np.subtract(2, weight, out=weight)
        return float(np.sum(weight * values, where=~sub)) + far
    np.add(d, 0.5, out=d)
    sq = d.astype(np.int32)
    weight = np.take(_b_table(int(k_max) + 2), sq)
    return float(np.dot(weight.ravel(), values.ravel())) + far


def _byte_counts(data: np.ndarray) -> np.ndarray:
    """Histogram of an 8-bit array (256 bins)."""
    if data.ndim == 2 and 0 < data.size < (1 << 24) and data.strides[1] == 1:
        import cv2

        return cv2.calcHist([data], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount(data.ravel(), minlength=256)


def _distance_to_fg(gt: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (float64) of every pixel to the nearest GT pixel (0 inside G)."""
    import cv2

    d = cv2.distanceTransform((gt ^ True).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    np.square(d, out=d)
    np.rint(d, out=d)  # the squared distances are integers: recover them exactly from float32
    if d.max() >= 4_000_000:
        from scipy.ndimage import distance_transform_edt

        return distance_transform_edt(~gt)
    return np.sqrt(d, out=d)


# offsets (dy, dx) with dy² + dx² <= 18 (the nearest G pixel of a pixel within 3 px, Chebyshev, of G lies
# among them), in scipy.ndimage.distance_transform_edt's tie order: distance, then column, then row
_RING_OFFSETS = sorted(((dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if 0 < dy * dy + dx * dx <= 18),
                       key=lambda o: (o[0] ** 2 + o[1] ** 2, o[1], o[0]))


def _smoothed_nearest_error(err: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``imfilter(E_t, gauss7)`` with E_t = E on G and the error of the nearest G pixel on the 3-px ring.

    The Gaussian is applied as two 1-D passes of its (separable) factor, equal to the 2-D kernel up to
    rounding and about 3x faster.
    """
    import cv2

    pad = 4
    h, w = gt.shape
    gp = np.pad(gt, pad).ravel()
    ep = np.pad(err, pad).ravel()
    ring = cv2.dilate(gt.view(np.uint8), np.ones((7, 7), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).view(bool) & ~gt
    ys, xs = np.nonzero(ring)
    lin = (ys + pad) * (w + 2 * pad) + (xs + pad)
    steps = np.array([dy * (w + 2 * pad) + dx for dy, dx in _RING_OFFSETS], dtype=np.intp)
    candidates = lin[:, None] + steps  # offsets in tie order: the first G pixel is the nearest
    first = np.argmax(np.take(gp, candidates), axis=1)
    et = np.where(gt, err, 0.0)
    et[ys, xs] = np.take(ep, candidates[np.arange(lin.size), first])
    return cv2.sepFilter2D(et, -1, _GAUSS7_1D, _GAUSS7_1D, borderType=cv2.BORDER_CONSTANT)
