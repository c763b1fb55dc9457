"""Non-finite voxels in NIfTI volumes: refused with the file, channel and count named (patches, 2-D slices,
whole volumes; MRI z-score and CT window), or replaced and counted with ``data.nifti.nonfinite=replace``;
NaN in a label is always an error."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.config import DataConfig, NiftiConfig
from medseg.data import build_dataset
from medseg.data.nifti import normalize_volume
from medseg.errors import DataError

SHAPE = (10, 8, 6)
BAD = [(5, 4, 3), (6, 4, 3), (7, 2, 1)]  # voxels set to NaN/inf (inside the non-zero region)


def _save(arr: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)


def _channel(seed: int, mean: float) -> np.ndarray:
    img = np.random.default_rng(seed).normal(mean, 10, SHAPE).astype(np.float32)
    img[:2] = 0  # background for the MRI non-zero statistics
    return img


def nnunet_two_channels(root, bad_value: float = np.nan, bad_case: int = 1, bad_channel: int = 1):
    """Two cases, two channels (``_0000``, ``_0001``); ``BAD`` voxels of one channel file get ``bad_value``."""
    for k in range(2):
        for c in range(2):
            img = _channel(10 * k + c, 100.0 * (c + 1))
            if (k, c) == (bad_case, bad_channel):
                for v in BAD:
                    img[v] = bad_value
            _save(img, root / "imagesTr" / f"case_{k:03d}_{c:04d}.nii.gz")
        lab = np.zeros(SHAPE, np.uint8)
        lab[4:8, 3:6, 2:5] = 1
        _save(lab, root / "labelsTr" / f"case_{k:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}}))
    return root


def cfg_for(root, **nifti) -> DataConfig:
    return DataConfig.model_validate(dict(
        kind="nifti", root=str(root), in_channels=2, num_classes=1, image_size=[8, 8], cache=False,
        split=dict(mode="fixed"), nifti={"modality": "MRI", "patch_size": [4, 4, 4], **nifti}))


BAD_FILE = "case_001_0001.nii.gz"
NAMED = rf"{BAD_FILE} channel 1: 3 of {np.prod(SHAPE)} voxels"


@pytest.mark.parametrize("split,nifti,key", [
    ("train", {}, (5, 0)),                                   # 3-D patch of case 1 (4 samples per volume)
    ("train", {"slice_axis": 0, "patch_size": None}, (5, 0)),  # 2-D slice along an axis
    ("val", {}, 1),                                          # whole volume
    ("test", {"slice_axis": 2, "slice_eval": "slices"}, 6),  # every slice as a 2-D item
])
def test_nan_voxel_refused_in_every_loading_path(tmp_path, split, nifti, key):
    root = nnunet_two_channels(tmp_path / "D")
    ds = build_dataset(cfg_for(root, **nifti), split)
    with pytest.raises(DataError, match=NAMED) as err:
        ds[key]
    msg = str(err.value)
    assert "(3 NaN)" in msg and "data.nifti.nonfinite=replace" in msg and "case_001_0000" not in msg


def test_inf_in_ct_refused_even_though_the_window_would_clip_it(tmp_path):
    root = tmp_path / "ct"
    img = np.random.default_rng(0).normal(0, 300, SHAPE).astype(np.float32)
    img[BAD[0]], img[BAD[1]] = np.inf, -np.inf
    _save(img, root / "images" / "ct1.nii.gz")
    _save((img > 0).astype(np.uint8), root / "masks" / "ct1.nii.gz")
    cfg = DataConfig.model_validate(dict(kind="nifti", root=str(root), in_channels=1, num_classes=1, cache=False,
                                         split=dict(mode="fixed"), nifti=dict(modality="CT", window=(-100, 240))))
    with pytest.raises(DataError, match=r"ct1\.nii\.gz channel 0: 2 of 480 voxels \(0 NaN\)"):
        build_dataset(cfg, "test")[0]


def test_normalize_volume_alone_refuses_nan(tmp_path):
    """The path ``medseg predict`` uses (no file names): still refused, never a NaN channel."""
    img = np.stack([_channel(1, 50.0), _channel(2, 80.0)])
    img[0][BAD[0]] = np.nan
    with pytest.raises(DataError, match=r"image channel 0: 1 of 480 voxels \(1 NaN\)"):
        normalize_volume(img, NiftiConfig(modality="MRI"))


def test_replace_sets_channel_minimum_and_warns_with_the_count(tmp_path):
    root = nnunet_two_channels(tmp_path / "R")
    ds = build_dataset(cfg_for(root, nonfinite="replace"), "val")
    with pytest.warns(UserWarning, match=NAMED + r" \(3 NaN\) were NaN/inf; replaced by"):
        image = ds[1]["image"].numpy()
    assert np.isfinite(image).all()
    # oracle: the raw channel with its NaN set to its finite minimum, then the non-zero z-score in NumPy
    raw = np.asarray(nib.load(root / "imagesTr" / BAD_FILE).dataobj).astype(np.float64)
    raw[np.isnan(raw)] = np.nanmin(raw)
    nz = raw != 0
    ref = np.zeros_like(raw)
    ref[nz] = (raw[nz] - raw[nz].mean()) / raw[nz].std()
    np.testing.assert_allclose(image[1], ref, rtol=1e-4, atol=1e-4)
    clean = np.asarray(nib.load(root / "imagesTr" / "case_001_0000.nii.gz").dataobj).astype(np.float64)
    nz0 = clean != 0
    np.testing.assert_allclose(image[0][nz0], (clean[nz0] - clean[nz0].mean()) / clean[nz0].std(), rtol=1e-4, atol=1e-4)


def test_nan_in_binary_label_is_an_error(tmp_path):
    root = tmp_path / "L"
    img = _channel(3, 100.0)
    lab = np.zeros(SHAPE, np.float32)
    lab[4:8, 3:6, 2:5] = 1
    lab[BAD[2]] = np.nan  # used to become a huge negative integer, i.e. background, silently
    _save(img, root / "images" / "a.nii.gz")
    _save(lab, root / "masks" / "a.nii.gz")
    cfg = DataConfig.model_validate(dict(kind="nifti", root=str(root), in_channels=1, num_classes=1, cache=False,
                                         split=dict(mode="fixed"), nifti=dict(nonfinite="replace")))
    with pytest.raises(DataError, match=r"label .*masks/a\.nii\.gz: 1 of 480 voxels are NaN or inf"):
        build_dataset(cfg, "test")[0]
