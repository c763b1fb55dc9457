"""``medseg losses``: the registered losses (names for ``loss`` in a config), one line each."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "losses", "List the registered losses (names for loss / loss[].name in a config).",
                    "medseg losses --requires")
    p.add_argument("--requires", action="store_true",
                   help="also show the derived targets (sdf, contour, ...) each loss needs in the batch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.losses import LOSSES, create_loss, list_losses

    losses = list_losses()
    width = max(map(len, losses)) + 2
    for name, doc in losses.items():
        line = f"{name:<{width}}{doc}"
        if args.requires:
            needs = sorted(getattr(create_loss(name), "requires", set()))
            line += f"  [needs: {', '.join(needs)}]" if needs else ""
        print(line)
    print(f"\n{len(LOSSES.names())} losses. Combine them in a config as a list of "
          "{name, weight, kwargs, as, schedule}; see docs/losses.md.")
    return 0
