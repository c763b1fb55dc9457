"""Checkpoints never run code (weights-only loading, no opt-out); old checkpoints still load; failed starts
leave a reusable folder; ``medseg train --resume RUN --from best|epoch_NNN``; a checkpoint without a config says so."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import tiny_config, tiny_raw  # noqa: E402

from medseg.cli import main
from medseg.config import dump_config
from medseg.engine import checkpoint as ckpt
from medseg.engine.trainer import Trainer, model_from_checkpoint, train_run
from medseg.errors import CheckpointError


class Payload:
    """Unpickling this object writes ``marker``: what a crafted checkpoint would do with any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def crafted(path: Path, marker: Path) -> Path:
    """A ``.pt`` that looks like a medseg checkpoint and runs a payload when unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.ones(2)}, "config": {}, "epoch": 1, "extra": Payload(marker)}, path)
    return path


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished deterministic 3-epoch run that keeps every epoch checkpoint (copy it before changing it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train_run(tiny_config(epochs=3, deterministic=True, keep_last=3), run)
    return run


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# ------------------------------------------------------------------------- no code from a checkpoint
def test_crafted_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = crafted(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match=r"refusing to load checkpoint .*evil\.pt.*exec.*re-save it as tensors"):
        ckpt.load_checkpoint(evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*re-save it as tensors"):
        model_from_checkpoint(evil)
    assert not marker.exists()
    assert ckpt.valid_checkpoints(tmp_path) == [] and not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is live: only full unpickling (never used) runs it
    assert marker.read_text() == "payload ran"


def test_no_loader_in_medseg_unpickles() -> None:
    """No switch, flag or code path in the package loads a file with full unpickling."""
    import re

    import medseg

    package = Path(medseg.__file__).parent
    unpickling = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|torch\.load\((?![^)]*weights_only)")
    found = [f"{path.relative_to(package)}:{i}" for path in package.rglob("*.py")
             for i, line in enumerate(path.read_text().splitlines(), 1) if unpickling.search(line)]
    assert found == []


def test_listing_valid_checkpoints_beside_a_bad_last_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint({"model": {"w": torch.ones(2)}}, folder / "epoch_001.pt")
    crafted(folder / "epoch_002.pt", marker)  # newer than epoch_001: listed first if it counted as valid
    (folder / "last.pt").write_bytes((folder / "epoch_001.pt").read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointError, match=r"last\.pt is unreadable or truncated.*last valid checkpoint is "
                                              r".*epoch_001\.pt"):
        ckpt.load_checkpoint(folder / "last.pt")
    assert ckpt.valid_checkpoints(folder) == [folder / "epoch_001.pt"]
    assert not marker.exists()


def test_cli_train_resume_and_predict_refuse_a_crafted_checkpoint(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(tiny_config()))
    crafted(run / "checkpoints" / "last.pt", marker)
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert "last.pt" in err and "re-save it as tensors" in err and "Traceback" not in err
    images = tmp_path / "images"
    images.mkdir()
    import cv2

    cv2.imwrite(str(images / "a.png"), np.zeros((32, 32), np.uint8))
    assert main(["predict", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--input", str(images),
                 "--output", str(tmp_path / "preds")]) == 1
    assert "refusing to load checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_holding_python_objects(trained: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    import argparse

    run = copy_run(trained, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    state = ckpt.load_checkpoint(last)
    state["args"] = argparse.Namespace(lr=0.1)  # harmless, but needs unpickling of a Python class
    torch.save(state, last)
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert "argparse.Namespace" in err and "re-save it as tensors" in err
    with pytest.raises(SystemExit):  # no flag unpickles it: the old opt-in is gone
        main(["train", "--resume", str(run), "--trust-checkpoint"])


# ------------------------------------------------------------------------- plain data, old files
def test_new_checkpoints_are_plain_data(trained: Path) -> None:
    state = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)  # no allowlist at all
    assert torch.is_tensor(state["rng"]["numpy"][1]) and state["config"]["model"]["name"] == "unet"


def test_numpy_values_are_saved_as_plain_data(tmp_path: Path) -> None:
    key = np.random.RandomState(0).get_state()[1]  # uint32, as in NumPy's RNG state
    ckpt.save_checkpoint({"model": {}, "key": key, "x": np.float32(1.5), "n": [np.int64(3)]}, tmp_path / "a.pt")
    state = torch.load(tmp_path / "a.pt", weights_only=True)  # no allowlist needed
    assert np.array_equal(state["key"].numpy(), key) and state["x"] == 1.5 and state["n"] == [3]
    assert type(state["x"]) is float and type(state["n"][0]) is int


def legacy_copy(path: Path, dest: Path) -> None:
    """``path`` re-saved as the previous medseg wrote it: the NumPy RNG state pickled as NumPy objects."""
    state = ckpt.load_checkpoint(path)
    name, key, pos, has_gauss, gauss = state["rng"]["numpy"]
    state["rng"]["numpy"] = (name, key.numpy().astype(np.uint32), pos, has_gauss, np.float64(gauss))
    torch.save(state, dest)


def test_checkpoint_of_the_previous_format_still_resumes_bit_identically(trained: Path, tmp_path: Path) -> None:
    run = copy_run(trained, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    legacy_copy(run / "checkpoints" / "epoch_002.pt", last)
    with pytest.raises(Exception, match="numpy"):  # really the old format: plain weights_only refuses it
        torch.load(last, weights_only=True)
    assert isinstance(ckpt.load_checkpoint(last)["rng"]["numpy"][1], np.ndarray)
    train_run(tiny_config(epochs=3, deterministic=True, keep_last=3), run, resume=True)
    assert_same_weights(trained / "checkpoints" / "last.pt", last)


# ------------------------------------------------------------------------- --from
def test_resume_from_an_epoch_checkpoint(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    run = copy_run(trained, tmp_path / "run")
    epochs_trained: list[int] = []
    original = Trainer._end_epoch

    def record(self: Trainer, steps: int) -> None:
        epochs_trained.append(self.epoch)
        original(self, steps)

    monkeypatch.setattr(Trainer, "_end_epoch", record)
    assert main(["train", "--resume", str(run), "--from", "epoch_001"]) == 0
    assert epochs_trained == [1, 2]  # epochs 2 and 3 (0-based 1, 2) trained again from epoch_001.pt
    assert "resuming from" in capsys.readouterr().out
    assert_same_weights(trained / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    moved = list((run / "checkpoints").glob("superseded-*/*.pt"))
    assert {p.name for p in moved} >= {"last.pt", "epoch_002.pt", "epoch_003.pt"}  # kept, not deleted
    assert len((run / "logs" / "epochs.csv").read_text().splitlines()) == 4  # header + 3 epochs, no duplicates


def test_resume_from_a_missing_checkpoint_lists_the_run_s_checkpoints(trained: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--resume", str(trained), "--from", "epoch_9"]) == 1
    err = capsys.readouterr().err
    assert "epoch_009.pt does not exist" in err and "best, epoch_001, epoch_002, epoch_003, last" in err
    assert main(["train", "--resume", str(trained), "--from", "latest"]) == 1
    assert "expected best, last, or epoch_NNN" in capsys.readouterr().err
    assert ckpt.run_checkpoint(trained, "best") == trained / "checkpoints" / "best.pt"
    assert ckpt.run_checkpoint(trained, "2") == trained / "checkpoints" / "epoch_002.pt"


# ------------------------------------------------------------------------- checkpoint without config
def test_checkpoint_without_config_is_a_clear_error(trained: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    bare = tmp_path / "weights.pt"
    ckpt.save_checkpoint({"model": weights(trained / "checkpoints" / "last.pt")}, bare)
    with pytest.raises(CheckpointError, match=r"weights\.pt has no 'config' entry.*best\.pt or last\.pt"):
        model_from_checkpoint(bare)
    run = copy_run(trained, tmp_path / "run")
    shutil.copy(bare, run / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run)]) == 1
    assert "last.pt has no 'config' entry" in capsys.readouterr().err


# ------------------------------------------------------------------------- failed starts
def test_a_failed_start_leaves_a_folder_the_corrected_command_reuses(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw(epochs=1)))
    run = tmp_path / "run"
    bad = ["--set", "data.kind=folder2d", "--set", f"data.root={tmp_path / 'missing'}"]
    assert main(["train", str(cfg), "--output", str(run), *bad]) == 1  # fails in the data pipeline
    assert "data folder not found" in capsys.readouterr().err
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert "has no checkpoint" in err and "without --resume" in err
    assert main(["train", str(cfg), "--output", str(run)]) == 0  # the corrected command, no --overwrite
    assert "starting the run there afresh" in capsys.readouterr().out
    assert (run / "checkpoints" / "last.pt").is_file()
