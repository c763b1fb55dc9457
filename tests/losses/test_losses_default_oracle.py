"""The default losses (``loss: auto``) against MONAI on the same tensors.

``dice_bce`` (one logit channel, or C independent binary maps) = soft Dice with the sums taken over the
batch and space per channel, smooth 1e-5 in numerator and denominator, averaged over channels + mean BCE
on the logits. ``dice_ce`` (K >= 2 softmax channels, int64 label) = the same soft Dice over the K - 1
foreground channels (background left out) + mean CE. MONAI: ``DiceCELoss`` / ``DiceLoss`` configured to
exactly that (``batch=True``, ``smooth_nr = smooth_dr = 1e-5``, ``include_background`` as stated).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

monai_losses = pytest.importorskip("monai.losses")

from medseg.losses import LossInputError, create_loss  # noqa: E402

SMOOTH = {"smooth_nr": 1e-5, "smooth_dr": 1e-5, "batch": True}
SHAPES = [(2, (9, 11)), (3, (5, 6, 7)), (1, (16, 16))]  # batch, spatial: 2-D, 3-D, a single sample


def binary_case(b: int, spatial: tuple[int, ...], fill: str, channels: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, channels, *spatial, generator=gen, dtype=torch.float64) * 2
    label = (torch.rand(b, channels, *spatial, generator=gen) > 0.6).double()
    if fill == "empty":
        label.zero_()
    elif fill == "one_empty":  # one sample without foreground: batch Dice differs from per-sample Dice
        label[0] = 0
    return logits, label


def multiclass_case(b: int, spatial: tuple[int, ...], k: int, fill: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, *spatial, generator=gen, dtype=torch.float64) * 2
    label = torch.randint(0, k, (b, *spatial), generator=gen)
    if fill == "empty":  # background only
        label.zero_()
    elif fill == "one_empty":
        label[0] = 0
    elif fill == "class_absent":  # the last class appears nowhere in the batch
        label[label == k - 1] = 0
    return logits, label


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return abs(float(a) - float(b)) <= 1e-5 * max(1.0, abs(float(b)))


# --------------------------------------------------------------------------------------- dice_bce
@pytest.mark.parametrize("b,spatial", SHAPES)
@pytest.mark.parametrize("fill", ["random", "empty", "one_empty"])
def test_dice_bce_equals_monai_dice_ce_with_bce(b, spatial, fill):
    logits, label = binary_case(b, spatial, fill)
    ours = create_loss("auto", num_classes=1)({"out": logits}, {"label": label})
    ref = monai_losses.DiceCELoss(sigmoid=True, include_background=True, **SMOOTH)(logits, label)
    ref_dice = monai_losses.DiceLoss(sigmoid=True, include_background=True, **SMOOTH)(logits, label)
    ref_bce = F.binary_cross_entropy_with_logits(logits, label)
    assert close(ours["loss"], ref), (float(ours["loss"]), float(ref))
    assert close(ours["dice"], ref_dice) and close(ours["bce"], ref_bce)


def test_dice_bce_weights_and_multilabel_channels():
    logits, label = binary_case(2, (4, 6, 5), "random", channels=3, seed=1)
    ours = create_loss("dice_bce", dice_weight=0.25, bce_weight=2.0)(logits, {"label": label})
    dice = monai_losses.DiceLoss(sigmoid=True, include_background=True, **SMOOTH)(logits, label)
    bce = F.binary_cross_entropy_with_logits(logits, label)
    assert close(ours["dice"], dice) and close(ours["bce"], bce)
    assert close(ours["loss"], 0.25 * dice + 2.0 * bce)


def test_dice_bce_int_label_without_channel_axis_is_accepted():
    logits, label = binary_case(2, (8, 8), "random")
    ours = create_loss("dice_bce")(logits, {"label": label[:, 0].long()})["loss"]
    ref = monai_losses.DiceCELoss(sigmoid=True, **SMOOTH)(logits, label)
    assert close(ours, ref)


def test_dice_bce_hand_worked():
    # 1 x 1 x 1 x 4: p = σ(z) = (0.5, 0.5, 0.5, 0.5) at z = 0, g = (1, 1, 0, 0)
    logits = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    label = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 4)
    out = create_loss("dice_bce")(logits, {"label": label})
    dice = 1 - (2 * 1.0 + 1e-5) / (2.0 + 2.0 + 1e-5)
    bce = torch.log(torch.tensor(2.0, dtype=torch.float64))
    assert close(out["dice"], dice) and close(out["bce"], bce) and close(out["loss"], dice + bce)


# ---------------------------------------------------------------------------------------- dice_ce
@pytest.mark.parametrize("b,spatial", SHAPES)
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("fill", ["random", "empty", "one_empty", "class_absent"])
def test_dice_ce_equals_monai_dice_ce(b, spatial, k, fill):
    logits, label = multiclass_case(b, spatial, k, fill)
    ours = create_loss("auto", num_classes=k)(logits, {"label": label})
    kw = {"softmax": True, "to_onehot_y": True, "include_background": False, **SMOOTH}
    ref = monai_losses.DiceCELoss(**kw)(logits, label.unsqueeze(1))
    ref_dice = monai_losses.DiceLoss(**kw)(logits, label.unsqueeze(1))
    ref_ce = F.cross_entropy(logits, label)
    assert close(ours["loss"], ref), (float(ours["loss"]), float(ref))
    assert close(ours["dice"], ref_dice) and close(ours["ce"], ref_ce)


def test_dice_ce_weights_and_channel_axis_label():
    logits, label = multiclass_case(2, (6, 7), 3, "random", seed=2)
    ours = create_loss("dice_ce", dice_weight=3.0, ce_weight=0.5)(logits, {"label": label.unsqueeze(1)})
    ref = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, lambda_dice=3.0,
                                  lambda_ce=0.5, **SMOOTH)(logits, label.unsqueeze(1))
    assert close(ours["loss"], ref)


def test_dice_ce_hand_worked_leaves_background_out():
    # 1 x 2 x 1 x 2, z = 0: p = 0.5 everywhere; label (1, 0) -> foreground Dice (2·0.5 + s)/(1 + 1 + s)
    logits = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    label = torch.tensor([[[1, 0]]])
    out = create_loss("dice_ce")(logits, {"label": label})
    dice = 1 - (2 * 0.5 + 1e-5) / (1.0 + 1.0 + 1e-5)
    ce = torch.log(torch.tensor(2.0, dtype=torch.float64))
    assert close(out["dice"], dice) and close(out["ce"], ce) and close(out["loss"], dice + ce)


# ----------------------------------------------------------------------------------- input checks
def test_dice_bce_refuses_label_map_values():
    logits = torch.randn(2, 1, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8)).float()  # {0, 1, 2}: a K-class label map, not a binary mask
    with pytest.raises(LossInputError, match=r"dice_bce.*\[0, 1\]"):
        create_loss("auto", num_classes=1)(logits, {"label": label})
    with pytest.raises(LossInputError, match="dice_bce"):
        create_loss("dice_bce")(logits, {"label": label.long()})


def test_dice_bce_refuses_float_label_without_channel_axis():
    with pytest.raises(LossInputError, match=r"dice_bce.*\(2, 8, 8\)"):
        create_loss("dice_bce")(torch.randn(2, 1, 8, 8), {"label": torch.zeros(2, 8, 8)})


def test_dice_bce_refuses_softmax_logits():
    with pytest.raises(LossInputError, match="dice_bce"):
        create_loss("dice_bce")(torch.randn(2, 3, 8, 8), {"label": torch.randint(0, 3, (2, 8, 8))})


def test_dice_ce_input_checks():
    loss = create_loss("dice_ce")
    with pytest.raises(LossInputError, match=r"dice_ce.*\[3\]"):  # label value 3 with 3 channels
        loss(torch.randn(2, 3, 8, 8), {"label": torch.full((2, 8, 8), 3)})
    with pytest.raises(LossInputError, match="dice_ce"):  # one channel: the binary default is dice_bce
        loss(torch.randn(2, 1, 8, 8), {"label": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(LossInputError, match="dice_ce"):  # spatial size mismatch
        loss(torch.randn(2, 3, 8, 8), {"label": torch.zeros(2, 8, 9, dtype=torch.long)})
    with pytest.raises(LossInputError, match="dice_ce"):  # missing label
        loss(torch.randn(2, 3, 8, 8), {"image": torch.zeros(2, 3, 8, 8)})
    with pytest.raises(LossInputError, match="dice_ce"):  # a dict output without 'out'
        loss({"aux": torch.randn(2, 3, 8, 8)}, {"label": torch.zeros(2, 8, 8, dtype=torch.long)})
