"""``medseg predict`` never destroys data: unsafe output folders and existing files are refused before
anything is written, colliding names are kept apart, one bad input does not stop the others, and a
channel mismatch is a sentence with a fix (``--channels``). Tiny untrained checkpoints: no training."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import tiny_raw  # noqa: E402

from medseg.cli import main
from medseg.config import build_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.predict import PredictionError, predict_paths
from medseg.engine.trainer import build_model
from medseg.errors import DataError


def make_checkpoint(path: Path, in_channels: int = 1, model: dict | None = None, **data: object) -> Path:
    """A checkpoint of an untrained tiny model: enough to exercise the prediction paths."""
    raw = tiny_raw()
    raw["data"].update(in_channels=in_channels, **data)
    raw["model"] = model or raw["model"]
    cfg = build_config(raw)
    save_checkpoint({"config": cfg.model_dump(mode="json"), "model": build_model(cfg).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def save_png(path: Path, shape: tuple[int, ...] = (20, 24), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)).save(path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------------ where predictions go
@pytest.mark.parametrize("where", ["same", "inside", "symlink"])
def test_output_in_the_input_folder_is_refused(tmp_path: Path, ckpt: Path, where: str) -> None:
    src = tmp_path / "images"
    save_png(src / "a.png")
    save_png(src / "b.jpg", seed=1)
    before = snapshot(src)
    out = {"same": src, "inside": src / "preds", "symlink": tmp_path / "link"}[where]
    if where == "symlink":
        out.symlink_to(src, target_is_directory=True)
    with pytest.raises(DataError, match="input folder.*Choose a folder outside"):
        predict_paths(ckpt, src, out, progress=False, overwrite=True)
    assert snapshot(src) == before  # inputs untouched, nothing added


def test_single_input_file_is_never_replaced(tmp_path: Path, ckpt: Path) -> None:
    image = save_png(tmp_path / "a.png")
    before = image.read_bytes()
    with pytest.raises(DataError, match="would replace the input file.*a.png"):
        predict_paths(ckpt, image, tmp_path, progress=False, overwrite=True)
    assert image.read_bytes() == before


def test_input_folder_inside_output_folder_is_allowed(tmp_path: Path, ckpt: Path) -> None:
    save_png(tmp_path / "data" / "images" / "a.png")
    written = predict_paths(ckpt, tmp_path / "data" / "images", tmp_path / "data", progress=False)
    assert [p.name for p in written] == ["a.png"] and written[0].parent == tmp_path / "data"


def test_existing_predictions_are_not_overwritten_without_flag(tmp_path: Path, ckpt: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("a", "b", "c"):
        save_png(src / f"{name}.png")
    out.mkdir()
    (out / "b.png").write_bytes(b"keep me")
    (out / "c_prob.png").write_bytes(b"keep me too")
    with pytest.raises(DataError, match=r"already holds 2 of the 6 file\(s\).*b\.png, c_prob\.png.*--overwrite"):
        predict_paths(ckpt, src, out, save_probabilities=True, progress=False)
    assert snapshot(out) == {"b.png": b"keep me", "c_prob.png": b"keep me too"}  # nothing written at all

    written = predict_paths(ckpt, src, out, save_probabilities=True, progress=False, overwrite=True)
    assert [p.name for p in written] == ["a.png", "b.png", "c.png"]
    assert np.array(Image.open(out / "b.png")).shape == (20, 24)


def test_colliding_stems_are_named_apart(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    save_png(src / "a.png", (20, 24))
    Image.fromarray(np.zeros((30, 18), np.uint8)).save(src / "a.jpg")
    save_png(src / "b.png", (12, 16))
    written = predict_paths(ckpt, src, out, progress=False)
    shapes = {p.name: np.array(Image.open(p)).shape for p in written}
    assert shapes == {"a_jpg.png": (30, 18), "a_png.png": (20, 24), "b.png": (12, 16)}  # each from its input
    assert "a.jpg -> a_jpg.png" in capsys.readouterr().out


def test_probability_name_of_one_input_does_not_clash_with_another(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "in"
    save_png(src / "a.png", (20, 24))
    save_png(src / "a_prob.png", (10, 14))
    written = predict_paths(ckpt, src, tmp_path / "out", save_probabilities=True, progress=False, echo=None)
    assert len(written) == 2 and len(set(written)) == 2
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 4 and "a_prob.png" in files  # two masks, two probability maps, none replaced
    assert np.array(Image.open(written[1])).shape == (10, 14)


# ------------------------------------------------------------------------------ bad inputs
def truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_unreadable_images_do_not_stop_the_others(tmp_path: Path, ckpt: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    save_png(src / "a.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # corrupt PNG
    (src / "c.jpg").write_text("not an image")  # wrong format
    save_png(src / "d.png", (9, 11))
    truncated_jpeg(src / "e.jpg")  # OpenCV would half-decode it: refused by the reader
    with pytest.raises(PredictionError) as info:
        predict_paths(ckpt, src, out, progress=False)
    err = info.value
    assert [p.name for p, _ in err.failures] == ["b.png", "c.jpg", "e.jpg"]
    assert all("cannot read image" in reason for _, reason in err.failures)
    assert "truncated" in err.failures[2][1]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "d.png"] == [p.name for p in err.written]
    assert "3 of 5 input(s) could not be predicted (2 prediction(s) written" in str(err)
    assert f"{src / 'b.png'}: " in str(err) and f"{src / 'c.jpg'}: " in str(err)


def test_cli_lists_failures_and_exits_non_zero(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    save_png(src / "a.png")
    (src / "b.tif").write_bytes(b"II*\x00garbage")
    code = main(["predict", "--checkpoint", str(ckpt), "--input", str(src), "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "wrote 1 prediction(s)" in captured.out
    assert "1 of 2 input(s) could not be predicted" in captured.err and "b.tif" in captured.err
    assert "Traceback" not in captured.err
    assert "predict" in captured.err and "case" in captured.err  # the progress bar (tqdm on stderr)
    assert (out / "a.png").is_file()


def test_unreadable_volume_does_not_stop_the_others(tmp_path: Path, ckpt: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    volume = np.random.default_rng(0).normal(size=(6, 20, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.5, 1.0])), src / "good.nii.gz")
    (src / "bad.nii.gz").write_bytes((src / "good.nii.gz").read_bytes()[:60])  # truncated gzip
    with pytest.raises(PredictionError) as info:
        predict_paths(ckpt, src, out, progress=False)
    assert [(p.name, "cannot read NIfTI" in r) for p, r in info.value.failures] == [("bad.nii.gz", True)]
    assert nib.load(out / "good.nii.gz").shape == volume.shape


# ------------------------------------------------------------------------------ channels
def test_channel_mismatch_names_file_counts_and_a_fix_predict_has(tmp_path: Path, ckpt: Path) -> None:
    image = tmp_path / "in" / "two.tif"
    image.parent.mkdir()
    tifffile.imwrite(image, (np.random.default_rng(0).random((20, 24, 2)) * 255).astype(np.uint8))
    with pytest.raises(PredictionError) as info:
        predict_paths(ckpt, image, tmp_path / "out", progress=False)
    message = str(info.value)
    assert str(image) in message
    assert "model expects 1 input channel(s) but the image has 2" in message
    assert "--channels" in message and "data.in_channels" not in message  # a fix predict takes
    written = predict_paths(ckpt, image, tmp_path / "out", progress=False, channels=[1])
    assert np.array(Image.open(written[0])).shape == (20, 24)


def test_channels_option_out_of_range_is_a_sentence(tmp_path: Path, ckpt: Path) -> None:
    image = save_png(tmp_path / "in" / "a.png")
    with pytest.raises(PredictionError, match=r"--channels 1 asks for channel\(s\) 1 but the input has 1"):
        predict_paths(ckpt, image, tmp_path / "out", progress=False, channels=[1])


def test_rgb_model_on_two_channel_image_and_grey_image(tmp_path: Path) -> None:
    ckpt3 = make_checkpoint(tmp_path / "rgb.pt", in_channels=3)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "two.tif", np.zeros((20, 24, 2), np.uint8))
    save_png(src / "grey.png")  # repeated to 3 channels, as in training
    with pytest.raises(PredictionError) as info:
        predict_paths(ckpt3, src, tmp_path / "out", progress=False)
    assert [p.name for p, _ in info.value.failures] == ["two.tif"]
    assert "expects 3 input channel(s) but the image has 2" in str(info.value)
    assert "--channels 0 1 0" in str(info.value)
    assert (tmp_path / "out" / "grey.png").is_file()


def test_volume_channel_mismatch_and_four_d_file(tmp_path: Path) -> None:
    ckpt2 = make_checkpoint(tmp_path / "two.pt", in_channels=2)
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(6, 20, 24, 3)).astype(np.float32), np.eye(4)), src / "c3.nii.gz")
    nib.save(nib.Nifti1Image(rng.normal(size=(6, 20, 24, 2)).astype(np.float32), np.eye(4)), src / "c2.nii.gz")
    with pytest.raises(PredictionError) as info:
        predict_paths(ckpt2, src, tmp_path / "out", progress=False)
    assert [p.name for p, _ in info.value.failures] == ["c3.nii.gz"]
    assert "expects 2 input channel(s) but the volume has 3" in str(info.value)
    assert nib.load(tmp_path / "out" / "c2.nii.gz").shape == (6, 20, 24)
    written = predict_paths(ckpt2, src / "c3.nii.gz", tmp_path / "out3", progress=False, channels=[0, 2])
    assert nib.load(written[0]).shape == (6, 20, 24)


def test_3d_model_on_image_is_a_sentence(tmp_path: Path) -> None:
    ckpt3d = make_checkpoint(tmp_path / "3d.pt", kind="synthetic3d", image_size=[16, 16, 16], num_classes=2,
                             model={"name": "unet3d", "kwargs": {"base": 4, "depth": 2}})
    image = save_png(tmp_path / "in" / "a.png")
    with pytest.raises(PredictionError, match=r"a\.png: the model is 3-D .* give NIfTI volumes"):
        predict_paths(ckpt3d, image, tmp_path / "out", progress=False)


# ------------------------------------------------------------------------------ weights-only loading
def test_checkpoint_needing_unpickling_is_refused(tmp_path: Path, ckpt: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    import argparse

    import torch

    state = torch.load(ckpt, weights_only=True)
    state["args"] = argparse.Namespace(lr=0.1)  # a Python object: weights-only loading refuses it
    save_checkpoint(state, tmp_path / "pickled.pt")
    save_png(tmp_path / "in" / "a.png")
    args = ["predict", "--checkpoint", str(tmp_path / "pickled.pt"), "--input", str(tmp_path / "in")]
    assert main([*args, "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "argparse.Namespace" in err and "re-save it as tensors" in err and not (tmp_path / "out").exists()
    for command in (args, ["evaluate", str(tmp_path / "pickled.pt")]):
        with pytest.raises(SystemExit):  # no flag unpickles it: the old opt-in is gone
            main([*command, "--trust-checkpoint"])
