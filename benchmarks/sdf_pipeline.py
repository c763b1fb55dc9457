"""Cost of exact signed distance maps for the boundary loss, on the fly vs built by the loader workers.

One run, same data and model: 3-D UNet (unet3d base 16) training steps on 2 x 96^3 synthetic patches with
Dice+CE + Kervadec boundary loss, where the unclipped SDFs are computed
(a) on the fly in the training process (``prepare_targets`` after the batch is on the device), or
(b) by the DataLoader's collate in a worker process (``build_loader(..., targets={"sdf"})``, num_workers=1),
overlapped with the step. Peer: the same steps with a loss that needs no SDF (Dice+CE alone).
Usage: ``python benchmarks/sdf_pipeline.py [--steps 3 --size 96]``.
"""
from __future__ import annotations

import argparse
import time

import torch

from medseg.config import DataConfig
from medseg.data import build_loader
from medseg.losses import create_loss
from medseg.models import create_model
from medseg.ops import prepare_targets


def run(cfg: DataConfig, loss_spec, loader_targets, device_targets, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model("unet3d", in_channels=1, out_channels=cfg.num_classes, base=16, depth=4)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = create_loss(loss_spec, num_classes=cfg.num_classes)
    loader = build_loader(cfg, "train", seed=0, epoch=0, targets=loader_targets)
    times = []
    it = iter(loader)
    for i in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(it)
        if device_targets:
            batch = prepare_targets(batch, device_targets, cfg.num_classes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch["image"])
        loss = loss_fn(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # first step warms up (worker start, allocations)
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    size = args.size
    cfg = DataConfig(kind="synthetic3d", image_size=[size, size, size], in_channels=1, num_classes=4, batch_size=2,
                     num_workers=1, synthetic={"n_train": 2 * (args.steps + 1), "n_val": 1, "n_test": 1},
                     nifti={"patch_size": [size, size, size], "samples_per_volume": 1})
    boundary = [{"name": "dice_ce"}, {"name": "boundary", "weight": 0.5}]
    base = run(cfg, "dice_ce", None, None, args.steps)
    fly = run(cfg, boundary, None, {"sdf"}, args.steps)
    workers = run(cfg, boundary, {"sdf"}, None, args.steps)
    print(f"3-D UNet step, 2 x {size}^3, 4 classes, {torch.get_num_threads()} threads, {args.steps} timed steps")
    print(f"Dice+CE (no SDF)                         : {base:7.2f} s/step")
    print(f"+ boundary, SDF on the fly (main process): {fly:7.2f} s/step  (+{100 * (fly / base - 1):.1f} %)")
    print(f"+ boundary, SDF in a loader worker       : {workers:7.2f} s/step  (+{100 * (workers / base - 1):.1f} %)")


if __name__ == "__main__":
    main()
