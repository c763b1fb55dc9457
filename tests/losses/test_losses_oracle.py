"""Losses against MONAI (oracle) under matching options, 2-D and 3-D, binary and multi-class."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai import losses as ML

from medseg.losses import create_loss

torch.manual_seed(0)


def data(k: int, dims: int, b: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    spatial = (9, 10) if dims == 2 else (5, 6, 7)
    logits = torch.randn(b, max(k, 1), *spatial, generator=gen, dtype=torch.float64) * 2
    if k == 1:
        label = (torch.rand(b, 1, *spatial, generator=gen) > 0.6).double()
        return logits, label, label
    label = torch.randint(0, k, (b, *spatial), generator=gen)
    label[0][label[0] == k - 1] = 0  # one class absent from one sample
    return logits, label, F.one_hot(label, k).movedim(-1, 1).double()


def ours(name: str, logits, label, **kw):
    return create_loss(name, **kw)(logits, {"label": label})["loss"]


CASES = [(1, 2), (1, 3), (4, 2), (4, 3)]


@pytest.mark.parametrize("k,dims", CASES)
@pytest.mark.parametrize("batch", [False, True])
def test_dice_equals_monai(k, dims, batch):
    logits, label, onehot = data(k, dims)
    act = {"sigmoid": True} if k == 1 else {"softmax": True}
    ref = ML.DiceLoss(include_background=k == 1, batch=batch, **act)(logits, onehot)
    assert torch.allclose(ours("dice", logits, label, batch=batch), ref, atol=1e-5)


@pytest.mark.parametrize("k,dims", CASES)
def test_iou_equals_monai_jaccard(k, dims):
    logits, label, onehot = data(k, dims)
    act = {"sigmoid": True} if k == 1 else {"softmax": True}
    ref = ML.DiceLoss(include_background=k == 1, jaccard=True, smooth_nr=2e-5, smooth_dr=2e-5, **act)(logits, onehot)
    assert torch.allclose(ours("iou", logits, label), ref, atol=1e-5)


@pytest.mark.parametrize("k,dims", CASES)
def test_tversky_and_focal_tversky_equal_monai(k, dims):
    logits, label, onehot = data(k, dims)
    act = {"sigmoid": True} if k == 1 else {"softmax": True}
    mon = ML.TverskyLoss(include_background=k == 1, alpha=0.3, beta=0.7, reduction="none", **act)
    per = mon(logits, onehot)
    assert torch.allclose(ours("tversky", logits, label), per.mean(), atol=1e-5)
    assert torch.allclose(ours("focal_tversky", logits, label, gamma=0.75), (per**0.75).mean(), atol=1e-5)


@pytest.mark.parametrize("k,dims", [(4, 2), (4, 3), (1, 2)])
@pytest.mark.parametrize("batch", [True, False])
def test_gdl_equals_monai(k, dims, batch):
    logits, label, onehot = data(k, dims)
    act = {"sigmoid": True} if k == 1 else {"softmax": True}
    ref = ML.GeneralizedDiceLoss(include_background=k == 1, batch=batch, **act)(logits, onehot)
    assert torch.allclose(ours("gdl", logits, label, batch=batch), ref, atol=1e-5)


def test_gdl_absent_class_gets_largest_present_weight():
    logits, label, _ = data(4, 2)
    label[label == 3] = 0  # class 3 absent from the whole batch
    loss = create_loss("gdl")
    ts = F.one_hot(label, 4).movedim(-1, 1)[:, 1:].sum([0, 2, 3]).double()
    w = loss.weights(ts)
    assert w[2] == w[:2].max() and torch.isfinite(w).all()


@pytest.mark.parametrize("k,dims", CASES)
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_equals_monai(k, dims, gamma):
    logits, label, onehot = data(k, dims)
    mon = ML.FocalLoss(gamma=gamma, use_softmax=k > 1)(logits, onehot)
    assert torch.allclose(ours("focal", logits, label, gamma=gamma), mon.double() * max(k, 1), atol=1e-5)
    if k == 1:
        mon = ML.FocalLoss(gamma=gamma, alpha=0.25)(logits, onehot)
        assert torch.allclose(ours("focal", logits, label, gamma=gamma, alpha=0.25), mon.double(), atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_cedl_per_class_equals_monai_dicece(dims):
    logits, label, _ = data(4, dims)
    ref = ML.DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-3,
                        smooth_dr=1e-3)(logits, label.unsqueeze(1))
    assert torch.allclose(ours("cedl", logits, label, dice="per_class"), ref, atol=1e-5)


def test_cedl_pooled_hand_computed():
    logits, label, onehot = data(3, 2)
    p = logits.softmax(1)[:, 1:]
    t = onehot[:, 1:]
    dice = 1 - (2 * (p * t).sum() + 1e-3) / (p.sum() + t.sum() + 1e-3)
    ref = F.cross_entropy(logits, label) + dice
    assert torch.allclose(ours("cedl", logits, label), ref, atol=1e-6)


def test_ce_and_bce_equal_torch():
    logits, label, _ = data(4, 2)
    label[0, 0, :3] = 100
    w = [0.5, 1.0, 2.0, 3.0]
    ref = F.cross_entropy(logits, label, weight=torch.tensor(w, dtype=torch.float64), ignore_index=100)
    assert torch.allclose(ours("ce", logits, label, weight=w, ignore_index=100), ref)
    logits, label, _ = data(1, 3)
    assert torch.allclose(ours("bce", logits, label), F.binary_cross_entropy_with_logits(logits, label))


@pytest.mark.parametrize("k,dims", [(1, 2), (4, 3)])
def test_hausdorff_equals_monai(k, dims):
    logits, label, onehot = data(k, dims)
    act = {"sigmoid": True} if k == 1 else {"softmax": True}
    ref = ML.HausdorffDTLoss(include_background=k == 1, **act)(logits.float(), onehot.float())
    assert torch.allclose(ours("hausdorff", logits.float(), label.float() if k == 1 else label), ref, atol=1e-5)


def test_extreme_logits_are_finite():
    logits, label, _ = data(4, 2)
    for name in ["ce", "focal", "cedl", "dice", "gdl", "tversky", "focal_tversky", "iou"]:
        assert torch.isfinite(ours(name, logits * 1e4, label))
    logits, label, _ = data(1, 2)
    for name in ["bce", "focal", "structure", "dice"]:
        assert torch.isfinite(ours(name, logits * 1e4, label))
