"""``medseg profile`` and :mod:`medseg.engine.profile`: hand-worked FLOP and memory counts, parameter split."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from medseg.cli import main
from medseg.engine.profile import (count_flops, count_parameters, measure_peak_memory, parse_input_shape,
                                   profile_model)
from medseg.models import create_model


def test_flops_of_one_conv_by_hand() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # 8 output channels x 10 x 10 positions x (3 x 3 x 3) multiply-adds, 2 FLOPs each (bias not counted)
    assert count_flops(conv, torch.randn(1, 3, 10, 10)) == 2 * 8 * 100 * 27
    # backward: the input needs no gradient, so only the weight gradient, a conv of the same size
    assert count_flops(conv, torch.randn(1, 3, 10, 10), train=True) == 2 * 2 * 8 * 100 * 27


def test_peak_memory_tracker_by_hand() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
    # conv output (8x16x16 float32 = 8192 B) is alive while ReLU writes its own 8192 B output
    peak, method = measure_peak_memory(net, torch.randn(1, 3, 16, 16))
    assert peak == 2 * 8192 / 2**20 and "dispatch" in method
    # views of the weights (as in linear's transpose) are not new memory
    peak, _ = measure_peak_memory(nn.Linear(256, 4), torch.randn(1, 256))
    assert peak == 16 / 2**20


def test_parameter_split_encoder_head() -> None:
    model = create_model("chnet", encoder="resnet18", head="fcn32s")
    enc, head, total = count_parameters(model)
    assert enc == sum(p.numel() for p in model.encoder.parameters())
    assert head == 256 + 1 and total == enc + head
    assert count_parameters(nn.Conv2d(1, 1, 1)) == (None, None, 2)


def test_profile_model_fields() -> None:
    model = create_model("chnet", encoder="resnet18")
    r = profile_model(model, (3, 32, 32), name="x", batch=2, warmup=0, repeats=1)
    assert r.input_shape == (2, 3, 32, 32) and r.mode == "inference" and r.device == "cpu"
    assert r.flops > 0 and r.latency_ms > 0 and r.peak_memory_mb > 0 and r.gmacs == r.flops / 2e9


def test_parse_input_shape() -> None:
    assert parse_input_shape("3x352x352") == (3, 352, 352)
    for bad in ("3x64", "3xax64", "0x64x64"):
        with pytest.raises(ValueError, match="CxHxW"):
            parse_input_shape(bad)


def test_cli_profile_json(capsys) -> None:
    rc = main(["profile", "chnet", "--set", "encoder=resnet18", "--set", "head=classification3x3",
               "--input", "3x32x32", "--warmup", "0", "--repeats", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    ref = create_model("chnet", encoder="resnet18", head="classification3x3")
    assert out["params_total"] == sum(p.numel() for p in ref.parameters())
    assert out["model"] == "chnet(encoder=resnet18,head=classification3x3)"


def test_cli_profile_bad_input(capsys) -> None:
    assert main(["profile", "chnet", "--input", "3x64"]) == 1
    assert "CxHxW" in capsys.readouterr().err
    assert main(["profile", "chnet", "--set", "head=nope"]) == 1
    assert "classification3x3" in capsys.readouterr().err
