"""How ``medseg metrics`` reads files: the binary-GT rule (``medseg.masks``), ``--gt-threshold``, truncated
JPEGs and NIfTI spacing mismatches. Values are checked against medpy on independently built masks."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile
from medpy.metric import binary as mb
from PIL import Image

from medseg.cli import main
from medseg.errors import DataError
from medseg.metrics import evaluate_folder
from medseg.metrics.folder import SpacingWarning


def _disk(shape: tuple[int, int], center: tuple[int, int], r: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, center, r, 1, -1)
    return m.astype(bool)


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    p, g = tmp_path / "pred", tmp_path / "gt"
    p.mkdir(parents=True)
    g.mkdir()
    return p, g


def _label_map() -> np.ndarray:
    labels = np.zeros((40, 48), np.uint8)
    labels[5:20, 5:20], labels[22:35, 25:40] = 1, 2
    return labels


def _stray_grey_mask() -> np.ndarray:
    """A 0/255 polyp mask with 40 stray grey pixels (1, 2, 3 ... 250) along its edge, as public TIFFs have."""
    mask = _disk((64, 64), (32, 32), 15).astype(np.uint8) * 255
    edge = np.argwhere(mask ^ cv2.erode(mask, np.ones((3, 3), np.uint8)))[:40]
    mask[edge[:, 0], edge[:, 1]] = np.linspace(1, 250, len(edge)).astype(np.uint8)
    return mask


def test_label_map_gt_on_a_binary_task_is_an_error_not_a_perfect_score(tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir = _dirs(tmp_path)
    cv2.imwrite(str(gt_dir / "x.png"), _label_map())
    cv2.imwrite(str(pred_dir / "x.png"), np.zeros((40, 48), np.uint8))  # a complete miss
    with pytest.raises(DataError, match=r"(?s)x\.png.*not binary.*0 \(x1500\), 1 \(x225\), 2 \(x195\).*"
                                        r"--num-classes 3.*--gt-threshold T"):
        evaluate_folder(pred_dir, gt_dir, ["dice", "hd95"], workers=1)
    out = tmp_path / "r.csv"
    assert main(["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "x.png" in err and "--num-classes 3" in err and "--gt-threshold" in err and "Traceback" not in err
    assert not out.exists()


def test_gt_threshold_binarises_the_gt(tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir = _dirs(tmp_path)
    labels = _label_map()
    pred = np.zeros_like(labels, dtype=bool)
    pred[5:20, 8:30] = True
    cv2.imwrite(str(gt_dir / "x.png"), labels)
    cv2.imwrite(str(pred_dir / "x.png"), pred.astype(np.uint8) * 255)
    res = evaluate_folder(pred_dir, gt_dir, ["dice", "hd95"], workers=1, gt_threshold=0)
    assert res.cases[0].values["dice"] == pytest.approx(mb.dc(pred, labels > 0), rel=1e-12)
    assert res.cases[0].values["hd95"] == pytest.approx(mb.hd95(pred, labels > 0), rel=1e-12)
    assert res.summary["gt_threshold"] == 0
    res = evaluate_folder(pred_dir, gt_dir, ["dice"], workers=1, gt_threshold=1)  # foreground where value > 1
    assert res.cases[0].values["dice"] == pytest.approx(mb.dc(pred, labels == 2), rel=1e-12)
    cv2.imwrite(str(gt_dir / "x.png"), (labels > 0).astype(np.uint8))  # a 0/1 GT is kept as it is
    res = evaluate_folder(pred_dir, gt_dir, ["dice"], workers=1, gt_threshold=127)
    assert res.cases[0].values["dice"] == pytest.approx(mb.dc(pred, labels > 0), rel=1e-12)
    with pytest.raises(DataError, match="--gt-threshold .*--num-classes 3"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], num_classes=3, workers=1, gt_threshold=0)
    cv2.imwrite(str(gt_dir / "x.png"), labels)
    out = tmp_path / "r.csv"
    assert main(["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "dice",
                 "--gt-threshold", "0", "--output", str(out)]) == 0
    row = next(csv.DictReader(out.open()))
    assert float(row["dice"]) == pytest.approx(mb.dc(pred, labels > 0), rel=1e-12)


def test_stray_grey_tiff_is_refused_with_threshold_advice_and_read_with_it(tmp_path: Path) -> None:
    pred_dir, gt_dir = _dirs(tmp_path)
    gt = _stray_grey_mask()
    pred = _disk((64, 64), (34, 31), 14)
    tifffile.imwrite(gt_dir / "p1.tif", gt)
    cv2.imwrite(str(pred_dir / "p1.png"), pred.astype(np.uint8) * 255)
    with pytest.raises(DataError, match=r"(?s)p1\.tif.*not binary.*0/255 mask with 40 stray grey.*"
                                        r"--gt-threshold 127.*--num-classes K"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], workers=1)
    res = evaluate_folder(pred_dir, gt_dir, ["dice", "hd95"], workers=1, gt_threshold=127)
    assert res.cases[0].values["dice"] == pytest.approx(mb.dc(pred, gt > 127), rel=1e-12)
    assert res.cases[0].values["hd95"] == pytest.approx(mb.hd95(pred, gt > 127), rel=1e-12)


def test_jpeg_noise_is_read_but_other_near_extreme_patterns_are_not(tmp_path: Path) -> None:
    pred_dir, gt_dir = _dirs(tmp_path)
    gt = _disk((96, 128), (60, 50), 25)
    pred = _disk((96, 128), (63, 52), 24)
    Image.fromarray(gt.astype(np.uint8) * 255).convert("RGB").save(gt_dir / "j.jpg", quality=75)
    cv2.imwrite(str(pred_dir / "j.png"), pred.astype(np.uint8) * 255)
    noisy = np.array(Image.open(gt_dir / "j.jpg")).max(axis=-1)
    assert len(np.unique(noisy)) > 10  # real JPEG noise, all within 32 of 0 or 255
    res = evaluate_folder(pred_dir, gt_dir, ["dice"], workers=1)
    assert res.cases[0].values["dice"] == pytest.approx(mb.dc(pred, noisy > 127), rel=1e-12)
    # near 0 and near 255, but 255 is not the mode of the bright values: not the JPEG pattern
    odd = np.where(gt, 240, 0).astype(np.uint8)
    odd[0, :5] = 255
    (gt_dir / "j.jpg").unlink()
    cv2.imwrite(str(gt_dir / "j.png"), odd)
    with pytest.raises(DataError, match=r"(?s)j\.png.*not binary.*240 \(x"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], workers=1)
    # small integers only: a label map, never noise (even though all are "near 0")
    cv2.imwrite(str(gt_dir / "j.png"), gt.astype(np.uint8) * 2)
    with pytest.raises(DataError, match=r"(?s)j\.png.*--num-classes 3"):
        evaluate_folder(pred_dir, gt_dir, ["dice"], workers=1)


def _jpeg_bytes(path: Path) -> bytes:
    """A JPEG mask (a disk, 0/255 with JPEG noise) as its bytes."""
    Image.fromarray(_disk((120, 160), (80, 60), 30).astype(np.uint8) * 255).save(path, quality=90)
    return path.read_bytes()


@pytest.mark.parametrize("which", ["pred", "gt"])
def test_truncated_jpeg_is_unreadable(tmp_path: Path, which: str) -> None:
    pred_dir, gt_dir = _dirs(tmp_path)
    cv2.imwrite(str(gt_dir / "a.png"), _disk((120, 160), (80, 60), 30).astype(np.uint8) * 255)
    cv2.imwrite(str(pred_dir / "a.png"), _disk((120, 160), (80, 60), 30).astype(np.uint8) * 255)
    folder = pred_dir if which == "pred" else gt_dir
    (folder / "a.png").unlink()
    data = _jpeg_bytes(folder / "a.jpg")
    (folder / "a.jpg").write_bytes(data[: len(data) * 2 // 3])  # cut off the last third
    assert cv2.imread(str(folder / "a.jpg"), cv2.IMREAD_UNCHANGED) is not None  # OpenCV half-decodes it
    with pytest.raises(DataError, match=r"(?s)a\.jpg is truncated"):
        evaluate_folder(pred_dir, gt_dir, ["mae"], workers=1)
    # bytes after the end marker are not a truncation (the strict decoder decides)
    (folder / "a.jpg").write_bytes(data + b"\x00" * 16)
    assert len(evaluate_folder(pred_dir, gt_dir, ["mae"], workers=1).cases) == 1


def _nifti_pair(tmp_path: Path, pred_zooms: tuple[float, ...]) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    pred_dir, gt_dir = _dirs(tmp_path)
    gt = np.zeros((20, 18, 9), np.uint8)
    gt[5:12, 4:11, 2:6] = 1
    pred = np.roll(gt, 2, axis=0)
    nib.save(nib.Nifti1Image(gt, np.diag([0.8, 0.8, 2.5, 1.0])), str(gt_dir / "v.nii.gz"))
    nib.save(nib.Nifti1Image(pred, np.diag([*pred_zooms, 1.0])), str(pred_dir / "v.nii.gz"))
    return pred_dir, gt_dir, pred > 0, gt > 0


def _zooms(path: Path) -> tuple[float, ...]:
    return tuple(float(z) for z in nib.load(str(path)).header.get_zooms())  # float32 in the header


@pytest.mark.parametrize("workers", [1, 2])
def test_nifti_spacing_mismatch_warns_and_says_which_was_used(tmp_path: Path, workers: int) -> None:
    pred_dir, gt_dir, pred, gt = _nifti_pair(tmp_path, (1.0, 1.0, 2.5))
    with pytest.warns(SpacingWarning, match=r"case 'v'.*prediction's header spacing \(1, 1, 2\.5\) differs from "
                                            r"the GT's \(0\.8, 0\.8, 2\.5\); distances use the GT's \(0\.8, 0\.8, 2\.5\)"):
        res = evaluate_folder(pred_dir, gt_dir, ["hd"], workers=workers)
    gt_zooms = _zooms(gt_dir / "v.nii.gz")
    assert res.cases[0].values["hd"] == pytest.approx(mb.hd(pred, gt, voxelspacing=gt_zooms), rel=1e-12)
    assert len(res.summary["warnings"]) == 1
    with pytest.warns(SpacingWarning, match=r"distances use --spacing \(1, 1, 1\)"):
        res = evaluate_folder(pred_dir, gt_dir, ["hd"], workers=workers, spacing=(1, 1, 1))
    assert res.cases[0].values["hd"] == pytest.approx(mb.hd(pred, gt, voxelspacing=(1, 1, 1)), rel=1e-12)


def test_nifti_equal_spacing_is_silent_and_cli_prints_the_warning(tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir, _, _ = _nifti_pair(tmp_path / "same", (0.8, 0.8, 2.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpacingWarning)
        assert evaluate_folder(pred_dir, gt_dir, ["hd"], workers=1).summary["warnings"] == []
    pred_dir, gt_dir, _, _ = _nifti_pair(tmp_path / "diff", (1.0, 1.0, 3.0))
    assert main(["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "hd", "--workers", "1",
                 "--output", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert "warning: case 'v'" in out and "(1, 1, 3)" in out and "distances use the GT's (0.8, 0.8, 2.5)" in out


@pytest.mark.realdata
@pytest.mark.parametrize("name,stride,oracle", [
    ("kvasir-seg", 20, lambda im: np.array(im.convert("L")) >= 128),  # SOURCE.md: RGB, equal channels, threshold 128
    ("covid-semiseg", 4, lambda im: np.array(im) == 255),  # SOURCE.md: values exactly {0, 255}
    ("chase-db1", 2, lambda im: np.array(im)),  # SOURCE.md: 1-bit PNG, True = vessel
])
def test_real_masks_read_as_documented(real_dataset, name: str, stride: int, oracle) -> None:
    from medseg.metrics.io import as_ground_truth, read_array

    files = sorted((real_dataset(name) / "masks").iterdir())
    files = [p for p in files if p.suffix in (".jpg", ".png")][::stride]
    for path in files:
        got = as_ground_truth(read_array(path).array, 1, path.stem, path=path)
        with Image.open(path) as im:
            np.testing.assert_array_equal(got, oracle(im), err_msg=str(path))
