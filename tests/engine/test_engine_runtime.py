"""Runtime defaults (``make_runtime``): precision and memory format picked from the device and the network's
dimensionality; explicit ``train.amp`` / ``train.channels_last`` win."""
from __future__ import annotations

import pytest
import torch

from medseg.config import TrainConfig
from medseg.engine.runtime import make_runtime, memory_format


@pytest.mark.parametrize("dims, amp, fmt", [
    (2, "auto", torch.channels_last),  # 2-D on CPU: bf16 + channels_last (about 2x fp32 here)
    (3, "auto", torch.contiguous_format),  # 3-D on CPU under bf16: channels_last_3d gave NaN gradients
    (3, "off", torch.channels_last_3d),  # fp32 3-D keeps channels_last_3d
])
def test_cpu_defaults(dims, amp, fmt):
    rt = make_runtime(TrainConfig(device="cpu", amp=amp), dims)
    assert rt.amp_dtype is (None if amp == "off" else torch.bfloat16)
    assert memory_format(rt, dims) == fmt


@pytest.mark.parametrize("dims", [2, 3])
def test_explicit_channels_last_wins(dims):
    for value in (True, False):
        rt = make_runtime(TrainConfig(device="cpu", channels_last=value), dims)
        assert rt.channels_last is value
