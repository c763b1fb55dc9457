"""Coarse-to-fine (MLL) networks: strides, dilation, 6-channel stem, saliency module, crop box."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import create_model
from medseg.models.c2f import FILL_LOGIT, crop, crop_box, uncrop
from medseg.modules.saliency import SaliencyTransform, fine_input


def _resnet18_weights(path):
    import timm

    torch.manual_seed(123)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(state, path)
    return state


@pytest.mark.parametrize("name, stride, cin", [("c2f_coarse", 8, 3), ("c2f_fine", 4, 6)])
def test_output_stride_and_shapes(name, stride, cin):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, cin, 48, 40))
    assert out["logits"].shape == (2, 3, 48 // stride, 40 // stride)
    assert out["out"].shape == (2, 3, 48, 40)
    assert model.backbone.conv1.stride == ((2, 2) if stride == 8 else (1, 1))


def test_dilated_stages_use_dilation_in_both_convs():
    model = create_model("c2f_fine")
    for stage, d in ((model.backbone.layer3, 2), (model.backbone.layer4, 4)):
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) == 4
        assert all(c.dilation == (d, d) and c.padding == (d, d) and c.stride == (1, 1) for c in convs)
    assert [b[0].dilation for b in model.aspp.branches[1:]] == [(6, 6), (12, 12), (18, 18)]


def test_two_networks_have_the_papers_parameter_count():
    """MLL Table 8: two ResNet-18 + two ASPPs on 512-channel input, 3.1 x 10^7 parameters."""
    total = sum(p.numel() for name in ("c2f_coarse", "c2f_fine") for p in create_model(name).parameters())
    assert total == pytest.approx(3.1e7, rel=0.03)


def test_stem_duplicated_and_halved_matches_pretrained_response(tmp_path):
    state = _resnet18_weights(tmp_path / "r18.pth")
    fine = create_model("c2f_fine", pretrained=str(tmp_path / "r18.pth")).eval()
    x = torch.randn(1, 3, 32, 32)
    oracle = F.conv2d(x, state["conv1.weight"], stride=1, padding=3)  # the file's RGB kernel on x
    with torch.no_grad():
        got = fine.backbone.conv1(torch.cat([x, x], dim=1))
    assert fine.backbone.conv1.weight.shape == (64, 6, 7, 7)
    torch.testing.assert_close(got, oracle, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fine.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_saliency_module_rstn_init_and_shapes():
    torch.manual_seed(0)
    fs = SaliencyTransform()
    assert fs.conv1.kernel_size == (3, 3) and fs.conv2.kernel_size == (5, 5)
    assert torch.all(fs.conv1.bias == 1) and torch.all(fs.conv2.weight == 0)
    assert fs.conv2.bias.tolist() == [1.0, 1.5, 2.0]
    xavier_std = (2 / (27 + 27)) ** 0.5  # fan_in = fan_out = 3 * 3 * 3
    assert float(fs.conv1.weight.detach().std()) == pytest.approx(xavier_std, rel=0.25)
    sal = fs(torch.rand(2, 3, 20, 24))
    assert sal.shape == (2, 3, 20, 24)
    torch.testing.assert_close(sal, torch.tensor([1.0, 1.5, 2.0]).view(1, 3, 1, 1).expand(2, 3, 20, 24))
    image = torch.rand(2, 3, 20, 24)
    six = fine_input(image, sal)
    assert six.shape == (2, 6, 20, 24)
    torch.testing.assert_close(six[:, :3], image * sal)
    torch.testing.assert_close(six[:, 3:], image)


def test_crop_box_hand_worked():
    mask = np.zeros((3, 100, 100), dtype=bool)
    mask[0, 30, 40] = mask[2, 50, 45] = True  # boxes of the three slices are joined
    assert crop_box(mask) == (10, 71, 20, 66)
    edge = np.zeros((3, 100, 100), dtype=bool)
    edge[1, 5, 95] = True
    assert crop_box(torch.from_numpy(edge)) == (0, 26, 75, 100)  # clipped to the slice
    assert crop_box(np.zeros((3, 8, 8))) is None


def test_crop_box_jitter_margins():
    mask = np.zeros((3, 200, 200), dtype=bool)
    mask[:, 100, 100] = True
    rng = np.random.default_rng(0)
    boxes = np.array([crop_box(mask, 20, jitter=True, rng=rng) for _ in range(400)])
    sides = np.stack([100 - boxes[:, 0], boxes[:, 1] - 101, 100 - boxes[:, 2], boxes[:, 3] - 101], axis=1)
    assert sides.min() >= 0 and sides.max() <= 40
    fixed = np.all(sides == 20, axis=1)
    assert 0.4 < fixed.mean() < 0.6  # probability 0.5 of the fixed margin
    assert len(np.unique(sides[~fixed][:, 0])) > 30  # independent integers over [0, 40]
    assert not np.all(sides[~fixed][:, 0] == sides[~fixed][:, 1])


def test_crop_uncrop_round_trip():
    x = torch.randn(2, 3, 30, 40, requires_grad=True)
    box = (4, 21, 7, 33)
    part = crop(x, box)
    assert part.shape == (2, 3, 17, 26)
    full = uncrop(part, box, (30, 40))
    inside = torch.zeros(30, 40, dtype=torch.bool)
    inside[4:21, 7:33] = True
    torch.testing.assert_close(full[..., inside], x[..., inside])
    assert torch.all(full[..., ~inside] == FILL_LOGIT)
    torch.testing.assert_close(crop(full, box), part)
    full.sum().backward()
    assert torch.all(x.grad[..., inside] == 1) and torch.all(x.grad[..., ~inside] == 0)
    with pytest.raises(ValueError, match="do not fit box"):
        uncrop(part, (0, 10, 0, 10), (30, 40))


def test_coarse_to_fine_forward_backward():
    """One coarse + saliency + fine step on a 3-slice unit: every part receives a gradient (stage I)."""
    torch.manual_seed(0)
    coarse, fine, fs = create_model("c2f_coarse"), create_model("c2f_fine"), SaliencyTransform()
    image, label = torch.rand(1, 3, 40, 40), torch.zeros(1, 3, 40, 40)
    label[..., 15:25, 12:30] = 1
    prob = torch.sigmoid(coarse(image)["out"])
    box = crop_box(label)
    six = crop(fine_input(image, fs(prob)), box)
    fine_out = fine(six)
    assert fine_out["logits"].shape[-2:] == tuple(s // 4 for s in six.shape[-2:])
    full = torch.sigmoid(uncrop(fine_out["out"], box, (40, 40)))
    loss = sum(1 - 2 * (p * label).sum() / (p.sum() + label.sum()) for p in (prob, full))
    loss.backward()
    for module in (coarse.backbone.conv1, fine.backbone.conv1, fs.conv2, fine.head[-1]):
        assert module.weight.grad is not None and torch.isfinite(module.weight.grad).all()
        assert module.weight.grad.abs().sum() > 0
