"""NIfTI layouts, intensity normalisation, patch/slice sampling, synthetic 3-D and bad volumes."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import DataConfig, NiftiConfig
from medseg.data import build_dataset, build_loader
from medseg.data.nifti import normalize_volume, remap_labels
from medseg.data.volumes import crop_around
from medseg.errors import DataError

RNG = np.random.default_rng(2)
AFF = np.array([[0.0, 0.0, 2.5, 5.0], [0.0, 0.9, 0.0, -3.0], [0.7, 0.0, 0.0, 1.0], [0, 0, 0, 1]])
SHAPE = (12, 10, 8)


def _save(arr, path, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)


def nnunet_folder(root, n=4, channels=2, shape=SHAPE, label_max=2):
    for k in range(n):
        for c in range(channels):
            img = RNG.normal(100 * (c + 1), 10, shape).astype(np.float32)
            img[:2] = 0  # background for the MRI non-zero statistics
            _save(img, root / "imagesTr" / f"case_{k:03d}_{c:04d}.nii.gz")
        lab = np.zeros(shape, np.uint8)
        lab[4:8, 3:6, 2:5] = 1
        lab[5:7, 4:5, 3:4] = label_max
        _save(lab, root / "labelsTr" / f"case_{k:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1, "b": 2}}))
    return root


def vol_cfg(root, **kw) -> DataConfig:
    base = dict(kind="nifti", root=str(root), in_channels=2, num_classes=3, image_size=[16, 16],
                split=dict(mode="fixed"), nifti=dict(modality="MRI", patch_size=[8, 8, 8], samples_per_volume=3))
    for key, value in kw.items():
        if key == "nifti":
            base["nifti"].update(value)
        else:
            base[key] = value
    return DataConfig.model_validate(base)


def test_nnunet_layout_whole_volumes_keep_geometry(tmp_path):
    root = nnunet_folder(tmp_path / "Dataset001")
    ds = build_dataset(vol_cfg(root), "val")
    assert ds.whole_volumes and len(ds) == 4 and ds.ids[0] == "case_000"
    s = ds[1]
    assert s["image"].shape == (2, *SHAPE) and s["label"].shape == SHAPE and s["label"].dtype == torch.int64
    meta = s["meta"]
    np.testing.assert_allclose(meta["spacing"], nib.load(root / "imagesTr" / "case_001_0000.nii.gz").header.get_zooms())
    np.testing.assert_allclose(np.array(meta["affine"]), AFF)
    assert meta["original_shape"] == SHAPE and meta["channel_names"] == {"0": "T1", "1": "T2"}
    loader = build_loader(vol_cfg(root), "test")
    assert loader.batch_size == 1


def test_mri_normalisation_matches_numpy_oracle(tmp_path):
    img = RNG.normal(50, 7, (2, *SHAPE)).astype(np.float32)
    img[:, :3] = 0
    out = normalize_volume(img, NiftiConfig(modality="MRI"))
    for c in range(2):
        nz = img[c] != 0
        ref = (img[c][nz] - img[c][nz].mean()) / img[c][nz].std()
        np.testing.assert_allclose(out[c][nz], ref, rtol=1e-4, atol=1e-5)
        assert (out[c][~nz] == 0).all()


def test_ct_window_then_zscore():
    img = np.array([[[-2000.0, -100.0, 0.0, 240.0, 3000.0]]], dtype=np.float32)
    out = normalize_volume(img, NiftiConfig(modality="CT", window=(-100, 240)))
    clipped = np.array([-100.0, -100.0, 0.0, 240.0, 240.0])
    np.testing.assert_allclose(out.ravel(), (clipped - clipped.mean()) / clipped.std(), rtol=1e-5)


def test_remap_labels_brats_style():
    lab = np.array([0, 1, 2, 4, 4, 2])
    np.testing.assert_array_equal(remap_labels(lab, {4: 3}), [0, 1, 2, 3, 3, 2])


def test_crop_around_pads_and_stays_inside():
    image = np.arange(5 * 6, dtype=np.float32).reshape(1, 5, 6)
    label = np.ones((5, 6), np.int64)
    img, lab, start = crop_around(image, label, (0, 5), (4, 8))
    assert img.shape == (1, 4, 8) and start == (0, -1)
    np.testing.assert_array_equal(img[0, :, 1:7], image[0, :4])  # padded by one column on the left
    assert (img[0, :, 0] == 0).all() and lab[:, 0].sum() == 0 and lab[:, 1:7].all()


def test_train_patches_with_full_foreground_oversampling(tmp_path):
    root = nnunet_folder(tmp_path / "D", n=2)
    cfg = vol_cfg(root, batch_size=3, nifti=dict(fg_oversample=1.0))
    ds = build_dataset(cfg, "train")
    assert len(ds) == 6 and not ds.whole_volumes
    for b in build_loader(cfg, "train", seed=1):
        assert b["image"].shape == (3, 2, 8, 8, 8)
        assert all(int((lab > 0).sum()) > 0 for lab in b["label"])  # every patch holds foreground
    cfg0 = vol_cfg(root, nifti=dict(fg_oversample=0.0, patch_size=[4, 4, 4]))
    fg = [int((build_dataset(cfg0, "train")[(i, i)]["label"] > 0).any()) for i in range(6)]
    assert sum(fg) < 6  # uniform centres miss the small object sometimes (checked for this seed)


def test_slice_mode_train_and_eval(tmp_path):
    root = nnunet_folder(tmp_path / "S", n=2)
    cfg = vol_cfg(root, num_classes=1, nifti=dict(slice_axis=0, patch_size=None, fg_oversample=1.0))
    s = build_dataset(cfg, "train")[(0, 9)]
    assert s["image"].shape == (2, 16, 16) and s["label"].shape == (1, 16, 16) and s["label"].sum() > 0
    assert s["meta"]["slice_axis"] == 0 and 4 <= s["meta"]["slice_index"] < 8
    vol = build_dataset(cfg, "val")
    assert vol.whole_volumes and vol[0]["image"].shape == (2, *SHAPE)
    cfg_s = vol_cfg(root, num_classes=1, nifti=dict(slice_axis=0, slice_eval="slices", slice_fg_only=True))
    sl = build_dataset(cfg_s, "test")
    assert len(sl) == 8 and sl.ids[0] == "case_000_s0004"  # 4 foreground slices per case
    label, meta = sl.read_original(0)
    assert label.shape == SHAPE[1:] and meta["spacing"] == pytest.approx((0.9, 2.5))


def test_case_folder_layout_with_label_map(tmp_path):
    root = tmp_path / "brats"
    for case in ("p1", "p2"):
        for ch in ("Flair.nii.gz", "T1c.nii.gz"):
            _save(RNG.normal(size=SHAPE).astype(np.float32), root / "images" / case / ch, np.eye(4))
        lab = np.zeros(SHAPE, np.float32)
        lab[1:3, 1:3, 1:3] = 4
        _save(lab, root / "masks" / case / "OT.nii.gz", np.eye(4))
    cfg = vol_cfg(root, num_classes=4, nifti=dict(channels=["T1c.nii.gz", "Flair.nii.gz"], label_map={4: 3}))
    ds = build_dataset(cfg, "test")
    s = ds[0]
    assert s["image"].shape == (2, *SHAPE) and set(s["label"].unique().tolist()) == {0, 3}
    assert s["meta"]["path"].endswith("T1c.nii.gz")
    with pytest.raises(DataError, match="outside the declared classes"):
        build_dataset(vol_cfg(root, num_classes=4), "test")[0]


def test_volume_errors(tmp_path):
    root = nnunet_folder(tmp_path / "E", n=2)
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError, match="case_001"):
        build_dataset(vol_cfg(root), "train")
    root2 = tmp_path / "F"
    _save(np.zeros(SHAPE, np.float32), root2 / "images" / "a.nii.gz")
    _save(np.zeros((3, 3, 3), np.uint8), root2 / "masks" / "a.nii.gz")
    with pytest.raises(DataError, match="spatial shape"):
        build_dataset(vol_cfg(root2, in_channels=1), "test")[0]
    with pytest.raises(DataError, match="data folder not found"):
        build_dataset(vol_cfg(tmp_path / "none"), "test")


def test_synthetic3d_patches_and_volumes():
    cfg = DataConfig.model_validate(dict(kind="synthetic3d", image_size=[16, 24, 24], in_channels=1, num_classes=4,
                                         synthetic=dict(n_train=2, n_val=2, n_test=2), nifti=dict(patch_size=[8, 16, 16])))
    tr = build_dataset(cfg, "train")
    assert len(tr) == 8 and tr[(0, 0)]["image"].shape == (1, 8, 16, 16)
    te = build_dataset(cfg, "test")
    s = te[0]
    assert s["image"].shape == (1, 16, 24, 24) and set(s["label"].unique().tolist()) <= {0, 1, 2, 3}
    assert len(set(s["label"].unique().tolist())) >= 3
