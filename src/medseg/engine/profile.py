"""Model cost: parameters (encoder / head / total), FLOPs, latency and peak memory for one input shape.

FLOPs are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add = 2 FLOPs;
convolutions, matmuls, attention). Papers that profile with ``thop``/``ptflops`` report multiply-accumulates
(MACs) under the name "FLOPs": compare their figure with ``gmacs`` (= FLOPs / 2).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the measured pass minus the memory held before
it (the parameters); on CPU, the peak total size of live tensor storages created during the pass, tracked by a
``TorchDispatchMode`` (activations and temporaries; the allocator's own overhead is not included).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ProfileResult:
    """Cost of one model at one input shape (``batch x C x H x W``)."""

    model: str
    input_shape: tuple[int, ...]
    mode: str
    device: str
    params_encoder: int | None  # None when the model has no ``encoder`` attribute
    params_head: int | None
    params_total: int
    flops: int
    latency_ms: float
    latency_ms_std: float
    peak_memory_mb: float
    memory_method: str

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gflops": self.flops / 1e9, "gmacs": self.gmacs}


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"3x352x352"`` -> ``(3, 352, 352)``; raises ValueError naming the expected form."""
    try:
        shape = tuple(int(p) for p in text.lower().replace("*", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4) or min(shape, default=0) < 1:
        raise ValueError(f"--input expects CxHxW (e.g. 3x352x352) or CxDxHxW, got '{text}'")
    return shape


def count_parameters(model: nn.Module) -> tuple[int | None, int | None, int]:
    """(encoder, head, total): encoder = parameters named ``encoder.*``, head = all the others; the split is
    ``None`` for a model without an ``encoder`` attribute."""
    total = sum(p.numel() for p in model.parameters())
    if not isinstance(getattr(model, "encoder", None), nn.Module):
        return None, None, total
    enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))
    return enc, total - enc, total


def count_flops(model: nn.Module, x: torch.Tensor, train: bool = False) -> int:
    """Total FLOPs of one forward (plus backward when ``train``) by ``FlopCounterMode``."""
    counter = FlopCounterMode(display=False)
    with counter:
        _step(model, x, train)
    return int(counter.get_total_flops())


def _step(model: nn.Module, x: torch.Tensor, train: bool) -> None:
    if train:
        out = model(x)
        out = out["out"] if isinstance(out, dict) else out
        out.float().mean().backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            model(x)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model: nn.Module, x: torch.Tensor, train: bool = False, warmup: int = 2,
                    repeats: int = 5) -> tuple[float, float]:
    """(median, std) wall time in milliseconds of ``repeats`` passes after ``warmup`` passes."""
    for _ in range(warmup):
        _step(model, x, train)
    _sync(x.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _step(model, x, train)
        _sync(x.device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), statistics.pstdev(times)


class _LiveStorageTracker(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the mode and still alive (checked at every op)."""

    def __init__(self, exclude: set[int] = frozenset()) -> None:
        super().__init__()
        self.exclude = set(exclude)  # storages that existed before (weights, input): views of them are free
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        out = func(*args, **(kwargs or {}))
        self._expire()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in self.exclude:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out

    def _expire(self) -> None:
        dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
        for k in dead:
            self.current -= self.live.pop(k)[1]


def measure_peak_memory(model: nn.Module, x: torch.Tensor, train: bool = False) -> tuple[float, str]:
    """(peak MB, method) of one pass; see the module docstring for the two methods."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        _step(model, x, train)
        torch.cuda.synchronize(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - base) / 2**20, "cuda allocator peak above weights"
    existing = [*model.parameters(), *model.buffers(), x]
    tracker = _LiveStorageTracker({t.untyped_storage().data_ptr() for t in existing})
    with tracker:
        _step(model, x, train)
    return tracker.peak / 2**20, "peak live tensors (dispatch tracking)"


def profile_model(model: nn.Module, input_shape: Sequence[int], *, name: str = "", batch: int = 1,
                  device: str | torch.device = "cpu", train: bool = False, warmup: int = 2,
                  repeats: int = 5) -> ProfileResult:
    """Parameters, FLOPs, latency and peak memory of ``model`` on a ``batch x input_shape`` random input.

    ``train=False`` profiles inference (eval mode, no grad); ``train=True`` one forward + backward in train
    mode.
    """
    device = torch.device(device)
    model = model.to(device).train(train)
    x = torch.randn(batch, *input_shape, device=device)
    enc, head, total = count_parameters(model)
    flops = count_flops(model, x, train)
    latency, spread = measure_latency(model, x, train, warmup, repeats)
    memory, method = measure_peak_memory(model, x, train)
    return ProfileResult(name or type(model).__name__, (batch, *input_shape), "train" if train else "inference",
                         str(device), enc, head, total, flops, latency, spread, memory, method)


def format_profiles(results: Sequence[ProfileResult]) -> str:
    """A markdown table, one row per result."""
    head = ("| model | input | mode | device | params encoder (M) | params head (M) | params total (M) | GFLOPs "
            "| GMACs | latency ms (median ± sd) | peak memory MB |")
    rows = [head, "|" + "---|" * 11]
    def m(n: int | None) -> str:
        return "-" if n is None else f"{n / 1e6:.3f}"

    for r in results:
        shape = "x".join(str(s) for s in r.input_shape)
        rows.append(f"| {r.model} | {shape} | {r.mode} | {r.device} | {m(r.params_encoder)} | "
                    f"{m(r.params_head)} | {m(r.params_total)} | {r.flops / 1e9:.2f} | "
                    f"{r.gmacs:.2f} | {r.latency_ms:.1f} ± {r.latency_ms_std:.1f} | {r.peak_memory_mb:.1f} |")
    return "\n".join(rows)
