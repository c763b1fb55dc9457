"""Worked example for ARCHITECTURE.md "Where to add things / a loss": one class, one registry entry, one
oracle test. The loss here (a sensitivity loss, ``1 - Σpt / Σt``) is registered only for this test (with
``monkeypatch``, so the global registry is left as it was) and checked against a hand-worked value."""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn as nn

from medseg.config import build_config
from medseg.losses import LOSSES, LossInputError, create_loss
from medseg.losses._common import as_float, get_label, main_logits, prepare_target, probabilities


class SensitivityLoss(nn.Module):
    """Soft sensitivity loss ``1 − Σ p·t / Σ t`` over the batch (binary; a worked example, not shipped)."""

    name = "sensitivity_example"

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, None, self.name))
        target = prepare_target(logits, get_label(batch, self.name), self.name)  # the shared input checks
        prob = probabilities(logits, target)
        loss = 1 - (prob * target.onehot).sum() / target.onehot.sum().clamp_min(1e-8)
        return {"loss": loss, self.name: loss}


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(LOSSES._entries, SensitivityLoss.name, SensitivityLoss)
    return SensitivityLoss.name


def test_a_new_loss_is_one_class_and_one_entry(registered: str) -> None:
    logits = torch.tensor([[[[0.0, 100.0], [-100.0, 0.0]]]])  # sigmoid: 0.5, 1, 0, 0.5
    label = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    out = create_loss(registered)(logits, {"label": label})
    # hand-worked: Σpt = 0.5 + 1 + 0 = 1.5 over Σt = 3 -> 1 - 0.5
    assert out["loss"].item() == pytest.approx(0.5, abs=1e-12)
    assert set(out) == {"loss", registered}


def test_the_new_loss_gets_the_shared_input_checks(registered: str) -> None:
    with pytest.raises(LossInputError, match=registered):  # labels {0, 1, 2} for one sigmoid channel
        create_loss(registered)(torch.zeros(1, 1, 2, 2), {"label": torch.tensor([[[[0.0, 1.0], [2.0, 0.0]]]])})


def test_a_config_can_name_the_new_loss(registered: str, tmp_path) -> None:
    """The config validates loss names against the registry, so the entry is all a config needs."""
    cfg = build_config({"name": "x", "output_dir": str(tmp_path), "loss": registered})
    assert isinstance(create_loss(cfg.loss), SensitivityLoss)
