"""Exact resume, crash-safe checkpoints, signals, and the run-folder / checkpoint errors."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import tiny_config, tiny_raw  # noqa: E402

from medseg.config import ConfigError, build_config
from medseg.engine import checkpoint as ckpt
from medseg.engine.trainer import Trainer, train_run
from medseg.errors import CheckpointError, TrainingError
from medseg.losses import LOSSES

REPO = Path(__file__).resolve().parents[2]


class Crash(RuntimeError):
    pass


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("crash_after", [1, 2])
def test_resume_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int) -> None:
    cfg = tiny_config(epochs=3, deterministic=True)
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
    assert torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=False)["epoch"] == crash_after
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


SAVER = """
import sys, torch
from medseg.engine.checkpoint import save_checkpoint
i = 0
while True:
    save_checkpoint({"model": {"w": torch.full((4_000_000,), float(i))}, "i": i}, sys.argv[1])
    i += 1
    print(i, flush=True)
"""


def test_sigkill_while_saving_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    for delay in (0.9, 1.3):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "1"  # at least one complete save
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = ckpt.load_checkpoint(path)
        assert torch.all(state["model"]["w"] == state["i"])


@pytest.mark.slow
def test_sigterm_saves_and_resume_finishes(tmp_path: Path) -> None:
    raw = tiny_raw(epochs=200)
    raw["data"]["synthetic"]["n_train"] = 16
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "medseg", "train", str(cfg_path), "--output", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    steps = run / "logs" / "steps.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (steps.is_file() and len(steps.read_text().splitlines()) >= 6):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out  # "interrupted", clean exit
    assert "SIGTERM received" in out and "--resume" in out
    state = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["global_step"] >= 6
    # finish with fewer epochs (forced config change) to keep the test short
    done = subprocess.run([sys.executable, "-m", "medseg", "train", "--resume", str(run), "--force",
                           "--set", f"train.epochs={state['epoch'] + 1}"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == state["epoch"] + 1


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
