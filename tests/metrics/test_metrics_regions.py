"""BraTS regions: composition against hand-made labels for both label conventions, remapping, training
targets, per-region DSC/HD95 against medpy, the empty-ET policy, ``medseg metrics --regions`` and the
real BraTS 2015 labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import DataError
from medseg.metrics.regions import RegionSuite, region_metrics
from medseg.regions import labels_from_regions, region_masks, region_targets, remap_labels

# one voxel per label, in a row: background, NCR, ED, ET (and label 3 where the convention has it)
T, F = True, False


def test_brats_regions_by_hand() -> None:
    label = np.array([0, 1, 2, 4, 4, 2])
    masks, has_et = region_masks(label, "brats")
    assert has_et
    assert masks[0].tolist() == [F, T, T, T, T, T]  # WT = NCR + ED + ET
    assert masks[1].tolist() == [F, T, F, T, T, F]  # TC = NCR + ET
    assert masks[2].tolist() == [F, F, F, T, T, F]  # ET
    remapped, _ = region_masks(np.array([0, 1, 2, 3, 3, 2]), "brats")  # ET carried as 3 (medseg / BraTS 2023)
    assert np.array_equal(remapped, masks)


def test_brats2015_regions_by_hand() -> None:
    """BraTS 2013/2015: 3 is non-enhancing tumour, part of WT and TC but not ET."""
    label = np.array([0, 1, 2, 3, 4])
    masks, _ = region_masks(label, "brats2015")
    assert masks[0].tolist() == [F, T, T, T, T]
    assert masks[1].tolist() == [F, T, F, T, T]
    assert masks[2].tolist() == [F, F, F, F, T]


def test_wrong_convention_and_bad_labels_are_named() -> None:
    with pytest.raises(DataError, match="case 'p7'.*both labels 3 and 4.*brats2015"):
        region_masks(np.array([0, 1, 2, 3, 4]), "brats", "ground truth", "p7")
    with pytest.raises(DataError, match=r"labels \[5\] outside the brats convention"):
        region_masks(np.array([0, 5]), "brats")
    with pytest.raises(DataError, match="unknown region scheme 'brats2019'"):
        region_masks(np.array([0, 1]), "brats2019")


def test_remap_and_training_targets() -> None:
    label = torch.tensor([[0, 1], [2, 4]])
    remapped = remap_labels(label)
    assert remapped.tolist() == [[0, 1], [2, 3]] and label.tolist() == [[0, 1], [2, 4]]  # input unchanged
    assert remap_labels(remapped).tolist() == remapped.tolist()  # idempotent
    assert remap_labels(np.array([0, 3, 4]), "brats2015").tolist() == [0, 3, 4]
    targets = region_targets(label)
    assert targets.shape == (3, 2, 2) and targets.dtype == torch.float32
    assert targets.tolist() == [[[0, 1], [1, 1]], [[0, 1], [0, 1]], [[0, 0], [0, 1]]]
    assert torch.equal(region_targets(remapped), targets)
    batch = region_targets(torch.stack([label, label]), batched=True)
    assert batch.shape == (2, 3, 2, 2) and torch.equal(batch[1], targets)
    no_et = region_targets(torch.tensor([0, 1, 2]))
    assert no_et[2].sum() == 0 and no_et[0].tolist() == [0, 1, 1]


def test_labels_from_region_masks_round_trip() -> None:
    rng = np.random.default_rng(0)
    label = rng.choice([0, 1, 2, 4], size=(6, 7, 8))
    masks, _ = region_masks(label, "brats")
    assert np.array_equal(labels_from_regions(masks), label)
    assert np.array_equal(labels_from_regions(torch.from_numpy(masks), et_value=3).numpy(), remap_labels(label))


def _blob(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def synthetic_case() -> tuple[np.ndarray, np.ndarray]:
    """Nested tumour-like GT (ED shell, NCR, ET) and a shifted, resized prediction in the remapped encoding."""
    shape = (24, 26, 20)
    gt = np.zeros(shape, np.int64)
    gt[_blob(shape, (12, 13, 10), 8)] = 2
    gt[_blob(shape, (12, 12, 10), 5)] = 1
    gt[_blob(shape, (13, 12, 9), 3)] = 4
    pred = np.zeros(shape, np.int64)
    pred[_blob(shape, (11, 14, 10), 7)] = 2
    pred[_blob(shape, (12, 13, 11), 5)] = 1
    pred[_blob(shape, (14, 12, 9), 2.5)] = 3  # ET as 3: a model trained on remapped labels
    pred[2:4, 2:4, 2:4] = 3  # a far false-positive ET blob: HD95 must see it
    return pred, gt


def test_region_dice_and_hd95_match_medpy() -> None:
    from medpy.metric.binary import dc, hd95

    pred, gt = synthetic_case()
    spacing = (1.0, 0.8, 2.5)
    values = region_metrics(pred, gt, "brats", spacing=spacing)
    groups = {"WT": ([1, 2, 3], [1, 2, 4]), "TC": ([1, 3], [1, 4]), "ET": ([3], [4])}
    for region, (p_labels, g_labels) in groups.items():
        p, g = np.isin(pred, p_labels), np.isin(gt, g_labels)
        assert values[f"dice_{region}"] == pytest.approx(dc(p, g), abs=1e-12)
        assert values[f"hd95_{region}"] == pytest.approx(hd95(p, g, voxelspacing=spacing), rel=1e-9)
    assert values["dice"] == pytest.approx(np.mean([values[f"dice_{r}"] for r in groups]))
    assert 0 < values["dice_ET"] < values["dice_TC"] < 1


def test_missing_et_follows_the_empty_mask_policy_and_is_noted() -> None:
    gt = np.zeros((10, 10, 10), np.int64)
    gt[3:7, 3:7, 3:7] = 2
    gt[4:6, 4:6, 4:6] = 1
    suite = RegionSuite("brats")
    both_empty = suite(gt.copy(), gt, spacing=(1, 1, 2), case="lgg")
    assert both_empty.values["dice_ET"] == 1.0 and both_empty.values["hd95_ET"] == 0.0
    assert len(both_empty.notes) == 1 and "case 'lgg'" in both_empty.notes[0] and "no enhancing" in both_empty.notes[0]
    pred = gt.copy()
    pred[5, 5, 5] = 4
    spurious = suite(pred, gt, spacing=(1, 1, 2), case="lgg")
    assert spurious.values["dice_ET"] == 0.0
    assert spurious.values["hd95_ET"] == pytest.approx(np.sqrt(10 ** 2 + 10 ** 2 + 20 ** 2))  # the diagonal
    assert suite(pred, pred, case="hgg").notes == []
    summary = suite.summarize([both_empty, spurious])
    assert summary["regions"]["cases_without_et_in_gt"] == 2 and summary["regions"]["scheme"] == "brats"
    with pytest.raises(ValueError, match="overlap and distance"):
        RegionSuite("brats", ["mae"])


def _write_nifti(path, arr: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr.astype(np.float32), np.diag([*spacing, 1.0])), str(path))


def test_cli_metrics_regions_brats(tmp_path, capsys) -> None:
    from medpy.metric.binary import dc

    from medseg.cli import main

    pred, gt = synthetic_case()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    _write_nifti(tmp_path / "pred" / "a.nii.gz", pred)
    _write_nifti(tmp_path / "gt" / "a.nii.gz", gt)
    no_et = np.where(gt == 4, 1, gt)
    _write_nifti(tmp_path / "pred" / "b.nii.gz", no_et)
    _write_nifti(tmp_path / "gt" / "b.nii.gz", no_et)
    out = tmp_path / "m.csv"
    code = main(["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--regions", "brats",
                 "--metrics", "dice", "--workers", "1", "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "dice_WT" in text and "hd95_ET" in text
    assert "warning: case 'b': the ground truth has no enhancing tumour" in text
    import csv

    rows = {r["case"]: r for r in csv.DictReader(out.open())}
    assert float(rows["a"]["dice_ET"]) == pytest.approx(dc(pred == 3, gt == 4))
    assert float(rows["b"]["dice_ET"]) == 1.0
    _write_nifti(tmp_path / "gt" / "a.nii.gz", np.where(gt == 1, 3, gt))  # 3 and 4 together: BraTS 2015 labels
    code = main(["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--regions", "brats",
                 "--workers", "1", "--output", str(tmp_path / "m2.csv")])
    captured = capsys.readouterr()
    assert code != 0 and not (tmp_path / "m2.csv").exists()
    assert "case 'a'" in captured.err and "brats2015" in captured.err and "Traceback" not in captured.err


@pytest.mark.realdata
def test_brats2015_deepmedic_labels(shared_data) -> None:
    """The DeepMedic copy of BraTS 2015 holds all five labels 0-4 (3 = non-enhancing tumour): 'brats2015'
    reads it, and 'brats' refuses it instead of counting non-enhancing tumour as enhancing."""
    import nibabel as nib

    path = shared_data / "brats2015-deepmedic" / "masks" / "brats_2013_pat0005_1" / "OTMultiClass.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    label = np.rint(np.asanyarray(nib.load(str(path)).dataobj)).astype(np.int64)
    assert set(np.unique(label).tolist()) == {0, 1, 2, 3, 4}
    masks, has_et = region_masks(label, "brats2015")
    assert has_et
    assert masks[0].sum() == (label > 0).sum()
    assert masks[1].sum() == np.isin(label, [1, 3, 4]).sum() and masks[2].sum() == (label == 4).sum()
    with pytest.raises(DataError, match="brats2015"):
        region_masks(label, "brats")


def test_eval_regions_in_a_run_config(tmp_path) -> None:
    """``eval.regions: brats``: ``medseg evaluate`` scores WT/TC/ET (DSC and HD95 even when eval.metrics
    names only dice); the synthetic labels {0, 1} have no ET, which the summary counts and notes."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from engine_helpers import tiny_raw

    from medseg.config import ConfigError, build_config
    from medseg.engine.evaluate import evaluate_run
    from medseg.engine.trainer import train_run

    raw = tiny_raw(epochs=1)
    raw["data"].update(kind="synthetic3d", image_size=[16, 16, 16], num_classes=2, batch_size=2,
                       nifti={"patch_size": [16, 16, 16], "samples_per_volume": 1})
    raw["data"]["synthetic"].update(n_train=2, n_val=1, n_test=2)
    raw["model"] = {"name": "unet3d", "kwargs": {"base": 4, "depth": 2, "norm": "batch"}}
    raw["eval"] = {"metrics": ["dice"], "regions": "brats"}
    cfg = build_config(raw)
    train_run(cfg, tmp_path / "run")
    summary = evaluate_run(tmp_path / "run", "test", progress=False)
    assert {"dice_WT", "dice_TC", "dice_ET", "hd95_WT", "hd95_ET"} <= set(summary["metrics"])
    assert summary["regions"]["cases_without_et_in_gt"] == 2 and len(summary["region_notes"]) == 2
    raw["eval"]["regions"] = "brats2019"
    with pytest.raises((ConfigError, ValueError), match="regions"):
        build_config(raw)
