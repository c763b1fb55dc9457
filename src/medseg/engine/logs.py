"""Run-folder logs: per-step JSONL (appended, flushed), per-epoch CSV/JSONL (rewritten atomically),
environment record, optional TensorBoard."""
from __future__ import annotations

import csv
import io
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medseg.engine.checkpoint import atomic_write_text
from medseg.log import logger as log


class RunLogger:
    """Writes ``logs/steps.jsonl`` and ``logs/epochs.csv`` + ``logs/epochs.jsonl`` (rank 0 only)."""

    def __init__(self, log_dir: Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.dir = Path(log_dir)
        self.enabled = enabled
        self.epochs: list[dict[str, Any]] = []
        self._steps_fh = None
        self._tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tensorboard"))
            except Exception as err:  # tensorboard not installed
                log.warning(f"TensorBoard disabled ({err}); pip install tensorboard")

    def resume(self, upto_epoch: int, upto_step: int) -> None:
        """Drop records written after the checkpoint being resumed (they will be written again)."""
        if not self.enabled:
            return
        path = self.dir / "epochs.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.epochs = [r for r in rows if r["epoch"] < upto_epoch]
            self._write_epochs()
        steps = self.dir / "steps.jsonl"
        if steps.is_file():
            kept = []
            for line in steps.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if rec["global_step"] <= upto_step:
                    kept.append(line)
            atomic_write_text("".join(line + "\n" for line in kept), steps)

    def step(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._steps_fh is None:
            self._steps_fh = open(self.dir / "steps.jsonl", "a", buffering=1)
        self._steps_fh.write(json.dumps(record) + "\n")
        self._steps_fh.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "global_step"):
                    self._tb.add_scalar(f"step/{key}", value, record["global_step"])

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.epochs.append(record)
        self._write_epochs()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._tb.add_scalar(f"epoch/{key}", value, record["epoch"])

    def _write_epochs(self) -> None:
        keys: list[str] = []
        for row in self.epochs:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.epochs)
        atomic_write_text(buf.getvalue(), self.dir / "epochs.csv")
        atomic_write_text("".join(json.dumps(r) + "\n" for r in self.epochs), self.dir / "epochs.jsonl")

    def close(self) -> None:
        if self._steps_fh is not None:
            self._steps_fh.close()
            self._steps_fh = None
        if self._tb is not None:
            self._tb.close()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment_record(device: str, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, device, seed, git commit and command line of this run."""
    import medseg

    versions = {"python": platform.python_version(), "torch": torch.__version__, "medseg": medseg.__version__}
    for name in ("torchvision", "timm", "monai", "numpy", "scipy", "nibabel"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:
            pass
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "versions": versions,
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "seed": seed,
        "git_commit": git_commit(),
    }
    record.update(extra or {})
    return record


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA max allocated, or the CPU resident set high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:
        return float("nan")
