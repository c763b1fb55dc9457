"""Markdown table of test metrics (mean ± std over cases) for several run folders.

Usage: python scripts/results_table.py runs/ife_kvasir/unet runs/ife_kvasir/unet_c ... [--metrics dice iou]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--metrics", nargs="*")
    args = parser.parse_args()
    summaries = {Path(r).name: json.loads((Path(r) / "metrics" / "summary.json").read_text()) for r in args.runs}
    names = args.metrics or list(next(iter(summaries.values()))["metrics"])
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for run, s in summaries.items():
        cells = []
        for n in names:
            m = s["metrics"].get(n)
            if m is None:
                cells.append("-")
                continue
            cell = f"{m['mean']:.4f} ± {m['std']:.4f}"
            if "dataset" in m:
                cell += f" (dataset {m['dataset']:.4f})"
            if m["excluded"]:
                cell += f" [{m['excluded']} excl.]"
            cells.append(cell)
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
