"""``medseg evaluate`` and ``medseg predict``."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    e = add_command(sub, "evaluate", "Evaluate a run's checkpoint on a split: per-case CSV and summary.",
                    "medseg evaluate runs/demo --split test --metrics dice iou hd95")
    e.add_argument("run", help="run folder (or a checkpoint file inside one)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--metrics", nargs="+", help="metric names (default: the config's eval.metrics)")
    e.add_argument("--no-predictions", action="store_true", help="do not write prediction files")
    e.set_defaults(func=run_evaluate)

    p = add_command(sub, "predict", "Predict masks for an image/volume or a folder of them.",
                    "medseg predict --checkpoint runs/demo --input images/ --output preds/ --probabilities")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder (uses best.pt)")
    p.add_argument("--input", required=True, help="image, NIfTI volume, or folder")
    p.add_argument("--output", required=True, help="folder for the masks (PNG 0/255 or NIfTI)")
    p.add_argument("--probabilities", action="store_true", help="also write probability maps (*_prob)")
    p.set_defaults(func=run_predict)


def run_evaluate(args: argparse.Namespace) -> int:
    from medseg.engine.evaluate import evaluate_run, format_summary

    summary = evaluate_run(args.run, args.split, checkpoint=args.checkpoint, metrics=args.metrics,
                           save_predictions=not args.no_predictions)
    print(format_summary(summary))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from medseg.engine.predict import predict_paths

    written = predict_paths(args.checkpoint, args.input, args.output, save_probabilities=args.probabilities)
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0
