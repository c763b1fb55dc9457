"""``medseg ife-maps`` and ``medseg ife-report`` (per-dataset / per-modality bar chart)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medseg.cli import main
from medseg.config import build_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.trainer import build_model
from medseg.errors import UserError
from medseg.report.ife_maps import capture_ife_points
from medseg.report.per_dataset import dataset_modalities, run_tables


def tiny_checkpoint(tmp_path, ife="curvature"):
    cfg = build_config({"data": {"kind": "synthetic2d", "image_size": [32, 32], "in_channels": 3},
                        "model": {"name": "unet", "kwargs": {"base": 4, "depth": 3, "ife": ife}}})
    model = build_model(cfg)
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"config": cfg.model_dump(mode="json"), "model": model.state_dict()}, path)
    return path, model


def test_capture_scores_every_ife_point_like_the_module():
    torch.manual_seed(0)
    from medseg.models import create_model

    model = create_model("unet", base=4, depth=3, ife="entropy", ife_ratio=(0.75, 0.5))
    x = torch.randn(1, 3, 32, 32)
    points = capture_ife_points(model, x)
    assert [p.name for p in points] == ["unet.skip1", "unet.skip2"]
    assert [p.features.shape for p in points] == [(8, 16, 16), (16, 8, 8)]
    assert [p.selected for p in points] == [6, 8]
    feats = {}  # independent capture: the skip features straight from the encoder
    h = model.encoders[1].register_forward_hook(lambda m, a, out: feats.setdefault(1, out))
    model(x)
    h.remove()
    torch.testing.assert_close(points[0].features, feats[1][0])
    torch.testing.assert_close(points[0].scores, model.ife["1"].scores(feats[1])[0])
    with pytest.raises(UserError, match="no IFE module"):
        capture_ife_points(create_model("unet", base=4, depth=3), x)


def test_ife_maps_cli_writes_a_png(tmp_path):
    ckpt, _ = tiny_checkpoint(tmp_path)
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "maps.png"
    assert main(["ife-maps", "--checkpoint", str(ckpt), "--image", str(img), "--output", str(out), "--top", "3",
                 "--bottom", "2"]) == 0
    png = np.array(Image.open(out))
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 300
    assert main(["ife-maps", "--checkpoint", str(ckpt), "--image", str(tmp_path / "none.png")]) == 1


def write_run(folder, rows, datasets):
    (folder / "metrics").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"kind": "mixture", "datasets": datasets}}))
    with open(folder / "metrics" / "test_per_case.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case", "dataset", "dice"])
        w.writeheader()
        w.writerows(rows)


def test_per_dataset_and_modality_means_and_chart(tmp_path):
    datasets = [{"kind": "folder2d", "root": "/x/kvasir-seg", "modality": "endoscopy"},
                {"kind": "folder2d", "root": "/x/other", "name": "covid", "modality": "CT"},
                {"kind": "nifti", "root": "/x/brats", "name": "brats", "nifti": {"modality": "MRI"}},
                {"kind": "folder2d", "root": "/x/lits", "name": "lits", "modality": "CT"}]
    rows = [{"case": "a", "dataset": "kvasir-seg", "dice": 0.9}, {"case": "b", "dataset": "kvasir-seg", "dice": 0.7},
            {"case": "c", "dataset": "covid", "dice": 0.5}, {"case": "d", "dataset": "lits", "dice": 0.8},
            {"case": "e", "dataset": "lits", "dice": "nan"}, {"case": "f", "dataset": "brats", "dice": 0.6}]
    assert dataset_modalities({"data": {"datasets": datasets}}) == {
        "kvasir-seg": "endoscopy", "covid": "CT", "brats": "MRI", "lits": "CT"}
    write_run(tmp_path / "unet", rows, datasets)
    t = run_tables(tmp_path / "unet")
    assert t["dataset"]["kvasir-seg"]["mean"] == pytest.approx(0.8) and t["dataset"]["kvasir-seg"]["n"] == 2
    assert t["dataset"]["lits"] == {"mean": 0.8, "std": 0.0, "n": 1, "excluded": 1}
    assert t["modality"]["CT"]["mean"] == pytest.approx((0.5 + 0.8) / 2) and t["modality"]["CT"]["excluded"] == 1
    assert t["modality"]["MRI"]["mean"] == pytest.approx(0.6)
    assert t["overall"]["mean"] == pytest.approx(np.mean([0.9, 0.7, 0.5, 0.8, 0.6]))
    write_run(tmp_path / "unet_c", [dict(r, dice=0.95) for r in rows], datasets)
    out = tmp_path / "bars.png"
    assert main(["ife-report", str(tmp_path / "unet"), str(tmp_path / "unet_c"), "--output", str(out)]) == 0
    assert np.array(Image.open(out)).shape[1] > 600
    assert main(["ife-report", str(tmp_path / "unet"), "--metric", "hd"]) == 1
    assert not math.isnan(t["overall"]["std"])
