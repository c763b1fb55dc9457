"""Coarse-to-fine inference (MLL/MLN Algorithm 1, ``medseg.engine.c2f.segment_volume``, all three views)
against sliding-window ``unet3d`` inference (``medseg.engine.sliding_window``) on the same phantom volume:
seconds per volume, fine rounds, and peak memory, as ratios, in one run.

The coarse-to-fine side runs the real networks (``c2f_coarse`` + ``c2f_fine`` + ``F_S``, the same weights
for the three views). Untrained networks find nothing (no fine round would run), so by default the rounds
are Algorithm 1's with the previous round's fused probability and mask taken as the ground truth (what a
trained model gives): round 0 = the coarse pass of each view, fused and post-processed; each of ``--rounds``
rounds = ``fine_probability`` of each view (crops of the target's box + margin 20, as on a trained model),
fusion, post-processing and RDSC. With ``--run`` (a ``medseg c2f train`` run) the trained networks run
``segment_volume`` itself, which stops as Algorithm 1 does (RDSC >= 0.99, at most 10 rounds), and the rounds
run are reported; a run with one view uses its networks for all three.

Each side runs in a fresh worker process, so that its peak memory is not hidden by what the other left in
the allocator; the peak is measured as ``benchmarks/sliding_window.py`` does (``Peak``: resident-set growth
on CPU, ``max_memory_allocated`` on CUDA). The peak is that of a first, cold call (nothing of an earlier
call left to reuse); the time is the best of ``--repeats`` calls after it.

    python benchmarks/c2f_speed.py                                   # tiny: 48x40x12 phantom, < 1 min
    python benchmarks/c2f_speed.py --shape 256 256 64 --spacing 1.5 1.5 3 --roi 96 96 64   # realistic-ish
    python benchmarks/c2f_speed.py --run runs/mll_phantom            # trained axial networks, real rounds
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sliding_window import MIB, Peak  # noqa: E402

WINDOW = (-100.0, 240.0)


def phantom(args: argparse.Namespace) -> tuple[Any, Any]:
    """Window-scaled phantom volume and its label (seed 0), of ``--shape`` voxels at ``--spacing`` mm."""
    from medseg.data.phantom import PhantomSpec, make_phantom
    from medseg.data.views import window_scale

    spec = PhantomSpec(tuple(args.shape), tuple(args.spacing), args.target_length, args.target_radius)
    image, label, _ = make_phantom(0, spec)
    return window_scale(image, WINDOW), label




def c2f_nets(args: argparse.Namespace, device: str) -> list[Any]:
    """One ``Nets`` per view (eval mode): a trained run's (``--run``) or untrained ``c2f_coarse``/``c2f_fine``."""
    import torch

    from medseg.engine.c2f_train import build_nets, validate_recipe

    if args.run:
        from medseg.engine.c2f_predict import load_run

        nets, _ = load_run(args.run, device=device)
        trained = list(nets.values())
        return [trained[i % len(trained)] for i in range(3)]
    torch.manual_seed(0)
    recipe = validate_recipe({"name": "bench", "data": {"root": ".", "window": list(WINDOW)}})
    n = build_nets(recipe, device)
    n.train(False)
    return [n, n, n]


def run_c2f(volume: Any, label: Any, nets: list[Any], args: argparse.Namespace, device: str) -> int:
    """Algorithm 1 on all three views; returns the fine rounds run."""
    import numpy as np

    from medseg.data.views import view_axis
    from medseg.engine.c2f import (coarse_probability, fine_probability, fuse_views, keep_large_components, rdsc,
                                   segment_volume)

    axes = [view_axis(v) for v in ("axial", "coronal", "sagittal")]
    if args.run:
        result, _ = segment_volume(volume, [n.view_models(a) for n, a in zip(nets, axes)], device=device)
        return result.rounds
    probs = [coarse_probability(volume, a, n.coarse, device) for n, a in zip(nets, axes)]
    keep_large_components(fuse_views(probs))
    truth = label.astype(bool)
    for _ in range(args.rounds):  # the previous round's state = the ground truth (a trained model's)
        round_probs = [fine_probability(volume, a, truth.astype(np.float32), truth, n.fine, n.saliency,
                                        device=device) for n, a in zip(nets, axes)]
        rdsc(truth, keep_large_components(fuse_views(round_probs)))
    return args.rounds


def run_sliding(volume: Any, net: Any, args: argparse.Namespace, device: str) -> Any:
    import torch

    from medseg.engine.sliding_window import sliding_window_inference

    x = torch.from_numpy(volume)[None, None].to(device)
    with torch.no_grad():
        return sliding_window_inference(x, net, roi_size(args), args.overlap, args.sw_batch, output="labels")


def roi_size(args: argparse.Namespace) -> list[int]:
    """``--roi``, else the volume's shape rounded up to a multiple of 16 (the U-Net's divisor), at most 96."""
    if args.roi:
        return list(args.roi)
    return [min(96, -(-s // 16) * 16) for s in args.shape]


def worker(impl: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    device = args.device
    volume, label = phantom(args)
    if impl == "c2f":
        nets = c2f_nets(args, device)
        call = lambda: run_c2f(volume, label, nets, args, device)  # noqa: E731
    else:
        from medseg.models import create_model

        torch.manual_seed(0)
        net = create_model("unet3d", in_channels=1, out_channels=2).to(device).eval()
        call = lambda: run_sliding(volume, net, args, device)  # noqa: E731
    with Peak(device) as p:  # the first (cold) call gives the peak: nothing of an earlier call to reuse
        rounds = call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    peak, times = p.bytes, []
    for _ in range(args.repeats):  # warm calls give the time (lazy initialisation is not measured)
        start = time.perf_counter()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    rounds = rounds if impl == "c2f" else 0
    return {"time_s": min(times), "peak_bytes": peak, "rounds": rounds}


def spawn(impl: str, argv: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *argv, "--worker", impl], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {impl} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 40, 12], help="phantom voxels (x y z)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 6.0], help="mm")
    parser.add_argument("--target-length", type=float, default=40.0)
    parser.add_argument("--target-radius", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3, help="fine rounds without --run (default 3)")
    parser.add_argument("--run", help="a `medseg c2f train` run: trained networks, rounds as Algorithm 1 stops")
    parser.add_argument("--roi", type=int, nargs=3, help="sliding window (default: the volume, <= 96)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", choices=("c2f", "sliding"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    argv = [a for a in sys.argv[1:]]
    res = {impl: spawn(impl, argv) for impl in ("c2f", "sliding")}
    c2f, sw = res["c2f"], res["sliding"]
    print(f"phantom {tuple(args.shape)} voxels at {tuple(args.spacing)} mm, device {args.device}, {args.threads} "
          f"thread(s), best of {args.repeats}; peak = memory growth during the call")
    print(f"{'method':<44}{'s/volume':>10}{'rounds':>8}{'peak MiB':>10}")
    what = "trained run" if args.run else "GT-state rounds"
    print(f"{'coarse-to-fine, 3 views (' + what + ')':<44}{c2f['time_s']:>10.3f}{c2f['rounds']:>8}"
          f"{c2f['peak_bytes'] / MIB:>10.1f}")
    print(f"{'unet3d sliding window ' + 'x'.join(map(str, roi_size(args))):<44}{sw['time_s']:>10.3f}{'-':>8}"
          f"{sw['peak_bytes'] / MIB:>10.1f}")
    print(f"ratio coarse-to-fine / sliding window: time {c2f['time_s'] / sw['time_s']:.2f}x, peak memory "
          f"{c2f['peak_bytes'] / max(sw['peak_bytes'], 1):.2f}x")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
