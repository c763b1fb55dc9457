"""``medseg ife-maps`` (which channels IFE selects) and ``medseg ife-report`` (per-dataset / per-modality
metrics of a multi-dataset run, as a bar chart)."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "ife-maps", "PNG of the highest- and lowest-scored channels at each IFE point for one image",
                    "medseg ife-maps --checkpoint runs/ife/unet_c --image polyp.jpg --output polyp_ife.png")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder (uses best.pt)")
    p.add_argument("--image", required=True, help="a 2-D image file (preprocessed as in training)")
    p.add_argument("--output", help="PNG path (default: <image stem>_ife_maps.png beside the image)")
    p.add_argument("--top", type=int, default=4, help="highest-scored channels per IFE point (default 4)")
    p.add_argument("--bottom", type=int, default=4, help="lowest-scored channels per IFE point (default 4)")
    p.set_defaults(func=_maps)

    r = add_command(sub, "ife-report", "per-dataset and per-modality metrics of evaluated runs, as a bar chart PNG",
                    "medseg ife-report runs/ife/unet runs/ife/unet_c runs/ife/unet_e --metric dice")
    r.add_argument("runs", nargs="+", help="evaluated run folders (metrics/<split>_per_case.csv)")
    r.add_argument("--metric", default="dice")
    r.add_argument("--split", default="test")
    r.add_argument("--output", help="PNG path (default: <first run>/metrics/<split>_per_dataset_<metric>.png)")
    r.set_defaults(func=_report)


def _maps(args: argparse.Namespace) -> int:
    from medseg.report.ife_maps import ife_maps

    path = ife_maps(args.checkpoint, args.image, args.output, args.top, args.bottom)
    print(f"wrote {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from medseg.report.per_dataset import per_dataset_report

    path, table = per_dataset_report(args.runs, args.metric, args.split, args.output)
    print(table)
    print(f"wrote {path}")
    return 0
