"""``medseg ife-maps``: which channels IFE selects, for one image."""
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
    p.set_defaults(func=run_ife_maps)


def run_ife_maps(args: argparse.Namespace) -> int:
    from medseg.report.ife_maps import ife_maps

    path = ife_maps(args.checkpoint, args.image, args.output, args.top, args.bottom)
    print(f"wrote {path}")
    return 0
