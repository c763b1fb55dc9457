"""IFE networks: the spec's channel arithmetic (methods.md §2.4), forward/backward at batch 1 and 8, short
training on synthetic data, encoder structure and local-weights loading."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import CheckpointError
from medseg.models import create_model
from medseg.models.nnunet import plan_unet
from medseg.models.unet import UNet
from medseg.modules import IFE


def discs(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one bright textured disc each and its mask."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.randint(size // 4, 3 * size // 4, (n, 2), generator=g)
    r = torch.randint(size // 8, size // 4, (n, 1, 1), generator=g)
    mask = (((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) < r ** 2).float()[:, None]
    img = mask.repeat(1, 3, 1, 1) + 0.3 * torch.randn(n, 3, size, size, generator=g)
    return img, mask


def total_loss(out, mask: torch.Tensor) -> torch.Tensor:
    maps = [out["out"], *out["aux"]] if isinstance(out, dict) else [out]
    return sum(F.binary_cross_entropy_with_logits(m, mask) for m in maps)


def train_drop(make, size: int, steps: int, batch: int = 4, lr: float = 1e-2) -> tuple[float, float]:
    """Seeded init and data; ``make()`` builds the model. Returns the first and the best of the last 3 losses."""
    torch.manual_seed(0)
    model = make()
    img, mask = discs(batch, size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = total_loss(model(img), mask)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], min(losses[-3:])


def fwd_bwd(model: nn.Module, batch: int, size: int):
    model.train()
    img, mask = discs(batch, size, seed=batch)
    out = model(img)
    main = out["out"] if isinstance(out, dict) else out
    assert main.shape == (batch, 1, size, size)
    total_loss(out, mask).backward()
    ife = [m for m in model.modules() if isinstance(m, IFE)]
    assert ife, "no IFE module in the network"
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return out


# ------------------------------------------------------------------------------------------- UNet
@pytest.mark.parametrize("r0,r1", [(0.75, 0.5), (0.5, 0.5), (0.25, 1.0), (1.0, 0.25), (0.5, 0.75)])
def test_unet_decoder_widths_follow_the_spec(r0, r1):
    m = create_model("unet", ife="curvature", ife_ratio=(r0, r1))
    widths = [d[0].in_channels for d in m.decoders]  # decoders run deep -> shallow: conv6..conv9
    assert widths == [1024, int(256 * (2 + r1)), int(128 * (2 + r0)), 128]
    if (r0, r1) == (0.75, 0.5):
        assert widths[1:3] == [640, 352]


def test_unet_defaults_unchanged():
    plain = create_model("unet", base=8)
    assert type(plain) is UNet and not any(isinstance(m, IFE) for m in plain.modules())
    assert [d[0].in_channels for d in plain.decoders] == [128, 64, 32, 16]
    assert type(create_model("unet3d", base=4)) is UNet


@pytest.mark.parametrize("score", ["curvature", "entropy"])
@pytest.mark.parametrize("batch", [1, 8])
def test_unet_ife_forward_backward(score, batch):
    fwd_bwd(create_model("unet", base=8, ife=score, ife_ratio=(0.75, 0.5)), batch, 32)


def test_unet3d_ife_forward():
    m = create_model("unet3d", in_channels=1, out_channels=2, base=4, depth=3, ife="entropy")
    assert m(torch.randn(2, 1, 8, 16, 16)).shape == (2, 2, 8, 16, 16)


def test_unet_variants_train_on_synthetic_data():
    for ife in (None, "curvature", "entropy"):
        first, last = train_drop(lambda: create_model("unet", base=8, depth=3, ife=ife, ife_ratio=(0.75, 0.5)), 32, 15)
        assert last < 0.65 * first, (ife, first, last)


def test_unet_ife_errors_name_the_point():
    with pytest.raises(ValueError, match=r"unet.skip1.*0 of the 16 channels"):
        create_model("unet", base=8, ife="curvature", ife_ratio=(0.05, 0.5))
    with pytest.raises(ValueError, match="no skip connection"):
        create_model("unet", base=8, depth=2, ife="curvature", ife_levels=(1, 2))
    with pytest.raises(ValueError, match=r"unet.skip2.*at least 3x3"):
        create_model("unet", base=8, depth=3, ife="curvature")(torch.randn(2, 3, 8, 8))


# -------------------------------------------------------------------------------------- DeepLabV3+
def test_deeplab_resnet101_channels_dilations_and_ife():
    m = create_model("deeplabv3plus", ife="curvature", ife_ratio=(0.75, 0.75))
    assert m.decoder_in_channels == 532  # int(48 * 1.75 + 256 * 1.75)
    assert [b.conv2.dilation for b in m.encoder.layer4] == [(2, 2), (4, 4), (8, 8)]
    assert m.encoder.feature_info.reduction() == [4, 16]
    assert sum(b.conv2.out_channels for b in m.encoder.layer3) == 23 * 256  # ResNet-101: 23 blocks in layer3
    fwd_bwd(m, 2, 64)
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("kw,width", [({}, 304), ({"ife": "entropy", "ife_ratio": (0.5, 0.25)}, 48 + 24 + 256 + 64),
                                      ({"ife": "curvature", "ife_aspp": False}, 48 + 36 + 256)])
def test_deeplab_decoder_width(kw, width):
    assert create_model("deeplabv3plus", encoder="resnet18", **kw).decoder_in_channels == width


@pytest.mark.parametrize("batch", [1, 8])
def test_deeplab_ife_small_encoder_batch_1_and_8(batch):
    m = create_model("deeplabv3plus", encoder="resnet10t", ife="entropy", ife_aspp_pre_dropout=batch == 1)
    fwd_bwd(m, batch, 32)


def test_deeplab_trains_on_synthetic_data():
    make = lambda: create_model("deeplabv3plus", encoder="resnet10t", ife="curvature", ife_aspp=False)  # noqa: E731
    first, last = train_drop(make, 32, 6, batch=4, lr=1e-2)
    assert last < 0.7 * first


# ------------------------------------------------------------------------------------------ SINetV2
def test_res2net50d_is_res2net50_v1b():
    """methods.md §1.2: deep stem 32-32-64, avg-pool projection shortcuts, 26w x 4 scales, 3/4/6/3 blocks."""
    m = create_model("sinet_v2")
    enc = m.encoder
    stem = [c for c in enc.conv1 if isinstance(c, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in stem] == [
        (3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    pool = enc.layer2[0].downsample[0]
    assert isinstance(pool, nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
    assert isinstance(enc.layer1[0].pool, nn.AvgPool2d) and enc.layer1[0].width == 26 and enc.layer1[0].scale == 4
    assert [len(enc.layer1), len(enc.layer2), len(enc.layer3), len(enc.layer4)] == [3, 4, 6, 3]
    assert enc.feature_info.channels() == [512, 1024, 2048] and enc.feature_info.reduction() == [8, 16, 32]


def test_sinet_ife_channels_and_forward_backward():
    m = create_model("sinet_v2", ife="curvature", ife_ratio=(0.75, 0.75, 1.0))
    assert [rs.first_conv.in_channels for rs in (m.rs3, m.rs4, m.rs5)] == [56, 56, 64]
    assert create_model("sinet_v2", encoder="resnet18").rs3.first_conv is None
    out = fwd_bwd(m, 1, 96)
    assert set(out) == {"out", "aux"} and len(out["aux"]) == 3
    assert all(a.shape == (1, 1, 96, 96) for a in out["aux"])


@pytest.mark.parametrize("batch", [1, 8])
def test_sinet_entropy_small_encoder_batch_1_and_8(batch):
    fwd_bwd(create_model("sinet_v2", encoder="resnet10t", ife="entropy"), batch, 64 if batch == 1 else 32)


def test_sinet_trains_on_synthetic_data():
    first, last = train_drop(lambda: create_model("sinet_v2", encoder="resnet10t", ife="entropy"), 32, 5, batch=4,
                             lr=3e-3)
    assert last < 0.7 * first


# ------------------------------------------------------------------------------------- nnU-Net-style
def test_nnunet_plan_matches_nnunet_rule():
    # nnU-Net's published 3d_fullres plan for MSD Prostate (patch 20x320x256, spacing 3.6x0.62x0.62)
    p = plan_unet((20, 320, 256), (3.6, 0.62, 0.62))
    assert p.strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert p.kernels == [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert p.widths == [32, 64, 128, 256, 320, 320, 320]
    p2 = plan_unet((512, 512))  # 2-D: pool down to 4x4, widths capped at 512
    assert len(p2.strides) == 8 and p2.widths[-1] == 512
    with pytest.raises(ValueError, match="too small"):
        plan_unet((6, 6))


def test_nnunet_ife_widths_deep_supervision_and_training():
    m = create_model("nnunet", in_channels=3, patch_size=(32, 32), base=8, ife="curvature", ife_ratio=(0.75, 0.5))
    # widths 8,16,32,64; stage 2 = 16 ch (+12), stage 3 = 32 ch (+16); decoders run deep -> shallow
    assert [d.conv1.conv.in_channels for d in m.decoders] == [32 + 16 + 32, 16 + 12 + 16, 16]
    fwd_bwd(m, 8, 32)
    fwd_bwd(m, 1, 32)
    out = m(torch.randn(2, 3, 32, 32))
    assert len(out["aux"]) == 1 and len(m.deep_supervision_weights) == 2
    m.eval()
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    first, last = train_drop(
        lambda: create_model("nnunet", in_channels=3, patch_size=(32, 32), base=8, ife="entropy"), 32, 12)
    assert last < 0.6 * first
    with pytest.raises(ValueError, match=r"divisible by \(8, 8\).*\(40, 40\)"):
        m(torch.randn(1, 3, 36, 36))


def test_nnunet_3d_ife():
    m = create_model("nnunet", patch_size=(8, 32, 32), spacing=(3.0, 1.0, 1.0), base=4, ife="entropy")
    out = m(torch.randn(1, 1, 8, 32, 32))
    assert out["out"].shape == (1, 1, 8, 32, 32)


# -------------------------------------------------------------------------------- pretrained weights
def test_local_pretrained_weights_load_and_errors(tmp_path):
    import timm

    full = timm.create_model("resnet18")  # a classifier checkpoint: fc.* is ignored
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = create_model("deeplabv3plus", encoder="resnet18", pretrained=str(path))
    torch.testing.assert_close(m.encoder.layer1[0].conv1.weight, full.layer1[0].conv1.weight)
    sd = full.state_dict()
    del sd["layer2.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer2.0.conv1.weight"):
        create_model("sinet_v2", encoder="resnet18", pretrained=str(path))
    with pytest.raises(CheckpointError, match="not found"):
        create_model("sinet_v2", encoder="resnet18", pretrained=str(tmp_path / "nope.pth"))


def test_pretrained_true_offline_asks_for_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"pretrained='path/to/weights.pth'"):
        create_model("sinet_v2", encoder="resnet18", pretrained=True)
