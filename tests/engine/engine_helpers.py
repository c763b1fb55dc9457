"""Tiny configs shared by the engine tests."""
from __future__ import annotations

from typing import Any

from medseg.config import RunConfig, build_config


def tiny_raw(**train: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "data": {"kind": "synthetic2d", "image_size": [32, 32], "in_channels": 1, "num_classes": 1,
                 "batch_size": 4, "synthetic": {"n_train": 8, "n_val": 4, "n_test": 3, "seed": 1}},
        "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}},
        "optim": {"name": "adam", "lr": 1e-2},
        "train": {"epochs": 2, "seed": 3, "progress": False, **train},
        "eval": {"metrics": ["dice", "iou"]},
    }


def tiny_config(**train: Any) -> RunConfig:
    return build_config(tiny_raw(**train))
