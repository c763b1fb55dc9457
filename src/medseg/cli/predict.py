"""``medseg predict``: masks for an image, a volume or a folder, from a checkpoint, a fold ensemble or an
exported ONNX model."""
from __future__ import annotations

import argparse
import sys

from medseg.cli import add_command
from medseg.cli._options import TTA_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "predict", "Predict masks for an image/volume or a folder of them.",
                    "medseg predict --checkpoint runs/demo --input images/ --output preds/ --probabilities")
    p.add_argument("--checkpoint", help="checkpoint file or run folder (uses best.pt); --engine torch")
    p.add_argument("--run", metavar="CV_DIR",
                   help="a `medseg cv` folder (folds.json, fold_<i>/): the fold ensemble, mean of every fold's "
                        "probabilities (instead of --checkpoint)")
    p.add_argument("--tta", default="none", choices=["none", "flip"], help=TTA_HELP)
    p.add_argument("--engine", default="torch", choices=["torch", "onnxruntime"],
                   help="torch (a checkpoint) or onnxruntime (an ONNX folder from `medseg export`, given as --model)")
    p.add_argument("--model", help="folder written by `medseg export --format onnx` (with --engine onnxruntime)")
    p.add_argument("--input", required=True, help="image, NIfTI volume, or folder")
    p.add_argument("--output", required=True,
                   help="folder for the masks (PNG 0/255 or NIfTI); not the input folder nor inside it")
    p.add_argument("--probabilities", action="store_true", help="also write probability maps (*_prob)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace prediction files that already exist in --output (input files are never replaced)")
    p.add_argument("--channels", type=int, nargs="+", metavar="I",
                   help="0-based input channels to feed the model, in order (image R=0 G=1 B=2, or NIfTI channel "
                        "files _0000, _0001, ... / the 4th axis); default: all, with grey repeated and RGB "
                        "converted to grey as in training")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Predict a folder; on per-input failures the rest is written, then the failures are listed (exit 1)."""
    from medseg.engine.predict import PredictionError, predict_paths
    from medseg.errors import UserError

    source = args.model if args.engine == "onnxruntime" else args.checkpoint
    if args.run is not None and (args.checkpoint or args.model or args.engine != "torch"):
        raise UserError("--run CV_DIR predicts with the fold ensemble of a `medseg cv` folder and replaces "
                        "--checkpoint (and --engine onnxruntime --model); give either --run or --checkpoint")
    if args.run is None and (source is None or (args.engine == "torch" and args.model)):
        raise UserError("--engine torch takes --checkpoint RUN_OR_FILE (or --run CV_DIR, a fold ensemble); "
                        "--engine onnxruntime takes --model DIR (a folder written by `medseg export --format onnx`)")
    try:
        written = predict_paths(source, args.input, args.output, save_probabilities=args.probabilities,
                                overwrite=args.overwrite, channels=args.channels,
                                echo=lambda msg: print(msg, file=sys.stderr), engine=args.engine,
                                run=args.run, tta=args.tta)
    except PredictionError as err:
        print(f"wrote {len(err.written)} prediction(s) to {args.output}")
        raise
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0
