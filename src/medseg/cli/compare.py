"""``medseg compare``: two per-case CSVs (per-image paired tests), or arms of run folders (seed-aware)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    c = add_command(sub, "compare", "Compare runs. Two per-case CSVs: paired t-test (Cohen's d_z) and Wilcoxon "
                    "signed-rank (rank-biserial r), with n. Arms of run folders (--arm NAME RUN..., globs "
                    "allowed): per arm the mean over seeds with a Student-t confidence interval; against the first arm the "
                    "seed-level test (paired by seed, Welch otherwise; it answers 'does the method help') "
                    "and the per-image tests; per class / region for multi-class and eval.regions runs.",
                    "medseg compare --arm unet 'runs/unet_sweep/seed_*' --arm ife 'runs/ife_sweep/seed_*' "
                    "--metric dice\n  medseg compare baseline.csv ours.csv --metric dice")
    c.add_argument("inputs", nargs="*", metavar="CSV_OR_RUN",
                   help="two per-case CSVs (from medseg metrics), or run folders (each its own one-seed arm)")
    c.add_argument("--arm", nargs="+", action="append", default=[], metavar=("NAME", "RUN"),
                   help="an arm: its name, then its run folders or glob patterns (repeat per arm; the first "
                        "arm is the baseline)")
    c.add_argument("--metric", default="dice", help="column to compare (default dice)")
    c.add_argument("--drop-zero", action="store_true",
                   help="leave values = 0 (DSC = 0 classes) out of averages, the CWCD paper's convention; "
                        "labelled in the output (arms only)")
    c.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    c.set_defaults(func=run_compare)


def run_labels(a: Path, b: Path) -> tuple[str, str]:
    """Names for two result files: their stems, or their run folders when the stems are equal
    (``runs/x/metrics/per_case.csv`` vs ``runs/y/metrics/per_case.csv`` -> ``x``, ``y``)."""
    if a.stem != b.stem:
        return a.stem, b.stem
    pa, pb = a.resolve().parent, b.resolve().parent
    if pa.name == pb.name == "metrics":
        pa, pb = pa.parent, pb.parent
    return (pa.name, pb.name) if pa.name != pb.name else (str(a), str(b))


def run_compare(args: argparse.Namespace) -> int:
    from medseg.errors import UserError

    if not args.arm and len(args.inputs) == 2 and all(Path(p).is_file() for p in args.inputs):
        if args.drop_zero:
            raise UserError("--drop-zero needs run folders (--arm NAME RUN...), not two CSV files")
        return _compare_csvs(args)
    arms = {}
    for arm in args.arm:
        if len(arm) < 2:
            raise UserError(f"--arm {arm[0]}: give the arm's name, then at least one run folder")
        if arm[0] in arms:
            raise UserError(f"--arm {arm[0]} given twice; give each arm once with all its runs")
        arms[arm[0]] = arm[1:]
    for path in args.inputs:
        arms[Path(path).resolve().name] = [path]
    from medseg.engine.compare import compare_arms, format_arms

    result = compare_arms(arms, args.metric, drop_zero=args.drop_zero)
    print(format_arms(result))
    if args.json:
        Path(args.json).write_text(json.dumps(_clean(result), indent=2))
    return 0


def _compare_csvs(args: argparse.Namespace) -> int:
    from medseg.metrics.stats import format_comparison, paired_comparison, read_metric_column

    a = read_metric_column(args.inputs[0], args.metric)
    b = read_metric_column(args.inputs[1], args.metric)
    result = paired_comparison(a, b, *run_labels(Path(args.inputs[0]), Path(args.inputs[1])))
    print(format_comparison(result, args.metric))
    if args.json:
        Path(args.json).write_text(json.dumps({"metric": args.metric, **result}, indent=2))
    return 0


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN / inf as null, keys as strings."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
