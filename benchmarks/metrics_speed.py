"""Speed of medseg.metrics against the libraries people use today, all in one run, same process.

(a) 100 real Kvasir-SEG masks at their original size against perturbed soft predictions: the IFE metric
    set plus the CHNet/SOD set with HCE. medseg ``MetricSuite`` vs medpy (dc, jc, precision, recall, hd,
    assd, ravd) + PySODMetrics (Smeasure, Emeasure, WeightedFmeasure, Fmeasure, MAE, HCE, FmeasureV2
    Dice/IoU curves) computing the same numbers (checked).
(b) 20 synthetic small-organ volumes 256x256x128 (organ < 1 %), spacing 0.8x0.8x2.5 mm: HD95 + ASSD,
    medseg vs MONAI (``compute_hausdorff_distance`` percentile 95 + ``compute_average_surface_distance``)
    and vs medpy (``hd95`` + ``assd``).
(c) Dice of 100 classes on a 128^3 label volume: medseg (one bincount) vs MONAI ``DiceMetric``.

Usage: ``python benchmarks/metrics_speed.py [--quick] [--json out.json]``. ``--quick`` uses 20 images in
(a), 5 volumes in (b) with medpy on 2 of them, and fewer repeats in (c). Timings are single-process
wall-clock per case (``time.perf_counter``); ratios are peer time / medseg time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "src"))
warnings.filterwarnings("ignore")

from medseg.metrics import MetricSuite, batch_dice, effort, evaluate_case  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def rel_diff(a: float, b: float) -> float:
    if np.isnan(a) and np.isnan(b):
        return 0.0
    return abs(a - b) / max(abs(b), 1e-12)


# ------------------------------------------------------------------------------------------ (a)
def soft_prediction(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible network output: blurred, shifted, scaled GT with noise and a false-positive blob."""
    import cv2

    h, w = gt.shape
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), float(rng.uniform(2, 10)))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-8, 8)), float(rng.uniform(0.9, 1.1)))
    m[:, 2] += rng.uniform(-15, 15, 2)
    soft = cv2.warpAffine(soft, m, (w, h))
    if rng.random() < 0.5:
        cv2.circle(soft, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(5, 30)), 0.8, -1)
    soft = np.clip(soft + rng.normal(0, 0.05, soft.shape).astype(np.float32), 0, 1)
    return (soft * 255).astype(np.uint8)


def peers_2d(pm: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The same numbers with medpy + PySODMetrics (what a user would write today)."""
    import py_sod_metrics as sod
    from medpy.metric import binary as mb

    pb = pm / 255.0 > 0.5
    gu = gt.astype(np.uint8) * 255
    out: dict[str, float] = {}
    d, pr, re = mb.dc(pb, gt), mb.precision(pb, gt), mb.recall(pb, gt)
    out.update(dice=d, iou=mb.jc(pb, gt), conformity=(3 * d - 2) / d if d > 0 else np.nan,
               f1_ife=1.3 * pr * re / (0.3 * pr + re + 1e-4), hd=mb.hd(pb, gt), assd=mb.assd(pb, gt),
               rvd=mb.ravd(pb, gt))
    f, e, s, wf, mae = sod.Fmeasure(), sod.Emeasure(), sod.Smeasure(), sod.WeightedFmeasure(), sod.MAE()
    hce = sod.HumanCorrectionEffortMeasure()
    v2 = sod.FmeasureV2({"dice": sod.DICEHandler(with_dynamic=True, with_adaptive=False),
                         "iou": sod.IOUHandler(with_dynamic=True, with_adaptive=False)})
    for metric in (f, e, s, wf, mae, v2):
        metric.step(pm, gu)
    hce.step(pb.astype(np.uint8) * 255, gu)
    out.update(s_measure=s.sms[0], wf_measure=wf.weighted_fms[0], mae=mae.maes[0], hce=hce.hces[0],
               f_measure_max=f.changeable_fms[0].max(), f_measure_mean=f.changeable_fms[0].mean(),
               f_measure_adp=f.adaptive_fms[0], e_measure_max=e.changeable_ems[0].max(),
               e_measure_mean=e.changeable_ems[0].mean(), e_measure_adp=e.adaptive_ems[0],
               polyp_mdice=v2._metric_handlers["dice"].dynamic_results[0].mean(),
               polyp_miou=v2._metric_handlers["iou"].dynamic_results[0].mean())
    return out


def bench_2d(n: int) -> dict[str, Any]:
    import cv2

    folder = DATA / "kvasir-seg" / "masks"
    if not folder.is_dir():
        return {"skipped": f"{folder} not found"}
    paths = sorted(folder.glob("*.jpg"))
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, n).astype(int)]
    cases = []
    for i, path in enumerate(paths):
        gt = cv2.imread(str(path), 0) > 128
        cases.append((gt, soft_prediction(gt, np.random.default_rng(i))))
    suite = MetricSuite(["ife", "chnet"])
    suite(None, cases[0][0], prob=cases[0][1])  # warm-up (imports)
    peers_2d(cases[0][1], cases[0][0])
    effort._CACHE.clear()  # every GT is scored once here: no skeleton-cache hits
    t_ours, t_peer, worst = 0.0, 0.0, {}
    for gt, pm in cases:
        dt, ours = timed(lambda: suite(None, gt, prob=pm).values)
        t_ours += dt
        dt, ref = timed(lambda: peers_2d(pm, gt))
        t_peer += dt
        for key, value in ref.items():
            worst[key] = max(worst.get(key, 0.0), rel_diff(ours[key], float(value)))
    pixels = np.mean([g.size for g, _ in cases])
    return {"cases": n, "mean_pixels": float(pixels), "metrics": suite.names,
            "medseg_ms_per_case": 1000 * t_ours / n, "peers_ms_per_case": 1000 * t_peer / n,
            "speedup": t_peer / t_ours, "max_rel_diff": max(worst.values()), "max_rel_diff_by_metric": worst}


# ------------------------------------------------------------------------------------------ (b)
def organ_case(rng: np.random.Generator, shape=(256, 256, 128)) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal organ (< 1 % of the volume) and a perturbed prediction with a nearby false blob."""
    from scipy.ndimage import binary_dilation, binary_erosion

    gt = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    radii = rng.uniform([14, 12, 5], [26, 22, 9])
    center = rng.uniform([60, 60, 30], [196, 196, 98])
    lo = np.maximum((center - radii - 12).astype(int), 0)
    hi = np.minimum((center + radii + 12).astype(int), shape)
    grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii))
    wobble = 0.15 * np.sin(grid[0] / 3.0) * np.cos(grid[1] / 4.0)
    gt[box] = r2 <= 1
    shift = rng.integers(-3, 4, 3)
    p = np.roll(r2 + wobble <= 1, tuple(shift), axis=(0, 1, 2))
    p = binary_dilation(p) if rng.random() < 0.5 else binary_erosion(p)
    pred[box] = p
    blob = (center + rng.uniform(-1, 1, 3) * (radii + 8)).astype(int)
    pred[blob[0] - 2:blob[0] + 2, blob[1] - 2:blob[1] + 2, blob[2] - 1:blob[2] + 1] = True
    return pred, gt


def bench_3d(n: int, n_medpy: int) -> dict[str, Any]:
    import torch
    from medpy.metric import binary as mb
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    spacing = (0.8, 0.8, 2.5)
    cases = [organ_case(np.random.default_rng(100 + i)) for i in range(n)]
    fraction = float(np.mean([g.mean() for _, g in cases]))
    suite = MetricSuite(["hd95", "assd"])
    suite_md = MetricSuite(["hd95"], hd95_mode="max_directed")

    def onehot(m: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([~m, m])[None])

    def monai(yp: torch.Tensor, yt: torch.Tensor) -> tuple[float, float]:
        h = compute_hausdorff_distance(yp, yt, percentile=95, spacing=list(spacing)).item()
        a = compute_average_surface_distance(yp, yt, symmetric=True, spacing=list(spacing)).item()
        return h, a

    tensors = [(onehot(p), onehot(g)) for p, g in cases]
    suite(*cases[0], spacing=spacing)
    monai(*tensors[0])
    t_ours = t_monai = t_medpy = 0.0
    worst = {"hd95_vs_medpy": 0.0, "assd_vs_medpy": 0.0, "hd95_max_directed_vs_monai": 0.0, "assd_vs_monai": 0.0}
    for i, ((pred, gt), (yp, yt)) in enumerate(zip(cases, tensors)):
        dt, ours = timed(lambda: suite(pred, gt, spacing=spacing).values)
        t_ours += dt
        dt, (h_monai, a_monai) = timed(lambda: monai(yp, yt))
        t_monai += dt
        worst["hd95_max_directed_vs_monai"] = max(worst["hd95_max_directed_vs_monai"], rel_diff(
            suite_md(pred, gt, spacing=spacing).values["hd95"], h_monai))
        worst["assd_vs_monai"] = max(worst["assd_vs_monai"], rel_diff(ours["assd"], a_monai))
        if i < n_medpy:
            dt, (h_medpy, a_medpy) = timed(lambda: (mb.hd95(pred, gt, voxelspacing=spacing),
                                                     mb.assd(pred, gt, voxelspacing=spacing)))
            t_medpy += dt
            worst["hd95_vs_medpy"] = max(worst["hd95_vs_medpy"], rel_diff(ours["hd95"], h_medpy))
            worst["assd_vs_medpy"] = max(worst["assd_vs_medpy"], rel_diff(ours["assd"], a_medpy))
    ours_ms = 1000 * t_ours / n
    return {"cases": n, "medpy_cases": n_medpy, "shape": [256, 256, 128], "spacing": list(spacing),
            "organ_fraction": fraction, "medseg_ms_per_case": ours_ms, "monai_ms_per_case": 1000 * t_monai / n,
            "medpy_ms_per_case": 1000 * t_medpy / max(n_medpy, 1), "speedup_vs_monai": t_monai / t_ours,
            "speedup_vs_medpy": (t_medpy / max(n_medpy, 1)) / (t_ours / n), "max_rel_diff": worst}


# ------------------------------------------------------------------------------------------ (c)
def parcellation(rng: np.random.Generator, n_labels: int, size: int = 128) -> np.ndarray:
    """A 3-D label volume: 0 outside a ball, labels 1..n_labels as Voronoi cells of random seeds."""
    from scipy.ndimage import distance_transform_edt

    seeds = np.zeros((size,) * 3, np.int64)
    pos = rng.integers(8, size - 8, (n_labels, 3))
    seeds[tuple(pos.T)] = np.arange(1, n_labels + 1)
    _, idx = distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[tuple(idx)]
    zz, yy, xx = np.ogrid[:size, :size, :size]
    labels[((zz - size / 2) ** 2 + (yy - size / 2) ** 2 + (xx - size / 2) ** 2) > (0.48 * size) ** 2] = 0
    return labels


def bench_dice(repeats: int, n_labels: int = 100) -> dict[str, Any]:
    import torch
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(7)
    gt = parcellation(rng, n_labels)
    pred = np.roll(gt, 1, axis=0)
    noise = rng.random(gt.shape) < 0.05
    pred[noise] = rng.integers(0, n_labels + 1, int(noise.sum()))
    k = n_labels + 1
    tp, tg = torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]
    metric = DiceMetric(include_background=False, reduction="none", num_classes=k)

    def monai() -> np.ndarray:
        metric.reset()
        metric(tp[:, None], tg[:, None])
        return metric.aggregate().numpy()[0]

    def ours_tensor() -> np.ndarray:
        return batch_dice(tp, tg, k).numpy()[0]

    def ours_case() -> dict[str, float]:
        return evaluate_case(pred, gt, ["dice"], k)

    monai()
    ours_tensor()
    t_monai = min(timed(monai)[0] for _ in range(repeats))
    t_tensor = min(timed(ours_tensor)[0] for _ in range(repeats))
    t_case = min(timed(ours_case)[0] for _ in range(repeats))
    ref, ours, case = monai(), ours_tensor(), ours_case()
    diff = max(rel_diff(float(a), float(b)) for a, b in zip(ours, ref))
    diff_case = max(rel_diff(case[f"dice_{c}"], float(ref[c - 1])) for c in range(1, k))
    return {"shape": [128, 128, 128], "classes": n_labels, "repeats (best of)": repeats,
            "monai_ms": 1000 * t_monai, "medseg_batch_dice_ms": 1000 * t_tensor,
            "medseg_evaluate_case_ms": 1000 * t_case, "speedup_batch_dice": t_monai / t_tensor,
            "speedup_evaluate_case": t_monai / t_case, "max_rel_diff": max(diff, diff_case)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases (a smoke run of the same code)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--only", default="abc", help="sections to run, e.g. 'a' or 'bc'")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    info = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "threads": 1,
            "load_avg_start": os.getloadavg(), "quick": args.quick}
    results: dict[str, Any] = {"env": info}
    if "a" in args.only:
        results["a_2d_kvasir"] = bench_2d(20 if args.quick else 100)
        print("(a)", json.dumps(results["a_2d_kvasir"], indent=1, default=float), flush=True)
    if "b" in args.only:
        results["b_3d_small_organ"] = bench_3d(5 if args.quick else 20, 2 if args.quick else 20)
        print("(b)", json.dumps(results["b_3d_small_organ"], indent=1, default=float), flush=True)
    if "c" in args.only:
        results["c_dice_100_classes"] = bench_dice(2 if args.quick else 5)
        print("(c)", json.dumps(results["c_dice_100_classes"], indent=1, default=float), flush=True)
    info["load_avg_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
