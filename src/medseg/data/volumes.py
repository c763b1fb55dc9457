"""3-D datasets (NIfTI, synthetic 3-D): placeholder until the volume readers land."""
from __future__ import annotations

from medseg.config import DataConfig
from medseg.errors import DataError


def build_volume_dataset(cfg: DataConfig, split: str):
    raise DataError(f"data.kind '{cfg.kind}' is not available yet")
