"""Tiny configs shared by the engine tests, and `medseg train` child processes for the interrupt tests.

:class:`TrainerProcesses` runs ``python -m medseg train ...`` in processes forked from one server that has
imported medseg (and torch, MONAI) once: each child executes the package's ``__main__`` exactly as
``python -m medseg`` does, in its own process, with its own signal handlers, and is signalled (SIGTERM,
SIGKILL) by the test like any other process. Forking saves the ~8 CPU-seconds of imports per process that
a fresh interpreter pays, which is what keeps a loop of kills and resumes within seconds.

A child can be told to *hold* at one moment, print ``HOLD <what>`` to its log and wait there, so that the
test's signal lands at a known point (never a race):

* ``{"after_step": N}``: after global step N has been trained, until a SIGINT/SIGTERM arrives, then the
  trainer goes on and sees the signal at its next check;
* ``{"file": "last.pt", "nth": K, "at": "start" | "half" | "end" | "replace"}``: while the K-th file
  whose name contains ``last.pt`` is being written in ``checkpoints/`` (through any Python file object:
  ``open``, ``io.open``, ``os.fdopen``, ``Path.write_bytes``), before its first byte, after half of it,
  after all of it (before flush/fsync/close), or (``replace``) before the K-th ``os.replace`` onto such a
  name; it waits until killed. Whatever writer medseg uses, atomic or not, is slowed the same way.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from medseg.config import RunConfig, build_config

HERE = Path(__file__).resolve().parent
HOLD_LIMIT_S = 120.0  # a held child that is never signalled gives up (and fails its test) after this


def tiny_raw(**train: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "data": {"kind": "synthetic2d", "image_size": [32, 32], "in_channels": 1, "num_classes": 1,
                 "batch_size": 4, "synthetic": {"n_train": 8, "n_val": 4, "n_test": 3, "seed": 1}},
        "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}},
        "optim": {"name": "adam", "lr": 1e-2},
        "train": {"epochs": 2, "seed": 3, "progress": False, **train},
        "eval": {"metrics": ["dice", "iou"]},
    }


def tiny_config(**train: Any) -> RunConfig:
    return build_config(tiny_raw(**train))


def random_raw(**train: Any) -> dict[str, Any]:
    """:func:`tiny_raw` where every source of randomness matters: augmentation (flips, rotation, brightness,
    crops), a per-batch random size, and a loss term that samples points from the global torch RNG
    (``mll_point``); 4 steps per epoch."""
    raw = tiny_raw(**train)
    raw["data"]["synthetic"]["n_train"] = 16
    raw["data"]["train_sizes"] = [24, 32]
    raw["data"]["augment"] = {"hflip": 0.5, "vflip": 0.5, "rotate_deg": 20.0, "brightness": 0.2,
                              "crop_scale": [0.7, 1.0]}
    raw["loss"] = [{"name": "dice_bce", "weight": 1.0},
                   {"name": "mll_point", "weight": 1.0, "kwargs": {"num_points": 64}}]
    return raw


# ----------------------------------------------------------------------------- test side
class Child:
    """One `medseg train` process started by :class:`TrainerProcesses`."""

    def __init__(self, server: "TrainerProcesses", pid: int, log: Path) -> None:
        self.server, self.pid, self.log = server, pid, log
        self.returncode: int | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def wait_for(self, marker: str, timeout: float = 120.0) -> None:
        """Until ``marker`` is in the log; an early exit or a timeout fails with the log."""
        deadline = time.monotonic() + timeout
        while marker not in self.text():
            if self.returncode is None:
                self.returncode = self.server._exit_status(timeout=0)
            if self.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"no '{marker}' from the trainer (exit {self.returncode}):\n{self.text()[-3000:]}")
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 300.0) -> int:
        if self.returncode is None:
            self.returncode = self.server._exit_status(timeout=timeout)
        if self.returncode is None:
            raise AssertionError(f"the trainer did not exit within {timeout} s:\n{self.text()[-3000:]}")
        return self.returncode


class TrainerProcesses:
    """A fork server for `medseg train` children (one at a time); see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1"}
        code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import engine_helpers; engine_helpers.serve()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=self.workdir)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._count = 0
        self.current: Child | None = None
        ready = self._message(timeout=300)
        assert ready.get("ready"), ready

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _message(self, timeout: float | None) -> dict[str, Any]:
        line = self._lines.get(timeout=timeout)
        if not line:
            raise AssertionError(f"the trainer server exited ({self.proc.poll()})")
        return json.loads(line)

    def _exit_status(self, timeout: float) -> int | None:
        """The running child's exit status, waiting up to ``timeout`` s (0: just look); None if it runs on."""
        try:
            msg = self._message(timeout=timeout) if timeout else json.loads(self._lines.get_nowait() or "{}")
        except queue.Empty:
            return None
        if "status" not in msg:
            raise AssertionError(f"the trainer server exited ({self.proc.poll()})")
        return int(msg["status"])

    def start(self, *args: str, hold: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Child:
        """``python -m medseg train ARGS`` in a new child; ``hold`` as in the module docstring."""
        self._count += 1
        log = self.workdir / f"train_{self._count:02d}.log"
        request = {"argv": ["train", *args], "hold": hold, "env": env or {}, "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        self.current = Child(self, int(self._message(timeout=60)["pid"]), log)
        return self.current

    def run(self, *args: str, timeout: float = 300.0) -> Child:
        """Start a child and wait for it to exit."""
        child = self.start(*args)
        child.wait(timeout)
        return child

    def close(self) -> None:
        """Stop the server; a child still running (a test failed while it was held) is killed first."""
        if self.current is not None and self.current.returncode is None:
            try:
                self.current.wait(timeout=0.1)
            except AssertionError:
                os.kill(self.current.pid, signal.SIGKILL)
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------------------- server side
def serve() -> None:
    """Import medseg once, then for each JSON request on stdin fork a child, report its pid and exit status."""
    import runpy  # noqa: F401 - imported before forking, like everything the children need

    import medseg.cli  # noqa: F401
    import medseg.data  # noqa: F401
    import medseg.engine.trainer  # noqa: F401
    import medseg.losses  # noqa: F401
    import medseg.models  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child_main(request)  # never returns
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}), flush=True)
    os._exit(0)  # skip the interpreter's slow teardown of torch


def _child_main(request: dict[str, Any]) -> None:
    code = 1
    try:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        os.environ.update(request["env"])
        if request["hold"]:
            _install_hold(request["hold"])
        import runpy

        sys.argv = ["medseg", *request["argv"]]
        runpy.run_module("medseg", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - report anything, exit non-zero
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _hold(what: str, until: Any = None) -> None:
    """Print ``HOLD what`` and wait (until ``until()`` is true, or forever = until killed)."""
    print(f"HOLD {what}", flush=True)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while time.monotonic() < deadline:
        if until is not None and until():
            return
        time.sleep(0.005)
    print(f"HOLD {what}: nobody signalled this process in {HOLD_LIMIT_S:.0f} s", flush=True)
    os._exit(97)


def _install_hold(spec: dict[str, Any]) -> None:
    if "after_step" in spec:
        _hold_after_step(int(spec["after_step"]))
    else:
        _hold_in_write(spec["file"], int(spec["nth"]), spec["at"])


def _hold_after_step(n: int) -> None:
    from medseg.engine import trainer

    signalled: list[int] = []
    handle, train_step = trainer.StopFlag._handle, trainer.Trainer._train_step

    def _handle(self: Any, signum: int, frame: Any) -> None:
        signalled.append(signum)
        handle(self, signum, frame)

    def _train_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = train_step(self, *args, **kwargs)
        if self.global_step + 1 == n:  # the loop counts this step right after
            _hold(f"after global step {n}", until=lambda: bool(signalled))
        return out

    trainer.StopFlag._handle = _handle
    trainer.Trainer._train_step = _train_step


def _hold_in_write(name: str, nth: int, at: str) -> None:
    counts = {"open": 0, "replace": 0}
    real_open, real_replace = io.open, os.replace

    def matches(path: Any) -> bool:
        if isinstance(path, int):
            try:
                path = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return False
        path = Path(os.fsdecode(path))
        return path.parent.name == "checkpoints" and name in path.name

    class SlowFile:
        """A binary file whose writes stop at the chosen byte offset (the rest delegates)."""

        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def __getattr__(self, attr: str) -> Any:
            return getattr(self._fh, attr)

        def __enter__(self) -> "SlowFile":
            return self

        def __exit__(self, *exc: Any) -> None:
            self._fh.close()

        def write(self, data: Any) -> int:
            size = memoryview(data).nbytes
            cut = {"start": 0, "half": size // 2, "end": size}[at]
            head = memoryview(data).cast("B")
            if cut:
                self._fh.write(head[:cut])
            self._fh.flush()
            _hold(f"{at} of write {nth} of {name} ({cut} of {size} bytes)")
            return size  # never reached

    def slow_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        if "b" in mode and any(c in mode for c in "wxa+") and matches(file):
            counts["open"] += 1
            if at != "replace" and counts["open"] == nth:
                return SlowFile(fh)
        return fh

    def slow_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if at == "replace" and matches(dst):
            counts["replace"] += 1
            if counts["replace"] == nth:
                _hold(f"before replace {nth} onto {name}")
        real_replace(src, dst, *args, **kwargs)

    io.open = builtins.open = slow_open
    os.replace = slow_replace
