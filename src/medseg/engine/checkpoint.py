"""Crash-safe checkpoint files.

Every write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over
the target (``os.replace`` is atomic on POSIX), so a crash, a kill or a full disk at any moment leaves
the previous file intact.
"""
from __future__ import annotations

import errno
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from medseg.errors import CheckpointError

EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")


def atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename; on failure the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        _remove_quietly(tmp)
        if err.errno == errno.ENOSPC:
            raise CheckpointError(f"disk full while writing {path}; the previous file (if any) is intact. "
                                  f"Free space in {path.parent} and resume.") from err
        raise CheckpointError(f"could not write {path}: {err}; the previous file (if any) is intact") from err
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write_bytes(text.encode(), path)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Serialise ``state`` in memory first, then write it atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; a missing or truncated file raises an error naming the last valid one."""
    path = Path(path)
    if path.is_dir():
        path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}{_last_valid_hint(path.parent)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated zip, pickle errors, ...
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({type(err).__name__}: {err})."
                              f"{_last_valid_hint(path.parent, exclude=path)}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a medseg checkpoint (no 'model' entry)")
    return state


def resolve_checkpoint(run_or_ckpt: str | Path, which: str = "best") -> Path:
    """A run folder or checkpoints folder -> ``best.pt`` (or ``last.pt``) inside it; a file -> itself."""
    path = Path(run_or_ckpt)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        for name in (f"{which}.pt", "last.pt", "best.pt"):
            if (folder / name).is_file():
                return folder / name
    raise CheckpointError(f"no checkpoint found in {path} (expected checkpoints/best.pt or last.pt)")


def valid_checkpoints(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Checkpoints in ``folder`` that load, newest first."""
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for f in files:
        if exclude is not None and f.resolve() == Path(exclude).resolve():
            continue
        try:
            torch.load(f, map_location="cpu", weights_only=False)
            out.append(f)
        except Exception:
            continue
    return out


def prune_epoch_checkpoints(folder: Path, keep_last: int) -> None:
    """Keep the ``keep_last`` newest ``epoch_NNN.pt`` files (``last.pt``/``best.pt`` are separate)."""
    files = sorted((p for p in folder.glob("epoch_*.pt") if EPOCH_FILE.search(p.name)),
                   key=lambda p: int(EPOCH_FILE.search(p.name).group(1)))
    for old in files[:-keep_last]:
        _remove_quietly(old)


def _last_valid_hint(folder: Path, exclude: Path | None = None) -> str:
    valid = valid_checkpoints(folder, exclude)
    if valid:
        return f" The last valid checkpoint is {valid[0]}."
    return " No valid checkpoint was found beside it."


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str | Path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
