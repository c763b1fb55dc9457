"""Too few cases for the requested split: a DataError before training (naming the folder, the number of
cases, the fractions and the fixes) instead of empty validation/test splits, no best.pt and an empty
evaluation table; ``split.mode=fixed`` is the explicit fallback. An empty val split stops the trainer before
its first step, and ``medseg evaluate`` on an empty split fails naming it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medseg.cli import main
from medseg.config import DataConfig, SplitConfig, build_config
from medseg.data import build_dataset, build_loader, split_ids
from medseg.engine.evaluate import evaluate_run
from medseg.engine.trainer import train_run
from medseg.errors import DataError

IDS = [f"c{k:02d}" for k in range(10)]


def make_folder(root: Path, n: int) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(n)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "images" / f"c{k:02d}.png")
        mask = np.zeros((16, 16), np.uint8)
        mask[4:10, 3:12] = 255
        Image.fromarray(mask).save(root / "masks" / f"c{k:02d}.png")
    return root


def folder_cfg(root: Path, **split) -> DataConfig:
    return DataConfig.model_validate(dict(kind="folder2d", root=str(root), in_channels=1, image_size=[16, 16],
                                          split=split, augment=dict(enabled=False)))


@pytest.mark.parametrize("n,empty", [(1, "val and test"), (2, "val and test"), (5, "val and test")])
def test_too_few_images_stop_with_folder_count_fractions_and_fixes(tmp_path, n, empty):
    root = make_folder(tmp_path / "tiny", n)
    with pytest.raises(DataError) as err:
        build_dataset(folder_cfg(root), "train")  # default random split 0.1 / 0.1: round(0.1 * 5) = 0
    msg = str(err.value)
    assert f"data folder {root}: {n} case" in msg and f"the {empty} splits would get 0 cases" in msg
    assert "val_fraction=0.1" in msg and "test_fraction=0.1" in msg
    for fix in ("add cases", "data.split.mode=file", "data.split.mode=fixed"):
        assert fix in msg


def test_enough_images_and_the_explicit_fixed_fallback(tmp_path):
    six = make_folder(tmp_path / "six", 6)
    sizes = [len(build_dataset(folder_cfg(six), s)) for s in ("train", "val", "test")]
    assert sizes == [4, 1, 1]
    two = make_folder(tmp_path / "two", 2)
    assert [len(build_dataset(folder_cfg(two, mode="fixed"), s)) for s in ("train", "val", "test")] == [2, 2, 2]
    assert len(build_dataset(folder_cfg(two, val_fraction=0.5, test_fraction=0.0), "val")) == 1


def test_only_the_split_left_empty_is_named():
    with pytest.raises(DataError, match=r"3 cases found.*the test split would get 0 cases"):
        split_ids(IDS[:3], SplitConfig(mode="random", val_fraction=0.4, test_fraction=0.1), "train")
    assert len(split_ids(IDS[:3], SplitConfig(mode="random", val_fraction=0.4, test_fraction=0.0), "val")) == 1


def test_kfold_and_split_file_that_leave_no_val(tmp_path):
    with pytest.raises(DataError, match=r"2 cases found, too few for split.mode=kfold.*the val split"):
        split_ids(IDS[:2], SplitConfig(mode="kfold", folds=2, fold=0, val_fraction=0.2), "train")
    (tmp_path / "one.json").write_text('{"train": ["c00"], "test": ["c01"]}')
    with pytest.raises(DataError, match=r"the val split would get 0 cases"):
        split_ids(IDS, SplitConfig(mode="file", file=str(tmp_path / "one.json")), "test")
    (tmp_path / "test_only.json").write_text('{"test": ["c01", "c02"]}')  # evaluation-only: nothing to carve
    assert split_ids(IDS, SplitConfig(mode="file", file=str(tmp_path / "test_only.json")), "test") == ["c01", "c02"]


def run_raw(root: Path, out: Path, **split) -> dict:
    return {"name": "small", "output_dir": str(out),
            "data": {"kind": "folder2d", "root": str(root), "image_size": [16, 16], "in_channels": 1,
                     "batch_size": 2, "split": split, "augment": {"enabled": False}},
            "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}},
            "train": {"epochs": 1, "progress": False, "max_steps_per_epoch": 1},
            "eval": {"metrics": ["dice"]}}


def test_cli_train_on_two_images_is_one_line_error_before_training(tmp_path, capsys):
    root = make_folder(tmp_path / "two", 2)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(run_raw(root, tmp_path / "runs")))
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"data folder {root}: 2 cases found" in err[0]
    assert not list((tmp_path / "runs").rglob("*.pt"))


def test_trainer_stops_before_the_first_step_when_val_is_empty(tmp_path):
    root = make_folder(tmp_path / "six", 6)
    cfg = build_config(run_raw(root, tmp_path / "runs", val_fraction=0.0, test_fraction=0.2))
    with pytest.raises(DataError, match=r"the 'val' split of data folder .*six has no cases.*no best.pt.*val_fraction"):
        train_run(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").rglob("*.pt")) and not (tmp_path / "run" / "logs" / "steps.jsonl").exists()


def test_evaluate_on_an_empty_split_names_it_and_writes_no_table(tmp_path, capsys):
    root = make_folder(tmp_path / "six", 6)
    run = tmp_path / "run"
    train_run(build_config(run_raw(root, tmp_path / "runs", val_fraction=0.2, test_fraction=0.0)), run)
    assert (run / "checkpoints" / "last.pt").is_file()
    with pytest.raises(DataError, match=r"the 'test' split of data folder .*six has no cases.*test_fraction"):
        evaluate_run(run, "test", checkpoint="last", progress=False)
    assert main(["evaluate", str(run), "--split", "test", "--checkpoint", "last"]) == 1
    assert "'test' split" in capsys.readouterr().err
    assert not (run / "metrics" / "test_per_case.csv").exists() and not (run / "metrics" / "summary.json").exists()
    assert evaluate_run(run, "val", checkpoint="last", progress=False, save_predictions=False)["cases"] == 1


@pytest.mark.realdata
def test_single_case_totalsegmentator_ct(real_dataset, tmp_path):
    """The one-case real CT: the default split is refused; ``mode=fixed`` loads it with finite intensities."""
    src = real_dataset("totalsegmentator-example-ct")
    root = tmp_path / "totalseg"  # image and mask names differ: pair them by links, the data stays in place
    for sub, name in (("images", "example_ct_sm.nii.gz"), ("masks", "example_seg.nii.gz")):
        (root / sub).mkdir(parents=True)
        (root / sub / "ct.nii.gz").symlink_to(src / sub / name)
    base = dict(kind="nifti", root=str(root), in_channels=1, num_classes=1, cache=False,
                nifti=dict(modality="CT", window=(-1000, 1000)))
    with pytest.raises(DataError, match=r"totalseg: 1 case found"):
        build_dataset(DataConfig.model_validate(base), "train")
    ds = build_dataset(DataConfig.model_validate({**base, "split": {"mode": "fixed"}}), "test")
    image = ds[0]["image"].numpy()
    assert image.shape == (1, 122, 101, 30) and np.isfinite(image).all()


def test_loader_refuses_an_empty_split(tmp_path):
    root = make_folder(tmp_path / "six", 6)
    (root / "test_only.json").write_text('{"test": ["c00", "c01"]}')
    cfg = folder_cfg(root, mode="file", file="test_only.json")
    assert len(build_loader(cfg, "test").dataset) == 2
    with pytest.raises(DataError, match=r"the 'train' split of data folder .*six has no cases.*list cases under 'train'"):
        build_loader(cfg, "train")
