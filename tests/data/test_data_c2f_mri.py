"""Coarse-to-fine data options for MRI (BraTS-like case folders): case-folder layout, binary target from a label
set, block downsampling, crop to the voxels above the window, and their recipe validation (docs/mll.md)."""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.config import ConfigError
from medseg.data.views import binary_target, downsample, foreground_box
from medseg.engine import c2f_train as ct
from medseg.errors import DataError

FILES = {"image": "images/{case}/T1c.nii.gz", "label": "masks/{case}/seg.nii.gz"}


def _raw(**data) -> dict:
    return {"name": "t", "data": {"root": "x", "window": [-2, 6], "views": ["axial"], **data}}


# --------------------------------------------------------------------------------------- label set
def test_binary_target_from_a_float_label_map_and_a_label_set():
    label = np.array([0, 1, 2, 3, 4, 4.0000001, 3.9999999], dtype=np.float32)  # BraTS stores labels as float32
    assert binary_target(label, [1, 3, 4]).tolist() == [0, 1, 0, 1, 1, 1, 1]  # tumour core
    assert binary_target(label, [4]).tolist() == [0, 0, 0, 0, 1, 1, 1]  # enhancing tumour
    assert binary_target(label).tolist() == [0, 1, 1, 1, 1, 1, 1]  # default: label > 0


def test_binary_target_refuses_a_non_integer_label_naming_the_file():
    with pytest.raises(DataError, match=r"seg\.nii\.gz.*2\.5.*not an integer"):
        binary_target(np.array([0, 2.5, 4]), [4], "seg.nii.gz")


# ------------------------------------------------------------------------------- downsample / crop
def test_downsample_block_mean_and_label_majority_hand_worked():
    image = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    label = np.zeros((4, 4, 2), np.uint8)
    label[0:2, 0:2, :] = 1  # a full block -> 1
    label[2, 2, :] = 1  # 2 of 8 voxels of block (1, 1) -> 0
    label[0:2, 2, :] = 1  # 4 of 8 of block (0, 1) -> 1 (mean 0.5 counts as majority)
    img, lab = downsample(image, label, 2)
    assert img.shape == lab.shape == (2, 2, 1)
    # block (0, 0): voxels x*8 + y*2 + z for x, y in {0, 1}, z in {0, 1} -> mean (0+1+2+3+8+9+10+11)/8 = 5.5
    assert img[0, 0, 0] == pytest.approx(5.5) and img[1, 1, 0] == pytest.approx(5.5 + 16 + 4)
    assert lab[..., 0].tolist() == [[1, 1], [0, 0]]
    same_img, same_lab = downsample(image, label, 1)
    assert same_img is image and same_lab is label
    assert downsample(np.zeros((5, 5, 5)), np.zeros((5, 5, 5)), 2)[0].shape == (2, 2, 2)  # the partial block dropped


def test_foreground_box_crops_to_the_window_and_refuses_to_cut_the_target():
    image = np.zeros((6, 7, 5), np.float32)
    image[1:4, 2:6, 1:3] = 0.4  # "brain": above the window's lower bound
    label = np.zeros_like(image, np.uint8)
    label[2, 3, 1] = 1
    assert foreground_box(image, label) == (slice(1, 4), slice(2, 6), slice(1, 3))
    label[5, 0, 0] = 1  # a target voxel in the background
    with pytest.raises(DataError, match=r"case\.nii\.gz: 1 target voxel.*crop_foreground"):
        foreground_box(image, label, "case.nii.gz")
    assert foreground_box(np.zeros((3, 3, 3)), np.zeros((3, 3, 3))) == (slice(0, 3),) * 3  # nothing above: keep all


# ------------------------------------------------------------------------------------ recipe checks
@pytest.mark.parametrize("data, match", [
    ({"files": {"image": "images/T1c.nii.gz", "label": "masks/{case}/seg.nii.gz"}}, r"data\.files\.image.*\{case\}"),
    ({"files": {"image": "images/{case}/*.nii.gz", "label": "masks/{case}/seg.nii.gz"}}, r"data\.files\.image"),
    ({"files": {"image": "{case}/a_{case}.nii.gz", "label": "m/{case}.nii.gz"}}, r"exactly once"),
    ({"label_values": [0, 1]}, r"label_values.*>= 1"),
    ({"label_values": []}, r"label_values"),
    ({"label_values": [4, 4]}, r"label_values.*distinct"),
    ({"downsample": 0}, r"data\.downsample"),
    ({"files": FILES, "phantom": {"n": 2}}, r"data\.phantom"),
])
def test_bad_mri_data_options_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        ct.validate_recipe(_raw(**data))


def test_patience_without_validation_is_refused():
    raw = _raw()
    raw["train"] = {"val_every": 0, "patience": 2}
    with pytest.raises(ConfigError, match=r"train\.patience.*val_every"):
        ct.validate_recipe(raw)


# ------------------------------------------------------------------------- case folders end to end
def write_case_folders(root: Path, n: int = 3, shape=(12, 10, 8)) -> dict[str, np.ndarray]:
    """``n`` BraTS-like cases: z-scored image (background = its minimum -4), float32 label map 0-4 with a
    tumour core (labels 1, 3, 4) box, oedema (2) around it; 1 mm, LPS-like affine. Returns the cores."""
    rng = np.random.default_rng(0)
    cores = {}
    for i in range(n):
        case = f"pat{i:02d}"
        image = np.full(shape, -4.0, np.float32)
        image[1:-1, 1:-1, 1:-1] = rng.normal(0, 1, (shape[0] - 2, shape[1] - 2, shape[2] - 2))
        label = np.zeros(shape, np.float32)
        label[3:9, 3:8, 2:6] = 2
        label[4:8, 4:7, 3:5] = 1
        label[5:7, 5:7, 3:5] = 4
        label[4, 4, 3] = 3
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        for sub, arr in (("images", image), ("masks", label)):
            (root / sub / case).mkdir(parents=True)
            name = "T1c.nii.gz" if sub == "images" else "seg.nii.gz"
            nib.save(nib.Nifti1Image(arr, affine), root / sub / case / name)
        cores[case] = np.isin(label, [1, 3, 4])
    (root / "images" / "notacase.txt").write_text("ignored")
    return cores


def test_case_folder_layout_label_set_downsample_and_crop(tmp_path):
    cores = write_case_folders(tmp_path)
    rec = ct.validate_recipe(_raw(root=str(tmp_path), files=FILES, label_values=[1, 3, 4]))
    cases = ct.dataset_cases(tmp_path, rec.data.files)
    assert sorted(cases) == ["pat00", "pat01", "pat02"]
    assert cases["pat01"] == (tmp_path / "images/pat01/T1c.nii.gz", tmp_path / "masks/pat01/seg.nii.gz")
    vol = ct.recipe_volumes(rec.data, cases, ["pat01"], "axial")[0]
    assert vol.image.shape == (12, 10, 8) and vol.axis == 2 and vol.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(vol.label, cores["pat01"])  # the core only, not the oedema
    assert vol.image.min() == 0.0  # background -4 clipped to the window's low bound -2
    rec2 = ct.validate_recipe(_raw(root=str(tmp_path), files=FILES, label_values=[1, 3, 4], downsample=2,
                                   crop_foreground=True))
    vol2 = ct.recipe_volumes(rec2.data, cases, ["pat01"], "axial")[0]
    assert vol2.spacing == (2.0, 2.0, 2.0)
    # 6 x 5 x 4 blocks; the background ring (1 voxel) is averaged into the edge blocks (above -2 after mixing
    # with the normal values, or not): the crop keeps exactly the blocks whose mean is above the window's low
    full, lab = downsample(ct.recipe_volumes(rec.data, cases, ["pat01"], "axial")[0].image, cores["pat01"], 2)
    box = foreground_box(full, lab)
    np.testing.assert_array_equal(vol2.image, full[box])
    np.testing.assert_array_equal(vol2.label, lab[box])
    assert vol2.label.sum() == lab.sum() > 0


def test_case_folder_missing_label_or_no_match_is_a_data_error(tmp_path):
    write_case_folders(tmp_path, n=2)
    (tmp_path / "masks" / "pat01" / "seg.nii.gz").unlink()
    files = ct.C2FFiles(**FILES)
    with pytest.raises(DataError, match=r"pat01/T1c\.nii\.gz: no label .*masks/pat01/seg\.nii\.gz"):
        ct.dataset_cases(tmp_path, files)
    with pytest.raises(DataError, match=r"no file matches data\.files\.image 'images/\{case\}/Flair\.nii\.gz'"):
        ct.dataset_cases(tmp_path, ct.C2FFiles(image="images/{case}/Flair.nii.gz", label=FILES["label"]))


# ------------------------------------------------------------- training without validation, evaluate
class _Tiny(torch.nn.Module):
    """A c2f-shaped network small enough for a test (``out`` at the input size, ``logits`` at stride 4)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(in_channels, 4, 3, 2, 1), torch.nn.BatchNorm2d(4),
                                        torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, 2, 1))

    def forward(self, x):
        logits = self.body(x)
        return {"out": F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False),
                "logits": logits}


@pytest.fixture
def tiny_nets(monkeypatch):
    """The recipes name c2f_coarse / c2f_fine; training and evaluation build these tiny stand-ins instead
    (no test-only model enters the global registry)."""
    from medseg.engine import c2f_predict
    from medseg.modules.saliency import SaliencyTransform

    def build(recipe, device="cpu"):
        torch.manual_seed(0)
        return ct.Nets(_Tiny(3), _Tiny(6), SaliencyTransform(3))

    monkeypatch.setattr(ct, "build_nets", build)
    monkeypatch.setattr(c2f_predict, "build_nets", build)


def _mri_recipe(root: Path, out: Path, **data) -> ct.C2FRecipe:
    raw = _raw(root=str(root), files=FILES, label_values=[1, 3, 4], split={"mode": "kfold", "folds": 3, "fold": 0},
               **data)
    raw.update(output_dir=str(out), loss={"name": "mll", "kwargs": {"num_points": 8}},
               stages={"s": 1, "j_from": 1}, train={"epochs": 2, "max_steps_per_epoch": 1, "val_every": 0,
                                                    "recalibrate_bn": 2, "margin": 2})
    return ct.validate_recipe(raw)


def test_val_every_0_trains_without_validation_or_best_checkpoint(tmp_path, tiny_nets):
    write_case_folders(tmp_path / "data")
    rec = _mri_recipe(tmp_path / "data", tmp_path / "runs")

    def no_validation(trainer):
        raise AssertionError("validation ran although train.val_every is 0")

    result = ct.train_view(rec, "axial", validate_fn=no_validation, echo=None)
    assert result["status"] == "finished" and result["epochs"] == 2 and result["best_dice"] is None
    run = tmp_path / "runs" / "t" / "axial"
    assert not (run / "checkpoints" / "best.pt").exists() and (run / "checkpoints" / "last.pt").exists()
    calls = []
    rec2 = rec.model_copy(update={"train": rec.train.model_copy(update={"val_every": 2, "epochs": 3})})
    ct.train_view(rec2, "axial", tmp_path / "runs2", validate_fn=lambda t: calls.append(t.epoch) or 0.5, echo=None)
    assert calls == [1, 2]  # every 2nd epoch, and the last


def test_evaluate_scores_held_out_volumes_like_medpy(tmp_path, tiny_nets, monkeypatch):
    """`medseg c2f evaluate`: the held-out case of the split (fold 0 of 3: pat00), read with the recipe's data
    options (2 mm blocks, crop); DSC and HD95 in mm at the downsampled spacing equal medpy's."""
    from medpy.metric.binary import dc, hd95

    from medseg.engine import c2f_predict
    from medseg.engine.c2f import RefineResult

    write_case_folders(tmp_path / "data", shape=(16, 14, 12))
    rec = _mri_recipe(tmp_path / "data", tmp_path / "runs", downsample=2, crop_foreground=True)
    ct.train_view(rec, "axial", echo=None)
    vol = ct.recipe_volumes(rec.data, ct.dataset_cases(tmp_path / "data", rec.data.files), ["pat00"], "axial")[0]
    pred = np.roll(vol.label, 1, axis=0)
    pred[0, 0, 0] = 1  # an outlier voxel, so that HD95 is not a single distance
    seen = []

    def fixed(volume, views, **kw):
        seen.append(volume.shape)
        return RefineResult(pred, 3, [0.5, 0.9, 1.0], False), None

    monkeypatch.setattr(c2f_predict, "segment_volume", fixed)
    rows = c2f_predict.evaluate_run(tmp_path / "runs" / "t", echo=None)
    assert [r["case"] for r in rows] == ["pat00"] and seen == [vol.image.shape]
    row = next(csv.DictReader(open(tmp_path / "runs" / "t" / "eval_cases.csv")))
    assert float(row["dice"]) == pytest.approx(dc(pred, vol.label), abs=1e-9)
    assert float(row["hd95_mm"]) == pytest.approx(hd95(pred, vol.label, voxelspacing=(2.0, 2.0, 2.0)), abs=1e-9)
    assert (row["rounds"], row["spacing_mm"], row["gt_voxels"]) == ("3", "2x2x2", str(int(vol.label.sum())))
    with pytest.raises(DataError, match="eval_cases.csv already exists"):
        c2f_predict.evaluate_run(tmp_path / "runs" / "t", echo=None)
    (tmp_path / "imgs").mkdir()
    src = tmp_path / "data" / "images" / "pat00" / "T1c.nii.gz"
    (tmp_path / "imgs" / "pat00.nii.gz").write_bytes(src.read_bytes())
    with pytest.raises(DataError, match=r"data\.downsample.*medseg c2f evaluate"):
        c2f_predict.predict_folder(tmp_path / "runs" / "t", tmp_path / "imgs", tmp_path / "pred", echo=None)
    assert not (tmp_path / "pred").exists()


def test_resume_of_a_run_started_before_the_new_options_is_not_a_recipe_change(tmp_path, tiny_nets):
    """A checkpoint written before data.files / label_values / downsample / crop_foreground / train.val_every
    existed lacks those keys; their defaults are not a change of recipe, so --resume needs no --force."""
    from medseg.engine.checkpoint import load_checkpoint, save_checkpoint

    write_case_folders(tmp_path / "data")
    raw = _mri_recipe(tmp_path / "data", tmp_path / "runs").model_dump(mode="json")
    raw["data"]["label_values"], raw["train"]["val_every"] = None, 1  # the defaults the old run implied
    old_style = ct.validate_recipe(raw)
    ct.train_view(old_style, "axial", validate_fn=lambda t: 0.5, echo=None)
    last = tmp_path / "runs" / "t" / "axial" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    for key in ("label_values", "downsample", "crop_foreground"):
        del state["config"]["data"][key]
    del state["config"]["train"]["val_every"]
    save_checkpoint(state, last)
    longer = old_style.model_copy(update={"train": old_style.train.model_copy(update={"epochs": 3})})
    with pytest.raises(ConfigError, match=r"train\.epochs: 2 -> 3"):  # a real change is still refused
        ct.train_view(longer, "axial", resume=True, validate_fn=lambda t: 0.5, echo=None)
    assert ct.train_view(old_style, "axial", resume=True, validate_fn=lambda t: 0.5, echo=None)["epochs"] == 2
