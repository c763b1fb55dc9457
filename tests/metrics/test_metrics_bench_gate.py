"""The benchmarks' value gate (``benchmarks/_gate.py``): a difference past the tolerance fails, named."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

GATE_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "_gate.py"


@pytest.fixture()
def gate_module():
    spec = importlib.util.spec_from_file_location("bench_gate", GATE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gate_passes_equal_values_and_fails_naming_the_case(gate_module, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MEDSEG_BENCH_INJECT", raising=False)
    gate = gate_module.Gate()
    gate.add("(x) hd95 vs medpy", 2.0, 2.0 * (1 + 1e-12), 1e-9)
    gate.add("(x) nan both", float("nan"), float("nan"), 1e-9)
    assert gate.exit_code() == 0
    gate.add("(y) dice vs MONAI", 0.5, 0.5 * (1 + 2e-6), 1e-6)  # just past the tolerance
    assert gate.exit_code() == 1
    assert "FAIL (y) dice vs MONAI" in capsys.readouterr().err
    one_nan = gate_module.Gate()
    one_nan.add("(z) one NaN", float("nan"), 1.0, 1e-9)
    assert one_nan.exit_code() == 1  # a NaN on one side is a difference, not a free pass


def test_injection_turns_only_the_named_case_red(gate_module, monkeypatch) -> None:
    monkeypatch.setenv("MEDSEG_BENCH_INJECT", "large organ:1e-3")
    gate = gate_module.Gate()
    gate.add("(b) small organ: assd vs medpy", 1.5, 1.5, 1e-9)
    gate.add("(b) large organ: assd vs medpy", 1.5, 1.5, 1e-9)
    assert gate.summary()["(b) small organ: assd vs medpy"]["max_rel_diff"] == 0
    assert gate.summary()["(b) large organ: assd vs medpy"]["max_rel_diff"] == pytest.approx(1e-3)
    assert gate.exit_code() == 1
    assert gate_module.injected("(b) large organ: x") and not gate_module.injected("(a) 2-D")
    assert np.allclose(gate_module.inject("(b) large organ", np.ones(2)), 1.001)
