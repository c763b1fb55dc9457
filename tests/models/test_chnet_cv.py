"""``medseg cv`` / ``medseg ablate``: the k-fold partition, resumable folds, mean ± std tables, head ablation.

Runs tiny end-to-end trainings (ResNet-18 encoder, 32x32 images, one step per run) on a folder dataset the
test writes; the oracles are the written file stems, numpy statistics and hand-counted parameters.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medseg.cli import main
from medseg.config import ConfigError, build_config
from medseg.engine.ablate import ablate_heads
from medseg.engine.cv import check_partition, cross_validate, fold_partition

N_CASES = 9


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tinyseg")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(N_CASES):
        mask = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(4, 20, 2)
        mask[y:y + 10, x:x + 10] = 255
        image = np.clip(rng.normal(60, 20, (32, 32, 3)) + (mask[..., None] > 0) * 120, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i:02d}.png")
    return root


def tiny_config(root: Path, out: Path, head: str = "fcn32s") -> dict:
    return {
        "name": "tiny", "output_dir": str(out),
        "data": {"kind": "folder2d", "root": str(root), "image_size": [32, 32], "batch_size": 4,
                 "normalize": "imagenet", "split": {"mode": "kfold", "val_fraction": 0.2, "seed": 3},
                 "augment": {"enabled": False}},
        "model": {"name": "chnet", "kwargs": {"encoder": "resnet18", "head": head}},
        "loss": {"name": "structure"},
        "optim": {"name": "sgd", "lr": 0.01},
        "train": {"epochs": 1, "max_steps_per_epoch": 1, "progress": False, "device": "cpu", "amp": "off"},
        "eval": {"metrics": ["dice", "iou"]},
    }


def test_folds_partition_the_cases_exactly(folder: Path, tmp_path: Path) -> None:
    cfg = build_config(tiny_config(folder, tmp_path))
    stems = {p.stem for p in (folder / "images").iterdir()}
    for k in (2, 4, N_CASES):
        parts = fold_partition(cfg, k)
        flat = [c for part in parts for c in part]
        assert len(flat) == len(set(flat)) == N_CASES and set(flat) == stems
        assert sorted(len(p) for p in parts) == sorted(len(p) for p in np.array_split(np.arange(N_CASES), k))


def test_more_folds_than_cases_is_a_clear_error(folder: Path, tmp_path: Path, capsys) -> None:
    cfg = build_config(tiny_config(folder, tmp_path))
    with pytest.raises(ConfigError, match=r"--folds 10 is larger than the number of cases \(9\).*--folds 9"):
        fold_partition(cfg, 10)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(folder, tmp_path)))
    assert main(["cv", str(path), "--folds", "12"]) == 1
    assert "larger than the number of cases (9)" in capsys.readouterr().err


def test_check_partition_rejects_overlap_and_gaps() -> None:
    with pytest.raises(ConfigError, match="folds 0 and 1"):
        check_partition(["a", "b", "c"], [["a", "b"], ["b", "c"]])
    with pytest.raises(ConfigError, match=r"missing \['c'\]"):
        check_partition(["a", "b", "c"], [["a"], ["b"]])


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_cross_validation_runs_resumes_and_aggregates(folder: Path, tmp_path: Path) -> None:
    cfg = build_config(tiny_config(folder, tmp_path))
    logs: list[str] = []
    result = cross_validate(cfg, 2, tmp_path / "cv", log=logs.append)
    assert result["complete"]
    parent = tmp_path / "cv"
    saved = json.loads((parent / "folds.json").read_text())["test_ids"]
    assert sorted(c for p in saved for c in p) == sorted(p.stem for p in (folder / "images").iterdir())
    rows = read_rows(parent / "cv_results.csv")
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "std"]
    dice = np.array([float(r["dice"]) for r in rows[:2]])
    assert float(rows[2]["dice"]) == pytest.approx(dice.mean(), rel=1e-5)
    assert float(rows[3]["dice"]) == pytest.approx(dice.std(ddof=1), rel=1e-5, abs=1e-9)
    for k in range(2):  # each fold's run evaluated exactly its own test cases
        per_case = read_rows(parent / f"fold_{k}" / "metrics" / "per_case.csv")
        assert sorted(r["case"] for r in per_case) == sorted(saved[k])
    assert "mean ± std" in (parent / "cv_results.md").read_text()

    logs.clear()  # second call: every fold complete, nothing retrained
    again = cross_validate(cfg, 2, parent, log=logs.append)
    assert all("skipped" in line for line in logs) and again["mean"] == result["mean"]

    (parent / "fold_1" / "metrics" / "summary.json").unlink()  # interrupted before evaluation
    logs.clear()
    cross_validate(cfg, 2, parent, log=logs.append)
    assert logs == [f"{parent / 'fold_0'}: complete, skipped", f"{parent / 'fold_1'}: resuming"]


def test_ablate_same_encoder_each_head(folder: Path, tmp_path: Path, capsys) -> None:
    raw = tiny_config(folder, tmp_path)
    raw["data"]["split"] = {"mode": "random", "test_fraction": 0.3, "val_fraction": 0.2, "seed": 0}
    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump(raw))
    rc = main(["ablate", str(path), "--heads", "fcn32s", "classification", "--freeze-encoder",
               "--output", str(tmp_path / "ab")])
    assert rc == 0
    rows = {r["head"]: r for r in read_rows(tmp_path / "ab" / "ablate_results.csv")}
    assert list(rows) == ["fcn32s", "classification"]
    assert float(rows["fcn32s"]["params_head_M"]) * 1e6 == pytest.approx(256 + 1)  # ResNet-18 E4: 256 ch
    # classification: 1x1 reductions of ResNet-18's 64/64/128/256 channels to 64, 256->32, BN(32), 32->1
    expected = (64 + 64 + 128 + 256) * 64 + 4 * 64 + 256 * 32 + 32 + 2 * 32 + 32 + 1
    assert float(rows["classification"]["params_head_M"]) * 1e6 == pytest.approx(expected)
    assert all(float(r["dice"]) >= 0 and float(r["gflops"]) > 0 for r in rows.values())
    saved = yaml.safe_load((tmp_path / "ab" / "fcn32s" / "config.yaml").read_text())
    assert saved["train"]["freeze_encoder"] is True and saved["model"]["kwargs"]["head"] == "fcn32s"
    assert "| fcn32s |" in capsys.readouterr().out


def test_ablate_bad_inputs(folder: Path, tmp_path: Path) -> None:
    cfg = build_config(tiny_config(folder, tmp_path))
    with pytest.raises(ConfigError, match="unknown head 'fcn8s'.*classification3x3"):
        ablate_heads(cfg, ["classification", "fcn8s"], tmp_path / "x")
    unet = build_config({**tiny_config(folder, tmp_path), "model": {"name": "unet"}})
    with pytest.raises(ConfigError, match="no 'head' option"):
        ablate_heads(unet, ["fcn32s"], tmp_path / "y")
