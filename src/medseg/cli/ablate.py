"""``medseg ablate CONFIG --heads ...``: one encoder trained with each head, one comparison table."""
from __future__ import annotations

import argparse

from medseg.cli import add_command
from medseg.cli._options import add_comparison_options, load_with_overrides, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "ablate", "Train one encoder with each head under one config; one comparison table.",
                    "medseg ablate src/medseg/recipes/chnet/kvasir_heads_cpu.yaml "
                    "--heads classification fcn32s unet_decoder")
    add_comparison_options(p, "ablate")
    p.add_argument("--heads", nargs="+", default=["classification", "classification3x3", "fcn32s", "unet_decoder"],
                   help="head names (default: all four)")
    p.set_defaults(func=run_ablate)


def run_ablate(args: argparse.Namespace) -> int:
    from medseg.engine.ablate import ablate_heads

    return print_table(ablate_heads(load_with_overrides(args), args.heads, args.output, args.split),
                       "ablate_results")
