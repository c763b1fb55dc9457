"""Crash-safe checkpoint files.

Every write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over
the target (``os.replace`` is atomic on POSIX), so a crash, a kill or a full disk at any moment leaves
the previous file intact.

Reading is safe by default: ``torch.load(weights_only=True)``, so a crafted ``.pt`` cannot run code.
medseg writes its checkpoints as tensors and plain Python data (NumPy arrays, such as the NumPy RNG state,
become tensors), and files written by earlier versions (NumPy RNG state pickled as an array) load through
a narrow allowlist of NumPy array types. Anything else is refused with a message naming the file and
what it references; there is no switch that unpickles it (medseg never unpickles a file it did not write).
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
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
    """Serialise ``state`` (as plain data, see :func:`plain_data`) in memory first, then write it atomically."""
    buffer = io.BytesIO()
    torch.save(plain_data(state), buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def plain_data(obj: Any) -> Any:
    """``obj`` with NumPy arrays as tensors and NumPy scalars as Python numbers, so that it loads with
    ``torch.load(weights_only=True)`` and no allowlist (``np.random.set_state`` accepts the tensor key)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("a checkpoint cannot hold NumPy object arrays (they need pickled code to load)")
        arr = obj.astype(np.int64) if obj.dtype.kind == "u" else obj  # torch lacks most unsigned dtypes
        return torch.from_numpy(np.ascontiguousarray(arr).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: plain_data(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(plain_data(v) for v in obj)
    return obj


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without running code from it (``weights_only``).

    A missing or truncated file raises an error naming the last valid checkpoint beside it; a file that
    needs more than tensors and plain data is refused with a :class:`CheckpointError` that names the file,
    what it references and how to re-save it as plain data.
    """
    path = Path(path)
    if path.is_dir():
        path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}{_last_valid_hint(path.parent)}")
    try:
        state = _torch_load(path, map_location)
    except pickle.UnpicklingError as err:
        needs = _unsafe_globals(path, err)
        if needs is not None:
            raise CheckpointError(_refused_message(path, needs)) from None
        raise CheckpointError(_unreadable_message(path, err)) from None
    except Exception as err:  # truncated zip, ...
        raise CheckpointError(_unreadable_message(path, err)) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a medseg checkpoint (no 'model' entry)")
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The run config stored in a checkpoint, or a :class:`CheckpointError` saying why there is none."""
    config = state.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path} has no 'config' entry: it holds weights only, not a checkpoint written by `medseg train`, "
            "and medseg rebuilds the model from the config saved in the checkpoint. Use a run's "
            "checkpoints/best.pt or last.pt (or train from a config that loads these weights, e.g. "
            "model.kwargs.pretrained=PATH for chnet)")
    return config


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` of ``path``, weights-only, with the legacy NumPy allowlist (the only loader medseg uses;
    tests/engine/test_engine_checkpoint_safety.py keeps a crafted file from running code)."""
    with torch.serialization.safe_globals(_legacy_numpy_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def _legacy_numpy_globals() -> list[Any]:
    """The NumPy array-rebuilding functions and types a checkpoint of an earlier medseg version needs
    (its NumPy RNG state was pickled as an array); none of them calls arbitrary code."""
    core = getattr(np, "_core", None) or np.core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    dtypes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdFD"}
    return [reconstruct, scalar, np.ndarray, np.dtype, *dtypes,
            (reconstruct, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar")]


_UNSUPPORTED = re.compile(r"Unsupported (?:global|class):? (?:GLOBAL )?(\S+)")


def _unsafe_globals(path: Path, err: Exception) -> list[str] | None:
    """The globals a ``weights_only`` load refused (read without running anything), or None when the
    failure was something else (a damaged or foreign file)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: fall back on the unpickler's message
        found = []
    if found:
        return list(found)
    match = _UNSUPPORTED.search(str(err))
    return [match.group(1)] if match else None


def _refused_message(path: Path, needs: list[str]) -> str:
    return (f"refusing to load checkpoint {path}: it needs Python objects beyond tensors and plain data "
            f"(it references {', '.join(needs)}), and unpickling them could run code; medseg loads "
            "checkpoints with torch.load(weights_only=True) only. If you wrote this file and trust it, re-save "
            "it as tensors and plain data (dicts, lists, numbers, strings) in your own Python session, "
            "e.g. turn an argparse.Namespace into vars(namespace), then load the new file.")


def _unreadable_message(path: Path, err: Exception) -> str:
    return (f"checkpoint {path} is unreadable or truncated ({type(err).__name__}: {_short(err)})."
            f"{_last_valid_hint(path.parent, exclude=path)}")


def _short(err: Exception) -> str:
    """The useful part of a loader error (torch's advice on loosening the loader is dropped)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


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


def checkpoint_files(folder: Path) -> list[Path]:
    """The ``*.pt`` files directly in ``folder`` (temporary files of interrupted writes are not ``*.pt``)."""
    folder = Path(folder)
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


FROM_HELP = "best, last, or epoch_NNN (an epoch checkpoint that checkpoints/ still holds)"


def run_checkpoint(run_dir: str | Path, which: str | None = None) -> Path:
    """The checkpoint of ``run_dir`` to resume from: ``checkpoints/last.pt``, or ``which`` = ``best``,
    ``last``, ``epoch_NNN`` (``NNN`` alone also works); a missing choice lists the run's checkpoints."""
    folder = Path(run_dir) / "checkpoints"
    if which in (None, "last", "best"):
        name = f"{which or 'last'}.pt"
    else:
        match = re.fullmatch(r"(?:epoch_?)?(\d+)(?:\.pt)?", which.strip())
        if match is None:
            raise CheckpointError(f"--from {which}: expected {FROM_HELP}")
        name = f"epoch_{int(match.group(1)):03d}.pt"
    path = folder / name
    if which is not None and not path.is_file():
        have = ", ".join(p.stem for p in checkpoint_files(folder)) or "none"
        raise CheckpointError(f"--from {which}: {path} does not exist; the checkpoints of {run_dir} are: {have}")
    return path


def branch_from(source: Path, state: dict[str, Any]) -> tuple[list[Path], Path | None]:
    """Make the run continue from the earlier checkpoint ``source`` (loaded as ``state``).

    The checkpoints of the abandoned continuation (``last.pt``, epoch files after ``source``'s epoch,
    ``best.pt`` when it was saved after it) are moved, not deleted, into ``checkpoints/superseded-<time>/``;
    ``last.pt`` becomes a copy of ``source`` and ``best.pt`` the epoch file of the best epoch up to it
    (when still there). Returns the moved files and their new folder.
    """
    folder, epoch = source.parent, int(state.get("epoch", 0))
    later = [p for p in folder.glob("epoch_*.pt") if EPOCH_FILE.search(p.name)
             and int(EPOCH_FILE.search(p.name).group(1)) > epoch and p != source]
    best, last = folder / "best.pt", folder / "last.pt"
    if best.is_file() and best != source:
        try:
            best_epoch = _torch_load(best, "cpu").get("epoch")
        except Exception:  # noqa: BLE001 - an unreadable best.pt is left where it is
            best_epoch = None
        if isinstance(best_epoch, int) and best_epoch > epoch:
            later.append(best)
    if last.is_file() and last != source:
        later.append(last)
    dest = None
    if later:
        dest = folder / f"superseded-{time.strftime('%Y%m%dT%H%M%S')}"
        n = 1
        while dest.exists():
            n += 1
            dest = folder / f"superseded-{time.strftime('%Y%m%dT%H%M%S')}-{n}"
        dest.mkdir()
        for p in later:
            os.replace(p, dest / p.name)
    if source != last:
        atomic_write_bytes(source.read_bytes(), last)
    tracker = state.get("best") or {}
    kept = folder / f"epoch_{int(tracker['epoch']) + 1:03d}.pt" if tracker.get("epoch") is not None else None
    if not best.is_file() and kept is not None and kept.is_file():
        atomic_write_bytes(kept.read_bytes(), best)
    return later, dest


def valid_checkpoints(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Checkpoints in ``folder`` that load safely (``weights_only``), newest first."""
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for f in files:
        if exclude is not None and f.resolve() == Path(exclude).resolve():
            continue
        try:
            state = _torch_load(f, "cpu")
        except Exception:  # noqa: BLE001 - unreadable, truncated or refused: not valid
            continue
        if isinstance(state, dict) and "model" in state:
            out.append(f)
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
