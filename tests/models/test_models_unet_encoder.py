"""UNet with a timm encoder, ``encoder="tu-<timm name>"`` (issue 12 item 1), as segmentation_models_pytorch's
``tu-`` encoders: the U-Net decoder on the encoder's feature widths and reductions (timm ``feature_info``).

Widths below are timm's ``test_efficientnet`` feature channels (16, 24, 32, 48, 64 at strides 2..32), written
out by hand; the decoder widths follow ``skip + floor(r skip) + upsampled`` (docs/models.md, docs/ife.md).
"""
from __future__ import annotations

import pytest
import timm
import torch

from medseg.engine.optim import split_encoder_params
from medseg.errors import CheckpointError
from medseg.models import create_model

TINY = "tu-test_efficientnet"  # 82 k parameters


def net(**kw):
    torch.manual_seed(0)
    return create_model("unet", encoder=TINY, out_channels=2, **kw)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shapes_and_decoder_on_the_encoder_widths(in_channels):
    m = net(in_channels=in_channels).eval()
    assert m.widths == [16, 24, 32, 48, 64] and m.reductions == [2, 4, 8, 16, 32] and m.input_divisor == 32
    assert m.encoder.conv_stem.in_channels == in_channels
    assert [d[0].in_channels for d in m.decoders] == [96, 64, 48, 32]  # 2 x (48, 32, 24, 16)
    assert [(u.kernel_size, u.stride) for u in m.ups] == [((2, 2), (2, 2))] * 4
    with torch.no_grad():
        out = m(torch.randn(2, in_channels, 64, 96))
    assert out.shape == (2, 2, 64, 96) and torch.isfinite(out).all()


def test_ife_on_the_encoder_skips_widens_the_decoder():
    m = net(ife="curvature", ife_ratio=(0.75, 0.5), ife_levels=(1, 2))
    # skip 1: 24 ch + floor(0.75 * 24) = 18; skip 2: 32 ch + 16; each joined by the upsampled C channels
    assert [d[0].in_channels for d in m.decoders] == [96, 32 + 16 + 32, 24 + 18 + 24, 32]
    assert [p.name for p in m.ife.values()] == ["unet.skip1", "unet.skip2"]
    m.train()
    out = m(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (2, 2, 64, 64)
    assert [n for n, p in m.named_parameters() if p.grad is None] == []


def test_a_second_timm_family_and_uneven_widths():
    m = create_model("unet", encoder="tu-test_resnet", depth=3, in_channels=1)
    assert m.widths == [32, 32, 48, 192] and [d[0].in_channels for d in m.decoders] == [96, 64, 64]
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_plain_unet_is_unchanged_by_default():
    m = create_model("unet", base=4, depth=2)
    assert m.encoder is None and [k.split(".")[0] for k in m.state_dict()][:1] == ["encoders"]
    assert m.reductions == [1, 2, 4] and m.input_divisor == 4


def test_encoder_parameters_are_named_encoder_for_the_optimiser():
    m = net()
    enc, rest = split_encoder_params(m)
    assert len(enc) == len(list(m.encoder.parameters())) and rest


def test_odd_size_is_rejected_with_the_fix_and_export_matches():
    m = net().eval()
    with pytest.raises(ValueError, match=r"\(40, 40\) must be divisible by 32; pad or resize to \(64, 64\)"):
        m(torch.randn(1, 3, 40, 40))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    got = torch.export.export(m, (x,), strict=False).module()(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder,match", [
    ("tu-resnet81", r"unet: encoder='tu-resnet81': unknown timm encoder 'resnet81'\. Did you mean .*resnet18"),
    ("resnet18", r"unet: encoder='resnet18' is not supported; use 'tu-<timm model name>'"),
])
def test_a_bad_encoder_name_names_the_key_and_the_nearest_names(encoder, match):
    with pytest.raises(ValueError, match=match):
        create_model("unet", encoder=encoder)


def test_encoder_conflicts_are_named():
    with pytest.raises(ValueError, match=r"unet: encoder='tu-test_resnet'.*cannot provide features"):
        create_model("unet", encoder="tu-test_resnet", depth=7)
    with pytest.raises(ValueError, match=r"encoder='tu-test_resnet' needs a 2-D UNet without widths="):
        create_model("unet", encoder="tu-test_resnet", widths=(4, 8))
    with pytest.raises(ValueError, match=r"unet: ife_levels entry 4 has no skip connection; valid entries are "
                                         r"0\.\.3"):
        net(ife="entropy", ife_levels=(4,), ife_ratio=(0.5,))


def test_local_weights_load_strictly_and_adapt_a_grey_first_conv(tmp_path):
    torch.manual_seed(1)
    full = timm.create_model("test_efficientnet")  # a classifier checkpoint: its head is dropped
    path = tmp_path / "w.pth"
    torch.save(full.state_dict(), path)
    m = net(in_channels=1, pretrained=str(path))
    oracle = full.conv_stem.weight.sum(dim=1, keepdim=True)  # timm's adapt_input_conv for one channel
    torch.testing.assert_close(m.encoder.conv_stem.weight, oracle)
    ref = full.state_dict()
    rest = {k: v for k, v in m.encoder.state_dict().items() if k != "conv_stem.weight"}
    assert rest and all(torch.equal(v, ref[k]) for k, v in rest.items())  # every other key loaded as is
    torch.save({**full.state_dict(), "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): extra.weight"):
        net(pretrained=str(path))


def test_the_encoder_comes_from_the_shared_builder(monkeypatch):
    import medseg.modules.encoders as enc

    calls = []

    def spy(name, *a, **k):
        calls.append((name, tuple(a[0])))
        return enc.timm_encoder(name, *a, **k)

    monkeypatch.setattr("medseg.models.unet.timm_encoder", spy)
    create_model("unet", encoder="tu-test_resnet", depth=2)
    assert calls == [("test_resnet", (0, 1, 2))]


def test_channels_last_and_bf16_autocast_match_float32():
    m = net(ife="entropy").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x)
        last = m.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
    torch.testing.assert_close(last, ref, atol=1e-4 * max(1.0, float(ref.abs().max())), rtol=1e-4)
    assert torch.isfinite(low).all() and float((low.float() - ref).norm() / ref.norm()) < 0.05


def test_strides_the_decoder_cannot_follow_are_an_error(monkeypatch):
    import medseg.modules.encoders as enc

    def odd_strides(name, *a, **k):
        encoder = enc.timm_encoder(name, *a, **k)
        encoder.feature_info.reduction = lambda: [2, 4, 10]  # 10 is not a multiple of 4
        return encoder

    monkeypatch.setattr("medseg.models.unet.timm_encoder", odd_strides)
    with pytest.raises(ValueError, match=r"unet: encoder='tu-test_resnet' gives features at strides \[2, 4, 10\]"):
        create_model("unet", encoder="tu-test_resnet", depth=2)
