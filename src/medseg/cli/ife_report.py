"""``medseg ife-report``: per-dataset and per-modality metrics of evaluated runs, as a bar chart."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "ife-report", "per-dataset and per-modality metrics of evaluated runs, as a bar chart PNG",
                    "medseg ife-report runs/ife/unet runs/ife/unet_c runs/ife/unet_e --metric dice")
    p.add_argument("runs", nargs="+", help="evaluated run folders (metrics/<split>_per_case.csv)")
    p.add_argument("--metric", default="dice")
    p.add_argument("--split", default="test")
    p.add_argument("--output", help="PNG path (default: <first run>/metrics/<split>_per_dataset_<metric>.png)")
    p.set_defaults(func=run_ife_report)


def run_ife_report(args: argparse.Namespace) -> int:
    from medseg.report.per_dataset import per_dataset_report

    path, table = per_dataset_report(args.runs, args.metric, args.split, args.output)
    print(table)
    print(f"wrote {path}")
    return 0
