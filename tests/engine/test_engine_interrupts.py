"""Interrupts of the real `medseg train` process, and resumes that end bit-identical to an uninterrupted run.

Every run here is ``python -m medseg train`` in its own process (forked from a server that imported medseg
once, see ``engine_helpers.TrainerProcesses``); the test sends SIGTERM / SIGKILL at a moment the child
announces (``HOLD ...``), so what is tested is never a race. The config makes every random source matter:
augmentation, a per-batch random size, a loss term drawing points from the global torch RNG, and gradient
accumulation over 2 steps (4 steps per epoch, 3 epochs, deterministic mode).
"""
from __future__ import annotations

import csv
import signal
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import TrainerProcesses, random_raw  # noqa: E402

from medseg.engine import checkpoint as ckpt

TIMING_COLUMNS = {"train_time_s", "images_per_s", "memory_mb"}


@pytest.fixture(scope="module")
def trainers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainerProcesses]:
    server = TrainerProcesses(tmp_path_factory.mktemp("trainers"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "random.yaml"
    path.write_text(yaml.safe_dump(random_raw(epochs=3, deterministic=True, accumulate=2)))
    return path


@pytest.fixture(scope="module")
def reference(trainers: TrainerProcesses, config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same config trained without interruption."""
    run = tmp_path_factory.mktemp("reference") / "run"
    child = trainers.run(str(config), "--output", str(run))
    assert child.returncode == 0, child.text()[-3000:]
    return run


def assert_same_run(expected: Path, got: Path) -> None:
    """Final weights bit-identical, and the same per-epoch losses and validation (timings aside)."""
    a = ckpt.load_checkpoint(expected / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(got / "checkpoints" / "last.pt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"weights differ from the uninterrupted run: {differ}"

    def rows(run: Path) -> list[dict[str, str]]:
        with open(run / "logs" / "epochs.csv") as fh:
            return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(fh)]

    assert rows(expected) == rows(got)


@pytest.mark.parametrize("sig, after_step, saved", [
    (signal.SIGTERM, 5, (1, 2, 6)),  # inside an accumulation window: the window is finished first
    (signal.SIGINT, 4, (0, 4, 4)),   # after the last step of epoch 0, before its validation and save
], ids=["sigterm-in-accumulation-window", "sigint-after-last-step-of-epoch"])
def test_signal_mid_epoch_resume_is_bit_identical(trainers: TrainerProcesses, config: Path, reference: Path,
                                                   tmp_path: Path, sig: int, after_step: int,
                                                   saved: tuple[int, int, int]) -> None:
    """SIGTERM after global step 5 (epoch 1, inside an accumulation window): the trainer finishes the window,
    saves at step 6 (2 of 4 steps of epoch 1 done) and exits 3; the resumed run skips those 2 batches,
    restores the RNG states and ends with the weights and epoch log of the uninterrupted run. Ctrl-C after
    the last step of an epoch: the resumed run trains no step of it, validates it and goes on."""
    run = tmp_path / "run"
    child = trainers.start(str(config), "--output", str(run), hold={"after_step": after_step})
    child.wait_for(f"HOLD after global step {after_step}")
    child.signal(sig)
    assert child.wait() == 3, child.text()[-3000:]  # "interrupted": a clean exit with a checkpoint
    assert f"{signal.Signals(sig).name} received" in child.text() and f"--resume {run}" in child.text()
    state = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == saved

    done = trainers.run("--resume", str(run))
    assert done.returncode == 0, done.text()[-3000:]
    assert_same_run(reference, run)


# (hold spec, epoch of last.pt after the kill): kills inside every phase of a checkpoint write, on last.pt
# and on the epoch_NNN.pt written right after it
KILLS = [
    ({"file": "last.pt", "nth": 2, "at": "half"}, 1),     # fresh run, second save of last.pt, half written
    ({"file": "last.pt", "nth": 1, "at": "start"}, 1),    # created/truncated, nothing written yet
    ({"file": "epoch_", "nth": 1, "at": "half"}, 2),      # last.pt replaced, epoch_002.pt half written
    ({"file": "last.pt", "nth": 1, "at": "end"}, 2),      # every byte written, not yet flushed/fsync'ed
    ({"file": "last.pt", "nth": 1, "at": "replace"}, 2),  # complete temp file, not yet renamed
]


def test_sigkill_inside_checkpoint_writes_then_resume(trainers: TrainerProcesses, config: Path, reference: Path,
                                                      tmp_path: Path) -> None:
    """SIGKILL of the trainer at five moments of a checkpoint write, resuming after each: every kill leaves a
    last.pt that loads (the previous one, or the new one once renamed), every resume continues from it, and
    the run ends bit-identical to the uninterrupted one with no temporary file left behind."""
    run = tmp_path / "run"
    for i, (hold, epoch) in enumerate(KILLS):
        args = (str(config), "--output", str(run)) if i == 0 else ("--resume", str(run))
        child = trainers.start(*args, hold=hold)
        child.wait_for("HOLD ")
        child.signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        state = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")  # CheckpointError if torn
        assert (state["epoch"], state["step_in_epoch"]) == (epoch, 0), hold

    done = trainers.run("--resume", str(run))
    assert done.returncode == 0, done.text()[-3000:]
    assert_same_run(reference, run)
    # no temporary file is left; epoch_002.pt is missing for good (its write was killed, the run went on from
    # last.pt of epoch 2), so pruning to keep_last=2 keeps epoch_001.pt
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.pt", "epoch_001.pt", "epoch_003.pt", "last.pt"]
