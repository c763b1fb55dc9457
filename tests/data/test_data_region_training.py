"""BraTS region training (``data.nifti.regions``): label maps become WT/TC/ET channels for 3 sigmoid outputs,
validation and ``medseg evaluate`` score the thresholded sigmoids as region masks (no argmax), and the config
refuses what cannot work. Oracles: label maps built from hand-placed boxes whose regions are known by
construction, and hand-counted Dice values."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn

from medseg.config import ConfigError, build_config
from medseg.data import build_dataset
from medseg.metrics.regions import RegionSuite, region_batch_dice

SHAPE = (12, 12, 12)


def _boxes() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A brats2015 label map and its regions, known by construction: a WT box, a TC box inside it, an ET
    box inside TC, non-enhancing tumour (3) in one corner of TC outside ET."""
    wt, tc, et = (np.zeros(SHAPE, bool) for _ in range(3))
    wt[2:10, 2:10, 2:10] = True
    tc[4:8, 4:8, 4:8] = True
    et[5:7, 5:7, 5:7] = True
    lab = np.zeros(SHAPE, np.int16)
    lab[wt] = 2          # oedema
    lab[tc] = 1          # necrosis
    lab[4, 4, 4] = 3     # non-enhancing tumour: core, not enhancing
    lab[et] = 4          # enhancing
    return lab, {"WT": wt, "TC": tc, "ET": et}


def _write(root: Path, cases: dict[str, np.ndarray], image_from_label: bool = True) -> None:
    for case, lab in cases.items():
        for folder, arr in (("images", lab.astype(np.float32) if image_from_label else np.ones(SHAPE, np.float32)),
                            ("masks", lab)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, np.eye(4)), root / folder / f"{case}.nii.gz")


def _raw(root: Path, **over) -> dict:
    raw = {"name": "regions", "output_dir": str(root / "runs"),
           "data": {"kind": "nifti", "root": str(root), "in_channels": 1, "num_classes": 3,
                    "split": {"mode": "fixed"}, "augment": {"enabled": False},
                    "nifti": {"layout": "flat", "modality": "none", "regions": "brats2015", "patch_size": list(SHAPE),
                              "fg_oversample": 0.0}},
           "model": {"name": "unet3d", "kwargs": {"base": 4, "depth": 2}},
           "loss": "dice_bce", "eval": {"metrics": ["dice", "hd95"]}, "train": {"device": "cpu"}}
    for key, value in over.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


def test_region_targets_equal_the_hand_made_regions(tmp_path: Path) -> None:
    lab, regions = _boxes()
    _write(tmp_path, {"a": lab})
    expected = np.stack([regions["WT"], regions["TC"], regions["ET"]]).astype(np.float32)
    cfg = build_config(_raw(tmp_path))
    for split in ("train", "test"):  # a patch (here the whole volume, no augmentation) and a whole volume
        sample = build_dataset(cfg.data, split)[0]
        assert sample["label"].dtype == torch.float32 and tuple(sample["label"].shape) == (3, *SHAPE)
        np.testing.assert_array_equal(sample["label"].numpy(), expected)
    gt, _ = build_dataset(cfg.data, "test").read_original(0)
    np.testing.assert_array_equal(gt, lab)  # scoring reads the label map


def test_brats_2021_labels_remapped_or_not_give_the_same_regions(tmp_path: Path) -> None:
    lab, regions = _boxes()
    lab[lab == 3] = 1  # BraTS 2017-2021: no label 3; ET is 4 (or 3 once remapped by nifti.label_map)
    _write(tmp_path, {"a": lab})
    expected = np.stack([regions["WT"], regions["TC"], regions["ET"]]).astype(np.float32)
    for label_map in (None, {4: 3}):
        cfg = build_config(_raw(tmp_path, **{"data.nifti.regions": "brats", "data.nifti.label_map": label_map}))
        np.testing.assert_array_equal(build_dataset(cfg.data, "test")[0]["label"].numpy(), expected)


@pytest.mark.parametrize("key,value,named,fix", [
    ("data.num_classes", 5, "config key 'data.num_classes'", "set data.num_classes: 3"),
    ("loss", "dice_ce", "config key 'loss'", "loss: dice_bce"),
    ("loss", "auto", "config key 'loss'", "loss: dice_bce"),
    ("eval.regions", "brats", "config key 'eval.regions'", "set eval.regions: brats2015"),
    ("model.kwargs", {"base": 4, "depth": 2, "out_channels": 4}, "config key 'model.kwargs.out_channels'", "set 3"),
])
def test_region_training_config_errors_name_the_key_and_the_fix(tmp_path, key, value, named, fix) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(_raw(tmp_path, **{key: value}))
    assert named in str(err.value) and fix in str(err.value)


def test_region_training_fills_in_the_region_scoring(tmp_path: Path) -> None:
    cfg = build_config(_raw(tmp_path))
    assert cfg.eval.regions == "brats2015"


class RegionOracle(nn.Module):
    """Sigmoid logits (+-20) that are exactly the brats2015 regions of the label map fed as the image."""

    spatial_dims = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        wt, tc, et = v > 0.5, (v > 0.5) & ((v - 2).abs() > 0.5), v > 3.5  # {1..4}, {1, 3, 4}, {4}
        return 40.0 * (torch.cat([wt, tc, et], 1).float() - 0.5)


def test_sigmoid_outputs_equal_to_the_regions_score_dice_one_in_evaluate(tmp_path, monkeypatch) -> None:
    import medseg.engine.evaluate as evaluate

    lab, regions = _boxes()
    empty_et = np.where(lab == 4, 1, lab).astype(np.int16)  # a case without enhancing tumour
    _write(tmp_path, {"a": lab, "b": empty_et})
    cfg = build_config(_raw(tmp_path))
    run = tmp_path / "runs" / "regions"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"")  # the checkpoint is replaced by the oracle below
    monkeypatch.setattr(evaluate, "model_from_checkpoint", lambda path: (RegionOracle(), cfg))
    summary = evaluate.evaluate_run(run, "test", progress=False)
    for region in ("WT", "TC", "ET"):
        assert summary["metrics"][f"dice_{region}"]["mean"] == 1.0
        assert summary["metrics"][f"hd95_{region}"]["mean"] == 0.0
    saved = np.asarray(nib.load(run / "predictions" / "test" / "a.nii.gz").dataobj)
    assert set(np.unique(saved[regions["ET"]])) == {4} and set(np.unique(saved[regions["WT"] & ~regions["TC"]])) == {2}
    assert set(np.unique(saved[regions["TC"] & ~regions["ET"]])) == {1}  # core: 1 (regions cannot tell 1 from 3)


def test_validation_scores_the_sigmoid_regions(tmp_path: Path) -> None:
    from medseg.engine.runtime import make_runtime
    from medseg.engine.trainer import validate

    lab, _ = _boxes()
    _write(tmp_path, {"a": lab})
    cfg = build_config(_raw(tmp_path))
    out = validate(RegionOracle(), cfg, make_runtime(cfg.train, 2))
    assert out["dice"] == 1.0 and out["cases"] == 1


def test_region_suite_scores_region_masks_as_they_are() -> None:
    gt = np.zeros((4, 4, 4), np.int64)
    gt[0:2, 0:2, 0:2] = 2   # oedema: WT only, 8 voxels
    gt[0, 0, 0] = 1         # necrosis: WT and TC, 1 voxel
    masks = np.zeros((3, 4, 4, 4), bool)
    masks[0, 0:2, 0:2, 0:2] = True   # WT right (8 voxels)
    masks[1, 0, 0, 0:2] = True       # TC: 1 right + 1 extra -> 2*1/(2+1)
    masks[2, 3, 3, 3] = True         # ET spurious, far from the (empty) GT ET, not nested in WT -> 0
    values = RegionSuite("brats2015")(masks, gt).values
    assert values["dice_WT"] == 1.0 and values["dice_TC"] == pytest.approx(2 / 3) and values["dice_ET"] == 0.0


def test_region_batch_dice_hand_counts() -> None:
    pred = torch.zeros(2, 3, 4, 4, 4, dtype=torch.bool)
    gt = torch.zeros_like(pred)
    pred[0, 0, :2] = True    # 32 voxels
    gt[0, 0, 1:3] = True     # 32 voxels, 16 shared -> 2*16/64
    gt[0, 1, 0, 0, 0] = True  # missed -> 0
    # case 0 ET and every region of case 1: empty in both -> 1
    d = region_batch_dice(pred, gt)
    assert d.dtype == torch.float64
    assert d.tolist() == [[0.5, 0.0, 1.0], [1.0, 1.0, 1.0]]


def test_a_label_outside_the_scheme_names_the_case(tmp_path: Path) -> None:
    from medseg.errors import DataError

    lab, _ = _boxes()
    lab[0, 0, 0] = 5
    _write(tmp_path, {"a": lab})
    cfg = build_config(_raw(tmp_path))
    with pytest.raises(DataError, match=r"case 'a'.*\[5\]"):
        build_dataset(cfg.data, "test")[0]


def test_predict_decodes_region_outputs_into_a_brats_label_map(tmp_path, monkeypatch) -> None:
    """``medseg predict`` on a region model: sigmoid (not softmax) per region, the nested masks written as a
    label map (ET 4, core 1, oedema 2), P(WT) as the probability map, and a note saying what was written.
    Oracle: the hand-made regions of ``_boxes`` (a softmax over the three channels would put ET nowhere
    inside TC, and an argmax would write labels 0..2)."""
    import medseg.engine.predict as predict

    lab, regions = _boxes()
    _write(tmp_path, {"a": lab})
    cfg = build_config(_raw(tmp_path))
    monkeypatch.setattr(predict, "load_predictor", lambda *a, **k: ([RegionOracle()], cfg))
    notes: list[str] = []
    out = tmp_path / "pred"
    written = predict.predict_paths("unused.pt", tmp_path / "images", out, save_probabilities=True, progress=False,
                                    echo=notes.append)
    saved = np.asarray(nib.load(written[0]).dataobj)
    expected = np.zeros(SHAPE, np.int64)
    expected[regions["WT"]] = 2
    expected[regions["TC"]] = 1
    expected[regions["ET"]] = 4
    np.testing.assert_array_equal(saved, expected)
    prob = np.asarray(nib.load(out / "a_prob.nii.gz").dataobj)
    np.testing.assert_array_equal(prob > 0.5, regions["WT"])
    assert any("region model" in n and "labels 1 and 3" in n for n in notes)
