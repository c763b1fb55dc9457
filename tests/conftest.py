"""Shared fixtures: the real-data folder beside the checkout, small seeds, CPU threads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` or skip (with the reason) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set MEDSEG_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_dataset():
    """``real_dataset("kvasir-seg")`` -> its folder under ``../shared/data``, or skip with the reason."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            pytest.skip(f"dataset {name} not found at {path} (real data lives in ../shared/data)")
        return path

    return get
