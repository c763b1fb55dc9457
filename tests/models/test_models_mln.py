"""MLN (``create_model("mln")``): branch shapes, point selection, block scatter, MLSG arithmetic, switches."""
from __future__ import annotations

import pytest
import torch

from medseg.errors import UserError
from medseg.models import create_model
from medseg.models.mln import MLSGFusion, grid_points, scatter_blocks

H, W = 32, 28  # stride-4 grid 8 x 7


@pytest.fixture(scope="module", params=[("transformer", "mlsg"), ("mlp", "conv")], ids=["paper", "table9"])
def model(request):
    torch.manual_seed(0)
    pixel_head, fusion = request.param
    return create_model("mln", pixel_head=pixel_head, fusion=fusion, num_points=20)


def test_branch_shapes_and_channel_arithmetic(model):
    x = torch.randn(2, 6, H, W)
    model.train().enable_branches(False)
    off = model(x)
    assert set(off) == {"out", "logits", "region", "region_logits", "boundary", "boundary_logits"}
    assert off["logits"].shape == off["boundary_logits"].shape == (2, 3, 8, 7)
    assert off["out"].shape == off["region"].shape == off["boundary"].shape == (2, 3, H, W)
    assert torch.equal(off["out"], off["region"])

    model.enable_branches(True)
    on = model(x)
    n = min(20, 8 * 7 // 2)
    assert on["pixel_logits"].shape == (2, 3, n)
    assert on["pixel_coords"].shape == (2, n, 2) and on["pixel_index"].shape == (2, n)
    assert on["fusion"].shape == (2, 3, H, W) and on["out"] is on["fusion"]
    assert on["logits"].shape == (2, 3, 8, 7)  # the region logits at stride 4 stay the "logits"
    assert model.pixel.in_channels == 64 + 3  # layer-1 features + region logits at the point
    first = model.fusion.out[0]
    if model.pixel.kind == "transformer":
        assert model.pixel.embed.out_features == 256 and model.pixel.encoder.attn.num_heads == 8
        assert model.pixel.predict.in_features == 256 and model.pixel.predict.out_features == 3
        assert first.in_channels == 512 and first.kernel_size == (1, 1)  # [R·A_b, R·A_p]
        assert model.fusion.weight_b.groups == 256 and model.fusion.weight_b.kernel_size == (1, 1)
    else:
        assert len(model.pixel.mlps) == 4
        assert [m.in_features for m in model.pixel.mlps] == [67, 259, 259, 259]
        convs = [m for m in model.fusion.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
            (768, 256, (3, 3)), (256, 256, (3, 3)), (256, 256, (3, 3)), (256, 3, (3, 3))]


def test_forward_backward_reaches_the_active_branches(model):
    x = torch.randn(2, 6, 16, 16)
    model.zero_grad(set_to_none=True)
    model.train().enable_branches(False)
    out = model(x)
    (out["out"].sum() + out["boundary"].sum()).backward()
    assert all(p.grad is None for name in ("pixel", "fusion") for p in getattr(model, name).parameters())
    assert all(p.grad is not None for p in model.boundary_head.parameters())

    model.zero_grad(set_to_none=True)
    model.enable_branches(True)
    out = model(x)
    out["fusion"].sum().backward()  # the fusion alone must reach R, B and the pixel features
    pixel = [p for n, p in model.pixel.named_parameters() if not n.startswith("predict")]
    for params in (pixel, list(model.fusion.parameters()), list(model.boundary_aspp.parameters()),
                   list(model.aspp.parameters()), [model.backbone.layer1[0].conv1.weight]):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    model.zero_grad(set_to_none=True)
    model(x)["pixel_logits"].sum().backward()
    assert all(p.grad is not None for p in model.pixel.parameters())


def test_set_epoch_switches_branches_at_12():
    m = create_model("mln", num_points=4)
    for epoch, on in ((0, False), (11, False), (12, True), (20, True)):
        m.set_epoch(epoch)
        assert m.branches_on is on


def test_grid_points_pick_the_most_uncertain_cells():
    z = torch.full((1, 2, 4, 4), 9.0)
    z[0, 0, 1, 2] = 0.1   # cell 6: most uncertain (channel 0)
    z[0, 1, 3, 0] = -0.5  # cell 12: second
    z[0, 1, 0, 3] = 2.0   # cell 3: third
    idx, coords = grid_points(z, num_points=3, importance=1.0)
    assert idx.tolist() == [[6, 12, 3]]
    assert torch.allclose(coords[0], torch.tensor([[1.5 / 4, 2.5 / 4], [3.5 / 4, 0.5 / 4], [0.5 / 4, 3.5 / 4]]))
    idx, _ = grid_points(z, num_points=100, importance=0.75, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (1, 8)  # N <= h·w / 2
    assert idx[0, :6].tolist()[:3] == [6, 12, 3] and len(set(idx[0].tolist())) == 8


def test_scatter_blocks_fill_stride_blocks():
    values = torch.tensor([[[5.0, 7.0]]])  # B=1, D=1, N=2
    out = scatter_blocks(values, torch.tensor([[5, 1]]), (2, 3), (7, 11), 4)  # cells (1, 2) and (0, 1)
    ref = torch.zeros(7, 11)
    ref[4:7, 8:11] = 5.0
    ref[0:4, 4:8] = 7.0
    assert torch.equal(out[0, 0], ref)


def test_mlsg_fusion_formula():
    torch.manual_seed(1)
    f = MLSGFusion(width=4, out_channels=2).eval()
    with torch.no_grad():
        f.weight_b.weight.fill_(1.0), f.weight_b.bias.fill_(0.0)   # W_b = σ(S)
        f.weight_p.weight.fill_(0.5), f.weight_p.bias.fill_(0.1)   # W_p = σ(S/2 + 0.1)
    r, b, p = torch.randn(3, 1, 4, 3, 3).unbind(0)
    seen = {}
    f.out.register_forward_hook(lambda mod, inp, out: seen.setdefault("in", inp[0]))
    f(r, b, p)
    s = b + p
    w_b, w_p = 1 / (1 + torch.exp(-s)), 1 / (1 + torch.exp(-(0.5 * s + 0.1)))
    assert seen["in"].shape == (1, 8, 3, 3)
    assert torch.allclose(seen["in"], torch.cat([r * w_b * b, r * w_p * p], 1), atol=1e-6)


def test_eval_is_deterministic_and_c2f_fine_weights_load():
    torch.manual_seed(0)
    m = create_model("mln", num_points=10).eval()
    m.enable_branches(True)
    x = torch.randn(1, 6, H, W)
    with torch.no_grad():
        assert torch.equal(m(x)["out"], m(x)["out"])
    missing, unexpected = m.load_state_dict(create_model("c2f_fine").state_dict(), strict=False)
    assert not unexpected
    assert {k.split(".")[0] for k in missing} == {"boundary_aspp", "boundary_head", "pixel", "fusion"}


@pytest.mark.parametrize("kwargs", [{"pixel_head": "conv"}, {"fusion": "mlp"}, {"num_points": 0}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(UserError, match=f"model.{next(iter(kwargs))}"):
        create_model("mln", **kwargs)
