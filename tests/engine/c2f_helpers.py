"""Tiny coarse-to-fine networks shared by the c2f tests (``tests/engine/test_engine_c2f_train.py``,
``tests/cli/test_cli_c2f.py``): imported after ``sys.path.insert(0, <tests/engine>)``, as ``c2f_helpers``."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class TinyC2F(nn.Module):
    """The c2f models' interface (``out`` at the input size, ``logits`` at stride 4) with BN and dropout,
    small enough for a loaded CPU; registered so that recipes name it like any model."""

    spatial_dims = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Dropout2d(0.2), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, out_channels, 1))

    def forward(self, x):
        logits = self.body(x)
        return {"out": F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False),
                "logits": logits}


def _register_tiny() -> None:
    from medseg.models import MODELS, register_model

    if "c2f_tiny_coarse" not in MODELS:
        register_model("c2f_tiny_coarse")(lambda in_channels=3, out_channels=3: TinyC2F(in_channels, out_channels))
        register_model("c2f_tiny_fine")(lambda in_channels=6, out_channels=3: TinyC2F(in_channels, out_channels))


_register_tiny()
TINY = {"coarse": {"name": "c2f_tiny_coarse"}, "fine": {"name": "c2f_tiny_fine"}}
