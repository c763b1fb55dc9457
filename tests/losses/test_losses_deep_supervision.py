"""Deep supervision (``create_loss("deep_supervision")``, the trainer's automatic wrap for ``nnunet``).

Oracle: the inner loss evaluated on each output on its own and weighted by hand (nnU-Net: 1, 1/2, 1/4
normalised by 1.75 -> 4/7, 2/7, 1/7).
"""
from __future__ import annotations

import pytest
import torch

from medseg.config import build_config
from medseg.engine.runtime import make_runtime
from medseg.engine.trainer import Trainer
from medseg.losses import create_loss
from medseg.losses.deep_supervision import DeepSupervisionLoss, nnunet_weights


def _outputs(seed: int = 0, k: int = 1) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    maps = [torch.randn(2, k, 16, 16, dtype=torch.float64, generator=gen) for _ in range(3)]
    label = (torch.rand(2, 1, 16, 16, generator=gen) > 0.6).double()
    return {"out": maps[0], "aux": maps[1:]}, {"label": label}


def test_nnunet_weights_are_powers_of_one_half_normalised():
    assert nnunet_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert nnunet_weights(1) == [1.0]


def test_value_is_the_weighted_sum_of_the_inner_loss_at_each_output():
    outputs, batch = _outputs()
    inner = create_loss("dice_bce")
    each = [inner(m, batch)["loss"] for m in [outputs["out"], *outputs["aux"]]]
    got = create_loss({"name": "deep_supervision", "kwargs": {"loss": "dice_bce"}})(outputs, batch)
    torch.testing.assert_close(got["loss"], 4 / 7 * each[0] + 2 / 7 * each[1] + 1 / 7 * each[2])
    torch.testing.assert_close(got["aux2"], each[2])
    explicit = DeepSupervisionLoss("dice_bce", weights=[1.0, 0.0, 3.0])(outputs, batch)
    torch.testing.assert_close(explicit["loss"], each[0] + 3 * each[2])


def test_a_plain_tensor_gets_the_inner_loss_alone():
    outputs, batch = _outputs(1)
    got = DeepSupervisionLoss("dice_bce", weights=[0.5, 0.3, 0.2])(outputs["out"], batch)["loss"]
    torch.testing.assert_close(got, create_loss("dice_bce")(outputs["out"], batch)["loss"])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"weights": [1.0, 0.5]}, "2 weights for 3 outputs"),
])
def test_weights_that_do_not_fit_the_outputs_name_the_fix(kwargs, fragment):
    outputs, batch = _outputs()
    with pytest.raises(ValueError, match=fragment):
        DeepSupervisionLoss("dice_bce", **kwargs)(outputs, batch)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"weights": "equal"}, "must be 'nnunet' or a list"),
    ({"weights": [-1.0, 2.0]}, "must be >= 0"),
    ({"loss": {"name": "structure", "kwargs": {"deep_supervision": True}}}, "already reads the auxiliary"),
])
def test_bad_settings_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        DeepSupervisionLoss(**{"loss": "dice_bce", **kwargs})


def _trainer(tmp_path, loss) -> Trainer:
    cfg = build_config({
        "name": "ds", "output_dir": str(tmp_path),
        "data": {"kind": "synthetic2d", "image_size": [64, 64], "in_channels": 1, "num_classes": 1,
                 "batch_size": 2, "synthetic": {"n_train": 2, "n_val": 1, "n_test": 1, "seed": 1}},
        "model": {"name": "nnunet", "kwargs": {"patch_size": [64, 64], "base": 4}},
        "loss": loss, "train": {"epochs": 1, "seed": 0, "progress": False, "device": "cpu", "amp": "off"}})
    return Trainer(cfg, tmp_path, make_runtime(cfg.train, 2), None)


def test_trainer_supervises_every_nnunet_head_with_nnunets_weights(tmp_path):
    trainer = _trainer(tmp_path, "dice_bce")
    assert isinstance(trainer.loss_fn, DeepSupervisionLoss)
    assert trainer.loss_fn.weights == pytest.approx(trainer.model.deep_supervision_weights)
    assert len(trainer.model.heads) == 3  # 64 -> 4 px: 5 stages, heads of decoder stages 1-3
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 1, 64, 64, generator=gen), "label": (torch.rand(2, 1, 64, 64, generator=gen) > 0.5).float()}
    trainer.model.train()
    trainer.loss_fn(trainer.model(batch["image"]), batch)["loss"].backward()
    for name, head in trainer.model.heads.items():  # every head learns, not only the full-resolution one
        grads = [p.grad for p in head.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_structure_with_its_own_deep_supervision_is_not_wrapped_again(tmp_path):
    trainer = _trainer(tmp_path, {"name": "structure", "kwargs": {"deep_supervision": True}})
    assert not isinstance(trainer.loss_fn, DeepSupervisionLoss)

