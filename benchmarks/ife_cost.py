"""Cost of IFE (Liu et al., MICCAI 2023): UNet training step with and without IFE, and the vectorised
entropy score against a naive unfold implementation of the released code.

Peers, measured in the same run:
1. ``unet`` (64..1024, BN) training step (forward, BCE, backward, Adam) vs the same with IFE curvature and
   IFE entropy (hist1d) at ratios (0.75, 0.5) on c2/c3, 224x224, batch 8. Steps are interleaved
   (plain, +C, +E, plain, ...) so machine load hits all variants alike; the median is reported.
   Requirement: overhead <= 15 %.
2. Entropy score of one feature map (default: the UNet c2 map at 224x224, batch 8 = 8x128x112x112):
   ``naive`` = the released UNet code's algorithm (``nn.Unfold`` 3x3 -> B x C x L x 9 copy, centre and
   neighbour mean, ``100 i + j``, one ``torch.histc`` per (sample, channel) row over the batch range)
   vs ours (sum-pool, one scatter-add; ``batch_hist1d`` computes the identical scores, checked here, and
   ``hist1d`` the per-sample default). Time (median of repeats) and peak extra memory: each measured in a
   fresh subprocess as the growth of the peak resident set size (``VmHWM``, reset just before) over the
   input tensor; large CPU tensors are mmap-backed, so this is the allocator peak (Linux only). Requirement: ours >= 5x less memory.

Run: ``.venv/bin/python benchmarks/ife_cost.py`` (``--quick`` for a smoke run at small sizes).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medseg.models import create_model
from medseg.modules.ife import entropy_scores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gate import Gate, inject  # noqa: E402

GATE = Gate()


# --------------------------------------------------------------------------------- naive reference
def naive_unfold_entropy(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """The released UNet ``Entropy_Hist`` algorithm: unfold, per-row ``histc`` over the batch range."""
    b, c, h, w = x.shape
    win = F.unfold(x, 3, padding=1).view(b, c, 3, 3, -1).permute(0, 1, 4, 2, 3)  # B C L 3 3 (view)
    flat = torch.flatten(win, start_dim=-2)  # copy: B C L 9
    centre = flat[..., 4]
    keys = (centre * 100 + (flat.sum(-1) - centre) / 8).reshape(b * c, -1)
    lo, hi = float(keys.min()), float(keys.max())
    hist = torch.stack([torch.histc(row, bins=bins, min=lo, max=hi) for row in keys])
    p = hist / ((h + 2) * (w + 2))
    return (-p * torch.log2(p.clamp_min(1e-40))).sum(1).reshape(b, c)


def score_fn(name: str):
    if name == "naive":
        return naive_unfold_entropy
    return lambda x: entropy_scores(x, name)


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def peak_child(name: str, shape: list[int]) -> None:
    """Run in a subprocess: print the peak RSS growth (bytes) of one score computation.

    The peak is the kernel's per-process high-water mark ``VmHWM``, reset to the current RSS just before
    the computation by writing 5 to ``/proc/self/clear_refs`` (``ru_maxrss`` would include the parent's
    RSS at fork time).
    """
    torch.set_num_threads(2)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    fn = score_fn(name)
    fn(torch.randn(1, 2, 8, 8))  # load kernels / lazy init outside the measurement
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = proc_status_kb("VmRSS")
    with torch.no_grad():
        fn(x)
    peak = proc_status_kb("VmHWM")
    print(json.dumps({"peak_extra_bytes": (peak - before) * 1024}))


def measure_peak(name: str, shape: list[int]) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", name, "--shape", *map(str, shape)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def time_scores(shape: list[int], repeats: int) -> dict[str, float]:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ref = naive_unfold_entropy(x)
    ours = inject("entropy batch_hist1d vs naive", entropy_scores(x, "batch_hist1d"))
    # the largest |ours - naive| / (1e-4 + 1e-4 |naive|): torch.testing.assert_close's rule, as a value <= 1
    GATE.rows["entropy batch_hist1d vs naive (|diff| / (1e-4 + 1e-4 |ref|))"] = [
        float(((ours - ref).abs() / (1e-4 + 1e-4 * ref.abs())).max()), 1.0]
    times: dict[str, list[float]] = {"naive": [], "batch_hist1d": [], "hist1d": []}
    with torch.no_grad():
        for _ in range(repeats):
            for name in times:
                t = time.perf_counter()
                score_fn(name)(x)
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------------------------- UNet steps
def unet_steps(size: int, batch: int, base: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    variants = {"plain": None, "curvature": "curvature", "entropy": "entropy"}
    models = {k: create_model("unet", base=base, ife=v, ife_ratio=(0.75, 0.5)) for k, v in variants.items()}
    opts = {k: torch.optim.Adam(m.parameters(), 1e-4) for k, m in models.items()}
    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.8).float()

    def step(k: str) -> float:
        t = time.perf_counter()
        opts[k].zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(models[k](x), y).backward()
        opts[k].step()
        return time.perf_counter() - t

    times: dict[str, list[float]] = {k: [] for k in models}
    for k in models:  # warm-up
        step(k)
    for _ in range(repeats):
        for k in models:
            times[k].append(step(k))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--skip-unet", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--shape", type=int, nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        peak_child(args.child, args.shape)
        return 0
    torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.batch, args.base, args.repeats = 64, 2, 8, 2
    shape = [args.batch, 2 * args.base, args.size // 2, args.size // 2]  # UNet c2
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, feature map {shape}")

    t = time_scores(shape, args.repeats)
    mem = {k: measure_peak(k, shape) for k in ("naive", "batch_hist1d", "hist1d")}
    fmap = math.prod(shape) * 4
    print("\n| entropy score | time (s) | time ratio naive/ours | peak extra memory (MB) | x feature map "
          "| memory ratio naive/ours |")
    print("|---|---|---|---|---|---|")
    for k in ("naive", "batch_hist1d", "hist1d"):
        print(f"| {k} | {t[k]:.3f} | {t['naive'] / t[k]:.1f} | {mem[k] / 1e6:.0f} | {mem[k] / fmap:.1f} "
              f"| {mem['naive'] / max(mem[k], 1):.1f} |")

    if not args.skip_unet:
        s = unet_steps(args.size, args.batch, args.base, args.repeats)
        print(f"\n| UNet (base {args.base}) training step, {args.size}x{args.size}, batch {args.batch} | "
              f"median s/step | overhead vs plain |")
        print("|---|---|---|")
        for k, v in s.items():
            print(f"| {k} | {v:.2f} | {100 * (v / s['plain'] - 1):+.1f} % |")
    return GATE.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
