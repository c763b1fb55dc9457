"""``medseg sweep CONFIG --seeds 0 1 2``: one run per training seed, resumable (docs/compare.md)."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "sweep", "Train and evaluate one run per training seed (PARENT/seed_<s>/), then mean, "
                    "sd and 95% CI per metric; resumable: a finished seed is skipped, an interrupted one resumed.",
                    "medseg sweep src/medseg/recipes/ife/table1_unet.yaml --seeds 0 1 2 "
                    "--set train.epochs=20 --output runs/unet_sweep")
    p.add_argument("config", help="run config YAML")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds (train.seed), e.g. 0 1 2")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--output", help="parent folder of the runs (default: output_dir/<name>_sweep)")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to evaluate (default test)")
    p.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    """Exit 0 with the table when every seed is done, 3 when a run stopped early (run again to continue)."""
    from medseg.config import load_config
    from medseg.engine.sweep import sweep

    result = sweep(load_config(args.config, list(args.overrides)), args.seeds, args.output, args.split)
    if not result["complete"]:
        return 3
    print(result["table"])
    print(f"written: {result['parent']}/sweep_results.csv and .md; compare arms with: "
          f"medseg compare --arm A '{result['parent']}/seed_*' --arm B OTHER/seed_*")
    return 0
