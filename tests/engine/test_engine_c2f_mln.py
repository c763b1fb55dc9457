"""MLN in the coarse-to-fine loop: the `mln` fine network and the `mln` loss (Eq. 13) through one training step
before and after the switch, the branch switch driven by the trainer's epoch, and Algorithm 1 validation on the fusion
output (what `medseg c2f train mll/phantom_mln` runs, on one small unit)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.engine import c2f_train as ct


def mln_recipe(**fine_kwargs) -> ct.C2FRecipe:
    return ct.validate_recipe({
        "name": "t", "data": {"root": "x", "window": [-100, 240], "views": ["axial"]},
        "fine": {"name": "mln", "kwargs": {"num_points": 16, "branches_from_epoch": 2, **fine_kwargs}},
        "loss": {"name": "mln", "kwargs": {"coarse_key": "coarse", "beta": {"from_epoch": 2},
                                          "gamma": {"from_epoch": 2}, "clip": 5.0}},
        "stages": {"s": 1, "j_from": 2}})


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    rec = mln_recipe()
    return rec, ct.build_nets(rec), ct.create_loss(rec.loss.model_dump(), num_classes=1)


def unit() -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.zeros(1, 3, 24, 20)
    label[..., 8:16, 6:14] = 1
    return torch.rand(1, 3, 24, 20) + 0.5 * label, label


@pytest.mark.parametrize("epoch, stage", [(1, "I"), (2, "J")])
def test_mln_step_has_every_eq13_term_once_the_branches_are_on(nets, epoch, stage):
    rec, n, loss_fn = nets
    n.set_epoch(epoch)
    loss_fn.set_epoch(epoch)
    assert ct.stage_of(epoch, rec.stages) == stage and n.fine.branches_on == (epoch >= 2)
    image, label = unit()
    n.train(True)
    terms = ct.train_step(n, loss_fn, image, label, stage, 2, None)
    assert torch.isfinite(terms["loss"])
    for key in ("region", "region_coarse", "boundary", "sdf_l2"):
        assert terms[key] > 0, key
    branches = epoch >= 2
    assert (terms["pixel"] > 0) == branches and (terms["fusion"] > 0) == branches
    for p in n.parameters():
        p.grad = None
    terms["loss"].backward()
    fused = n.fine.fusion.out[-1].weight.grad
    assert (fused is not None and fused.abs().sum() > 0) == branches
    assert n.fine.pixel.predict.weight.grad is not None or not branches
    assert n.fine.boundary_head[-1].weight.grad.abs().sum() > 0  # the boundary branch learns from the start


def test_validation_runs_algorithm1_on_the_fusion_output(nets):
    """Once the branches are on, Algorithm 1 (eval mode) reads the fine model's `out`, which is the fusion."""
    rec, n, _ = nets
    n.set_epoch(2)
    n.train(False)
    image = unit()[0][0].permute(1, 2, 0).numpy()  # H x W x 3 slices: a 3-slice volume along axis 2
    with torch.no_grad():
        out = n.fine(torch.rand(1, 6, 12, 12))
    assert torch.equal(out["out"], out["fusion"])
    vol = ct.Volume("v", np.ascontiguousarray(image), np.zeros(image.shape, np.uint8), 2)
    dice = ct.validate_view(n, [vol], rounds=1, margin=2)
    assert np.isfinite(dice)
