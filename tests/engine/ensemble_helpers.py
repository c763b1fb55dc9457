"""Tiny `medseg cv`-shaped folders for the fold-ensemble tests: each fold an untrained tiny UNet saved with
the checkpoint API (no training), its head bias shifted so that folds disagree clearly."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import tiny_raw  # noqa: E402

from medseg.config import build_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.trainer import build_model


def fold_raw(num_classes: int = 1, **data: Any) -> dict[str, Any]:
    raw = tiny_raw()
    raw["data"].update(num_classes=num_classes, **data)
    raw["train"]["amp"] = "off"  # fp32, so that the hand-computed oracles agree to 1e-6
    return raw


def save_fold(cv: Path, k: int, seed: int, bias: float = 0.0, raw: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None, gain: float = 1.0) -> Path:
    """``cv/fold_k/checkpoints/best.pt``: a tiny UNet seeded by ``seed``, its head's weights times ``gain``
    (an untrained net's logits hardly vary over the image: a gain spreads them) and ``bias`` added."""
    cfg = build_config(raw or fold_raw())
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.weight *= gain
        model.head.bias[0] += bias  # channel 0 only (a shift of every channel would not change a softmax)
    path = cv / f"fold_{k}" / "checkpoints" / "best.pt"
    save_checkpoint({"config": cfg.model_dump(mode="json"), "model": model.state_dict(), **(extra or {})}, path)
    return path


def make_cv(cv: Path, seeds: tuple[int, ...] = (0, 1), biases: tuple[float, ...] = (2.0, -1.5),
            raw: dict[str, Any] | None = None, gain: float = 1.0) -> Path:
    """A CV folder: ``folds.json`` and one fold per seed."""
    cv.mkdir(parents=True, exist_ok=True)
    (cv / "folds.json").write_text(json.dumps({"folds": len(seeds), "cases": 0, "seed": 0, "test_ids": []}))
    for k, (seed, bias) in enumerate(zip(seeds, biases)):
        save_fold(cv, k, seed, bias, raw, gain=gain)
    return cv


def save_png(path: Path, shape: tuple[int, ...] = (20, 24), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)).save(path)
    return path
