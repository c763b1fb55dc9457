"""LR schedules against hand-worked values; encoder/head parameter groups; frozen encoder."""
from __future__ import annotations

import math

import pytest
import torch.nn as nn

from medseg.config import OptimConfig, ScheduleConfig
from medseg.engine.optim import build_optimizer, build_scheduler, freeze_encoder, lr_factor


@pytest.mark.parametrize("cfg, epoch, expected", [
    (dict(name="constant"), 7, 1.0),
    (dict(name="step", step_size=50, gamma=0.1), 49, 1.0),
    (dict(name="step", step_size=50, gamma=0.1), 50, 0.1),
    (dict(name="step", step_size=50, gamma=0.1), 99, 0.1),
    (dict(name="poly", power=0.9), 50, 0.5 ** 0.9),
    (dict(name="cosine"), 50, 0.5),
    (dict(name="cosine"), 0, 1.0),
    (dict(name="warmup_linear", warmup_epochs=4), 0, 0.2),        # (e+1)/(W+1)
    (dict(name="warmup_linear", warmup_epochs=4), 3, 0.8),
    (dict(name="warmup_linear", warmup_epochs=4), 4, 1.0),        # decay starts
    (dict(name="warmup_linear", warmup_epochs=4), 52, 1 - 48 / 96),
    (dict(name="triangular"), 49, 1 - abs(2 * 50 / 101 - 1)),      # CHNet/F3Net code
    (dict(name="triangular"), 0, 1 - abs(2 / 101 - 1)),
])
def test_lr_factor(cfg: dict, epoch: int, expected: float) -> None:
    assert math.isclose(lr_factor(ScheduleConfig(**cfg), epoch, 100, 1e-3), expected, rel_tol=1e-12)


class EncoderHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 1, 1)


def test_encoder_lr_groups_and_scheduler() -> None:
    model = EncoderHead()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, encoder_lr=0.01, momentum=0.9, nesterov=True))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == 0.1 and groups["encoder"]["lr"] == 0.01
    assert sum(p.numel() for p in groups["encoder"]["params"]) == sum(p.numel() for p in model.encoder.parameters())
    sched = build_scheduler(opt, ScheduleConfig(name="step", step_size=1, gamma=0.5), 10)
    opt.step()
    sched.step()
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"head": 0.05, "encoder": 0.005}


def test_freeze_encoder() -> None:
    model = EncoderHead()
    frozen = freeze_encoder(model)
    assert frozen == sum(p.numel() for p in model.encoder.parameters())
    opt = build_optimizer(model, OptimConfig())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.head.weight.numel() + 1
    with pytest.raises(ValueError, match="no 'encoder' attribute"):
        freeze_encoder(nn.Conv2d(1, 1, 1))
