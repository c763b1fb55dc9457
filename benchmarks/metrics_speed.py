"""Speed of medseg.metrics against the libraries people use today, all in one run, same process.

(a) 100 real Kvasir-SEG masks at their original size against perturbed soft predictions: the IFE metric
    set plus the CHNet/SOD set with HCE. medseg ``MetricSuite`` vs medpy (dc, jc, precision, recall, hd,
    assd, ravd) + PySODMetrics (Smeasure, Emeasure, WeightedFmeasure, Fmeasure, MAE, HCE, FmeasureV2
    Dice/IoU curves) computing the same numbers (checked).
(b) Volumes 256x256x128, spacing 0.8x0.8x2.5 mm, each case against MONAI (``compute_hausdorff_distance``
    percentile 95 + ``compute_average_surface_distance``, + ``DiceMetric`` for label maps) and medpy
    (``hd95`` + ``assd`` [+ ``dc``]) in the same run: a small organ (0.13 % of the volume), a large organ
    (about 10 %), and a 15-class label map (14 organs of assorted sizes; per-class HD95 + ASSD + Dice).
(c) Dice of 100 classes on a 128^3 label volume: medseg (one bincount) vs MONAI ``DiceMetric``.
(d) ``medseg metrics`` end to end (a subprocess, file reading included) on a temp folder of 1000
    Kvasir-SEG GT masks and perturbed 8-bit predictions (PNG), ``--workers 1`` and ``2``, against a loop
    of OpenCV reads + medpy + PySODMetrics over the same files (an evenly spaced subset of them): images/s.

Every section compares values and the script exits 1, naming the case, when a largest relative
difference passes its tolerance (``_gate.py``; ``MEDSEG_BENCH_INJECT=1e-3`` shows it going red).

Usage: ``python benchmarks/metrics_speed.py [--quick] [--only abcd] [--json out.json]``. ``--quick`` runs
the same code on fewer cases. Timings are single-process wall-clock per case (``time.perf_counter``);
ratios are peer time / medseg time.
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

from _gate import Gate  # noqa: E402

from medseg.metrics import MetricSuite, batch_dice, effort, evaluate_case  # noqa: E402

TOL_FLOAT64 = 1e-9  # medseg vs medpy / PySODMetrics: both in float64
TOL_MONAI = 1e-5  # MONAI's surface distances are float32


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


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


def bench_2d(n: int, gate: Gate) -> dict[str, Any]:
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
            worst[key] = max(worst.get(key, 0.0), gate.add(f"(a) 2-D {key} vs medpy/PySODMetrics", ours[key],
                                                           float(value), TOL_FLOAT64))
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


def _ellipsoid(shape: tuple[int, ...], center: np.ndarray, radii: np.ndarray,
               wobble: float = 0.0) -> tuple[tuple[slice, ...], np.ndarray]:
    """The box slices and mask of an ellipsoid (optionally with a wavy surface)."""
    lo = np.maximum((center - radii - 2).astype(int), 0)
    hi = np.minimum((center + radii + 3).astype(int), shape)
    grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii))
    if wobble:
        r2 = r2 + wobble * np.sin(grid[0] / 5.0) * np.cos(grid[1] / 7.0)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), r2 <= 1


def large_organ_case(rng: np.random.Generator, shape=(256, 256, 128)) -> tuple[np.ndarray, np.ndarray]:
    """A liver-sized ellipsoid (about 10 % of the volume) and a shifted, rescaled, wavy prediction with a blob."""
    gt = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    center = np.array(shape) / 2 + rng.uniform(-6, 6, 3)
    radii = np.array([70.0, 60.0, 48.0]) * rng.uniform(0.97, 1.03, 3)
    box, m = _ellipsoid(shape, center, radii)
    gt[box] = m
    box, m = _ellipsoid(shape, center + rng.integers(-3, 4, 3), radii * rng.uniform(0.95, 1.05, 3), wobble=0.12)
    pred[box] = m
    blob = (center + radii * rng.uniform(-1.2, 1.2, 3)).astype(int).clip(4, np.array(shape) - 4)
    pred[blob[0] - 3:blob[0] + 3, blob[1] - 3:blob[1] + 3, blob[2] - 1:blob[2] + 1] = True
    return pred, gt


def label_map_case(rng: np.random.Generator, classes: int = 15, shape=(256, 256, 128)) -> tuple[np.ndarray, np.ndarray]:
    """``classes − 1`` ellipsoidal organs of assorted sizes (later ones overwrite) and a perturbed prediction."""
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for k in range(1, classes):
        radii = np.maximum(rng.uniform(4, 40) * rng.uniform(0.6, 1.0, 3) * np.array([1, 1, 0.35]), 2)
        center = rng.uniform(radii + 2, np.array(shape) - radii - 2)
        box, m = _ellipsoid(shape, center, radii)
        gt[box][m] = k
        box, m = _ellipsoid(shape, center + rng.integers(-2, 3, 3), radii * rng.uniform(0.9, 1.1, 3), wobble=0.1)
        pred[box][m] = k
    return pred, gt


def bench_3d(kind: str, n: int, n_medpy: int, gate: Gate) -> dict[str, Any]:
    """One 3-D case family against MONAI and medpy, case by case in this process."""
    import torch
    import torch.nn.functional as F
    from medpy.metric import binary as mb
    from monai.metrics import DiceMetric, compute_average_surface_distance, compute_hausdorff_distance

    spacing = (0.8, 0.8, 2.5)
    make = {"small organ": organ_case, "large organ": large_organ_case, "15-class label map": label_map_case}[kind]
    cases = [make(np.random.default_rng(100 + i)) for i in range(n)]
    k = 15 if kind.startswith("15") else 1
    classes = list(range(1, k)) if k > 1 else [1]
    names = ["dice", "hd95", "assd"] if k > 1 else ["hd95", "assd"]
    suite = MetricSuite(names, num_classes=k)
    suite_md = MetricSuite(["hd95"], num_classes=k, hd95_mode="max_directed")
    dice_metric = DiceMetric(include_background=False, reduction="none")

    def onehot(m: np.ndarray) -> torch.Tensor:
        if k == 1:
            return torch.from_numpy(np.stack([~m, m])[None])
        return F.one_hot(torch.from_numpy(m.astype(np.int64)), k).permute(3, 0, 1, 2)[None].bool()

    def monai(yp: torch.Tensor, yt: torch.Tensor) -> dict[str, np.ndarray]:
        out = {"hd95": compute_hausdorff_distance(yp, yt, percentile=95, spacing=list(spacing))[0].numpy(),
               "assd": compute_average_surface_distance(yp, yt, symmetric=True, spacing=list(spacing))[0].numpy()}
        if k > 1:
            dice_metric.reset()
            dice_metric(yp, yt)
            out["dice"] = dice_metric.aggregate()[0].numpy()
        return out

    def medpy(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {n: [] for n in names}
        for c in classes:
            p, g = (pred == c, gt == c) if k > 1 else (pred, gt)
            out["hd95"].append(mb.hd95(p, g, voxelspacing=spacing))
            out["assd"].append(mb.assd(p, g, voxelspacing=spacing))
            if k > 1:
                out["dice"].append(mb.dc(p, g))
        return {n: np.array(v) for n, v in out.items()}

    def per_class(values: dict[str, float], name: str) -> np.ndarray:
        return np.array([values[f"{name}_{c}"] for c in classes]) if k > 1 else np.array([values[name]])

    def both(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Classes present in prediction and GT (where the libraries' empty-mask conventions differ)."""
        if k == 1:
            return np.array([pred.any() and gt.any()])
        return (np.bincount(pred.ravel(), minlength=k)[1:] > 0) & (np.bincount(gt.ravel(), minlength=k)[1:] > 0)

    tensors = [(onehot(p), onehot(g)) for p, g in cases]
    suite(*cases[0], spacing=spacing)
    monai(*tensors[0])
    t_ours = t_monai = t_medpy = 0.0
    for i, ((pred, gt), (yp, yt)) in enumerate(zip(cases, tensors)):
        dt, ours = timed(lambda: suite(pred, gt, spacing=spacing).values)
        t_ours += dt
        dt, ref = timed(lambda: monai(yp, yt))
        t_monai += dt
        keep = both(pred, gt)
        md = per_class(suite_md(pred, gt, spacing=spacing).values, "hd95")
        for a, b in zip(md[keep], ref["hd95"][keep]):
            gate.add(f"(b) {kind}: HD95 (max-directed) vs MONAI", a, b, TOL_MONAI)
        for name in [n for n in names if n != "hd95"]:
            for a, b in zip(per_class(ours, name)[keep], ref[name][keep]):
                gate.add(f"(b) {kind}: {name} vs MONAI", a, b, TOL_MONAI)
        if i < n_medpy:
            dt, ref = timed(lambda: medpy(pred, gt))
            t_medpy += dt
            for name in names:
                for a, b in zip(per_class(ours, name)[keep], ref[name][keep]):
                    gate.add(f"(b) {kind}: {name} vs medpy", a, b, TOL_FLOAT64)
    ours_ms = 1000 * t_ours / n
    fractions = [float(np.mean(g > 0)) for _, g in cases]
    return {"case": kind, "volumes": n, "medpy_volumes": n_medpy, "shape": list(cases[0][1].shape),
            "spacing": list(spacing), "foreground_fraction": float(np.mean(fractions)), "classes": len(classes),
            "medseg_ms_per_volume": ours_ms, "monai_ms_per_volume": 1000 * t_monai / n,
            "medpy_ms_per_volume": 1000 * t_medpy / max(n_medpy, 1), "speedup_vs_monai": t_monai / t_ours,
            "speedup_vs_medpy": (t_medpy / max(n_medpy, 1)) / (t_ours / n) if n_medpy else None}


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


def bench_dice(repeats: int, gate: Gate, n_labels: int = 100) -> dict[str, Any]:
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
    # MONAI ignores a class absent from the GT (NaN); medseg scores it 0 when predicted (metrics-policy.md)
    in_gt = np.bincount(gt.ravel(), minlength=k)[1:] > 0
    diff = max(gate.add("(c) batch_dice vs MONAI", float(a), float(b), 1e-6)
               for a, b, keep in zip(ours, ref, in_gt) if keep)
    diff_case = max(gate.add("(c) evaluate_case dice vs MONAI", case[f"dice_{c}"], float(ref[c - 1]), 1e-6)
                    for c in range(1, k) if in_gt[c - 1])
    return {"shape": [128, 128, 128], "classes": n_labels, "repeats (best of)": repeats,
            "monai_ms": 1000 * t_monai, "medseg_batch_dice_ms": 1000 * t_tensor,
            "medseg_evaluate_case_ms": 1000 * t_case, "speedup_batch_dice": t_monai / t_tensor,
            "speedup_evaluate_case": t_monai / t_case, "max_rel_diff": max(diff, diff_case),
            "classes_compared": int(in_gt.sum())}


# ------------------------------------------------------------------------------------------ (d)
def make_folder(root: Path, n: int) -> tuple[Path, Path, list[str]]:
    """GT masks (PNG 0/255, from the Kvasir-SEG JPEGs at 128) and 8-bit soft predictions (PNG) in ``root``."""
    import cv2

    paths = sorted((DATA / "kvasir-seg" / "masks").glob("*.jpg"))[:n]
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for i, path in enumerate(paths):
        gt = cv2.imread(str(path), 0) > 128
        cv2.imwrite(str(gt_dir / f"{path.stem}.png"), gt.astype(np.uint8) * 255)
        cv2.imwrite(str(pred_dir / f"{path.stem}.png"), soft_prediction(gt, np.random.default_rng(1000 + i)))
    return gt_dir, pred_dir, [p.stem for p in paths]


def bench_folder(n: int, n_peer: int, gate: Gate) -> dict[str, Any]:
    """``medseg metrics`` (subprocess, end to end) vs a read + medpy + PySODMetrics loop: images/s."""
    import csv
    import subprocess
    import tempfile

    import cv2

    if not (DATA / "kvasir-seg" / "masks").is_dir():
        return {"skipped": "kvasir-seg not found"}
    out: dict[str, Any] = {"cases": n}
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        root = Path(tmp)
        gt_dir, pred_dir, stems = make_folder(root, n)
        out["cases"] = len(stems)
        peer_stems = [stems[i] for i in np.linspace(0, len(stems) - 1, min(n_peer, len(stems))).astype(int)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
        runs = {}
        for workers in (1, 2):
            csv_path = root / f"w{workers}.csv"
            cmd = [sys.executable, "-m", "medseg", "metrics", "--pred", str(pred_dir), "--gt", str(gt_dir),
                   "--metrics", "ife", "chnet", "--workers", str(workers), "--output", str(csv_path)]
            dt, proc = timed(lambda: subprocess.run(cmd, capture_output=True, text=True, env=env))
            if proc.returncode != 0:
                raise RuntimeError(f"medseg metrics failed: {proc.stderr[-2000:]}")
            runs[workers] = dt
            with csv_path.open() as fh:
                rows = {r["case"]: r for r in csv.DictReader(fh)}
        t_peer = 0.0
        for stem in peer_stems:
            def peer() -> dict[str, float]:
                gt = cv2.imread(str(gt_dir / f"{stem}.png"), 0) > 127
                pm = cv2.imread(str(pred_dir / f"{stem}.png"), 0)
                return peers_2d(pm, gt)

            dt, ref = timed(peer)
            t_peer += dt
            for key, value in ref.items():
                gate.add(f"(d) medseg metrics {key} vs medpy/PySODMetrics", float(rows[stem][key]), float(value),
                         TOL_FLOAT64)
    peer_ips = len(peer_stems) / t_peer
    out.update({"peer_cases": len(peer_stems), "peer_images_per_s": peer_ips})
    for workers, dt in runs.items():
        out[f"workers{workers}_s"] = dt
        out[f"workers{workers}_images_per_s"] = out["cases"] / dt
        out[f"workers{workers}_ratio"] = out["cases"] / dt / peer_ips
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases (a smoke run of the same code)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--only", default="abcd", help="sections to run, e.g. 'a' or 'bd'")
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
    gate = Gate()
    q = args.quick
    if "a" in args.only:
        results["a_2d_kvasir"] = bench_2d(20 if q else 100, gate)
        print("(a)", json.dumps(results["a_2d_kvasir"], indent=1, default=float), flush=True)
    if "b" in args.only:
        for kind, n, n_medpy in [("small organ", 5 if q else 20, 1 if q else 4),
                                 ("large organ", 2 if q else 6, 1 if q else 2),
                                 ("15-class label map", 1 if q else 3, 0 if q else 1)]:
            key = "b_3d_" + kind.replace(" ", "_").replace("-", "_")
            results[key] = bench_3d(kind, n, n_medpy, gate)
            print("(b)", json.dumps(results[key], indent=1, default=float), flush=True)
    if "c" in args.only:
        results["c_dice_100_classes"] = bench_dice(2 if q else 5, gate)
        print("(c)", json.dumps(results["c_dice_100_classes"], indent=1, default=float), flush=True)
    if "d" in args.only:
        results["d_cli_folder"] = bench_folder(100 if q else 1000, 20 if q else 200, gate)
        print("(d)", json.dumps(results["d_cli_folder"], indent=1, default=float), flush=True)
    results["values"] = gate.summary()
    info["load_avg_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return gate.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
