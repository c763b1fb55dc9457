"""MLN loss (Eq. 13), the signed-distance goal that keeps the outer ring, and the MLL pixel-term fixes
(stride-4 logits, nothing computed while β = 0). Oracles: scipy's EDT and hand-worked numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

import medseg.losses.mll as mll
from medseg.losses import LossInputError, create_loss
from medseg.losses.boundary import sdf_regression_goal
from medseg.models import create_model
from medseg.ops import prepare_targets


# ------------------------------------------------------------------ signed-distance regression goal
def test_sdf_goal_keeps_the_outer_ring():
    mask = np.zeros((12, 11), bool)
    mask[2:9, 3:8] = True
    mask[5, 8] = True  # a one-pixel bump: all ring
    label = torch.from_numpy(mask).float()[None, None]
    batch = prepare_targets({"label": label}, {"sdf"}, 1)
    goal = sdf_regression_goal(batch["sdf"], label)[0, 0].numpy()
    ref = np.where(mask, ndi.distance_transform_edt(mask), -ndi.distance_transform_edt(~mask))
    assert np.allclose(goal, ref, atol=1e-5)
    assert np.array_equal(goal > 0, mask)  # the outer ring is positive: r > 0 is the whole object
    l2 = create_loss("sdf_l2")
    assert l2({"out": torch.from_numpy(ref).float()[None, None]}, batch)["loss"] < 1e-10
    assert torch.isclose(l2(torch.zeros(1, 1, 12, 11), batch)["loss"], torch.tensor((ref ** 2).mean()).float())


def test_sdf_goal_int_label_and_clip():
    label = torch.zeros(1, 10, 10, dtype=torch.long)
    label[0, 1:9, 1:9] = 1
    batch = prepare_targets({"label": label}, {"sdf(clip=2.0)"}, 2)
    goal = sdf_regression_goal(batch["sdf(clip=2.0)"], label, 2.0)[0, 0].numpy()
    m = label[0].numpy() > 0
    ref = np.clip(np.where(m, ndi.distance_transform_edt(m), -ndi.distance_transform_edt(~m)), -2, 2)
    assert np.allclose(goal, ref)


# ----------------------------------------------------------------------------- MLL pixel-term fixes
@pytest.fixture
def sampled_shapes(monkeypatch) -> list[tuple[int, ...]]:
    """The shapes of the logits that the MLL pixel term hands to ``sample_uncertain_points``, in call order."""
    seen: list[tuple[int, ...]] = []
    real = mll.sample_uncertain_points

    def spy(logits, *a, **k):
        seen.append(tuple(logits.shape))
        return real(logits, *a, **k)

    monkeypatch.setattr(mll, "sample_uncertain_points", spy)
    return seen


def _mll_case():
    gen = torch.Generator().manual_seed(0)
    label = torch.zeros(1, 3, 32, 32)
    label[:, :, 8:20, 10:22] = 1
    logits = torch.randn(1, 3, 8, 8, generator=gen)  # stride 4
    out = {"coarse": torch.randn(1, 3, 32, 32, generator=gen), "logits": logits,
           "out": F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)}
    return out, label


def test_mll_pixel_term_runs_on_the_stride4_logits(sampled_shapes):
    out, label = _mll_case()
    seen = sampled_shapes
    loss = create_loss("mll", num_points=32)
    loss.set_epoch(12)
    batch = prepare_targets({"label": label}, loss.requires, 1)
    torch.manual_seed(5)
    got = loss(out, batch)["point"]
    assert seen == [(3, 1, 8, 8)]  # B·C binary maps on the 8 x 8 stride-4 grid, not the 32 x 32 upsampling
    torch.manual_seed(5)
    assert torch.equal(got, create_loss("mll_point", num_points=32)(out["logits"], {"label": label})["loss"])
    seen.clear()
    single = create_loss("mll", num_points=32, coarse_key=None)
    single.set_epoch(12)
    single(out["out"], batch)  # a plain tensor: the fine output itself
    assert seen == [(3, 1, 32, 32)]


def test_mll_pixel_term_not_computed_while_beta_is_zero(monkeypatch):
    out, label = _mll_case()
    calls = []

    def counting(*a, **k):
        calls.append(1)
        return torch.full((a[0].shape[0], a[1], 2), 0.5)

    monkeypatch.setattr(mll, "sample_uncertain_points", counting)
    loss = create_loss("mll", num_points=16)
    batch = prepare_targets({"label": label}, loss.requires, 1)
    for epoch in range(12):
        loss.set_epoch(epoch)
        assert loss(out, batch)["point"] == 0
    assert calls == []
    loss.set_epoch(12)
    assert loss(out, batch)["point"] > 0 and len(calls) == 1


# ------------------------------------------------------------------------------- MLN loss, Eq. 13
def _mln_case():
    """One 4 x 4 slice, object = the 2 x 2 centre; constant logits whose terms are worked by hand."""
    label = torch.zeros(1, 1, 4, 4)
    label[0, 0, 1:3, 1:3] = 1
    out = {"coarse": torch.full((1, 1, 4, 4), -math.log(3)),   # p = 1/4
           "region": torch.zeros(1, 1, 4, 4),                  # p = 1/2
           "boundary": torch.zeros(1, 1, 4, 4),                # σ = 1/2, regression 0
           "fusion": torch.full((1, 1, 4, 4), math.log(3)),    # p = 3/4
           "pixel_logits": torch.tensor([[[2.0, -1.0]]]),      # at pixels (1, 1) (object) and (0, 0)
           "pixel_coords": torch.tensor([[[0.375, 0.375], [0.125, 0.125]]])}
    return out, label


# Dice 1 − 2Σpv/Σ(p+v) with |V| = 4 of 16 pixels: coarse 1 − 2/8, region 1 − 4/12, fusion 1 − 6/16.
# Kervadec φ: 0 on the 4 object pixels (all ring), 1 on the 8 edge neighbours, √2 on the 4 corners:
# E_B = mean(½·φ) = (8 + 4√2)/32; regression goal 1 inside, −φ outside: mean(goal²) = (4 + 8 + 8)/16.
COARSE, REGION, FUSION = 0.75, 2 / 3, 0.625
E_BS = (8 + 4 * math.sqrt(2)) / 32 + 20 / 16
PIXEL = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2  # BCE(2, 1), BCE(−1, 0)


@pytest.mark.parametrize("epoch", [0, 5, 11, 12, 13, 24])
def test_mln_eq13_totals_per_epoch(epoch):
    out, label = _mln_case()
    loss = create_loss("mln")
    batch = prepare_targets({"label": label}, loss.requires, 1)
    loss.set_epoch(epoch)
    on = 1.0 if epoch >= 12 else 0.0
    res = loss(out, batch)
    ref = 0.3 * COARSE + 2 / 3 * (REGION + 1.0 * E_BS + on * PIXEL + on * FUSION)
    assert res["loss"].item() == pytest.approx(ref, abs=1e-6)
    assert res["pixel"].item() == pytest.approx(on * PIXEL, abs=1e-6)
    assert res["fusion"].item() == pytest.approx(on * FUSION, abs=1e-6)
    assert res["boundary"].item() + res["sdf_l2"].item() == pytest.approx(E_BS, abs=1e-6)


def test_mln_branch_terms_need_no_outputs_before_epoch_12():
    out, label = _mln_case()
    loss = create_loss("mln", coarse_key=None)
    batch = prepare_targets({"label": label}, loss.requires, 1)
    early = {k: out[k] for k in ("region", "boundary")}
    assert loss(early, batch)["loss"].item() == pytest.approx(2 / 3 * (REGION + E_BS), abs=1e-6)
    loss.set_epoch(12)
    with pytest.raises(ValueError, match="pixel_logits"):
        loss(early, batch)


def test_mln_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = create_model("mln", num_points=16, aspp_dropout=0.0)
    model.train().set_epoch(12)
    loss = create_loss("mln", coarse_key=None, clip=5.0)
    loss.set_epoch(12)
    x = torch.rand(2, 6, 16, 16)
    label = torch.zeros(2, 3, 16, 16)
    label[:, :, 4:11, 5:12] = 1
    x[:, :, 4:11, 5:12] += 1.0
    batch = prepare_targets({"label": label}, loss.requires, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    values = []
    for _ in range(3):
        opt.zero_grad()
        value = loss(model(x), batch)["loss"]
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < 0.8 * values[0], values


def test_mln_loss_input_errors_name_the_problem():
    out, label = _mln_case()
    loss = create_loss("mln")
    batch = prepare_targets({"label": label}, loss.requires, 1)
    with pytest.raises(LossInputError, match="coarse_label"):
        create_loss("mln", coarse_label_key="coarse_label")(out, batch)
    with pytest.raises(LossInputError, match=r"\(1, 2, 4, 4\)"):  # sdf maps and label maps disagree
        create_loss("sdf_l2")(torch.zeros(1, 2, 4, 4), {"label": label, "sdf": batch["sdf"].expand(1, 2, 4, 4)})


def test_mll_pixel_term_uses_the_crop_label_for_crop_logits():
    label = torch.zeros(1, 1, 32, 32)  # full slice: empty here
    crop = torch.ones(1, 1, 16, 16)     # the crop the fine logits cover: all object
    out = {"coarse": torch.zeros(1, 1, 32, 32), "out": torch.zeros(1, 1, 32, 32),
           "logits": torch.full((1, 1, 4, 4), 5.0)}
    loss = create_loss("mll", num_points=8)
    loss.set_epoch(12)
    batch = prepare_targets({"label": label}, loss.requires, 1)
    point = create_loss("mll_point", num_points=8)
    for key, truth in (("label", label), ("label_crop", crop)):
        torch.manual_seed(3)
        got = loss(out, {**batch, key: truth})["point"]
        torch.manual_seed(3)
        assert torch.equal(got, point(out["logits"], {"label": truth})["loss"])
    # (zero padding at the border lowers the sampled logits, so not every point sees 5; the sign decides)
    assert got < 0.1 < 2 < loss(out, batch)["point"]


def test_mln_in_the_coarse_to_fine_frames():
    """The training step's contract: full-slice label and sdf, the crop's label and box, crop-frame outputs."""
    out, crop = _mln_case()
    full = torch.zeros(1, 1, 8, 9)
    full[..., 2:6, 3:7] = crop
    out["coarse"] = torch.full((1, 1, 8, 9), -math.log(3))  # p = 1/4: Dice 1 − 2/(18 + 4)
    loss = create_loss("mln")
    batch = prepare_targets({"label": full, "label_crop": crop, "box": (2, 6, 3, 7)}, loss.requires, 1)
    for epoch, on in ((0, 0.0), (12, 1.0)):
        loss.set_epoch(epoch)
        ref = 0.3 * (1 - 2 / 22) + 2 / 3 * (REGION + E_BS + on * (PIXEL + FUSION))
        assert loss(out, batch)["loss"].item() == pytest.approx(ref, abs=1e-6)


def test_mll_pixel_term_reads_the_crop_logits_of_the_coarse_to_fine_step(sampled_shapes):
    """The c2f training step passes the fine model's stride-4 crop logits as ``crop_logits`` (``out`` is the
    full slice): the pixel term must sample those, against ``label_crop``."""
    seen = sampled_shapes
    label, crop = torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 16, 16)
    out = {"coarse": torch.zeros(1, 1, 32, 32), "out": torch.zeros(1, 1, 32, 32),
           "crop_logits": torch.full((1, 1, 4, 4), 5.0)}
    loss = create_loss("mll", num_points=8)
    loss.set_epoch(12)
    batch = prepare_targets({"label": label}, loss.requires, 1)
    torch.manual_seed(3)
    got = loss(out, {**batch, "label_crop": crop})["point"]
    assert seen == [(1, 1, 4, 4)]
    torch.manual_seed(3)
    assert torch.equal(got, create_loss("mll_point", num_points=8)(out["crop_logits"], {"label": crop})["loss"])
