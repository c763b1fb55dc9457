"""Listing run folders (``medseg runs``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def list_runs(folder: Path) -> list[dict[str, Any]]:
    """One row per run folder under ``folder``: name, model, epochs done, best validation metric."""
    rows = []
    for cfg_path in sorted(Path(folder).glob("**/config.yaml")):
        run = cfg_path.parent
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        train = cfg.get("train", {})
        metric, mode = train.get("best_metric", "dice"), train.get("best_mode", "max")
        epochs, best = 0, None
        log = run / "logs" / "epochs.jsonl"
        if log.is_file():
            records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            epochs = len(records)
            values = [r[f"val_{metric}"] for r in records if isinstance(r.get(f"val_{metric}"), (int, float))]
            if values:
                best = max(values) if mode == "max" else min(values)
        rows.append({"run": str(run.relative_to(folder)) or ".", "model": cfg.get("model", {}).get("name", "?"),
                     "epochs": epochs, "best": best, "metric": f"val_{metric}"})
    return rows
