"""The four real datasets in ../shared/data load through the readers (skipped when absent)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.config import DataConfig
from medseg.data import build_dataset, pair_folder
from medseg.data.nifti import discover

pytestmark = pytest.mark.realdata


def folder_cfg(root, **kw) -> DataConfig:
    return DataConfig.model_validate(dict(kind="folder2d", root=str(root), cache=False, **kw))


def test_kvasir_pairs_and_jpeg_masks(real_dataset):
    root = real_dataset("kvasir-seg")
    assert len(pair_folder(root, "images", "masks")) == 1000
    ds = build_dataset(folder_cfg(root), "test")  # default random split 80/10/10
    assert len(ds) == 100
    label, meta = ds.read_original(0)
    raw = np.array(Image.open(meta["mask_path"]))  # independent read: noisy JPEG, threshold 128
    np.testing.assert_array_equal(label, (raw.max(axis=-1) >= 128).astype(np.uint8))
    assert set(np.unique(label).tolist()) == {0, 1} and meta["original_shape"] == raw.shape[:2]
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and set(s["label"].unique().tolist()) <= {0.0, 1.0}


def test_chase_first_observer(real_dataset):
    root = real_dataset("chase-db1")
    ds = build_dataset(folder_cfg(root, mask_suffix="_1stHO", split=dict(mode="fixed")), "test")
    assert len(ds) == 28 and ds.ids[0] == "Image_01L"
    label, meta = ds.read_original(0)
    assert label.shape == (960, 999) and meta["mask_path"].endswith("Image_01L_1stHO.png")
    ref = np.array(Image.open(meta["mask_path"]))  # 1-bit PNG, True = vessel
    np.testing.assert_array_equal(label, ref.astype(np.uint8))
    assert 0.03 < label.mean() < 0.2


def test_covid_split_file_binary_and_multiclass(real_dataset):
    root = real_dataset("covid-semiseg")
    split = dict(mode="file", file="splits.json", val_fraction=0.1)
    sizes = [len(build_dataset(folder_cfg(root, split=split, in_channels=1), s)) for s in ("train", "val", "test")]
    assert sizes == [45, 5, 48]
    multi = build_dataset(folder_cfg(root, split=split, masks_dir="masks_multiclass", mask_mode="labels", num_classes=3), "test")
    binary = build_dataset(folder_cfg(root, split=split), "test")
    for i in (0, 1):
        lab_m, _ = multi.read_original(i)
        lab_b, _ = binary.read_original(i)
        assert set(np.unique(lab_m).tolist()) <= {0, 1, 2}
        np.testing.assert_array_equal(lab_m > 0, lab_b == 1)  # documented property of the dataset


def test_brats_volumes_spacing_and_labels(real_dataset):
    root = real_dataset("brats2015-deepmedic")
    cfg = DataConfig.model_validate(dict(kind="nifti", root=str(root), in_channels=2, num_classes=4, cache=False,
                                         nifti=dict(modality="MRI", label_map={4: 3}), split=dict(mode="fixed")))
    cases = discover(root, cfg)
    assert len(cases) == 6 and all(len(c.images) == 2 for c in cases)
    for c in cases:
        assert nib.load(c.images[0]).header.get_zooms() == (1.0, 1.0, 1.0)
    ds = build_dataset(cfg, "test")
    s = ds[0]
    assert s["image"].shape == (2, 240, 240, 155)
    assert s["meta"]["spacing"] == (1.0, 1.0, 1.0) and s["meta"]["original_shape"] == (240, 240, 155)
    assert set(s["label"].unique().tolist()) == {0, 1, 2, 3}  # 4 mapped to 3
