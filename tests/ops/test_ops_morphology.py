"""Min-pool erosion and contours against scipy.ndimage.binary_erosion (border_value=1)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from medseg.ops import contour, erode, label_channels


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kernel,iterations", [(3, 1), (3, 6), (2, 1), (2, 3), (5, 2)])
def test_erode_matches_scipy(dims, kernel, iterations):
    gen = torch.Generator().manual_seed(kernel * 10 + iterations)
    shape = (2, 3, 19, 17) if dims == 2 else (2, 3, 13, 12, 14)
    x = (torch.rand(shape, generator=gen) > 0.2).float()
    got = erode(x, kernel, iterations).numpy().astype(bool)
    st = np.ones((kernel,) * dims, bool)
    for b in range(2):
        for c in range(3):
            ref = ndi.binary_erosion(x[b, c].numpy() > 0, st, iterations=iterations, border_value=1)
            assert (got[b, c] == ref).all()


def test_contour_of_square_is_band_of_width_iterations():
    label = torch.zeros(1, 20, 20, dtype=torch.long)
    label[0, 4:16, 4:16] = 1
    cont = contour(label_channels(label, 2), kernel=3, iterations=2)
    fg = cont[0, 1]
    expected = torch.zeros(20, 20)
    expected[4:16, 4:16] = 1
    expected[6:14, 6:14] = 0
    assert torch.equal(fg, expected)
    # background channel: the band outside the square; no erosion at the array border
    bg = cont[0, 0]
    assert bg[0].sum() == 0 and bg[2:4, 4:16].sum() == 24 and bg[4:16, 4:16].sum() == 0


def test_label_channels_binary_and_multiclass():
    binary = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    ch = label_channels(binary, 1)
    assert torch.equal(ch[0, 1], binary[0, 0]) and torch.equal(ch[0, 0], 1 - binary[0, 0])
    lab = torch.randint(0, 4, (2, 5, 6))
    assert torch.equal(label_channels(lab, 4), F.one_hot(lab, 4).movedim(-1, 1).float())


@pytest.mark.parametrize("dims,kernel,iterations", [(2, 3, 6), (3, 3, 2), (3, 2, 1), (2, 2, 3)])
def test_label_contour_equals_per_class_erosion(dims, kernel, iterations):
    gen = torch.Generator().manual_seed(dims + kernel)
    shape = (2, 24, 21) if dims == 2 else (2, 14, 13, 12)
    label = torch.randint(0, 5, shape, generator=gen)
    label = torch.from_numpy(ndi.median_filter(label.numpy(), size=(1,) + (3,) * dims))  # blobs, not noise
    label[0, :2] = 100  # ignore_index-like values: no class, but they erode their neighbours
    got = contour_of(label, kernel, iterations)
    st = np.ones((kernel,) * dims, bool)
    for b in range(2):
        for k in range(5):
            g = label[b].numpy() == k
            ref = g & ~ndi.binary_erosion(g, st, iterations=iterations, border_value=1)
            assert (got[b, k].numpy() == ref).all()
    binary = (label[:, None] == 1).float()
    assert torch.equal(contour_of(binary, kernel, iterations, 1)[:, 1], got[:, 1])


def contour_of(label, kernel, iterations, k=5):
    from medseg.ops import label_contour

    out = label_contour(label, k, kernel, iterations)
    assert out.dtype == torch.bool
    return out
