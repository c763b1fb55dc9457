"""Value gate shared by the benchmarks: a benchmark that compares values fails when they differ.

Each comparison records the largest relative difference of a case against its stated tolerance;
:meth:`Gate.exit_code` prints every case over its tolerance (named) and returns 1 if there is one.
``MEDSEG_BENCH_INJECT=<factor>`` (optionally ``<case-substring>:<factor>``) multiplies medseg's values
by ``1 + factor`` before they are compared, to show that the gate goes red (see benchmarks/README.md).
"""
from __future__ import annotations

import os
import sys

import numpy as np


def _injection() -> tuple[str, float]:
    spec = os.environ.get("MEDSEG_BENCH_INJECT", "")
    if not spec:
        return "", 0.0
    where, _, factor = spec.rpartition(":")
    return where, float(factor)


def injected(case: str) -> bool:
    """Whether ``MEDSEG_BENCH_INJECT`` asks for an error in this case (for exact, non-numeric checks)."""
    where, factor = _injection()
    return bool(factor) and where in case


def inject(case: str, value):
    """medseg's value as compared: unchanged unless ``MEDSEG_BENCH_INJECT`` names this case (or any)."""
    where, factor = _injection()
    if factor and where in case:
        return value * (1 + factor)
    return value


def rel_diff(a: float, b: float) -> float:
    """``|a − b| / |b|`` (both NaN: 0; one NaN: inf)."""
    a, b = float(a), float(b)
    if np.isnan(a) and np.isnan(b):
        return 0.0
    if np.isnan(a) or np.isnan(b):
        return float("inf")
    return abs(a - b) / max(abs(b), 1e-12)


class Gate:
    """Largest relative difference per (case, peer) against a tolerance."""

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}

    def add(self, case: str, ours: float, ref: float, tol: float) -> float:
        diff = rel_diff(inject(case, ours), ref)
        row = self.rows.setdefault(case, [0.0, tol])
        row[0] = max(row[0], diff)
        return diff

    def summary(self) -> dict[str, dict[str, float]]:
        return {case: {"max_rel_diff": d, "tolerance": t} for case, (d, t) in self.rows.items()}

    def exit_code(self) -> int:
        failed = [(c, d, t) for c, (d, t) in self.rows.items() if not d <= t]
        for case, diff, tol in failed:
            print(f"FAIL {case}: largest relative difference {diff:.3g} > tolerance {tol:g}", file=sys.stderr)
        if not failed:
            print(f"values: all {len(self.rows)} compared cases within tolerance", file=sys.stderr)
        return 1 if failed else 0
