"""``medseg report``: one self-contained HTML report of evaluated runs or result tables."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "report",
                    "Write one self-contained HTML report (figures embedded; also as PNG beside it) of evaluated "
                    "run folders or per-case CSVs: metric summary, training curves, per-case table, best / "
                    "median / worst overlays, PR / F / E curves, per-group bars, comparison.",
                    "medseg report runs/unet runs/unet_ife --output report.html")
    p.add_argument("inputs", nargs="+", metavar="RUN_OR_RESULTS",
                   help="run folder evaluated by `medseg evaluate RUN --split SPLIT`, or a per-case CSV from "
                        "`medseg metrics --output results.csv`")
    p.add_argument("--output", required=True, help="the HTML file; figures go to <name>_figures/ beside it")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="evaluated split (default test)")
    p.add_argument("--metric", default=None,
                   help="metric that ranks best / median / worst and the group bars (default: first column)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report and its figures")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from medseg.report.html import build_report

    path = build_report(args.inputs, args.output, split=args.split, metric=args.metric, title=args.title,
                        overwrite=args.overwrite)
    print(f"wrote {path} (figures in {path.with_name(path.stem + '_figures')}/)")
    return 0
