"""``medseg models``: the registered networks."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "models", "List the registered models (names for model.name in a config).",
                    "medseg models")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.models import list_models

    for name, doc in list_models().items():
        print(f"{name:<22}{doc}")
    return 0
