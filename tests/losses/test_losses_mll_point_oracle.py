"""MLL's pixel term ``E_P`` (``mll_point``, MLL Eq. 10 with PointRend sampling) against independent oracles.

Definition (docs/losses.md): at a point set S, prediction = bilinear sample of the logits
(``align_corners=False``, zero padding), target = nearest sample of the full-resolution label at the same
normalised coordinate; ``E_P`` = mean BCE over the points (softmax CE for K >= 2 classes). Each channel of a
float label is its own binary map with its own points.

1. Explicit points (the sampler replaced by chosen coordinates): the value by hand with ``math.log``.
2. The real sampler: the same seed replays its points; bilinear/nearest sampling and BCE/CE recomputed in
   NumPy (to 1e-6: the sampler's coordinates are float32 and the grid is mapped to [-1, 1] in float32).
   Which points the sampler picks is tested in ``test_losses_worked.py``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import medseg.losses.mll as mll
from medseg.losses import create_loss


def bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def with_points(monkeypatch, points: list[tuple[float, float]]) -> list[int]:
    """Replace the sampler by fixed coordinates (the same for every map); returns the recorded calls."""
    calls: list[int] = []

    def fixed(logits, num_points, oversample=3.0, importance=0.75, generator=None, return_candidates=False):
        calls.append(num_points)
        coords = torch.tensor(points, dtype=torch.float64)
        return coords.unsqueeze(0).expand(logits.shape[0], -1, -1).clone()

    monkeypatch.setattr(mll, "sample_uncertain_points", fixed)
    return calls


# --------------------------------------------------------------------------------- explicit points
def test_binary_hand_worked_at_pixel_centres(monkeypatch):
    z = torch.tensor([[-2.0, 0.5, 1.0, 3.0],
                      [0.0, -1.0, 2.0, -0.5],
                      [1.5, -3.0, 0.25, 0.0],
                      [-0.75, 2.5, -1.5, 1.0]], dtype=torch.float64).view(1, 1, 4, 4)
    g = torch.tensor([[0, 1, 1, 1],
                      [1, 0, 1, 0],
                      [0, 0, 1, 1],
                      [1, 1, 0, 0]], dtype=torch.float64).view(1, 1, 4, 4)
    pixels = [(0, 0), (0, 1), (1, 3), (2, 1), (2, 2), (3, 0)]  # (row, col)
    calls = with_points(monkeypatch, [((r + 0.5) / 4, (c + 0.5) / 4) for r, c in pixels])
    got = create_loss("mll_point", num_points=len(pixels))(z, {"label": g})["loss"]
    # (-2, 0), (0.5, 1), (-0.5, 0), (-3, 0), (0.25, 1), (-0.75, 1)
    expected = np.mean([bce(float(z[0, 0, r, c]), float(g[0, 0, r, c])) for r, c in pixels])
    by_hand = (bce(-2, 0) + bce(0.5, 1) + bce(-0.5, 0) + bce(-3, 0) + bce(0.25, 1) + bce(-0.75, 1)) / 6
    assert expected == pytest.approx(by_hand, abs=1e-12)
    assert got.item() == pytest.approx(expected, abs=1e-9)
    assert calls == [len(pixels)]


def test_coarse_logits_bilinear_against_full_resolution_label(monkeypatch):
    # 3 x 3 logits (stride 2) against a 6 x 6 label. Normalised coordinate t maps to 3t - 0.5 on the
    # logits and 6t - 0.5 on the label: t = 5/12 -> 0.75 and 2; t = 7/12 -> 1.25 and 3.
    z = torch.tensor([[1.0, -2.0, 0.5],
                      [3.0, -1.0, 2.0],
                      [0.0, 4.0, -3.0]], dtype=torch.float64).view(1, 1, 3, 3)
    g = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    g[0, 0, 2, 3] = 1  # label at (row 2, col 3) = 1, (2, 2), (3, 2), (3, 3) = 0
    calls = with_points(monkeypatch, [(5 / 12, 5 / 12), (5 / 12, 7 / 12), (7 / 12, 5 / 12), (7 / 12, 7 / 12)])
    w_lo, w_hi = (0.25, 0.75, 0.0), (0.0, 0.75, 0.25)  # bilinear weights on logit rows/cols 0, 1, 2

    def bilinear(wr, wc):
        return sum(wr[i] * wc[j] * float(z[0, 0, i, j]) for i in range(3) for j in range(3))

    zs = [bilinear(w_lo, w_lo), bilinear(w_lo, w_hi), bilinear(w_hi, w_lo), bilinear(w_hi, w_hi)]
    # by hand for the first point: 0.0625·1 + 0.1875·(−2) + 0.1875·3 + 0.5625·(−1) = −0.3125
    assert zs[0] == pytest.approx(-0.3125)
    ys = [0.0, 1.0, 0.0, 0.0]
    expected = np.mean([bce(zv, y) for zv, y in zip(zs, ys)])
    got = create_loss("mll_point", num_points=4)({"out": z}, {"label": g})["point"]
    assert got.item() == pytest.approx(expected, abs=1e-9)
    assert calls == [4]


def test_three_slice_channels_are_separate_maps(monkeypatch):
    # B = 2, C = 3 (MLL's 3-slice units): 6 maps, each with the same 2 pixel-centre points
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    g = (torch.rand(2, 3, 4, 4, generator=gen) > 0.5).double()
    with_points(monkeypatch, [(0.125, 0.375), (0.875, 0.625)])  # pixels (0, 1) and (3, 2)
    terms = [bce(float(z[b, c, r, k]), float(g[b, c, r, k])) for b in range(2) for c in range(3)
             for r, k in [(0, 1), (3, 2)]]
    got = create_loss("mll_point", num_points=2)(z, {"label": g})["loss"]
    assert got.item() == pytest.approx(np.mean(terms), abs=1e-9)


def test_multiclass_cross_entropy_hand_worked(monkeypatch):
    z = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    z[0, :, 0, 0] = torch.tensor([2.0, 0.0, -1.0])
    z[0, :, 1, 1] = torch.tensor([0.0, 1.0, 3.0])
    label = torch.tensor([[[0, 1], [2, 1]]])
    with_points(monkeypatch, [(0.25, 0.25), (0.75, 0.75)])  # pixels (0, 0) with class 0 and (1, 1) with 1

    def ce(logits, y):
        return -(logits[y] - math.log(sum(math.exp(v) for v in logits)))

    expected = (ce([2.0, 0.0, -1.0], 0) + ce([0.0, 1.0, 3.0], 1)) / 2
    got = create_loss("mll_point", num_points=2)(z, {"label": label})["loss"]
    assert got.item() == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------------------ the real sampler
def np_bilinear(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``x`` (H x W) at normalised points ``t`` (P x 2), align_corners=False, zero outside the array."""
    h, w = x.shape
    u, v = t[:, 0] * h - 0.5, t[:, 1] * w - 0.5
    i0, j0 = np.floor(u).astype(int), np.floor(v).astype(int)
    out = np.zeros(len(t))
    for di in (0, 1):
        for dj in (0, 1):
            i, j = i0 + di, j0 + dj
            wgt = (1 - np.abs(u - i)) * (1 - np.abs(v - j))
            inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
            out += np.where(inside, wgt * x[np.clip(i, 0, h - 1), np.clip(j, 0, w - 1)], 0.0)
    return out


def np_nearest(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    h, w = x.shape
    i = np.clip(np.rint(t[:, 0] * h - 0.5).astype(int), 0, h - 1)
    j = np.clip(np.rint(t[:, 1] * w - 0.5).astype(int), 0, w - 1)
    return x[i, j]


def test_real_sampler_binary_numpy_oracle():
    gen = torch.Generator().manual_seed(4)
    g = torch.zeros(2, 3, 32, 32, dtype=torch.float64)
    g[:, :, 8:22, 10:26] = 1
    z = torch.nn.functional.avg_pool2d(g * 8 - 4, 2) + torch.randn(2, 3, 16, 16, generator=gen,
                                                                     dtype=torch.float64)
    loss = create_loss("mll_point", num_points=40)
    torch.manual_seed(11)
    got = loss(z, {"label": g})["loss"].item()
    torch.manual_seed(11)  # the loss draws its candidates from the global RNG: replay the same points
    coords = mll.sample_uncertain_points(z.reshape(6, 1, 16, 16), 40, 3.0, 0.75).numpy()
    zf, gf = z.reshape(6, 16, 16).numpy(), g.reshape(6, 32, 32).numpy()
    terms = []
    for m in range(6):
        zp, yp = np_bilinear(zf[m], coords[m]), np_nearest(gf[m], coords[m])
        p = 1 / (1 + np.exp(-zp))
        terms.append(-(yp * np.log(p) + (1 - yp) * np.log(1 - p)))
    assert got == pytest.approx(float(np.mean(terms)), abs=1e-6)  # float32 coordinates


def test_real_sampler_multiclass_numpy_oracle():
    gen = torch.Generator().manual_seed(5)
    label = torch.zeros(2, 24, 24, dtype=torch.long)
    label[:, 4:14, 4:18] = 1
    label[:, 14:22, 10:20] = 2
    z = torch.randn(2, 3, 12, 12, generator=gen, dtype=torch.float64) * 2
    torch.manual_seed(3)
    got = create_loss("mll_point", num_points=30)(z, {"label": label})["loss"].item()
    torch.manual_seed(3)
    coords = mll.sample_uncertain_points(z, 30, 3.0, 0.75).numpy()
    terms = []
    for b in range(2):
        zp = np.stack([np_bilinear(z[b, k].numpy(), coords[b]) for k in range(3)])  # 3 x P
        y = np_nearest(label[b].numpy(), coords[b])
        log_p = zp - np.log(np.exp(zp).sum(0))
        terms.append(-log_p[y, np.arange(len(y))])
    assert got == pytest.approx(float(np.mean(terms)), abs=1e-6)  # float32 coordinates
