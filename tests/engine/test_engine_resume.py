"""Exact resume at epoch boundaries, crash-safe checkpoints, and the run-folder / checkpoint errors.

Signals sent to the real `medseg train` process (SIGTERM mid-epoch, SIGKILL inside checkpoint writes) are
in ``test_engine_interrupts.py``."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import random_raw, tiny_config, tiny_raw  # noqa: E402

from medseg.config import ConfigError, build_config
from medseg.engine import checkpoint as ckpt
from medseg.engine.trainer import Trainer, train_run
from medseg.errors import CheckpointError, TrainingError
from medseg.losses import LOSSES


class Crash(RuntimeError):
    pass


def weights(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(path)["model"]


@pytest.mark.parametrize("crash_after", [1, 2])
def test_resume_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int) -> None:
    """A crash right after an epoch's checkpoint; the resumed run ends with the uninterrupted run's weights.
    The loss draws points from the global RNG, so a resume that did not restore the RNG states would differ."""
    cfg = build_config(random_raw(epochs=3, deterministic=True))
    train_run(cfg, tmp_path / "full")

    original = Trainer._end_epoch

    def crashing(self: Trainer, steps: int) -> None:
        original(self, steps)
        if self.epoch == crash_after:
            raise Crash("simulated crash at an epoch boundary")

    monkeypatch.setattr(Trainer, "_end_epoch", crashing)
    with pytest.raises(Crash):
        train_run(cfg, tmp_path / "cut")
    monkeypatch.setattr(Trainer, "_end_epoch", original)
    assert ckpt.load_checkpoint(tmp_path / "cut/checkpoints/last.pt")["epoch"] == crash_after
    train_run(cfg, tmp_path / "cut", resume=True)

    a, b = weights(tmp_path / "full/checkpoints/last.pt"), weights(tmp_path / "cut/checkpoints/last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows_a = (tmp_path / "full/logs/epochs.csv").read_text().splitlines()
    rows_b = (tmp_path / "cut/logs/epochs.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 4  # header + 3 epochs, no duplicated epoch after resume


def test_resume_refuses_changed_config_unless_forced(tmp_path: Path) -> None:
    train_run(tiny_config(epochs=1), tmp_path / "run")
    changed = tiny_config(epochs=2)
    with pytest.raises(ConfigError, match=r"train.epochs: 1 -> 2"):
        train_run(changed, tmp_path / "run", resume=True)
    result = train_run(changed, tmp_path / "run", resume=True, force=True)
    assert result["epochs"] == 2


def test_existing_run_folder_is_refused(tmp_path: Path) -> None:
    train_run(tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        train_run(tiny_config(epochs=1), tmp_path / "run")
    assert train_run(tiny_config(epochs=1), tmp_path / "run", overwrite=True)["status"] == "finished"


def test_resume_missing_and_truncated_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds no run"):
        train_run(tiny_config(), tmp_path / "nothing", resume=True)
    train_run(tiny_config(epochs=2), tmp_path / "run")
    last = tmp_path / "run/checkpoints/last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated by a crash of another tool
    with pytest.raises(CheckpointError, match=r"last.pt is unreadable or truncated.*last valid checkpoint is .*\.pt"):
        train_run(tiny_config(epochs=2), tmp_path / "run", resume=True)


def test_checkpoint_of_another_model_names_the_keys(tmp_path: Path) -> None:
    train_run(tiny_config(epochs=1), tmp_path / "run")
    raw = tiny_raw(epochs=1)
    raw["model"]["kwargs"] = {"base": 4, "depth": 3}
    with pytest.raises(ConfigError):  # the config differs: refused before loading
        train_run(build_config(raw), tmp_path / "run", resume=True)
    with pytest.raises(CheckpointError, match=r"missing keys: .*encoders\.3"):
        train_run(build_config(raw), tmp_path / "run", resume=True, force=True)


def test_full_disk_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"model": {"w": torch.ones(3)}}, path)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CheckpointError, match="disk full.*previous file .* is intact"):
        ckpt.save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_nan_loss_stops_with_step_and_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if True:  # registered for this test only (monkeypatch removes it afterwards)
        class NanAfter3(torch.nn.Module):
            """Test loss: BCE, then NaN from the 4th call."""

            def __init__(self) -> None:
                super().__init__()
                self.calls = 0

            def forward(self, outputs, batch):
                self.calls += 1
                value = torch.nn.functional.binary_cross_entropy_with_logits(outputs.float(), batch["label"])
                return {"loss": value * (float("nan") if self.calls > 3 else 1.0)}

        monkeypatch.setitem(LOSSES._entries, "test_nan_after_3", NanAfter3)

    raw = tiny_raw(epochs=3)
    raw["loss"] = "test_nan_after_3"
    with pytest.raises(TrainingError, match=r"non-finite loss .* epoch 1, step 0 .*batch cases \['.*'\].*last good checkpoint"):
        train_run(build_config(raw), tmp_path / "run")
    assert ckpt.load_checkpoint(tmp_path / "run/checkpoints/last.pt")["epoch"] == 1


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    """The RNG states load with weights_only (NumPy key as a tensor) and restore every generator; the NumPy
    state as older checkpoints hold it (a uint32 array) is still accepted."""
    import random

    import numpy as np

    from medseg.engine.runtime import rng_state, set_rng_state

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    state = rng_state()
    expected = draws()
    torch.save({"rng": state}, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    set_rng_state(loaded)
    assert draws() == expected
    kind, key, pos, has_gauss, gauss = loaded["numpy"]
    set_rng_state({**loaded, "numpy": (kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss)})
    assert draws() == expected
