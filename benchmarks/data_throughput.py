"""Does the 2-D loader keep up with training? batches/s of the loader vs UNet training steps/s.

Loader: ``build_loader`` on the train split at 224x224, batch 8, augmentation on (flips, rotation,
brightness/contrast, random resized crop), ``num_workers`` 2; Kvasir-SEG from ../shared/data when
present (JPEG decode + resize), else the synthetic generator. Measured twice: decoded cases cached in
memory (``cache: true``, the default; warm-up time reported) and re-decoded every time (``cache: false``).
Peer: the IFE-size UNet (widths 64..1024) doing Adam training steps on the same batch shape and device.
The ratio loader/UNet must be >= 2 for the loader to keep up.

    .venv/bin/python benchmarks/data_throughput.py [--batches 30] [--steps 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from medseg.config import DataConfig
from medseg.data import build_dataset, build_loader
from medseg.models.unet import UNet

SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
AUG = dict(hflip=0.5, vflip=0.5, rotate_deg=90, rotate_p=0.5, brightness=0.2, contrast=0.2, crop_scale=(0.75, 1.0))


def data_config(cache: bool, workers: int) -> DataConfig:
    kvasir = SHARED / "kvasir-seg"
    source = dict(kind="folder2d", root=str(kvasir), normalize="imagenet") if kvasir.is_dir() else dict(kind="synthetic2d")
    return DataConfig.model_validate(dict(**source, image_size=[224, 224], batch_size=8, num_workers=workers,
                                          cache=cache, augment=AUG, synthetic=dict(n_train=400)))


def loader_rate(cfg: DataConfig, batches: int) -> tuple[float, float]:
    """(batches/s over ``batches`` batches after the first, seconds to build + warm the dataset)."""
    t0 = time.perf_counter()
    ds = build_dataset(cfg, "train")
    if cfg.cache:
        ds.warm_cache()
    warm = time.perf_counter() - t0
    it = iter(build_loader(cfg, "train", seed=0, epoch=0, dataset=ds))
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - t0), warm


def unet_rate(steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = UNet(3, 1, base=64, depth=4).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(8, 3, 224, 224, device=device)
    y = (torch.rand(8, 1, 224, 224, device=device) > 0.5).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, device {args.device}")
    cfg = data_config(cache=True, workers=args.workers)
    print(f"data: {cfg.kind} {cfg.root or ''} 224x224 batch 8, {args.workers} workers, augmentation on")
    unet = unet_rate(args.steps, args.device)
    print(f"UNet (64..1024) training: {unet:.3f} steps/s")
    for cache in (True, False):
        rate, warm = loader_rate(data_config(cache, args.workers), args.batches)
        print(f"loader cache={str(cache).lower():5s}: {rate:7.2f} batches/s (build+warm {warm:.1f}s)  "
              f"ratio loader/UNet = {rate / unet:7.1f}  {'OK' if rate / unet >= 2 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
