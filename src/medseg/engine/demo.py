"""The demo job: train a small UNet on the built-in synthetic data, evaluate, predict, summarise."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import RunConfig, build_config
from medseg.log import logger as log

DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "data": {"kind": "synthetic2d", "image_size": [64, 64], "num_classes": 1, "in_channels": 1,
             "batch_size": 8, "synthetic": {"n_train": 96, "n_val": 16, "n_test": 24, "seed": 0},
             "augment": {"hflip": 0.5, "vflip": 0.5}},
    "model": {"name": "unet", "kwargs": {"base": 16, "depth": 3}},
    "optim": {"name": "adam", "lr": 3e-3},
    "schedule": {"name": "cosine", "min_lr": 1e-5},
    "train": {"epochs": 20, "val_every": 5, "seed": 0},
    "eval": {"metrics": ["dice", "iou", "precision", "recall", "hd95"]},
}


def demo_config(epochs: int | None = None) -> RunConfig:
    raw = {**DEMO_CONFIG, "train": {**DEMO_CONFIG["train"]}}
    if epochs is not None:
        raw["train"]["epochs"] = epochs
    return build_config(raw)


def export_test_images(cfg: RunConfig, folder: Path) -> Path:
    """Write the synthetic test images as PNGs, as a user's own folder would hold them."""
    from PIL import Image

    from medseg.data import build_dataset

    folder.mkdir(parents=True, exist_ok=True)
    dataset = build_dataset(cfg.data, "test")
    for i in range(len(dataset)):
        image = dataset[i]["image"][0].numpy()
        lo, hi = float(image.min()), float(image.max())
        png = np.round(255 * (image - lo) / max(hi - lo, 1e-6)).astype(np.uint8)
        Image.fromarray(png).save(folder / f"{dataset[i]['meta']['id']}.png")
    return folder


def run_demo(output: str | Path = "runs/demo", epochs: int | None = None) -> dict[str, Any]:
    """Train -> evaluate -> predict in ``output``; returns the summary dict."""
    from medseg.engine.evaluate import evaluate_run, format_summary
    from medseg.engine.predict import predict_paths
    from medseg.engine.trainer import train_run

    t0 = time.perf_counter()
    run_dir = Path(output)
    cfg = demo_config(epochs)
    result = train_run(cfg, run_dir, overwrite=True)
    summary = evaluate_run(run_dir, "test")
    inputs = export_test_images(cfg, run_dir / "demo_inputs")
    written = predict_paths(run_dir, inputs, run_dir / "predictions" / "from_png", save_probabilities=True,
                            progress=False)
    elapsed = time.perf_counter() - t0
    dice = summary["metrics"]["dice"]["mean"]
    lines = [
        "", "=" * 64, f"medseg demo finished in {elapsed:.0f} s  ->  {run_dir}",
        f"model {cfg.model.name} {cfg.model.kwargs}, {result['epochs']} epochs, "
        f"best val dice {result['best_metric']:.4f} (epoch {result['best_epoch']})",
        f"test set ({summary['cases']} synthetic cases):", format_summary(summary),
        f"files: config.yaml, checkpoints/{{best,last}}.pt, logs/epochs.csv, metrics/per_case.csv, "
        f"predictions/test/*.png, predictions/from_png/ ({len(written)} masks from `medseg predict`)",
        "=" * 64,
    ]
    log.info("\n".join(lines))
    return {"train": result, "test": summary, "seconds": elapsed, "test_dice": dice}
