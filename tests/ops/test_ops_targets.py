"""prepare_targets: names, options, channels, idempotence, spacing from meta."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from medseg.ops import parse_target, prepare_targets, target_key


def test_target_key_roundtrip():
    assert target_key("contour", kernel=3, iterations=6) == "contour"
    key = target_key("contour", kernel=2, iterations=1)
    assert key == "contour(iterations=1,kernel=2)"
    assert parse_target(key) == ("contour", {"kernel": 2, "iterations": 1})
    with pytest.raises(ValueError, match="unknown derived target"):
        parse_target("sdff")
    with pytest.raises(ValueError, match="unknown option"):
        parse_target("contour(kernal=2)")


def test_prepare_targets_multiclass_shapes_and_values():
    label = torch.zeros(2, 16, 16, dtype=torch.long)
    label[0, 3:9, 3:9] = 1
    label[1, 8:14, 2:12] = 2
    batch = prepare_targets({"label": label}, {"sdf", "contour", "contour(iterations=1,kernel=2)"}, 3)
    assert batch["sdf"].shape == (2, 2, 16, 16) and batch["contour"].shape == (2, 3, 16, 16)
    assert batch["contour(iterations=1,kernel=2)"].shape == (2, 3, 16, 16)
    m = (label[0] == 1).numpy()
    ref = ndi.distance_transform_edt(~m) * ~m - (ndi.distance_transform_edt(m) - 1) * m
    np.testing.assert_allclose(batch["sdf"][0, 0].numpy(), ref, atol=1e-5)
    assert (batch["sdf"][0, 1] == 0).all()  # class 2 absent from sample 0
    # already present: left untouched
    marker = torch.full((2, 2, 16, 16), 7.0)
    assert prepare_targets({"label": label, "sdf": marker}, {"sdf"}, 3)["sdf"] is marker


def test_prepare_targets_binary_and_meta_spacing():
    label = torch.zeros(1, 1, 6, 10, 12)
    label[0, 0, 1:4, 2:7, 3:9] = 1
    batch = {"label": label, "meta": [{"spacing": (3.0, 1.0, 0.5)}]}
    prepare_targets(batch, {"sdf(spacing=meta)", "contour", "dwce_weight"}, 1)
    m = label[0, 0].numpy() > 0
    sp = (3.0, 1.0, 0.5)
    ref = ndi.distance_transform_edt(~m, sampling=sp) * ~m - (ndi.distance_transform_edt(m, sampling=sp) - 1) * m
    np.testing.assert_allclose(batch["sdf(spacing=meta)"][0, 0].numpy(), ref, atol=1e-5)
    assert batch["contour"].shape == (1, 2, 6, 10, 12)
    assert batch["dwce_weight"].shape == (1, 1, 6, 10, 12) and torch.isfinite(batch["dwce_weight"]).all()
