"""``medseg export``: a run's model as ONNX / torch.export program / TorchScript, checked, with a model card."""
from __future__ import annotations

import argparse

from medseg.cli import add_command

FORMATS = ("onnx", "exported-program", "torchscript")  # medseg.engine.export.FORMATS (not imported: no torch at parse)
DEFAULT_TOLERANCE = 1e-4  # medseg.engine.export.DEFAULT_TOLERANCE


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", "Export a run's model (ONNX, torch.export program, TorchScript) with a model card; "
                    "refuses to write if the export's outputs differ from PyTorch's on a real input.",
                    "medseg export --run runs/demo --format onnx --output exported/demo")
    p.add_argument("--run", required=True, help="run folder (uses checkpoints/best.pt) or checkpoint file")
    p.add_argument("--format", required=True, choices=list(FORMATS),
                   help="onnx (checked with onnxruntime), exported-program (torch.export .pt2), torchscript "
                        "(deprecated in PyTorch; made with torch.jit.trace)")
    p.add_argument("--output", required=True, help="folder for the model file, export.json and MODEL_CARD.md")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"largest absolute logit difference allowed against PyTorch (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--input", help="image or NIfTI volume to check the export on (default: the run's first "
                                   "test case, else val, else train)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from medseg.engine.export import export_run

    result = export_run(args.run, args.format, args.output, overwrite=args.overwrite, tolerance=args.tolerance,
                        input_path=args.input, checkpoint=args.checkpoint)
    axes = result.dynamic_axes.get("image") or "none"
    print(f"wrote {result.file} ({result.format}; dynamic input axes {axes}; largest |logit difference| vs "
          f"PyTorch {result.max_abs_diff:.3g} <= {result.tolerance:g}) and {result.folder / 'MODEL_CARD.md'}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
