"""Distance maps against scipy's exact EDT (oracle), both back-ends, 2-D/3-D, spacing, empty/full masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from medseg.ops import distance_maps, edt_squared_torch, signed_distance, unet_weight_map, unsigned_boundary_distance


def kervadec_reference(mask: np.ndarray, spacing=None) -> np.ndarray:
    """LIVIAETS/boundary-loss one_hot2dist on one channel."""
    if not mask.any():
        return np.zeros(mask.shape)
    neg = ~mask
    return ndi.distance_transform_edt(neg, sampling=spacing) * neg - (
        ndi.distance_transform_edt(mask, sampling=spacing) - 1) * mask


def random_masks(shape, seed=0):
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.standard_normal(shape), 1.5)
    return noise > 0.1


@pytest.mark.parametrize("backend", ["scipy", "torch"])
@pytest.mark.parametrize("shape,spacing", [((17, 23), None), ((17, 23), (0.7, 1.9)), ((9, 12, 11), (2.0, 0.5, 1.0))])
def test_signed_distance_matches_scipy(backend, shape, spacing):
    masks = np.stack([random_masks(shape, s) for s in range(3)])[:, None]  # B=3, C=1
    got = signed_distance(torch.from_numpy(masks), spacing, backend).numpy()
    for b in range(3):
        np.testing.assert_allclose(got[b, 0], kervadec_reference(masks[b, 0], spacing), atol=1e-4)


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_empty_and_full_masks_are_defined_zero(backend):
    m = torch.zeros(2, 2, 6, 7, dtype=torch.bool)
    m[1] = True
    for fn in (signed_distance, unsigned_boundary_distance):
        out = fn(m, None, backend)
        assert torch.isfinite(out).all() and (out == 0).all()


def test_unsigned_distance_is_monai_field():
    masks = np.stack([random_masks((15, 16, 9), 4)])[:, None]
    got = unsigned_boundary_distance(torch.from_numpy(masks), backend="torch").numpy()[0, 0]
    ref = ndi.distance_transform_edt(masks[0, 0]) + ndi.distance_transform_edt(~masks[0, 0])
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_edt_torch_single_point_and_no_feature():
    f = torch.zeros(1, 5, 6, dtype=torch.bool)
    f[0, 1, 2] = True
    d2 = edt_squared_torch(f, (1.0, 2.0), spatial_dims=2)[0]
    ii, jj = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    assert torch.allclose(d2.float(), (ii - 1) ** 2 + (2 * (jj - 2)) ** 2)
    assert torch.isinf(edt_squared_torch(torch.zeros(2, 3, 3, dtype=torch.bool), spatial_dims=2)).all()


def test_distance_maps_inside_on_bbox_is_exact_at_border():
    m = np.zeros((12, 10), bool)
    m[0:5, 0:4] = True  # touches the array border: the border is not background
    out, ins = distance_maps(torch.from_numpy(m)[None, None], backend="scipy")
    np.testing.assert_allclose(ins[0, 0].numpy(), ndi.distance_transform_edt(m), atol=1e-6)
    np.testing.assert_allclose(out[0, 0].numpy(), ndi.distance_transform_edt(~m), atol=1e-6)


def loop_unet_weight(label: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """Direct loop implementation of U-Net Eq. 2 (objects = 8-connected components per label)."""
    objects = []
    for k in sorted(set(label.ravel()) - {0}):
        comps, n = ndi.label(label == k, structure=np.ones((3, 3)))
        objects += [np.argwhere(comps == i) for i in range(1, n + 1)]
    classes, counts = np.unique(label, return_counts=True)
    freq = dict(zip(classes.tolist(), counts.tolist()))
    h, w = label.shape
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            wc = label.size / (len(classes) * freq[int(label[y, x])])
            d = sorted(min(np.hypot(py - y, px - x) for py, px in pts) for pts in objects)
            border = w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2)) if len(d) >= 2 else 0.0
            out[y, x] = wc + border
    return out


def test_unet_weight_map_matches_loop():
    label = np.zeros((14, 16), np.int64)
    label[2:6, 2:6] = 1
    label[2:6, 8:11] = 1  # two objects of class 1 with a gap of 2 px
    label[9:13, 3:9] = 2  # one object of class 2
    np.testing.assert_allclose(unet_weight_map(label, 10.0, 5.0), loop_unet_weight(label, 10.0, 5.0), rtol=1e-5)
    single = np.zeros((8, 8), np.int64)
    single[2:5, 2:5] = 1
    assert np.allclose(unet_weight_map(single, balance=False), 1.0)  # < 2 objects: no border term


@pytest.mark.parametrize("backend", ["scipy", "torch"])
@pytest.mark.parametrize("spacing", [None, (1.0, 0.5, 2.0)])
def test_clipped_signed_distance_equals_clamped_full(backend, spacing):
    m = np.zeros((2, 1, 30, 28, 26), bool)
    m[0, 0, 3:8, 4:9, 2:6] = True  # small object: the clipped map is computed on a crop
    m[1, 0, 10:25, 2:20, 5:22] = True
    full = signed_distance(torch.from_numpy(m), spacing, "scipy")
    clipped = signed_distance(torch.from_numpy(m), spacing, backend, clip=4.0)
    assert torch.allclose(clipped, full.clamp(-4.0, 4.0), atol=1e-5)
