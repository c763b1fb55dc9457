"""Gradient checks (double precision), empty/full ground truth, bad input, composition, registry names."""
from __future__ import annotations

import pytest
import torch

from medseg.losses import create_loss, list_losses
from medseg.losses._common import LossInputError
from medseg.ops import prepare_targets

NAMES = ["structure", "dice", "bce", "ce", "focal", "tversky", "focal_tversky", "gdl", "dwce", "cedl",
         "boundary", "sdf_l2", "hausdorff", "mll_point", "mll", "cwce", "sdl", "cwcd", "iou"]
BINARY_ONLY = {"structure", "bce"}
MULTI_ONLY = {"ce"}


def test_registry_has_every_name():
    assert set(NAMES) | {"dice_bce", "dice_ce"} <= set(list_losses())


def make(name: str, k: int, dims: int, fill: str = "random", seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    spatial = (8, 8) if dims == 2 else (4, 8, 8)
    if k == 1:
        label = (torch.rand(2, 1, *spatial, generator=gen) > 0.5).to(dtype)
        label[:, :, :2] = 1
        label[:, :, -2:] = 0
        if fill != "random":
            label[:] = 0.0 if fill == "empty" else 1.0
    else:
        label = torch.randint(0, k, (2, *spatial), generator=gen)
        if fill != "random":
            label[:] = 0 if fill == "empty" else k - 1
    logits = torch.randn(2, k, *spatial, generator=gen, dtype=dtype)
    kwargs = {"num_points": 16} if name in ("mll_point", "mll") else {}
    if name == "mll":
        kwargs["coarse_key"] = None
    loss = create_loss(name, **kwargs)
    batch = prepare_targets({"label": label}, getattr(loss, "requires", set()), k)
    return loss, logits, batch


def supported(name: str, k: int) -> bool:
    return not (name in BINARY_ONLY and k > 1) and not (name in MULTI_ONLY and k == 1)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "hausdorff"])
def test_gradcheck(name):
    for k, dims in [(1, 2), (3, 2)]:
        if not supported(name, k):
            continue
        loss, logits, batch = make(name, k, dims, dtype=torch.float64)
        logits = (logits[..., :4, :4] * 0.5).requires_grad_()
        batch = {key: v[..., :4, :4] for key, v in batch.items()}
        if name in ("mll_point", "mll"):
            torch.manual_seed(0)  # the sampled points must not change between evaluations

            def f(z):
                torch.manual_seed(0)
                return loss(z, batch)["loss"]
        else:
            def f(z):
                return loss(z, batch)["loss"]
        assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-5, fast_mode=True), f"{name} k={k}"


def test_gradcheck_hausdorff_fixed_distances():
    loss, logits, batch = make("hausdorff", 1, 2)
    logits = logits.requires_grad_()
    # distances depend on the thresholded prediction only; small eps keeps the threshold fixed
    assert torch.autograd.gradcheck(lambda z: loss(z, batch)["loss"], (logits,), eps=1e-7, atol=1e-4)


@pytest.mark.parametrize("name,k,dims", [(n, k, d) for n in NAMES for k, d in [(1, 2), (3, 3)] if supported(n, k)])
@pytest.mark.parametrize("fill", ["empty", "full"])
def test_finite_on_empty_and_full(name, fill, k, dims):
    loss, logits, batch = make(name, k, dims, fill, dtype=torch.float32)
    logits.requires_grad_()
    out = loss(logits, batch)
    out["loss"].backward()
    assert all(torch.isfinite(v).all() for v in out.values())
    assert torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------- bad input
def test_wrong_channels_for_label_classes():
    label = torch.randint(0, 4, (2, 8, 8))
    with pytest.raises(LossInputError, match=r"loss 'dice'.*outside \[0, 3\)"):
        create_loss("dice")(torch.randn(2, 3, 8, 8), {"label": label})
    with pytest.raises(LossInputError, match=r"loss 'ce'.*\[-1\]"):
        create_loss("ce")(torch.randn(2, 4, 8, 8), {"label": label - 1})


def test_float_label_given_to_ce():
    with pytest.raises(LossInputError, match=r"loss 'ce'.*int64"):
        create_loss("ce")(torch.randn(2, 3, 8, 8), {"label": torch.rand(2, 1, 8, 8)})


def test_binary_shape_mismatch_and_multiclass_structure():
    with pytest.raises(LossInputError, match=r"loss 'bce'.*\(2, 1, 8, 8\)"):
        create_loss("bce")(torch.randn(2, 1, 8, 8), {"label": torch.rand(2, 1, 4, 4).round()})
    with pytest.raises(LossInputError, match="loss 'structure' is binary"):
        create_loss("structure")(torch.randn(2, 3, 8, 8), {"label": torch.randint(0, 3, (2, 8, 8))})
    with pytest.raises(LossInputError, match=r"values must lie in \[0, 1\]"):
        create_loss("dice")(torch.randn(2, 1, 8, 8), {"label": torch.full((2, 1, 8, 8), 2.0)})


@pytest.mark.parametrize("name,key", [("boundary", "sdf"), ("sdf_l2", "sdf"), ("cwce", "contour"),
                                      ("sdl", "contour"), ("dwce", "dwce_weight")])
def test_missing_derived_target(name, key):
    with pytest.raises(LossInputError, match=rf"loss '{name}' needs batch\['{key}'\].*prepare_targets"):
        create_loss(name)(torch.randn(2, 3, 8, 8), {"label": torch.randint(0, 3, (2, 8, 8))})


def test_unknown_option_and_name():
    with pytest.raises(TypeError, match="Did you mean 'gamma'"):
        create_loss("focal", gama=2)
    with pytest.raises(KeyError, match="Did you mean 'dice'"):
        create_loss("dicee")


# ----------------------------------------------------------------------------------- composition
def test_weighted_sum_logs_terms_schedules_and_requires():
    spec = [
        {"name": "dice", "weight": 1.0, "schedule": {"start": 1.0, "step": -0.01, "min": 0.1}},
        {"name": "boundary", "weight": 2.0, "as": "bd", "schedule": {"from_epoch": 2}},
        {"name": "cwcd", "kwargs": {"compat": True}},
    ]
    loss = create_loss(spec, num_classes=3)
    assert loss.requires == {"sdf", "contour(iterations=1,kernel=2)"}
    label = torch.randint(0, 3, (2, 8, 8))
    batch = prepare_targets({"label": label}, loss.requires, 3)
    logits = torch.randn(2, 3, 8, 8)
    parts = {"dice": create_loss("dice")(logits, batch)["loss"],
             "bd": create_loss("boundary")(logits, batch)["loss"],
             "cwcd": create_loss("cwcd", compat=True)(logits, batch)["loss"]}
    for epoch, (wd, wb) in {0: (1.0, 0.0), 5: (0.95, 2.0)}.items():
        loss.set_epoch(epoch)
        out = loss(logits, batch)
        assert {"dice", "bd", "cwcd", "cwcd.cwce", "cwcd.sdl"} <= set(out)
        ref = wd * parts["dice"] + wb * parts["bd"] + parts["cwcd"]
        assert torch.allclose(out["loss"], ref, atol=1e-6)
    with pytest.raises(ValueError, match="unknown key"):
        create_loss([{"name": "dice", "wieght": 2}])
    with pytest.raises(ValueError, match="appears twice"):
        create_loss([{"name": "dice"}, {"name": "dice"}])


def test_bootstrap_names_still_work():
    label = (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert set(create_loss("auto", num_classes=1)(torch.randn(2, 1, 8, 8), {"label": label})) == {"loss", "dice", "bce"}
    assert "ce" in create_loss("dice_ce")(torch.randn(2, 3, 8, 8), {"label": torch.randint(0, 3, (2, 8, 8))})


def test_reduction_none_shapes():
    label = torch.randint(0, 3, (2, 8, 8))
    logits = torch.randn(2, 3, 8, 8)
    assert create_loss("dice", reduction="none")(logits, {"label": label})["loss"].shape == (2, 2)
    assert create_loss("ce", reduction="none")(logits, {"label": label})["loss"].shape == (2, 8, 8)
    assert create_loss("focal", reduction="none")(logits, {"label": label})["loss"].shape == (2, 8, 8)
    with pytest.raises(ValueError, match="reduction must be one of"):
        create_loss("dice", reduction="avg")
