"""``medseg export`` and ``medseg predict --engine onnxruntime``: every listed model round-trips through ONNX
(onnxruntime vs PyTorch within 1e-4 on a real input, checked here independently of the exporter's own
check), the other formats reload, and the bad inputs (disagreeing export, existing folder, data-dependent
control flow, missing onnx) are refused with a message."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from medseg.cli import main
from medseg.config import build_config
from medseg.engine import export as ex
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.trainer import build_model, model_from_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_helpers import tiny_raw  # noqa: E402

ort = pytest.importorskip("onnxruntime", reason="pip install 'medseg[export]'")
TOL = 1e-4
SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
KVASIR = SHARED / "kvasir-seg" / "images"  # as tests/conftest.py finds the real data

# name -> (model, data overrides); the smallest settings each constructor allows
MODELS = {
    "unet": ({"name": "unet", "kwargs": {"base": 4, "depth": 2}}, {}),
    "unet_ife_curvature": ({"name": "unet", "kwargs": {"base": 8, "depth": 3, "ife": "curvature",
                                                       "ife_ratio": [0.75, 0.5]}}, {}),
    "unet_ife_entropy": ({"name": "unet", "kwargs": {"base": 8, "depth": 3, "ife": "entropy",
                                                     "ife_ratio": [0.75, 0.5]}}, {}),
    "deeplabv3plus": ({"name": "deeplabv3plus", "kwargs": {"encoder": "resnet10t"}}, {"image_size": [64, 64]}),
    "sinet_v2": ({"name": "sinet_v2", "kwargs": {"encoder": "resnet10t", "channel": 8}}, {"image_size": [64, 64]}),
    "chnet": ({"name": "chnet", "kwargs": {}}, {"image_size": [64, 64]}),
    "unet3d": ({"name": "unet3d", "kwargs": {"base": 4, "depth": 3}},
               {"kind": "synthetic3d", "image_size": [16, 16, 16], "num_classes": 2, "in_channels": 1}),
}
HEAVY = {"deeplabv3plus", "sinet_v2", "chnet", "unet3d", "unet_ife_entropy"}


def make_run(folder: Path, name: str, metrics: dict | None = None) -> Path:
    """A run folder holding an untrained model's best.pt (config inside), optionally metrics/summary.json."""
    model, data = MODELS[name]
    raw = tiny_raw()
    raw["data"].update({"in_channels": 3, **data})
    raw["model"] = model
    cfg = build_config(raw)
    torch.manual_seed(0)
    net = build_model(cfg)
    save_checkpoint({"config": cfg.model_dump(mode="json"), "model": net.state_dict()},
                    folder / "checkpoints" / "best.pt")
    if metrics is not None:
        (folder / "metrics").mkdir(parents=True)
        (folder / "metrics" / "summary.json").write_text(json.dumps(metrics))
    return folder


def real_image(name: str) -> Path | None:
    """A real Kvasir-SEG image for the 2-D models when the shared data is present (else the run's own data)."""
    if MODELS[name][1].get("kind") == "synthetic3d" or not KVASIR.is_dir():
        return None
    return sorted(KVASIR.glob("*.jpg"))[0]


def ort_logits(folder: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.astype(np.float32)})[0]


def torch_logits(run: Path, x: np.ndarray) -> np.ndarray:
    model, _ = model_from_checkpoint(run / "checkpoints" / "best.pt")
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out["out"] if isinstance(out, dict) else out).numpy()


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in MODELS])
def test_onnx_round_trip_matches_pytorch_on_a_real_input(tmp_path, name):
    run = make_run(tmp_path / "run", name)
    image = real_image(name)
    result = ex.export_run(run, "onnx", tmp_path / "out", input_path=image)
    assert result.max_abs_diff <= TOL
    # independently of the exporter's own check: the same real input through onnxruntime and PyTorch
    _, cfg = ex.load_exported(tmp_path / "out")
    model, _ = model_from_checkpoint(run / "checkpoints" / "best.pt")
    x = ex.example_input(model, cfg, image).numpy()
    assert tuple(x.shape) == result.input_shape
    np.testing.assert_allclose(ort_logits(tmp_path / "out", x), torch_logits(run, x), rtol=0, atol=TOL)
    # dynamic batch (and spatial axes where the model allows): a batch of 2 at another size also agrees
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert 0 in meta["dynamic_axes"]["image"]
    x2 = np.concatenate([x, x[:, :, ::-1].copy()], 0)
    if set(range(2, x.ndim)) <= set(meta["dynamic_axes"]["image"]):
        x2 = np.pad(x2, [(0, 0), (0, 0)] + [(0, meta["input_divisor"])] * (x.ndim - 2))
    np.testing.assert_allclose(ort_logits(tmp_path / "out", x2), torch_logits(run, x2), rtol=0, atol=TOL)


@pytest.mark.parametrize("fmt", ["exported-program", "torchscript"])
def test_other_formats_reload_and_match(tmp_path, fmt):
    run = make_run(tmp_path / "run", "unet_ife_curvature")
    result = ex.export_run(run, fmt, tmp_path / "out")
    assert result.file.is_file() and result.max_abs_diff <= TOL
    model, cfg = model_from_checkpoint(run / "checkpoints" / "best.pt")
    x = ex.example_input(model, cfg)
    with torch.no_grad():
        loaded = torch.export.load(str(result.file)).module() if fmt == "exported-program" \
            else torch.jit.load(str(result.file))
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=0, atol=TOL)
    notes = json.loads((tmp_path / "out" / "export.json").read_text())["notes"]
    assert any("deprecated" in n for n in notes) == (fmt == "torchscript")


# ------------------------------------------------------------------------------ model card
def test_model_card_names_architecture_data_preprocessing_metrics_and_limits(tmp_path):
    summary = {"split": "test", "cases": 3, "checkpoint": "best.pt", "metrics": {"dice": {"mean": 0.8125}},
               "policy": "per case, then mean over cases"}
    run = make_run(tmp_path / "run", "unet", metrics=summary)
    ex.export_run(run, "onnx", tmp_path / "out")
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    params = sum(p.numel() for p in build_model(build_config({**tiny_raw(), "data": {
        **tiny_raw()["data"], "in_channels": 3}})).parameters())
    for text in ("## Architecture", "`unet`", f"parameters: {params:,}", "## Training data and split",
                 "synthetic2d", "## Preprocessing and normalisation", "`zscore`", "[32, 32]", "## Metrics",
                 "0.8125", "policy: per case, then mean over cases", "## Intended use and limits",
                 "not a medical device"):
        assert text in card, text
    # without metrics/summary.json the card says so and names the command that makes it
    run2 = make_run(tmp_path / "run2", "unet")
    ex.export_run(run2, "onnx", tmp_path / "out2")
    assert "no metrics" in (tmp_path / "out2" / "MODEL_CARD.md").read_text()
    assert "medseg evaluate" in (tmp_path / "out2" / "MODEL_CARD.md").read_text()


# ------------------------------------------------------------------------------ bad input
def test_an_export_that_disagrees_with_pytorch_writes_nothing(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", "unet")
    real = ex.run_exported
    monkeypatch.setattr(ex, "run_exported", lambda fmt, path, x: real(fmt, path, x) + 2 * TOL)
    with pytest.raises(ex.ExportError, match=r"differs from PyTorch by 0\.0002.*tolerance 0\.0001.*nothing was written"):
        ex.export_run(run, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left behind


def test_an_existing_output_folder_needs_overwrite(tmp_path, capsys):
    run = make_run(tmp_path / "run", "unet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", "--run", str(run), "--format", "onnx", "--output", str(out), "--overwrite"]) == 1
    assert "not a folder written by `medseg export`" in capsys.readouterr().err  # --overwrite never deletes others' folders
    (out / "keep.txt").unlink()
    assert main(["export", "--run", str(run), "--format", "onnx", "--output", str(out)]) == 0
    before = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(b"old")
    assert main(["export", "--run", str(run), "--format", "onnx", "--output", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "model.onnx").read_bytes() == b"old"
    assert main(["export", "--run", str(run), "--format", "onnx", "--output", str(out), "--overwrite"]) == 0
    assert (out / "model.onnx").read_bytes() == before


class DataDependent(nn.Module):
    spatial_dims, input_divisor = 2, 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.mean() > 0:  # a Python branch on a tensor value
            return y * 2
        return y


def test_data_dependent_control_flow_names_the_operator_and_suggests_exported_program(tmp_path):
    cfg = build_config({**tiny_raw(), "data": {**tiny_raw()["data"], "in_channels": 3}})
    with pytest.raises(ex.ExportError) as err:
        ex.export_model(DataDependent(), cfg, "onnx", tmp_path / "out", example=torch.randn(1, 3, 8, 8))
    text = str(err.value)
    assert "aten.item" in text and "if y.mean() > 0" in text and "data-dependent control flow" in text
    assert "--format exported-program" in text
    assert not (tmp_path / "out").exists()


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ex.ExportError, match=r"pip install 'medseg\[export\]'"):
        ex.require_onnx()


# ------------------------------------------------------------------------------ predict with the export
def test_predict_with_onnxruntime_equals_predict_with_torch(tmp_path, capsys):
    run = make_run(tmp_path / "run", "unet_ife_curvature")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(40, 52, 3), (29, 33, 3)]):  # sizes other than the training size
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(images / f"c{i}.png")
    assert main(["export", "--run", str(run), "--format", "onnx", "--output", str(tmp_path / "m")]) == 0
    common = ["--input", str(images), "--probabilities"]
    assert main(["predict", "--checkpoint", str(run), "--output", str(tmp_path / "pt"), *common]) == 0
    assert main(["predict", "--engine", "onnxruntime", "--model", str(tmp_path / "m"),
                 "--output", str(tmp_path / "ox"), *common]) == 0
    from medseg.engine.predict import predict_case
    from medseg.engine.runtime import make_runtime

    onnx_model, cfg = ex.load_exported(tmp_path / "m")
    torch_model, _ = model_from_checkpoint(run / "checkpoints" / "best.pt")
    rt = make_runtime(cfg.train.model_copy(update={"amp": "off"}), 2)  # fp32, as onnxruntime (CPU default: bf16)
    for png in sorted(images.iterdir()):
        assert (tmp_path / "pt" / png.name).read_bytes() == (tmp_path / "ox" / png.name).read_bytes() or \
            np.array_equal(np.asarray(Image.open(tmp_path / "pt" / png.name)),
                           np.asarray(Image.open(tmp_path / "ox" / png.name)))
        (lab_o, fg_o), (lab_t, fg_t) = (predict_case(m, [png], cfg, rt) for m in (onnx_model, torch_model))
        assert fg_o.shape == np.asarray(Image.open(png)).shape[:2]
        np.testing.assert_allclose(fg_o, fg_t, rtol=0, atol=1e-5)
    # the engine and its source must agree
    assert main(["predict", "--engine", "onnxruntime", "--checkpoint", str(run), "--input", str(images),
                 "--output", str(tmp_path / "x")]) == 1
    assert "--engine onnxruntime takes --model DIR" in capsys.readouterr().err
