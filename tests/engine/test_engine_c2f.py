"""Coarse-to-fine test-time pieces: view fusion, RSTN post-processing, RDSC and the round loop (hand-made)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.engine.c2f import (ViewModels, coarse_probability, fine_probability, fuse_views, keep_large_components,
                               rdsc, refine_until_stable, segment_volume)
from medseg.modules.saliency import SaliencyTransform


def test_fuse_views_is_mean_probability_not_majority_vote():
    views = [np.array([0.9, 0.4, 0.2]), np.array([0.3, 0.5, 0.5]), np.array([0.3, 0.6, 0.7])]
    # means 0.5, 0.5, 0.4667; a majority of binary votes would give False, True, False
    assert fuse_views(views).tolist() == [True, True, False]


def test_keep_large_components_hand_made():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1:3, 1:3, 1:3] = True  # A: 8 voxels
    mask[6, 6, 1:5] = True  # B: 4 voxels = 0.5 x 8, kept
    mask[6, 1, 6:9] = True  # C: 3 voxels, dropped
    mask[3, 3, 3] = True  # touches A only through a corner: its own 6-connected component of 1, dropped
    expected = np.zeros_like(mask)
    expected[1:3, 1:3, 1:3] = True
    expected[6, 6, 1:5] = True
    np.testing.assert_array_equal(keep_large_components(mask), expected)
    empty = np.zeros((4, 4, 4), dtype=bool)
    assert not keep_large_components(empty).any()
    half = np.zeros((10, 10, 10), dtype=bool)
    half[:5] = True
    half[8, 8, 8] = True  # more than half the volume: RSTN leaves the mask as it is
    np.testing.assert_array_equal(keep_large_components(half), half)


def test_rdsc_hand_values():
    a = np.zeros(10, dtype=bool)
    a[:4] = True
    b = np.zeros(10, dtype=bool)
    b[2:4] = True
    assert rdsc(a, b) == pytest.approx(2 * 2 / 6)
    assert rdsc(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def _blob(n):
    m = np.zeros(1000, dtype=bool)
    m[:n] = True
    return m


def test_refine_stops_at_the_first_stable_round():
    # round 1: 100 -> 200 voxels (RDSC 0.667); round 2: 200 -> 199 (RDSC 0.9975 >= 0.99): stop after 2
    steps = iter([_blob(200), _blob(199), _blob(50), _blob(10)])
    result = refine_until_stable(_blob(100), lambda prev: next(steps))
    assert result.rounds == 2 and not result.empty_coarse
    assert result.rdscs == pytest.approx([2 * 100 / 300, 2 * 199 / 399])
    np.testing.assert_array_equal(result.mask, _blob(199))


def test_refine_runs_10_rounds_when_it_never_converges():
    a, b = _blob(100), ~_blob(900)  # disjoint: RDSC 0 every round
    calls = []
    result = refine_until_stable(a, lambda prev: (calls.append(1), b if prev[0] else a)[1])
    assert result.rounds == 10 == len(calls) and result.rdscs == [0.0] * 10


def test_refine_with_empty_coarse_mask_runs_no_round_and_reports_it():
    def never(prev):
        raise AssertionError("no fine round should run on an empty coarse mask")

    result = refine_until_stable(np.zeros((4, 4, 4), dtype=bool), never)
    assert result.empty_coarse and result.rounds == 0 and not result.mask.any()


class _ConstFine(torch.nn.Module):
    """Stub fine model: logits 30 everywhere (probability 1 in float32 inside the crop); records its input sizes."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape))
        return {"out": torch.full((x.shape[0], 3, *x.shape[2:]), 30.0)}


class _RatioFine(torch.nn.Module):
    """Stub fine model whose logits are the saliency weights: saliency-weighted channels / raw channels."""

    def forward(self, x):
        return {"out": x[:, :3] / x[:, 3:]}


def _one_voxel_case():
    volume = np.full((5, 40, 40), 0.5, dtype=np.float32)  # 5 slices along axis 0
    mask = np.zeros(volume.shape, dtype=bool)
    mask[2, 10, 10] = True
    return volume, mask


def test_fine_probability_crops_skips_empty_units_and_averages():
    volume, mask = _one_voxel_case()
    fine = _ConstFine()
    prob = fine_probability(volume, 0, mask.astype(np.float32), mask, fine, SaliencyTransform(), margin=5)
    # units 1, 2, 3 hold slice 2's voxel; units 0 (slices 0, 0, 1) and 4 (3, 4, 4) are skipped (output 0)
    assert fine.sizes == [(1, 6, 11, 11)] * 3  # box rows/cols 5..15, native resolution
    inside = np.zeros((40, 40), dtype=bool)
    inside[5:16, 5:16] = True
    expected = [0.5, 2 / 3, 1.0, 2 / 3, 0.5]  # slice means over 2 / 3 / 3 / 3 / 2 unit outputs
    for k, v in enumerate(expected):
        np.testing.assert_allclose(prob[k][inside], v, rtol=1e-5)
        assert np.all(prob[k][~inside] == 0)


def test_fine_probability_applies_the_saliency_per_slice_channel():
    volume, mask = _one_voxel_case()
    prob = fine_probability(volume, 0, mask.astype(np.float32), mask, _RatioFine(), SaliencyTransform(), margin=5)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    # at init F_S gives 1.0 / 1.5 / 2.0 on channels 0 / 1 / 2; slice 2 is channel 2 of unit 1, 1 of unit 2, 0 of unit 3
    assert prob[2, 10, 10] == pytest.approx((sig(2.0) + sig(1.5) + sig(1.0)) / 3, rel=1e-5)
    assert prob[1, 10, 10] == pytest.approx((sig(1.5) + sig(1.0)) / 3, rel=1e-5)  # unit 0 skipped


def test_coarse_probability_reassembles_unit_outputs():
    class Shift(torch.nn.Module):  # logits = the unit + 0 / 1 / 2 on its three channels
        def forward(self, x):
            return {"out": x + torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)}

    volume = np.random.default_rng(0).normal(size=(8, 6, 7)).astype(np.float32)
    prob = coarse_probability(volume, 1, Shift(), batch_size=4)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    v = np.moveaxis(volume, 1, 0)
    # slice j is channel 2 of unit j-1, 1 of unit j, 0 of unit j+1 (probabilities averaged); ends: 2 outputs
    expected = (sig(v + 2) + sig(v + 1) + sig(v)) / 3
    expected[0] = (sig(v[0] + 1) + sig(v[0])) / 2
    expected[-1] = (sig(v[-1] + 2) + sig(v[-1] + 1)) / 2
    np.testing.assert_allclose(np.moveaxis(prob, 1, 0), expected, rtol=1e-5)


class _Box(torch.nn.Module):
    """Stub coarse model: foreground on a fixed in-plane square of every slice of the unit."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x):
        out = torch.full((x.shape[0], 3, *x.shape[2:]), -30.0)
        out[..., 2:2 + self.size, 2:2 + self.size] = 30.0
        return {"out": out}


class _Threshold(torch.nn.Module):
    """Stub fine model: foreground where the raw image (channels 3-5) is 1."""

    def forward(self, x):
        return {"out": 60.0 * x[:, 3:] - 30.0}


def test_segment_volume_stops_when_the_fine_mask_is_stable():
    volume = np.zeros((10, 12, 14), dtype=np.float32)
    volume[3:6, 4:7, 5:9] = 1.0  # the target: 36 voxels
    views = [ViewModels(axis, _Box(6), _Threshold(), SaliencyTransform()) for axis in range(3)]
    result, prob = segment_volume(volume, views, margin=2)
    # round 1 finds the target (the coarse mask differs: RDSC < 0.99); round 2 repeats it (RDSC 1): 2 rounds
    assert result.rounds == 2 and result.rdscs[-1] == 1.0 and result.rdscs[0] < 0.99
    np.testing.assert_array_equal(result.mask, volume > 0)
    assert prob.shape == volume.shape and not result.empty_coarse


def test_segment_volume_reports_an_empty_coarse_prediction():
    views = [ViewModels(2, _Box(0), _Threshold(), SaliencyTransform())]
    result, _ = segment_volume(np.ones((8, 8, 4), dtype=np.float32), views)
    assert result.empty_coarse and result.rounds == 0 and not result.mask.any()


def test_segment_volume_crops_each_round_from_the_previous_mask():
    """A bar longer than the coarse box + margin is found piece by piece: the box grows with the mask."""
    volume = np.zeros((10, 12, 14), dtype=np.float32)
    volume[3:5, 1:12, 5:8] = 1.0  # rows 3-4, columns 1-11, axial slices 5-7
    views = [ViewModels(2, _Box(6), _Threshold(), SaliencyTransform())]  # coarse: rows/columns 2-7
    result, prob = segment_volume(volume, views, margin=2)
    # round 1 (box columns 0-9) finds columns 1-9; round 2 (box from that mask: columns 0-11) the whole bar;
    # round 3 repeats it and stops
    assert result.rounds == 3
    # coarse 6 x 6 x 14 = 504 voxels, round 1 2 x 9 x 3 = 54 (36 shared), round 2 2 x 11 x 3 = 66 (54 shared)
    assert result.rdscs[:2] == pytest.approx([2 * 36 / (504 + 54), 2 * 54 / (54 + 66)])
    np.testing.assert_array_equal(result.mask, volume > 0)
    np.testing.assert_allclose(prob, volume, atol=1e-6)  # the last round's fused probability
