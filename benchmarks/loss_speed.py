"""Loss catalogue speed, in one run (figures go in benchmarks/README.md and docs/losses.md).

1. CWCD contour maps for a batch of ``B x S^3`` labels with ``K`` classes: min-pool erosion on tensors
   (``medseg.ops.label_contour``: separable window min/max of the label map, one channel) vs ``scipy.ndimage.binary_erosion`` per sample and
   class (the CWCD code's tool), for the paper setting (cube 3, 6 iterations) and the code's (cube 2, 1).
   Peers are timed on the device of ours: scipy against ``label_contour`` on the CPU, and on ``--device``
   a per-class torch min-pool erosion (``-max_pool3d(-G_k)`` iterated, what a torch user writes) against
   ``label_contour`` on that device. All results are checked equal (scipy with ``border_value=1``, the
   no-erosion-at-the-crop-border rule); a difference exits 1 naming the case (``_gate.py``).
2. The cost each loss adds to a 3-D UNet training step (``unet3d``, base 16, depth 4, same batch): the loss's
   forward + backward on the step's logits, and the on-the-fly preparation of its derived targets
   (``prepare_targets``: contours, signed distance maps, U-Net weight maps), as a percentage of the step
   (forward + CE + backward + Adam update).

Usage: ``python benchmarks/loss_speed.py [--size 96] [--classes 15] [--batch 2] [--device cpu] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gate import Gate, injected  # noqa: E402

from medseg.losses import create_loss
from medseg.models import create_model
from medseg.ops import label_contour, prepare_targets

LOSSES = ["ce", "dice", "iou", "tversky", "focal_tversky", "gdl", "focal", "cedl", "dwce", "boundary",
          "boundary_clip20", "sdf_l2", "hausdorff", "mll_point", "cwce", "sdl", "cwcd", "cwcd_compat"]


def organ_labels(batch: int, size: int, classes: int, seed: int = 0) -> torch.Tensor:
    """``batch x size^3`` int64 labels: ``classes − 1`` ellipsoids of assorted sizes (some touching)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")).astype(np.float32)
    out = np.zeros((batch, size, size, size), np.int64)
    for b in range(batch):
        for k in range(1, classes):
            centre = rng.uniform(0.2, 0.8, 3) * size
            radii = rng.uniform(0.04, 0.2, 3) * size
            inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
            out[b][inside] = k
    return torch.from_numpy(out)


def timeit(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def scipy_contours(label: np.ndarray, classes: int, kernel: int, iterations: int) -> np.ndarray:
    """Per sample and class: ``G − binary_erosion(G)`` (scipy, border_value=1)."""
    st = np.ones((kernel,) * 3, bool)
    out = np.zeros((label.shape[0], classes, *label.shape[1:]), bool)
    for b in range(label.shape[0]):
        for k in range(classes):
            g = label[b] == k
            out[b, k] = g & ~ndi.binary_erosion(g, st, iterations=iterations, border_value=1)
    return out


def torch_contours(label: torch.Tensor, classes: int, kernel: int, iterations: int) -> torch.Tensor:
    """Per class ``G − erode(G)`` by min-pooling the one-hot channel (``-max_pool3d(-G)``), iterated: the
    usual torch code, on the label's device; outside the array counts as foreground (scipy ``border_value=1``)
    and an even kernel covers offsets ``−k//2 .. (k−1)//2`` (scipy's origin)."""
    left, right = kernel // 2, (kernel - 1) // 2
    out = []
    for k in range(classes):
        g = (label == k).float().unsqueeze(1)
        e = g
        for _ in range(iterations):
            e = -F.max_pool3d(F.pad(-e, (left, right) * 3, value=-1.0), kernel, stride=1)
        out.append((g - e).squeeze(1) > 0)
    return torch.stack(out, 1)


def _check(gate: Gate, case: str, ours: torch.Tensor, ref: np.ndarray | torch.Tensor) -> None:
    """Fraction of differing voxels (tolerance 0); ``MEDSEG_BENCH_INJECT`` flips one voxel of ours."""
    ours = ours.cpu().numpy().copy()
    if injected(case):
        ours.flat[0] = ~ours.flat[0]
    ref = ref.cpu().numpy() if isinstance(ref, torch.Tensor) else ref
    gate.rows[case] = [float(np.mean(ours != ref)), 0.0]


def bench_contours(label: torch.Tensor, classes: int, device: torch.device, sync, repeat: int, gate: Gate) -> list[dict]:
    rows = []
    lab = label.to(device)
    cpu = label.cpu()
    for kernel, iterations in [(3, 6), (2, 1)]:
        case = f"contours cube {kernel} x{iterations}"
        ref = scipy_contours(label.numpy(), classes, kernel, iterations)
        _check(gate, f"{case}: label_contour (cpu) vs scipy", label_contour(cpu, classes, kernel, iterations), ref)
        _check(gate, f"{case}: label_contour ({device.type}) vs scipy", label_contour(lab, classes, kernel, iterations), ref)
        _check(gate, f"{case}: torch min-pool ({device.type}) vs scipy", torch_contours(lab, classes, kernel, iterations), ref)
        t_cpu = timeit(lambda: label_contour(cpu, classes, kernel, iterations), repeat, lambda: None)
        t_scipy = timeit(lambda: scipy_contours(label.numpy(), classes, kernel, iterations), max(1, repeat // 2),
                         lambda: None)
        t_dev = timeit(lambda: label_contour(lab, classes, kernel, iterations), repeat, sync)
        t_pool = timeit(lambda: torch_contours(lab, classes, kernel, iterations), repeat, sync)
        rows.append({"kernel": kernel, "iterations": iterations, "device": device.type,
                     "minpool_cpu_s": t_cpu, "scipy_s": t_scipy, "speedup": t_scipy / t_cpu,
                     "minpool_device_s": t_dev, "torch_minpool_device_s": t_pool, "speedup_device": t_pool / t_dev})
    return rows


def make_loss(name: str) -> torch.nn.Module:
    if name == "cwcd_compat":
        return create_loss("cwcd", compat=True)
    if name == "mll_point":
        return create_loss("mll_point")
    if name == "sdf_l2":
        return create_loss("sdf_l2", clip=20.0)
    if name == "boundary_clip20":
        return create_loss("boundary", clip=20.0)
    return create_loss(name)


def bench_losses(label: torch.Tensor, classes: int, device: torch.device, sync, repeat: int) -> dict:
    torch.manual_seed(0)
    model = create_model("unet3d", in_channels=1, out_channels=classes, base=16, depth=4).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    image = torch.randn(label.shape[0], 1, *label.shape[1:], device=device)
    lab = label.to(device)
    ce = create_loss("ce")

    def step() -> None:
        out = model(image)
        loss = ce(out, {"label": lab})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_step = timeit(step, repeat, sync)
    with torch.no_grad():
        logits = model(image).detach()
    rows = []
    for name in LOSSES:
        loss = make_loss(name).to(device)
        requires = getattr(loss, "requires", set())
        t_prep = timeit(lambda: prepare_targets({"label": lab}, requires, classes), repeat, sync) if requires else 0.0
        batch = prepare_targets({"label": lab}, requires, classes)
        z = logits.clone().requires_grad_()

        def fwd_bwd() -> None:
            z.grad = None
            loss(z, batch)["loss"].backward()

        t_loss = timeit(fwd_bwd, repeat, sync)
        rows.append({"loss": name, "requires": sorted(requires), "loss_s": t_loss, "prep_s": t_prep,
                     "loss_pct": 100 * t_loss / t_step, "prep_pct": 100 * t_prep / t_step})
        print(f"  {name:14s} loss {t_loss * 1e3:8.1f} ms ({100 * t_loss / t_step:5.1f} %)   prep "
              f"{t_prep * 1e3:8.1f} ms ({100 * t_prep / t_step:5.1f} %)", flush=True)
    return {"step_s": t_step, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--classes", type=int, default=15)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (scipy uses one)")
    parser.add_argument("--skip-losses", action="store_true", help="only the contour comparison")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    label = organ_labels(args.batch, args.size, args.classes)
    print(f"device {device} ({torch.get_num_threads()} threads), labels {tuple(label.shape)}, {args.classes} classes")
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "shape": list(label.shape),
                    "classes": args.classes}
    gate = Gate()
    result["contours"] = bench_contours(label, args.classes, device, sync, args.repeat, gate)
    for row in result["contours"]:
        print(f"contours cube {row['kernel']} x{row['iterations']}: cpu: label_contour {row['minpool_cpu_s'] * 1e3:.1f} ms, "
              f"scipy per sample {row['scipy_s'] * 1e3:.1f} ms -> {row['speedup']:.1f}x; {row['device']}: "
              f"label_contour {row['minpool_device_s'] * 1e3:.1f} ms, per-class torch min-pool "
              f"{row['torch_minpool_device_s'] * 1e3:.1f} ms -> {row['speedup_device']:.1f}x", flush=True)
    result["values"] = gate.summary()
    if not args.skip_losses:
        print("3-D UNet step (unet3d base 16 depth 4, CE, Adam) ...", flush=True)
        result["losses"] = bench_losses(label, args.classes, device, sync, args.repeat)
        print(f"step {result['losses']['step_s'] * 1e3:.0f} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return gate.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
