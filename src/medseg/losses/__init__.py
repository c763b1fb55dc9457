"""Losses, registered by name (``create_loss``, ``medseg losses``).

Contract: a loss is an ``nn.Module`` with ``forward(outputs, batch) -> dict`` holding ``"loss"`` (the
scalar to minimise) and each named term; ``outputs`` is the model output (tensor of logits or a dict
with ``"out"``), ``batch`` the collated sample dict (``label``: float ``B x 1 x *spatial`` for binary,
int64 ``B x *spatial`` for multi-class). ``requires`` names derived targets the data pipeline must add
(e.g. ``{"sdf"}``); ``set_epoch(e)`` drives schedules.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from medseg.registry import Registry, import_submodules

LOSSES = Registry("loss")
register_loss = LOSSES.register


def create_loss(spec: Any = "auto", num_classes: int = 1, **kwargs: Any) -> nn.Module:
    """Build a loss from a name, a ``{"name":..., "kwargs":...}`` mapping, or a list of weighted terms.

    ``"auto"`` is Dice+BCE for one output channel and Dice+CE for several.
    """
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump()
    if isinstance(spec, str):
        if spec == "auto":
            spec = "dice_bce" if num_classes == 1 else "dice_ce"
        return LOSSES.create(spec, **kwargs)
    if isinstance(spec, dict):
        return LOSSES.create(spec["name"], **{**spec.get("kwargs", {}), **kwargs})
    if isinstance(spec, list):
        from medseg.losses.compound import WeightedSum

        return WeightedSum.from_spec(spec, num_classes=num_classes)
    raise TypeError(f"cannot build a loss from {spec!r}")


def list_losses() -> dict[str, str]:
    return LOSSES.describe()


import_submodules(__name__, __path__)

from medseg.losses._common import LossInputError, Schedule  # noqa: E402  (public names)

__all__ = ["LOSSES", "LossInputError", "Schedule", "create_loss", "list_losses", "register_loss"]
