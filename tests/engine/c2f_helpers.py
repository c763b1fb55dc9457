"""Tiny coarse-to-fine networks shared by the c2f tests (``tests/engine/test_engine_c2f_train.py``,
``tests/cli/test_cli_c2f.py``): imported after ``sys.path.insert(0, <tests/engine>)``, as ``c2f_helpers``."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn
import torch.nn.functional as F


class TinyC2F(nn.Module):
    """The c2f models' interface (``out`` at the input size, ``logits`` at stride 4) with BN and dropout,
    small enough for a loaded CPU; registered by :func:`tiny_registered` so that recipes name it like any model."""

    spatial_dims = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Dropout2d(0.2), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, out_channels, 1))

    def forward(self, x):
        logits = self.body(x)
        return {"out": F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False),
                "logits": logits}


@contextmanager
def tiny_registered() -> Iterator[None]:
    """Register ``c2f_tiny_coarse`` / ``c2f_tiny_fine`` for the duration of a fixture, then remove them again:
    test-only models must never stay in (or be put into at import) the global registry, which other test
    modules parametrise over. Use it in a module-scoped autouse fixture of the test module."""
    from medseg.models import MODELS, register_model

    factories = {"c2f_tiny_coarse": lambda in_channels=3, out_channels=3: TinyC2F(in_channels, out_channels),
                 "c2f_tiny_fine": lambda in_channels=6, out_channels=3: TinyC2F(in_channels, out_channels)}
    added = [name for name in factories if name not in MODELS]
    for name in added:
        register_model(name)(factories[name])
    try:
        yield
    finally:
        for name in added:
            MODELS._entries.pop(name, None)


TINY = {"coarse": {"name": "c2f_tiny_coarse"}, "fine": {"name": "c2f_tiny_fine"}}
