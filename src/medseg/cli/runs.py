"""``medseg runs [FOLDER]``: the runs in a folder with their best validation metric."""
from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "runs", "List the runs in a folder with their best validation metric.", "medseg runs runs/")
    p.add_argument("folder", nargs="?", default="runs")
    p.set_defaults(func=run_runs)


def run_runs(args: argparse.Namespace) -> int:
    from medseg.engine.runs import list_runs

    rows = list_runs(Path(args.folder))
    if not rows:
        print(f"no runs in {args.folder}")
        return 0
    print(f"{'run':<40}{'model':<18}{'epochs':>7}{'best':>10}  metric")
    for r in rows:
        best = "-" if r["best"] is None else f"{r['best']:.4f}"
        print(f"{r['run']:<40}{r['model']:<18}{r['epochs']:>7}{best:>10}  {r['metric']}")
    return 0
