"""``medseg metrics``: score a prediction folder against a GT folder (``medseg compare`` is in cli/compare.py)."""
from __future__ import annotations

import argparse
import warnings

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "metrics", "Score predictions (PNG/JPG/TIFF/NIfTI masks or probability maps) against "
                    "ground truth, paired by file name; prints mean/std/median/count/excluded, writes a "
                    "per-case CSV and a JSON summary.",
                    "medseg metrics --pred runs/x/predictions/test --gt data/masks --metrics dice hd95 nsd "
                    "--spacing 0.8 0.8 2.5 --output results.csv")
    p.add_argument("--pred", help="folder of predictions (masks, label maps or probability maps)")
    p.add_argument("--gt", help="folder of ground-truth masks / label maps")
    p.add_argument("--metrics", nargs="+", default=["dice", "iou", "precision", "recall", "hd95", "assd"],
                   help="metric names, aliases or sets: ife, chnet, overlap, distance, volume (see --list)")
    p.add_argument("--num-classes", type=int, default=1,
                   help="1 = binary (default); K = label maps 0..K-1, per class + mean")
    p.add_argument("--spacing", type=float, nargs="+",
                   help="voxel spacing per axis in mm (default: NIfTI header; pixels for 2-D images)")
    p.add_argument("--output", default="metrics.csv", help="per-case CSV (the JSON summary goes beside it)")
    p.add_argument("--workers", type=int, default=None, help="processes (default min(8, CPUs); 1 = serial)")
    p.add_argument("--empty", choices=["worst", "nan"], default="worst",
                   help="empty masks: policy table (worst) or NaN, excluded and counted")
    p.add_argument("--compat", choices=["ife", "medpy"], default=None,
                   help="reproduce a published code's conventions (ife: 0 on empty, uint8 MAE, HCE at 64x64 ...)")
    p.add_argument("--hd95-mode", choices=["pooled", "max_directed"], default="pooled",
                   help="pooled = medpy (default); max_directed = MONAI")
    p.add_argument("--assd-mode", choices=["pooled", "mean_of_directed"], default=None)
    p.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm (or pixels)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability maps: mask = prob > threshold")
    p.add_argument("--gt-threshold", type=float, default=None, metavar="T",
                   help="binary GT: foreground where value > T (e.g. 127 for 0/255 masks with stray grey "
                        "pixels). Default: GT must be 0/1, 0/255 or 0/255 with JPEG-like noise, else an error")
    p.add_argument("--pred-suffix", default="", help="cut from prediction names before pairing (e.g. _pred)")
    p.add_argument("--gt-suffix", default="", help="cut from GT names before pairing (e.g. _mask)")
    p.add_argument("--regions", choices=["brats", "brats2015"], default=None,
                   help="score BraTS regions WT/TC/ET of label maps (DSC, HD95 + --metrics) instead of classes: "
                        "brats = labels 0/1/2/4 (ET 4, or 3 once remapped), brats2015 = labels 0-4, 3 = "
                        "non-enhancing tumour (docs/cwcd.md)")
    p.add_argument("--list", action="store_true", help="list the metrics and sets, then exit")
    p.set_defaults(func=run_metrics)


def run_metrics(args: argparse.Namespace) -> int:
    from medseg.errors import UserError
    from medseg.metrics import METRIC_SETS, list_metrics
    from medseg.metrics.folder import SpacingWarning, evaluate_folder, format_summary
    from medseg.metrics.regions import RegionWarning

    if args.list:
        for name, doc in list_metrics().items():
            print(f"{name:<16}{doc}")
        for name, members in METRIC_SETS.items():
            print(f"set {name:<12}{' '.join(members)}")
        return 0
    if not args.pred or not args.gt:
        raise UserError("give both --pred DIR and --gt DIR (or --list)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpacingWarning)  # printed below from the summary instead
            warnings.simplefilter("ignore", RegionWarning)  # --regions notes: printed below as well
            result = evaluate_folder(args.pred, args.gt, args.metrics, num_classes=args.num_classes,
                                     spacing=args.spacing, workers=args.workers, output=args.output,
                                     pred_suffix=args.pred_suffix, gt_suffix=args.gt_suffix,
                                     gt_threshold=args.gt_threshold, empty=args.empty, compat=args.compat,
                                     hd95_mode=args.hd95_mode, assd_mode=args.assd_mode,
                                     nsd_tolerance=args.nsd_tolerance, threshold=args.threshold,
                                     regions=args.regions)
    except (ValueError, TypeError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(str(err)) from err
    print(f"{len(result.cases)} cases")
    for note in result.summary.get("warnings", []):
        print(f"warning: {note}")
    print(format_summary(result.summary))
    print(f"wrote {result.csv_path} and {result.json_path}")
    return 0
