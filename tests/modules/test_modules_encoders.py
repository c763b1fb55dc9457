"""One encoder stack for every encoder-based model: the same strict local-weights rules and the same
first-conv adaptation (timm's adapt_input_conv) in CHNet, DeepLabV3+, SINet-V2 and the c2f ResNet-18."""
from __future__ import annotations

import pytest
import timm
import torch

from medseg.errors import CheckpointError
from medseg.models import create_model


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    full = timm.create_model("resnet18")
    path = tmp_path_factory.mktemp("w") / "r18.pth"
    torch.save(full.state_dict(), path)
    return path, full.state_dict()


@pytest.mark.parametrize("model", ["deeplabv3plus", "sinet_v2", "chnet"])
def test_grey_input_adapts_the_first_conv_as_timm_does(model, resnet18_file) -> None:
    path, state = resnet18_file
    net = create_model(model, encoder="resnet18", in_channels=1, pretrained=str(path))
    oracle = state["conv1.weight"].sum(dim=1, keepdim=True)  # adapt_input_conv for one channel: the RGB sum
    torch.testing.assert_close(net.encoder.conv1.weight, oracle)


@pytest.mark.parametrize("model", ["deeplabv3plus", "sinet_v2", "chnet"])
def test_a_foreign_key_is_an_error_naming_it(model, resnet18_file, tmp_path) -> None:
    _, state = resnet18_file
    bad = tmp_path / "bad.pth"
    torch.save({**state, "extra.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): extra.weight"):
        create_model(model, encoder="resnet18", pretrained=str(bad))


def test_every_encoder_model_uses_the_shared_builder(monkeypatch) -> None:
    import medseg.modules.encoders as enc

    calls = []
    real = enc.timm_encoder

    def spy(name, *a, **k):
        calls.append(name)
        return real(name, *a, **k)

    for module in ("medseg.models.chnet", "medseg.models.deeplabv3plus", "medseg.models.sinet_v2",
                   "medseg.models.c2f"):
        monkeypatch.setattr(f"{module}.timm_encoder", spy)
    for name, kwargs in [("chnet", {"encoder": "resnet18"}), ("deeplabv3plus", {"encoder": "resnet18"}),
                         ("sinet_v2", {"encoder": "resnet18"}), ("c2f_coarse", {})]:
        create_model(name, **kwargs)
    assert calls == ["resnet18"] * 4
