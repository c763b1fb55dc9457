"""Sliding-window inference: medseg (``medseg.engine.sliding_window``) against MONAI's
``sliding_window_inference`` (mode="gaussian"), same model, volume, window and overlap, for 3 and 100
output classes: wall time and peak memory, as ratios, in one run.

Each (implementation, classes) measurement runs in a fresh worker process, so that peak memory is not
hidden by memory an earlier run left in the allocator: on CPU the peak is the growth of the resident set
(``VmHWM`` after resetting it via ``/proc/self/clear_refs``, minus ``VmRSS`` before the call); on CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory allocated before the call. Timings are the best of
``--repeats`` calls after a warm-up call on a small volume; the peak is that of the first full call.

Rows: ``medseg labels`` = ``output="labels"`` (float16 slab, argmax on the fly: what a prediction needs),
``medseg logits`` = ``output="logits"`` (float32 slab, full float32 output), ``MONAI`` = its
``sliding_window_inference`` followed by ``argmax`` for the labels.

Values are checked: medseg's logits against MONAI's (largest absolute difference relative to the largest
|logit|, tolerance 1e-5; 3 classes, where the workers save them), and both label maps against MONAI's argmax
(fraction of voxels that differ: 0 for the float32 path, at most 1e-3 for the float16 slab, whose near-ties
may flip). The script exits 1 when a value is over its tolerance (``MEDSEG_BENCH_INJECT=1e-3`` shows it).

    python benchmarks/sliding_window.py               # 128^3, window 64^3, overlap 0.5
    python benchmarks/sliding_window.py --quick       # 64^3, window 32^3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gate import Gate  # noqa: E402

MIB = 2 ** 20
IMPLS = ("monai", "medseg-labels", "medseg-logits")


def build(classes: int, size: int, device: str) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(8, classes, 1)).to(device).eval()
    volume = torch.randn(1, 1, size, size, size, device=device)
    return net, volume


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class Peak:
    """Peak memory growth of a block: CUDA allocator stats, or the resident set on Linux CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.bytes = -1

    def __enter__(self) -> "Peak":
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _vm("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.bytes = _vm("VmHWM") - self.base


def worker(impl: str, classes: int, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One measurement in this (fresh) process; saves the labels (and 3-class logits) for the checks."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    net, volume = build(classes, args.size, args.device)
    roi = (args.roi,) * 3
    with torch.no_grad():
        net(volume[:, :, :8, :8, :8])  # warm-up

    from monai.inferers import sliding_window_inference as monai_sw  # imported outside the measured calls

    from medseg.engine.sliding_window import sliding_window_inference as medseg_sw

    def run() -> tuple[Any, Any]:
        with torch.no_grad():
            if impl == "monai":
                logits = monai_sw(volume, roi, args.sw_batch, net, overlap=args.overlap, mode="gaussian")
                return logits.argmax(1).to(torch.uint8), logits
            if impl == "medseg-labels":
                return medseg_sw(volume, net, roi, args.overlap, args.sw_batch, output="labels"), None
            logits = medseg_sw(volume, net, roi, args.overlap, args.sw_batch)
            return logits.argmax(1).to(torch.uint8), logits

    full = volume
    volume = full[:, :, : args.roi + args.roi // 2, : args.roi + args.roi // 2, : args.roi + args.roi // 2]
    run()  # warm-up of this implementation's kernels on a small volume (lazy initialisation is not measured)
    volume = full
    times = []
    peak = -1
    for i in range(args.repeats):
        with Peak(args.device) as p:
            start = time.perf_counter()
            labels, logits = run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = p.bytes if i == 0 else peak  # the first full call: nothing of an earlier one to reuse
        if i < args.repeats - 1:
            del labels, logits
    np.save(out_dir / f"{impl}-{classes}-labels.npy", labels.cpu().numpy())
    if logits is not None and classes <= 3:
        np.save(out_dir / f"{impl}-{classes}-logits.npy", logits.cpu().numpy())
    return {"time_s": min(times), "peak_bytes": peak}


def spawn(impl: str, classes: int, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", impl, "--classes-one", str(classes), "--out", str(out_dir),
           "--size", str(args.size), "--roi", str(args.roi), "--overlap", str(args.overlap), "--sw-batch",
           str(args.sw_batch), "--repeats", str(args.repeats), "--device", args.device, "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {impl} / {classes} classes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_values(classes: int, out_dir: Path, gate: Gate) -> dict[str, float]:
    """Relative differences against MONAI, recorded in the gate (ours = 1 + difference, ref = 1)."""
    import numpy as np

    ref = np.load(out_dir / f"monai-{classes}-labels.npy")
    found: dict[str, float] = {}
    for impl, tol in (("medseg-logits", 0.0), ("medseg-labels", 1e-3)):
        frac = float((np.load(out_dir / f"{impl}-{classes}-labels.npy") != ref).mean())
        found[f"{impl} labels differ"] = frac
        gate.add(f"{classes} classes: {impl} labels vs MONAI argmax (fraction differing)", 1 + frac, 1.0, tol)
    logits_path = out_dir / f"medseg-logits-{classes}-logits.npy"
    if logits_path.exists():
        ours, theirs = np.load(logits_path), np.load(out_dir / f"monai-{classes}-logits.npy")
        rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
        found["logits max rel diff"] = rel
        gate.add(f"{classes} classes: medseg logits vs MONAI (max |diff| / max |logit|)", 1 + rel, 1.0, 1e-5)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--classes", type=int, nargs="+", default=[3, 100])
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="64^3 volume, 32^3 window, one repeat")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--classes-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.classes_one, args, Path(args.out))))
        return 0
    if args.quick:
        args.size, args.roi, args.repeats = 64, 32, 1
    gate = Gate()
    print(f"volume {args.size}^3, window {args.roi}^3, overlap {args.overlap}, sw_batch {args.sw_batch}, "
          f"device {args.device}, best of {args.repeats}; peak = memory growth during the call")
    print(f"{'classes':>7}  {'implementation':<15}{'time s':>9}{'peak MiB':>10}{'time ratio':>12}{'memory ratio':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        for classes in args.classes:
            res = {impl: spawn(impl, classes, args, out_dir) for impl in IMPLS}
            base = res["monai"]
            for impl in IMPLS:
                r = res[impl]
                print(f"{classes:>7}  {impl:<15}{r['time_s']:>9.2f}{r['peak_bytes'] / MIB:>10.0f}"
                      f"{base['time_s'] / r['time_s']:>11.2f}x{base['peak_bytes'] / max(r['peak_bytes'], 1):>13.2f}x")
            diffs = check_values(classes, out_dir, gate)
            print("         values vs MONAI: " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    print("ratios: MONAI / medseg (above 1 = medseg faster or smaller)")
    return gate.exit_code()


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
