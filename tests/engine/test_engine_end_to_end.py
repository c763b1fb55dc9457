"""train -> evaluate -> predict on synthetic 2-D data, through the library and the CLI."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import tiny_config, tiny_raw  # noqa: E402

from medseg.cli import main
from medseg.engine.evaluate import evaluate_run
from medseg.engine.predict import predict_paths
from medseg.engine.trainer import model_from_checkpoint, train_run


def test_train_evaluate_predict_2d(tmp_path: Path) -> None:
    cfg = tiny_config()
    result = train_run(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert result["status"] == "finished" and result["epochs"] == 2
    for name in ("config.yaml", "env.json", "checkpoints/last.pt", "checkpoints/best.pt",
                 "checkpoints/epoch_002.pt", "logs/epochs.csv", "logs/steps.jsonl"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "logs" / "epochs.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"train_loss", "train_dice", "train_bce", "lr", "val_dice", "images_per_s"} <= set(rows[0])
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 3 and "torch" in env["versions"]

    summary = evaluate_run(run, "test", progress=False)
    assert summary["cases"] == 3
    per_case = list(csv.DictReader(open(run / "metrics" / "per_case.csv")))
    assert len(per_case) == 3 and all(0 <= float(r["dice"]) <= 1 for r in per_case)
    assert len(list((run / "predictions" / "test").glob("*.png"))) == 3

    # predict on user images of another size: the mask comes back at the original size
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((np.random.default_rng(0).random((45, 37)) * 255).astype(np.uint8)).save(src / "a.png")
    written = predict_paths(run, src, tmp_path / "out", save_probabilities=True, progress=False)
    mask = np.array(Image.open(written[0]))
    assert mask.shape == (45, 37) and set(np.unique(mask)) <= {0, 255}
    assert (tmp_path / "out" / "a_prob.png").is_file()


def test_checkpoint_alone_rebuilds_model(tmp_path: Path) -> None:
    train_run(tiny_config(epochs=1), tmp_path / "run")
    model, cfg = model_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert cfg.model.kwargs == {"base": 4, "depth": 2}
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_cli_train_evaluate_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_raw(epochs=1)))
    run = tmp_path / "cli_run"
    assert main(["train", str(cfg_path), "--output", str(run), "--set", "train.epochs=1"]) == 0
    assert main(["evaluate", str(run), "--split", "val", "--no-predictions"]) == 0
    out = capsys.readouterr().out
    assert "dice" in out
    assert (run / "metrics" / "val_per_case.csv").is_file()
    assert main(["runs", str(tmp_path)]) == 0
    assert "cli_run" in capsys.readouterr().out


def test_multiclass_training_runs(tmp_path: Path) -> None:
    raw = tiny_raw(epochs=1)
    raw["data"]["num_classes"] = 3
    raw["model"]["kwargs"] = {"base": 4, "depth": 2}
    from medseg.config import build_config

    cfg = build_config(raw)
    result = train_run(cfg, tmp_path / "mc")
    assert result["status"] == "finished"
    summary = evaluate_run(tmp_path / "mc", "test", progress=False, save_predictions=False)
    assert summary["cases"] == 3 and "dice" in summary["metrics"]
