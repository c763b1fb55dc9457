"""Training throughput of the IFE-size UNet (64..1024) at 224x224, batch 8, in one run:

1. fp32 (contiguous)  vs  channels_last + bfloat16 autocast      (target: mixed precision >= 2x)
2. 1 process (all cores)  vs  2 DDP processes (gloo, 1 thread each, same per-process batch)

Synthetic tensors (no data loading: see data_throughput.py for the loader), Adam, Dice + BCE, the same
step the trainer runs. Usage: ``python benchmarks/train_speed.py [--size 224 --batch 8 --steps 3]``.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medseg.losses import create_loss
from medseg.models import create_model


def make_step(base: int, fmt: torch.memory_format, amp: bool, size: int, batch: int, ddp: bool = False):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=3, out_channels=1, base=base, depth=4).to(memory_format=fmt)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = create_loss("dice_bce")
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, size, size) > 0.7).float()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss = loss_fn(out, {"label": y})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def images_per_second(step, batch: int, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def _ddp_worker(rank: int, world: int, port: int, args: argparse.Namespace, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    fmt = torch.channels_last
    step = make_step(args.base, fmt, True, args.size, args.batch, ddp=True)
    step()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dist.barrier()
    elapsed = time.perf_counter() - t0
    if rank == 0:
        queue.put(world * args.steps * args.batch / elapsed)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--base", type=int, default=64)
    args = parser.parse_args()
    print(f"UNet base {args.base} (widths {[args.base * 2**i for i in range(5)]}), {args.size}x{args.size}, "
          f"batch {args.batch}, {args.steps} timed steps; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores")

    fp32 = images_per_second(make_step(args.base, torch.contiguous_format, False, args.size, args.batch),
                             args.batch, args.steps)
    print(f"fp32 contiguous          : {fp32:8.2f} images/s")
    mixed = images_per_second(make_step(args.base, torch.channels_last, True, args.size, args.batch),
                              args.batch, args.steps)
    print(f"channels_last + bf16     : {mixed:8.2f} images/s   ratio vs fp32: {mixed / fp32:.2f}x (target >= 2)")

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(_ddp_worker, args=(2, free_port(), args, queue), nprocs=2, join=True)
    ddp = queue.get()
    print(f"1 process (bf16+CL)      : {mixed:8.2f} images/s")
    print(f"2 DDP processes (gloo)   : {ddp:8.2f} images/s   ratio vs 1 process: {ddp / mixed:.2f}x "
          f"(same per-process batch, {torch.get_num_threads()} cores shared)")


if __name__ == "__main__":
    sys.exit(main())
