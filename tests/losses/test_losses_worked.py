"""Hand-worked and loop-reference checks: structure, boundary, SDF L2, DWCE, CWCE, SDL, MLL, point sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from medseg.losses import create_loss
from medseg.losses.mll import point_sample, sample_uncertain_points
from medseg.ops import prepare_targets, unet_weight_map


# ----------------------------------------------------------------------------------- structure loss
def loop_structure(z: np.ndarray, g: np.ndarray, pixel: bool) -> float:
    """F3Net structure loss for one 2-D image with explicit window loops (31x31, zero padding)."""
    h, w = g.shape
    weit = np.zeros_like(g)
    for y in range(h):
        for x in range(w):
            win = g[max(0, y - 15):y + 16, max(0, x - 15):x + 16]
            weit[y, x] = 1 + 5 * abs(win.sum() / 961.0 - g[y, x])
    p = 1 / (1 + np.exp(-z))
    bce = -(g * np.log(p) + (1 - g) * np.log(1 - p))
    wbce = (weit * bce).sum() / weit.sum() if pixel else bce.mean()
    inter, union = (p * g * weit).sum(), ((p + g) * weit).sum()
    return wbce + 1 - (inter + 1) / (union - inter + 1)


@pytest.mark.parametrize("weighting", ["pixel", "none"])
def test_structure_loss_matches_loop(weighting):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 1, 20, 24, generator=gen, dtype=torch.float64)
    g = torch.zeros(2, 1, 20, 24, dtype=torch.float64)
    g[0, 0, 4:12, 6:18] = 1
    g[1, 0, 10:20, 0:9] = 1  # touches the border
    got = create_loss("structure", bce_weighting=weighting)(z, {"label": g})["loss"]
    if weighting == "pixel":
        ref = np.mean([loop_structure(z[b, 0].numpy(), g[b, 0].numpy(), True) for b in range(2)])
    else:  # released code: BCE is the batch mean
        bce = F.binary_cross_entropy_with_logits(z, g).item()
        ref = np.mean([loop_structure(z[b, 0].numpy(), g[b, 0].numpy(), False) - 0 for b in range(2)])
        ref = ref - np.mean([F.binary_cross_entropy_with_logits(z[b], g[b]).item() for b in range(2)]) + bce
    assert abs(got.item() - ref) < 1e-8
    compat = create_loss("structure", compat=True)(z, {"label": g})["loss"]
    if weighting == "none":
        assert torch.allclose(compat, got)


def test_structure_deep_supervision_sums_resized_outputs():
    gen = torch.Generator().manual_seed(2)
    label = (torch.rand(2, 1, 16, 16, generator=gen) > 0.5).float()
    main, aux = torch.randn(2, 1, 16, 16, generator=gen), [torch.randn(2, 1, 8, 8, generator=gen)]
    loss = create_loss("structure", deep_supervision=True)
    single = create_loss("structure")
    up = F.interpolate(aux[0], size=(16, 16), mode="bilinear", align_corners=False)
    ref = single(main, {"label": label})["loss"] + single(up, {"label": label})["loss"]
    assert torch.allclose(loss({"out": main, "aux": aux}, {"label": label})["loss"], ref)


# ------------------------------------------------------------------------------------- boundary
def test_boundary_loss_with_scipy_sdf():
    label = torch.zeros(2, 12, 14, dtype=torch.long)
    label[0, 2:7, 3:10] = 1
    label[1, 5:11, 1:6] = 2
    logits = torch.randn(2, 3, 12, 14, dtype=torch.float64)
    loss = create_loss("boundary")
    batch = prepare_targets({"label": label}, loss.requires, 3)
    prob = logits.softmax(1).numpy()
    total = 0.0
    for b in range(2):
        for c in (1, 2):
            m = label[b].numpy() == c
            phi = (ndi.distance_transform_edt(~m) * ~m - (ndi.distance_transform_edt(m) - 1) * m) if m.any() else 0 * m
            total += (prob[b, c] * phi).sum()
    ref = total / (2 * 2 * 12 * 14)
    assert abs(loss(logits, batch)["loss"].item() - ref) < 1e-6


def test_boundary_schedule_and_sdf_l2_clip():
    label = torch.zeros(1, 1, 10, 10)
    label[0, 0, 2:8, 2:8] = 1
    loss = create_loss("boundary", schedule={"start": 0.0, "step": 0.2, "max": 1.0})
    batch = prepare_targets({"label": label}, loss.requires, 1)
    z = torch.zeros(1, 1, 10, 10)
    base = loss(z, batch)["boundary"]
    for epoch, factor in [(0, 0.0), (2, 0.4), (9, 1.0)]:
        loss.set_epoch(epoch)
        assert torch.allclose(loss(z, batch)["loss"], factor * base)
    l2 = create_loss("sdf_l2", clip=2.0)
    assert l2.requires == {"sdf(clip=2.0)"}
    batch = prepare_targets(batch, l2.requires, 1)
    assert torch.allclose(batch["sdf(clip=2.0)"], batch["sdf"].clamp(-2, 2))
    goal = (label - batch["sdf"]).clamp(-2, 2)  # positive on the whole object, outer ring included
    assert torch.allclose(l2(z, batch)["loss"], (goal**2).mean())
    assert l2(goal, batch)["loss"] == 0


# ------------------------------------------------------------------------------------------ DWCE
def test_dwce_uses_unet_weight_map():
    label = torch.zeros(2, 14, 16, dtype=torch.long)
    label[:, 2:6, 2:6] = 1
    label[:, 2:6, 8:11] = 1
    label[1, 9:13, 3:9] = 2
    logits = torch.randn(2, 3, 14, 16, dtype=torch.float64)
    loss = create_loss("dwce")
    batch = prepare_targets({"label": label}, loss.requires, 3)
    w = np.stack([unet_weight_map(label[b].numpy(), 10.0, 5.0) for b in range(2)])
    ce = F.cross_entropy(logits, label, reduction="none").numpy()
    assert abs(loss(logits, batch)["loss"].item() - (w * ce).mean()) < 1e-5


# ------------------------------------------------------------------------------------ CWCE / SDL
def tiny_case():
    """1 x 6 x 6 label: class 1 is a 4x4 square; with kernel 3 / 1 iteration its contour is the 12-pixel ring."""
    label = torch.zeros(1, 6, 6, dtype=torch.long)
    label[0, 1:5, 1:5] = 1
    return label


def test_cwce_weights_contour_4_and_rest_2():
    label = tiny_case()
    logits = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    loss = create_loss("cwce", kernel=3, iterations=1)
    batch = prepare_targets({"label": label}, loss.requires, 2)
    ce = F.cross_entropy(logits, label, reduction="none")[0]
    # union of the class-1 ring (rows/cols 1..4 border) and the background band (all bg pixels are
    # adjacent to the square in this 6x6 image except none) -> computed by hand:
    fg_ring = torch.zeros(6, 6)
    fg_ring[1:5, 1:5] = 1
    fg_ring[2:4, 2:4] = 0
    bg_band = 1 - torch.zeros(6, 6).index_put_((torch.arange(1, 5).repeat_interleave(4), torch.arange(1, 5).repeat(4)),
                                               torch.ones(16))
    union = ((fg_ring + bg_band) > 0).double()  # 32 contour pixels, 4 interior pixels
    assert union.sum() == 32
    ref = (4 * ce * union + 2 * ce * (1 - union)).mean()
    assert torch.allclose(loss(logits, batch)["loss"], ref)


def test_sdl_per_class_vs_pooled_hand_computed():
    label = torch.zeros(1, 6, 6, dtype=torch.long)
    label[0, 0:3, 0:3] = 1  # 3x3 square at the corner (no erosion at the array border)
    label[0, 3:6, 3:6] = 2
    logits = torch.zeros(1, 3, 6, 6, dtype=torch.float64)  # p = 1/3 everywhere
    kw = dict(kernel=3, iterations=1)
    batch = prepare_targets({"label": label}, {"contour(iterations=1)"}, 3)
    # class 1: eroded square (border not eroded) keeps (0..1, 0..1) = 4 px; contour 5 px. Same for class 2.
    p, s = 1 / 3, 1e-3
    dice_c = (2 * p * 5 + s) / (p * 5 + 5 + s)  # contour region: 5 px, all foreground
    dice_n = (2 * p * 4 + s) / (p * 31 + 4 + s)  # non-contour: 31 px, 4 of them foreground
    per_class = create_loss("sdl", **kw)(logits, batch)
    assert abs(per_class["loss"].item() - (0.5 * (1 - dice_c) + 0.5 * (1 - dice_n))) < 1e-9
    pooled = create_loss("sdl", compat=True, **kw)(logits, batch)
    dice_c2 = (2 * p * 10 + s) / (p * 10 + 10 + s)
    dice_n2 = (2 * p * 8 + s) / (p * 62 + 8 + s)
    assert abs(pooled["loss"].item() - ((1 - dice_c2) + (1 - dice_n2))) < 1e-9


def test_cwcd_is_sum_and_compat_uses_code_contours():
    label = tiny_case()
    logits = torch.randn(1, 2, 6, 6)
    for compat, key in [(False, "contour"), (True, "contour(iterations=1,kernel=2)")]:
        loss = create_loss("cwcd", compat=compat)
        assert loss.requires == {key}
        batch = prepare_targets({"label": label}, loss.requires, 2)
        out = loss(logits, batch)
        assert torch.allclose(out["loss"], out["cwce"] + out["sdl"])


# ----------------------------------------------------------------------------------- PointRend / MLL
def test_point_sampler_picks_most_uncertain_candidates():
    # logits = distance to the vertical line x = 0.3: uncertainty (-|z|) decreases away from it
    w = 64
    xs = (torch.arange(w) + 0.5) / w
    logits = (xs - 0.3).abs().mul(20).expand(1, 1, w, w).contiguous()
    gen = torch.Generator().manual_seed(0)
    coords, cand, unc = sample_uncertain_points(logits, 100, 3, 0.75, generator=gen, return_candidates=True)
    important = coords[0, :75]
    # the 75 chosen are exactly the 75 most uncertain candidates: all within the band of the 75 nearest
    dist_chosen = (important[:, 1] - 0.3).abs()
    order = (cand[0, :, 1] - 0.3).abs().sort().values
    assert dist_chosen.max() <= order[74] + 1.0 / w  # bilinear sampling of the piecewise-linear map
    assert (unc[0].topk(75).values.min() >= unc[0].sort(descending=True).values[75])
    # the 25 random ones come from the other candidates, no duplicates
    rest = coords[0, 75:]
    assert len({tuple(c.tolist()) for c in coords[0]}) == 100
    assert all((rest[:, None] - important[None]).abs().sum(-1).min(1).values > 0)


def test_point_sample_bilinear_and_nearest():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    coords = torch.tensor([[[0.125, 0.125], [0.375, 0.625], [0.25, 0.25]]])  # pixel centres and a corner
    out = point_sample(x, coords)[0, 0]
    assert torch.allclose(out, torch.tensor([0.0, 6.0, 2.5]))


def test_mll_point_loss_on_coarse_logits_against_full_label():
    label = torch.zeros(2, 3, 32, 32)
    label[:, :, 8:24, 8:24] = 1
    perfect = F.avg_pool2d(label, 4) * 40 - 20  # stride-4 logits, confident and right
    loss = create_loss("mll_point", num_points=256)
    assert loss(perfect, {"label": label})["loss"] < 0.2  # points cluster on the interpolated edge
    assert loss(-perfect, {"label": label})["loss"] > 5


def test_mll_eq11_weights_and_schedule():
    gen = torch.Generator().manual_seed(3)
    label = torch.zeros(2, 3, 16, 16)
    label[:, :, 4:12, 5:13] = 1
    out = {"coarse": torch.randn(2, 3, 16, 16, generator=gen), "out": torch.randn(2, 3, 16, 16, generator=gen)}
    loss = create_loss("mll", num_points=64)
    batch = prepare_targets({"label": label}, loss.requires, 1)

    def dice(z):
        p = torch.sigmoid(z)
        return (1 - (2 * (p * label).sum([1, 2, 3]) + 1e-6) / ((p + label).sum([1, 2, 3]) + 1e-6)).mean()

    for epoch, alpha, beta in [(0, 0.0, 0.0), (3, 0.6, 0.0), (12, 1.0, 1.0)]:
        loss.set_epoch(epoch)
        res = loss(out, batch)
        ref = 0.3 * dice(out["coarse"]) + 2 / 3 * (dice(out["out"]) + alpha * res["boundary"] + beta * res["point"])
        assert torch.allclose(res["loss"], ref, atol=1e-6)
        assert math.isclose(res["region_coarse"].item(), dice(out["coarse"]).item(), abs_tol=1e-6)
