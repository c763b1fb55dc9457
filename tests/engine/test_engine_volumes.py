"""3-D: train -> evaluate (MONAI sliding window) -> predict NIfTI keeping affine and spacing; and a 2-D
model on slices of volumes, evaluated slice by slice on whole volumes."""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import tiny_raw  # noqa: E402

from medseg.config import build_config
from medseg.engine.evaluate import evaluate_run
from medseg.engine.predict import predict_paths
from medseg.engine.trainer import train_run


def volume_raw() -> dict:
    raw = tiny_raw(epochs=1)
    raw["data"].update(kind="synthetic3d", image_size=[24, 32, 32], num_classes=2, batch_size=2,
                       nifti={"patch_size": [16, 16, 16], "samples_per_volume": 2})
    raw["data"]["synthetic"].update(n_train=2, n_val=1, n_test=2)
    raw["model"] = {"name": "unet3d", "kwargs": {"base": 4, "depth": 2}}
    raw["eval"] = {"metrics": ["dice"], "overlap": 0.25}
    return raw


def test_train_evaluate_predict_3d(tmp_path: Path) -> None:
    cfg = build_config(volume_raw())
    assert cfg.spatial_dims == 3
    result = train_run(cfg, tmp_path / "run")
    assert result["status"] == "finished"
    summary = evaluate_run(tmp_path / "run", "test", progress=False)
    assert summary["cases"] == 2

    # a user's NIfTI with an anisotropic, oblique affine: the prediction keeps geometry
    affine = np.array([[0.8, 0.1, 0, -10], [0, 0.8, 0, 20], [0, 0, 2.5, 5], [0, 0, 0, 1]], dtype=float)
    vol = np.random.default_rng(0).normal(size=(20, 28, 30)).astype(np.float32)
    src = tmp_path / "in"
    src.mkdir()
    nib.save(nib.Nifti1Image(vol, affine), src / "case_0000.nii.gz")
    written = predict_paths(tmp_path / "run", src, tmp_path / "out", progress=False)
    assert written[0].name == "case.nii.gz"
    out = nib.load(written[0])
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms()[:3], nib.load(src / "case_0000.nii.gz").header.get_zooms()[:3])
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}


def test_2d_model_on_volume_slices(tmp_path: Path) -> None:
    raw = volume_raw()
    raw["data"]["nifti"] = {"slice_axis": 0, "slice_eval": "volume"}
    raw["data"]["image_size"] = [16, 32, 32]
    raw["model"] = {"name": "unet", "kwargs": {"base": 4, "depth": 2}}
    cfg = build_config(raw)
    assert cfg.spatial_dims == 2
    train_run(cfg, tmp_path / "run")
    summary = evaluate_run(tmp_path / "run", "test", progress=False, save_predictions=False)
    assert summary["cases"] == 2
