"""Segmentation networks, registered by name (``create_model("unet", ...)``, ``medseg models``).

Contract (``ARCHITECTURE.md``): ``forward(image)`` returns logits ``B x K x *spatial`` or a dict with
``"out"`` plus auxiliary outputs; each model sets ``spatial_dims`` and ``input_divisor`` (the
spatial sizes it accepts are multiples of it).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from medseg.registry import Registry, import_submodules

MODELS = Registry("model")
register_model = MODELS.register


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name, e.g. ``create_model("unet", out_channels=1)``."""
    return MODELS.create(name, **kwargs)


def list_models() -> dict[str, str]:
    return MODELS.describe()


import_submodules(__name__, __path__)
