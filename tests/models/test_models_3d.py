"""The 3-D networks of the CWCD comparison (``unet3d`` with BatchNorm, ``vnet``, ``unetr``, ``deeplabv3_3d``):
registry, forward and backward on a 32^3 volume with configurable channels, and the input-shape errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medseg.models import create_model

SMALL_UNETR = dict(img_size=32, feature_size=8, hidden_size=96, mlp_dim=192, num_heads=4)
# (name, kwargs, in_channels, input_divisor)
NETS = [
    ("unet3d", dict(norm="batch"), 2, 16),
    ("vnet", dict(), 3, 16),  # 3 channels: 16 % 3 != 0 needs our 1x1x1 stem in front of MONAI's V-Net
    ("unetr", SMALL_UNETR, 2, 16),
    ("deeplabv3_3d", dict(), 2, 8),
]


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: create_model(name, in_channels=cin, out_channels=4, **kw) for name, kw, cin, _ in NETS}


@pytest.mark.parametrize("name,kw,cin,divisor", NETS, ids=[n[0] for n in NETS])
def test_forward_backward_32(built: dict[str, nn.Module], name: str, kw: dict, cin: int, divisor: int) -> None:
    model = built[name].train()
    assert model.spatial_dims == 3 and model.input_divisor == divisor
    x = torch.randn(2, cin, 32, 32, 32)
    y = model(x)
    assert y.shape == (2, 4, 32, 32, 32)
    model.zero_grad()
    (y.float().square().mean()).backward()
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0, "no gradient reaches the first layer"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name,kw,cin,divisor", [n for n in NETS if n[0] != "unetr"],
                         ids=[n[0] for n in NETS if n[0] != "unetr"])
def test_odd_size_refused_naming_divisor(built: dict[str, nn.Module], name: str, kw: dict, cin: int,
                                         divisor: int) -> None:
    model = built[name].eval()
    with pytest.raises(ValueError, match=rf"divisible by (input_divisor=)?{divisor}"):
        model(torch.randn(1, cin, 32, 32 + divisor // 2, 32))


def test_unetr_takes_exactly_img_size(built: dict[str, nn.Module]) -> None:
    with pytest.raises(ValueError, match=r"img_size=\(32, 32, 32\).*input_divisor=16"):
        built["unetr"].eval()(torch.randn(1, 2, 48, 32, 32))
    with pytest.raises(ValueError, match="multiple of the 16"):
        create_model("unetr", img_size=40, **{k: v for k, v in SMALL_UNETR.items() if k != "img_size"})


def test_wrong_channels_and_4d_image_refused(built: dict[str, nn.Module]) -> None:
    with pytest.raises(ValueError, match="in_channels=2 but got 1"):
        built["deeplabv3_3d"].eval()(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="3-D network.*4-D image"):
        built["vnet"].eval()(torch.randn(1, 3, 4, 32, 32, 32))


def test_unet3d_paper_layout_with_batchnorm() -> None:
    """The paper's 3-D U-Net is ``unet3d`` with norm=batch: 16 base filters doubling over 4 poolings,
    conv -> BN -> ReLU (no duplicate model)."""
    model = create_model("unet3d", in_channels=2, out_channels=4, norm="batch")
    assert model.widths == [16, 32, 64, 128, 256]
    kinds = [type(m) for m in model.encoders[0]]
    assert kinds == [nn.Conv3d, nn.BatchNorm3d, nn.ReLU, nn.Conv3d, nn.BatchNorm3d, nn.ReLU]
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in model.modules())
    default = create_model("unet3d", out_channels=4)
    assert any(isinstance(m, nn.InstanceNorm3d) for m in default.modules())


def test_deeplabv3_3d_output_stride_and_norm() -> None:
    """Backbone output stride 8 (dilated last stage); instance norm selectable; a bad norm is named."""
    model = create_model("deeplabv3_3d", in_channels=1, out_channels=3, norm="instance").eval()
    feats = model.backbone(torch.randn(1, 1, 32, 32, 32))
    assert feats.shape[2:] == (4, 4, 4) and feats.shape[1] == 128
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.backbone.modules())
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        create_model("deeplabv3_3d", norm="layer")
