"""Folder evaluation, file readers, bad input, registry, ``medseg metrics`` / ``medseg compare``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile
from medpy.metric import binary as mb
from scipy import stats

from medseg.cli import main
from medseg.errors import DataError
from medseg.metrics import MetricSuite, create_metric, evaluate_folder, list_metrics
from medseg.metrics.stats import paired_comparison


def _disk(shape: tuple[int, int], center: tuple[int, int], r: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, center, r, 1, -1)
    return m.astype(bool)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, list[tuple[np.ndarray, np.ndarray]]]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pairs = []
    for i in range(4):
        gt = _disk((48, 64), (30, 24), 10 + i)
        pred = _disk((48, 64), (32 + i, 25), 11)
        cv2.imwrite(str(gt_dir / f"case{i}_mask.png"), gt.astype(np.uint8) * 255)
        cv2.imwrite(str(pred_dir / f"case{i}.png"), pred.astype(np.uint8) * 255)
        pairs.append((pred, gt))
    return pred_dir, gt_dir, pairs


def test_folder_matches_medpy_and_workers_agree(folders, tmp_path: Path) -> None:
    pred_dir, gt_dir, pairs = folders
    out = tmp_path / "res.csv"
    serial = evaluate_folder(pred_dir, gt_dir, ["dice", "hd95"], gt_suffix="_mask", workers=1, output=out)
    parallel = evaluate_folder(pred_dir, gt_dir, ["dice", "hd95"], gt_suffix="_mask", workers=2)
    expected = [mb.dc(p, g) for p, g in pairs]
    assert [c.values["dice"] for c in serial.cases] == pytest.approx(expected, rel=1e-9)
    assert [c.values["hd95"] for c in parallel.cases] == pytest.approx([mb.hd95(p, g) for p, g in pairs], rel=1e-9)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(np.mean(expected))
    assert summary["metrics"]["dice"]["count"] == 4 and summary["metrics"]["dice"]["excluded"] == 0
    assert summary["policy"]["hd95_mode"] == "pooled"
    rows = list(csv.DictReader(out.open()))
    assert [r["case"] for r in rows] == ["case0", "case1", "case2", "case3"]


def test_probability_maps_and_nifti_spacing(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    gt = np.zeros((20, 18, 9), np.float32)
    gt[5:12, 4:11, 2:6] = 1
    pred = np.roll(gt, 2, axis=0)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(gt, affine), str(tmp_path / "g" / "v1.nii.gz"))
    nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine), str(tmp_path / "p" / "v1.nii.gz"))
    res = evaluate_folder(tmp_path / "p", tmp_path / "g", ["hd", "assd"], workers=1)
    assert res.cases[0].values["hd"] == pytest.approx(mb.hd(pred > 0, gt > 0, voxelspacing=(0.8, 0.8, 2.5)))
    # a soft 8-bit map: binarised at 0.5 for overlap, used as-is for saliency metrics
    soft = (cv2.GaussianBlur(_disk((40, 40), (20, 20), 9).astype(np.float32), (0, 0), 2) * 255).astype(np.uint8)
    (tmp_path / "p2").mkdir()
    (tmp_path / "g2").mkdir()
    cv2.imwrite(str(tmp_path / "p2" / "a.png"), soft)
    cv2.imwrite(str(tmp_path / "g2" / "a.png"), _disk((40, 40), (20, 20), 9).astype(np.uint8) * 255)
    res = evaluate_folder(tmp_path / "p2", tmp_path / "g2", ["dice", "mae"], workers=1)
    assert res.cases[0].values["dice"] == pytest.approx(mb.dc(soft / 255.0 > 0.5, _disk((40, 40), (20, 20), 9)))


def test_bad_inputs_are_reported_with_case_names(folders, tmp_path: Path) -> None:
    pred_dir, gt_dir, _ = folders
    with pytest.raises(DataError, match=r"without GT: case0, case1.*without prediction: case0_mask"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], workers=1)
    cv2.imwrite(str(pred_dir / "case1.png"), np.zeros((30, 30), np.uint8))
    with pytest.raises(DataError, match=r"(?s)case 'case1'.*\(30, 30\).*\(48, 64\)"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], gt_suffix="_mask", workers=1)
    cv2.imwrite(str(pred_dir / "case1.png"), np.zeros((48, 64), np.uint8))
    cv2.imwrite(str(gt_dir / "case2_mask.png"), np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1)))
    with pytest.raises(DataError, match=r"(?s)1 of 4 case.*case 'case2'.*not binary"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], gt_suffix="_mask", workers=2)
    cv2.imwrite(str(gt_dir / "case2_mask.png"), _disk((48, 64), (30, 24), 9).astype(np.uint8) * 255)
    nan_map = np.full((48, 64), 0.2, np.float32)
    nan_map[3, 3] = np.nan
    (pred_dir / "case3.png").unlink()
    tifffile.imwrite(str(pred_dir / "case3.tif"), nan_map)
    with pytest.raises(DataError, match=r"(?s)case .case3.*NaN"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], gt_suffix="_mask", workers=1)
    tifffile.imwrite(str(pred_dir / "case3.tif"), np.full((48, 64), 0.7, np.float32))
    with pytest.raises(DataError, match=r"(?s)case 'case0'.*spacing.*2 dimensions"):
        evaluate_folder(pred_dir, gt_dir, ["hd95"], gt_suffix="_mask", spacing=(1, 1, 1), workers=1)
    assert len(evaluate_folder(pred_dir, gt_dir, ["dice"], gt_suffix="_mask", workers=1).cases) == 4


def test_empty_nan_mode_reports_excluded_count(tmp_path: Path) -> None:
    suite = MetricSuite(["dice", "hd95"], empty="nan")
    some = _disk((30, 30), (15, 15), 6)
    results = [suite(some, some, case="a"), suite(np.zeros_like(some), some, case="b"),
               suite(np.zeros_like(some), np.zeros_like(some), case="c")]
    summary = suite.summarize(results)["metrics"]
    assert summary["hd95"]["count"] == 1 and summary["hd95"]["excluded"] == 2
    assert summary["dice"]["count"] == 2 and summary["dice"]["excluded"] == 1
    default = MetricSuite(["hd95"])
    worst = default.summarize([default(some, some), default(np.zeros_like(some), some)])["metrics"]["hd95"]
    assert worst["count"] == 2 and worst["mean"] == pytest.approx(np.hypot(30, 30) / 2)


def test_registry_create_and_list() -> None:
    m = create_metric("HD95", hd95_mode="max_directed")
    assert m.name == "hd95" and not m.higher_is_better
    assert create_metric("jaccard").name == "iou"
    assert "s_measure" in list_metrics()
    with pytest.raises(KeyError, match="Did you mean 'dice'"):
        create_metric("dcie")
    with pytest.raises(TypeError, match="hd95_mode"):
        create_metric("hd95", hd95_mod="pooled")


def test_paired_comparison_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = {f"c{i}": float(v) for i, v in enumerate(rng.random(20))}
    b = {k: v + 0.05 + 0.1 * rng.standard_normal() for k, v in a.items()}
    b["c3"] = float("nan")
    r = paired_comparison(a, b)
    keys = [k for k in sorted(a) if k != "c3"]
    va, vb = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    assert r["n"] == 19 and r["excluded"] == 1
    assert r["t_p"] == pytest.approx(stats.ttest_rel(vb, va).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(vb, va).pvalue)
    d = vb - va
    assert r["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    with pytest.raises(DataError, match="different cases"):
        paired_comparison(a, {"x": 1.0})


def test_cli_metrics_and_compare(folders, tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir, _ = folders
    out_a, out_b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--gt-suffix", "_mask", "--metrics",
                 "dice", "hd95", "--output", str(out_a), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "dice" in text and "median" in text and "excl" in text and out_a.exists()
    assert main(["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--gt-suffix", "_mask", "--metrics",
                 "dice", "--compat", "ife", "--output", str(out_b), "--workers", "1"]) == 0
    assert main(["compare", str(out_a), str(out_b), "--metric", "dice"]) == 0
    assert "Wilcoxon" in capsys.readouterr().out
    assert main(["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--output", str(out_b)]) == 1
    assert "unpaired" in capsys.readouterr().err
    assert main(["metrics", "--list"]) == 0


def test_label_map_given_as_binary_prediction_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    labels = np.zeros((20, 20), np.uint8)
    labels[2:8, 2:8], labels[10:15, 10:15] = 1, 2
    cv2.imwrite(str(tmp_path / "p" / "x.png"), labels)
    cv2.imwrite(str(tmp_path / "g" / "x.png"), (labels > 0).astype(np.uint8) * 255)
    with pytest.raises(DataError, match=r"(?s)case 'x'.*label map"):
        evaluate_folder(tmp_path / "p", tmp_path / "g", ["dice"], workers=1)
    cv2.imwrite(str(tmp_path / "g" / "x.png"), labels)
    res = evaluate_folder(tmp_path / "p", tmp_path / "g", ["dice"], num_classes=3, workers=1)
    assert res.cases[0].values["dice_1"] == 1.0 and res.cases[0].values["dice_2"] == 1.0
