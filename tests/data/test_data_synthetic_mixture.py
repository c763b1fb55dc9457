"""Synthetic generator properties and the weighted binary mixture dataset."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from medseg.config import DataConfig
from medseg.data import build_dataset, build_loader, make_case
from medseg.errors import DataError


def test_synthetic_is_seeded_and_splits_differ():
    a, la = make_case((48, 48), seed=0, split="train", index=3)
    b, lb = make_case((48, 48), seed=0, split="train", index=3)
    c, lc = make_case((48, 48), seed=0, split="test", index=3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(la, lc)


def test_structure_types_large_small_thin():
    _, lab = make_case((64, 64), seed=0, split="train", index=0, num_classes=4)
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}
    large = (lab == 1).sum()
    comps, n_small = ndimage.label(lab == 2)
    small_sizes = np.bincount(comps.ravel())[1:]
    assert large > 4 * small_sizes.max() and n_small >= 1
    thin = lab == 3
    assert ndimage.binary_erosion(thin, iterations=2).sum() == 0  # at most ~3 pixels wide


def test_structures_are_brighter_than_background():
    img, lab = make_case((64, 64), seed=1, split="val", index=0, noise=0.1)
    fg, bg = img[0][lab > 0], img[0][lab == 0]
    assert fg.mean() - bg.mean() > 0.3 and bg.std() < 0.2


def test_default_config_items():
    ds = build_dataset(DataConfig(), "test")
    assert len(ds) == 16 and ds[0]["image"].shape == (3, 64, 64)
    label, meta = ds.read_original(0)
    assert label.dtype == np.uint8 and label.shape == (64, 64) and meta["original_shape"] == (64, 64)


def mixture_cfg(**kw) -> DataConfig:
    base = dict(kind="mixture", in_channels=1, image_size=[32, 32], batch_size=4, datasets=[
        dict(kind="synthetic2d", name="big", modality="photo", weight=1.0, synthetic=dict(n_train=30, n_val=3, n_test=3)),
        dict(kind="synthetic3d", name="vol", modality="CT", weight=1.0, synthetic=dict(n_train=2, n_val=1, n_test=1),
             nifti=dict(samples_per_volume=2)),
    ])
    base.update(kw)
    return DataConfig.model_validate(base)


def test_mixture_weights_balance_datasets_and_meta_names():
    cfg = mixture_cfg()
    ds = build_dataset(cfg, "train")
    assert len(ds) == 34
    counts = Counter()
    for epoch in range(4):
        for b in build_loader(cfg, "train", epoch=epoch, drop_last=False):
            assert b["image"].shape[1:] == (1, 32, 32)
            counts.update(m["dataset"] for m in b["meta"])
            assert all(m["modality"] == {"big": "photo", "vol": "CT"}[m["dataset"]] for m in b["meta"])
    # equal weights: each dataset about half of 136 draws although "vol" holds 4 of 34 items
    assert abs(counts["vol"] / sum(counts.values()) - 0.5) < 0.12


def test_mixture_eval_items_are_2d_slices_with_original_labels():
    ds = build_dataset(mixture_cfg(), "test")
    i = len(ds) - 1
    s = ds[i]
    assert s["image"].shape == (1, 32, 32) and s["meta"]["dataset"] == "vol"
    label, meta = ds.read_original(i)
    assert label.shape == (32, 32) and meta["id"].startswith("vol/")  # (32, 32, 32) volume, axial slice


def test_mixture_errors():
    with pytest.raises(DataError, match="datasets is empty"):
        build_dataset(DataConfig(kind="mixture"), "train")
    with pytest.raises(DataError, match="binary"):
        build_dataset(mixture_cfg(num_classes=2), "train")
    bad = mixture_cfg(datasets=[dict(kind="synthetic2d", colour=1)])
    with pytest.raises(DataError, match=r"datasets\[0\]"):
        build_dataset(bad, "train")


def test_mixture_of_a_folder_and_nifti_slices(tmp_path):
    import nibabel as nib
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "f" / "img").mkdir(parents=True)
    (tmp_path / "f" / "lab").mkdir()
    for k in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(tmp_path / "f" / "img" / f"{k}.png")
        Image.fromarray(((rng.random((20, 24)) > 0.7) * 255).astype(np.uint8)).save(tmp_path / "f" / "lab" / f"{k}.png")
    for k in range(2):
        (tmp_path / "v" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "v" / "masks").mkdir(exist_ok=True)
        lab = np.zeros((10, 12, 6), np.uint8)
        lab[3:6, 4:8, 1:5] = 2
        nib.save(nib.Nifti1Image(rng.normal(size=(10, 12, 6)).astype(np.float32), np.eye(4)), tmp_path / "v" / "images" / f"c{k}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "v" / "masks" / f"c{k}.nii.gz")
    cfg = DataConfig.model_validate(dict(kind="mixture", in_channels=1, image_size=[16, 16], split=dict(mode="fixed"), datasets=[
        dict(kind="folder2d", root=str(tmp_path / "f"), images_dir="img", masks_dir="lab", modality="US"),
        dict(kind="nifti", root=str(tmp_path / "v"), nifti=dict(modality="CT", slice_fg_only=True)),
    ]))
    ds = build_dataset(cfg, "test")
    assert len(ds) == 5 + 2 * 4  # 4 foreground axial slices per volume
    names = {ds[i]["meta"]["dataset"]: ds[i]["meta"]["modality"] for i in range(len(ds))}
    assert names == {"f": "US", "v": "CT"}
    s = ds[len(ds) - 1]
    assert s["image"].shape == (1, 16, 16) and set(s["label"].unique().tolist()) == {0.0, 1.0}  # label 2 -> binary
    label, meta = ds.read_original(len(ds) - 1)
    assert label.shape == (10, 12) and label.max() == 1 and meta["slice_axis"] == 2
