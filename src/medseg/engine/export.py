"""``medseg export``: a run's model as ONNX, an ``torch.export`` program or TorchScript, checked and carded.

The exported graph maps a normalised ``B x C x *spatial`` image (spatial sizes multiples of the model's
``input_divisor``) to the main logits ``B x K x *spatial`` (auxiliary outputs are dropped); pre- and
post-processing stay outside it, so ``medseg predict --engine onnxruntime --model DIR`` reuses the ones of
``medseg predict``. Batch and spatial axes are exported as dynamic where the model allows it
(``torch.export.Dim.AUTO``); ``export.json`` lists the axes that came out dynamic.

Before anything is written, the exported file is run on a real input (the first case of the run's test
split, else val, else train, or ``--input FILE``), preprocessed as in training: onnxruntime for ONNX, the
reloaded program / TorchScript module otherwise. If any logit differs from PyTorch's by more than the
tolerance (default 1e-4, absolute), nothing is written. The folder then receives the model file,
``export.json`` (format, axes, tolerance, measured difference, the run's config) and ``MODEL_CARD.md``.

TorchScript is deprecated in PyTorch; ``torchscript`` is still offered through ``torch.jit.trace`` (no
scripting: control flow is frozen at the traced input) for runtimes that need it, with a note saying so.
See ``docs/export.md``.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from medseg.config import RunConfig, build_config
from medseg.engine.checkpoint import resolve_checkpoint
from medseg.engine.infer import main_output, pad_to_multiple
from medseg.errors import UserError

FORMATS = {"onnx": "model.onnx", "exported-program": "model.pt2", "torchscript": "model.ts"}
DEFAULT_TOLERANCE = 1e-4
INSTALL_HINT = "pip install 'medseg[export]'"
TORCHSCRIPT_NOTE = ("TorchScript is deprecated in PyTorch: this file was made with torch.jit.trace, which freezes "
                    "Python control flow at the traced input; prefer --format onnx or exported-program")


class ExportError(UserError):
    """The model cannot be exported as asked, or the exported file disagrees with PyTorch."""


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and measured."""

    folder: Path
    file: Path
    format: str
    max_abs_diff: float
    tolerance: float
    dynamic_axes: dict[str, list[int]] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)


class LogitsOnly(nn.Module):
    """The model with its main logits as the only output (``"out"`` of a dict), in fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return main_output(self.model(image)).float()


# ------------------------------------------------------------------------------ optional packages
def require_onnx() -> tuple[Any, Any]:
    """``(onnx, onnxruntime)``, or an :class:`ExportError` naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ExportError(f"ONNX export and the onnxruntime engine need the packages onnx and onnxruntime "
                          f"({err.name} is missing): {INSTALL_HINT}") from None
    return onnx, onnxruntime


# ------------------------------------------------------------------------------ the real input
def example_input(model: nn.Module, cfg: RunConfig, input_path: str | Path | None = None) -> torch.Tensor:
    """A real, preprocessed ``1 x C x *spatial`` input padded to the model's divisor: ``input_path`` (an
    image or NIfTI volume, read as ``medseg predict`` reads it) or the first case of the run's data
    (test split, else val, else train). Volumes are cut to the sliding-window size the model sees."""
    if input_path is not None:
        x = _read_input(Path(input_path), cfg)
    else:
        x = _dataset_input(cfg)
    if x.ndim == 5:
        roi = cfg.eval.sliding_window or cfg.data.nifti.patch_size or list(x.shape[2:])
        x = x[(slice(None), slice(None), *[slice(0, int(r)) for r in roi])]
    return pad_to_multiple(x.float(), int(getattr(model, "input_divisor", 1)))[0].contiguous()


def _read_input(path: Path, cfg: RunConfig) -> torch.Tensor:
    from medseg.engine.predict import is_volume, prepare_image, prepare_volume

    if not path.is_file():
        raise ExportError(f"--input {path}: no such file; give an image or NIfTI volume like the training data")
    return prepare_volume([path], cfg) if is_volume(path) else prepare_image(path, cfg)[0]


def _dataset_input(cfg: RunConfig) -> torch.Tensor:
    from medseg.data import build_dataset

    reasons = []
    for split in ("test", "val", "train"):
        try:
            dataset = build_dataset(cfg.data, split)
            if len(dataset):
                return dataset[0]["image"][None]
            reasons.append(f"{split}: empty")
        except (UserError, OSError, ValueError) as err:
            reasons.append(f"{split}: {err}")
    raise ExportError("no real input to check the export on: the run's data could not be read ("
                      + "; ".join(reasons) + "). Pass --input FILE (an image or volume like the training data)")


# ------------------------------------------------------------------------------ export per format
def _dynamic_shapes(x: torch.Tensor) -> tuple[dict[int, Any]]:
    from torch.export import Dim

    return ({axis: Dim.AUTO for axis in [0, *range(2, x.ndim)]},)


def _export_onnx(net: nn.Module, x: torch.Tensor, path: Path) -> None:
    require_onnx()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (x,), dynamo=True, dynamic_shapes=_dynamic_shapes(x),
                                        input_names=["image"], output_names=["logits"], verbose=False)
    except Exception as err:  # torch.export or the ONNX translation failed: name the operator
        raise ExportError(onnx_failure_message(err)) from None
    program.save(str(path))


def _export_program(net: nn.Module, x: torch.Tensor, path: Path) -> None:
    try:
        program = torch.export.export(net, (x,), dynamic_shapes=_dynamic_shapes(x))
    except Exception as err:
        op, code = _failing_operator(err)
        raise ExportError(f"torch.export could not trace the model at operator {op}{code}: {_first_line(err)}. "
                          "Branches on tensor values must be written with torch.cond") from None
    torch.export.save(program, str(path))


def _export_torchscript(net: nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, (x,), check_trace=False)
    torch.jit.save(traced, str(path))


EXPORTERS: dict[str, Callable[[nn.Module, torch.Tensor, Path], None]] = {
    "onnx": _export_onnx, "exported-program": _export_program, "torchscript": _export_torchscript}


def _first_line(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _failing_operator(err: BaseException) -> tuple[str, str]:
    """The last ATen operator and the user code line quoted in a torch.export / ONNX error chain."""
    texts = []
    while err is not None:
        texts.append(re.sub(r"\x1b\[[0-9;]*m", "", str(err)))
        err = err.__cause__ or err.__context__
    text = "\n".join(texts)
    ops = re.findall(r"(?:torch\.ops\.)?(aten\.[A-Za-z0-9_]+)", text)
    calls = re.findall(r'File "([^"]+)", line (\d+), in (\w+)\n\s+(\S.*)', text)
    if ops:
        op = ops[-1]
    elif "data-dependent" in text:  # a guard on a tensor's value: bool()/int()/float() of a tensor
        op = "aten.item (a tensor value read as a Python bool/number)"
    else:
        op = "unknown"
    if not calls:
        return op, ""
    file, line, function, code = calls[-1]
    return op, f" (`{code.strip()}` at {Path(file).name}:{line} in {function})"


def onnx_failure_message(err: BaseException) -> str:
    """One paragraph for a failed ONNX export: the operator, why, and what to do."""
    op, code = _failing_operator(err)
    chain, e = [], err
    while e is not None:
        chain.append(type(e).__name__)
        e = e.__cause__ or e.__context__
    data_dependent = any("DataDependent" in name for name in chain) or "data-dependent" in str(err)
    why = ("the model has data-dependent control flow (a Python branch on a tensor value), which an ONNX graph "
           "cannot hold" if data_dependent else f"the operator could not be exported to ONNX ({_first_line(err)})")
    return (f"ONNX export failed at operator {op}{code}: {why}. Use --format exported-program (torch.export, "
            "which keeps control flow written with torch.cond and operators ONNX lacks), or rewrite the branch "
            "with torch.cond")


# ------------------------------------------------------------------------------ checking
def run_exported(fmt: str, path: Path, x: torch.Tensor) -> np.ndarray:
    """The logits of the exported file on ``x``: onnxruntime (CPU) for ONNX, else the reloaded module."""
    if fmt == "onnx":
        session = onnx_session(path)
        return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        module = torch.export.load(str(path)).module() if fmt == "exported-program" else torch.jit.load(str(path))
        return module(x).numpy()


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session for ``path``."""
    _, ort = require_onnx()
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def dynamic_axes_of(fmt: str, path: Path, ndim: int) -> list[int]:
    """Input axes the exported file accepts at any size (ONNX: symbolic dims; others: as exported)."""
    if fmt == "onnx":
        onnx, _ = require_onnx()
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return [i for i, d in enumerate(dims) if d.dim_param]
    if fmt == "exported-program":
        program = torch.export.load(str(path))
        inputs = set(program.graph_signature.user_inputs)
        image = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in inputs)
        return [i for i, s in enumerate(image.meta["val"].shape) if not isinstance(s, int)]
    return []  # a trace records no dynamic axes; its shape arithmetic may or may not generalise


# ------------------------------------------------------------------------------ the run
def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or an existing non-empty folder without ``overwrite``."""
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file; give a folder for the exported model")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ExportError(f"--output {output} already exists and is not empty; nothing was written. Pass "
                          "--overwrite to replace it, or choose another folder")
    if output.is_dir() and any(output.iterdir()) and not (output / "export.json").is_file():
        raise ExportError(f"--output {output} is not empty and holds no export.json (not a folder written by "
                          "`medseg export`): --overwrite replaces only export folders; choose another folder")


def export_run(run: str | Path, fmt: str, output: str | Path, *, overwrite: bool = False,
               tolerance: float = DEFAULT_TOLERANCE, input_path: str | Path | None = None,
               checkpoint: str = "best") -> ExportResult:
    """Export the model of ``run`` (a run folder or checkpoint file) to the folder ``output``.

    The file is written to a temporary folder beside ``output``, checked against PyTorch on a real input
    (:func:`example_input`), and moved into place only when the largest absolute logit difference is
    within ``tolerance``; otherwise :class:`ExportError` and nothing is written.
    """
    from medseg.engine.trainer import model_from_checkpoint

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    output = Path(output)
    check_output(output, overwrite)
    ckpt = resolve_checkpoint(run, checkpoint)
    model, cfg = model_from_checkpoint(ckpt)
    return export_model(model, cfg, fmt, output, overwrite=overwrite, tolerance=tolerance,
                        input_path=input_path, run_dir=_run_dir_of(ckpt), checkpoint=ckpt)


def export_model(model: nn.Module, cfg: RunConfig, fmt: str, output: str | Path, *, overwrite: bool = False,
                 tolerance: float = DEFAULT_TOLERANCE, input_path: str | Path | None = None,
                 run_dir: Path | None = None, checkpoint: Path | None = None,
                 example: torch.Tensor | None = None) -> ExportResult:
    """:func:`export_run` for a model already built (``example``: the real input, else read as there)."""
    output = Path(output)
    check_output(output, overwrite)
    model = model.cpu().eval()
    net = LogitsOnly(model).eval()
    x = example if example is not None else example_input(model, cfg, input_path)
    with torch.no_grad():
        reference = net(x).numpy()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        path = Path(tmp) / FORMATS[fmt]
        EXPORTERS[fmt](net, x, path)
        got = run_exported(fmt, path, x)
        diff = _max_abs_diff(got, reference)
        if not diff <= tolerance:
            raise ExportError(f"the {fmt} export differs from PyTorch by {diff:.3g} (largest absolute logit "
                              f"difference on a real input of shape {tuple(x.shape)}), more than the tolerance "
                              f"{tolerance:g}; nothing was written to {output}")
        notes = [TORCHSCRIPT_NOTE] if fmt == "torchscript" else []
        axes = dynamic_axes_of(fmt, path, x.ndim)
        result = ExportResult(output, output / FORMATS[fmt], fmt, diff, tolerance, {"image": axes},
                              tuple(x.shape), notes)
        _write_metadata(Path(tmp), result, model, cfg, checkpoint)
        (Path(tmp) / "MODEL_CARD.md").write_text(model_card(result, model, cfg, run_dir, checkpoint))
        if output.exists():
            shutil.rmtree(output)
        Path(tmp).rename(output)
        Path(tmp).mkdir()  # TemporaryDirectory removes it on exit
    return result


def _max_abs_diff(got: np.ndarray, reference: np.ndarray) -> float:
    if got.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(got.astype(np.float64) - reference.astype(np.float64)), initial=0.0))


def _run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def _write_metadata(folder: Path, result: ExportResult, model: nn.Module, cfg: RunConfig,
                    checkpoint: Path | None) -> None:
    import medseg

    meta = {"format": result.format, "file": result.file.name, "input": "image", "output": "logits",
            "input_layout": "B x C x *spatial (normalised as in training)",
            "input_shape_checked": list(result.input_shape),
            "dynamic_axes": result.dynamic_axes, "input_divisor": int(getattr(model, "input_divisor", 1)),
            "spatial_dims": int(getattr(model, "spatial_dims", len(result.input_shape) - 2)),
            "tolerance": result.tolerance, "max_abs_diff": result.max_abs_diff,
            "checked_with": "onnxruntime (CPU)" if result.format == "onnx" else f"reloaded {result.format}",
            "notes": result.notes, "checkpoint": str(checkpoint) if checkpoint else None,
            "torch": torch.__version__, "medseg": getattr(medseg, "__version__", "unknown"),
            "config": cfg.model_dump(mode="json")}
    (folder / "export.json").write_text(json.dumps(meta, indent=2))


# ------------------------------------------------------------------------------ model card
def model_card(result: ExportResult, model: nn.Module, cfg: RunConfig, run_dir: Path | None,
               checkpoint: Path | None) -> str:
    """``MODEL_CARD.md``: architecture, parameters, data and split, preprocessing, metrics, use and limits."""
    d = cfg.data
    params = sum(p.numel() for p in model.parameters())
    kwargs = ", ".join(f"{k}={v!r}" for k, v in cfg.model.kwargs.items()) or "defaults"
    task = ("binary (1 logit, sigmoid)" if d.num_classes == 1
            else f"{d.num_classes} classes (softmax, 0 = background)")
    lines = [
        f"# Model card: {cfg.name}", "",
        f"Exported by `medseg export` as **{result.format}** (`{result.file.name}`) from "
        f"`{checkpoint if checkpoint else 'a model in memory'}`.", "",
        "## Architecture",
        f"- model `{cfg.model.name}` ({type(model).__name__}), kwargs: {kwargs}",
        f"- parameters: {params:,}",
        f"- input: `image`, float32 `B x {d.in_channels} x {' x '.join(['*'] * (len(result.input_shape) - 2))}`, "
        f"spatial sizes multiples of {int(getattr(model, 'input_divisor', 1))}; dynamic axes: "
        f"{result.dynamic_axes.get('image') or 'none (fixed shape ' + str(list(result.input_shape)) + ')'}",
        f"- output: `logits`, float32 `B x {d.num_classes} x *spatial`, {task}", "",
        "## Training data and split",
        f"- data kind `{d.kind}`, name `{d.name or d.root or d.kind}`, root `{d.root}`, modality `{d.modality}`",
        f"- split: {json.dumps(d.split.model_dump(mode='json'))}",
        f"- training: {cfg.train.epochs} epochs, seed {cfg.train.seed}, optimiser `{cfg.optim.name}` lr {cfg.optim.lr}", "",
        "## Preprocessing and normalisation",
        f"- {d.in_channels} input channel(s); 2-D images resized to {d.image_size} "
        f"{'after zero-padding to a centred square ' if d.pad_square else ''}and normalised `{d.normalize}`",
    ]
    if len(result.input_shape) == 5:
        lines.append(f"- volumes: NIfTI settings {json.dumps(d.nifti.model_dump(mode='json'))}; sliding window "
                     f"{cfg.eval.sliding_window or d.nifti.patch_size}, overlap {cfg.eval.overlap}")
    lines += ["- post-processing: logits resized back to the original size, then sigmoid/softmax, threshold "
              f"{cfg.eval.threshold} (binary) or argmax; `medseg predict --engine onnxruntime --model DIR` does "
              "all of this", "", "## Metrics", *_metrics_lines(run_dir), "",
              "## Export check",
              f"- {result.format} output vs PyTorch on a real input of shape {list(result.input_shape)}: largest "
              f"absolute logit difference {result.max_abs_diff:.3g} (tolerance {result.tolerance:g})",
              *[f"- note: {n}" for n in result.notes], "",
              "## Intended use and limits",
              "- research use on images like the training data (same modality, channels, intensity range); "
              "not a medical device and not validated for clinical decisions",
              "- the metrics above hold for the split named above only; expect lower scores on other scanners, "
              "centres or populations",
              "- inputs must be preprocessed as stated; raw pixels give meaningless logits", ""]
    return "\n".join(lines)


def _metrics_lines(run_dir: Path | None) -> list[str]:
    path = run_dir / "metrics" / "summary.json" if run_dir else None
    if path is None or not path.is_file():
        return [f"- no metrics: {path or 'the run folder'} is absent (run `medseg evaluate RUN` to make it)"]
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return [f"- no metrics: {path} cannot be read ({err})"]
    lines = [f"- split `{summary.get('split')}`, {summary.get('cases')} case(s), checkpoint "
             f"`{summary.get('checkpoint')}`", f"- policy: {summary.get('policy')}"]
    for name, value in (summary.get("metrics") or {}).items():
        lines.append(f"- {name}: {json.dumps(value) if isinstance(value, dict) else value}")
    return lines


# ------------------------------------------------------------------------------ predicting with it
class OnnxModel(nn.Module):
    """An exported ONNX model behind the ``nn.Module`` call medseg's inference uses (logits out)."""

    def __init__(self, path: Path, spatial_dims: int, input_divisor: int) -> None:
        super().__init__()
        self.session = onnx_session(path)
        self.input_name = self.session.get_inputs()[0].name
        self.spatial_dims = spatial_dims
        self.input_divisor = input_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).to(x.device)


def load_exported(folder: str | Path) -> tuple[OnnxModel, RunConfig]:
    """The ONNX model of an export folder and the run config stored beside it (for pre/post-processing)."""
    folder = Path(folder)
    meta_path = folder / "export.json"
    if not meta_path.is_file():
        raise ExportError(f"--model {folder}: no export.json there; give a folder written by "
                          "`medseg export --format onnx`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != "onnx":
        raise ExportError(f"--model {folder} holds a {meta.get('format')} export; --engine onnxruntime needs "
                          "one made with --format onnx")
    cfg = build_config(meta["config"])
    return OnnxModel(folder / meta["file"], int(meta["spatial_dims"]), int(meta["input_divisor"])), cfg
