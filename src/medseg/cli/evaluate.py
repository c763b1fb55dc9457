"""``medseg evaluate RUN``: score a run's checkpoint on a split (or each fold of a `medseg cv` folder)."""
from __future__ import annotations

import argparse

from medseg.cli import add_command
from medseg.cli._options import TTA_HELP

def register(sub: argparse._SubParsersAction) -> None:
    e = add_command(sub, "evaluate", "Evaluate a run's checkpoint on a split: per-case CSV and summary.",
                    "medseg evaluate runs/demo --split test --metrics dice iou hd95 --tta flip")
    e.add_argument("run", help="run folder (or a checkpoint file inside one); a `medseg cv` folder evaluates "
                               "each fold on its own split (no fold ensemble: see docs/ensemble.md)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--metrics", nargs="+", help="metric names (default: the config's eval.metrics)")
    e.add_argument("--no-predictions", action="store_true", help="do not write prediction files")
    e.add_argument("--tta", default="none", choices=["none", "flip"], help=TTA_HELP)
    e.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from medseg.engine.ensemble import is_cv_folder
    from medseg.engine.evaluate import evaluate_folds, evaluate_run, format_summary

    options = dict(checkpoint=args.checkpoint, metrics=args.metrics, save_predictions=not args.no_predictions,
                   tta=args.tta)
    if is_cv_folder(args.run):  # each fold on its own split: an ensemble would be scored on its training cases
        result = evaluate_folds(args.run, args.split, **options)
        print(result["table"])
        print(f"written: {result['written']} and .md")
        return 0
    print(format_summary(evaluate_run(args.run, args.split, **options)))
    return 0
