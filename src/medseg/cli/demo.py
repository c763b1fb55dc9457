"""``medseg demo``: the main job on built-in synthetic data (no download needed)."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", "Train a small UNet on synthetic data, evaluate it and predict (a few minutes on CPU).",
                    "medseg demo --output runs/demo")
    p.add_argument("--output", default="runs/demo", help="run folder (replaced if it exists)")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.engine.demo import run_demo

    result = run_demo(args.output, args.epochs)
    return 0 if result["test_dice"] == result["test_dice"] else 1
