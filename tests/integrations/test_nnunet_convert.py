"""``medseg nnunet convert`` (medseg 2-D folder -> nnU-Net v2 raw layout) and ``medseg metrics`` on nnU-Net's
prediction folders.

Tiny synthetic folders (5 or 6 cases, 32 x 32 or smaller). Oracles: the source pixels themselves, masks
binarised by hand (Kvasir-SEG's documented rule: threshold JPEG-noisy masks at 128), cv2's nearest rule worked
by hand for an exact factor 2 (destination pixel i reads source pixel 2i), nnU-Net's own
``verify_dataset_integrity`` and its ``NaturalImage2DIO`` reader, medseg's ``folder2d`` dataset (the converter
must give what medseg's training reads), and medpy's ``dc`` for the metrics.
"""
from __future__ import annotations

import csv
import json
import multiprocessing.pool
import pickle
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (the nnunet extra: pip install 'medseg[nnunet]')")
cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")

from medseg.cli import main as cli_main  # noqa: E402
from medseg.config import DataConfig  # noqa: E402
from medseg.data.datasets2d import Folder2D  # noqa: E402


def _disc(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3), rng.integers(4, 8)
    return ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r


def _source(root: Path, cases: int = 6, jpeg_masks: bool = True, grey: bool = False) -> dict[str, np.ndarray]:
    """``root/images/*.png`` (RGB or grey) and ``root/masks/*`` (JPEG RGB 0/255 masks with JPEG noise, as
    Kvasir-SEG's, or PNG 0/255); returns the binary masks by the documented rule (value >= 128)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(cases):
        h, w = (32, 32) if i % 2 == 0 else (32, 24)
        disc = _disc(h, w, rng)
        image = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{i}.png")
        mask = np.repeat((disc * 255).astype(np.uint8)[..., None], 3, axis=-1)
        if jpeg_masks:
            Image.fromarray(mask).save(root / "masks" / f"case{i}.jpg", quality=90)
            stored = np.asarray(Image.open(root / "masks" / f"case{i}.jpg"))
        else:
            Image.fromarray(mask).save(root / "masks" / f"case{i}.png")
            stored = mask
        truth[f"case{i}"] = stored.max(axis=-1) >= 128
    return truth


def _convert(src: Path, out: Path, *extra: str, dataset_id: str = "611", name: str = "Tiny") -> int:
    return cli_main(["nnunet", "convert", str(src), "--dataset-id", dataset_id, "--name", name, "--output", str(out),
                     *extra])


def _verify(folder: Path, monkeypatch) -> None:
    """nnU-Net's own integrity check (its spawn pool replaced by threads: same checks, no child interpreters)."""
    import nnunetv2.experiment_planning.verify_dataset_integrity as vdi

    threads = types.SimpleNamespace(get_context=lambda *_: types.SimpleNamespace(Pool=multiprocessing.pool.ThreadPool))
    monkeypatch.setattr(vdi, "multiprocessing", threads)
    vdi.verify_dataset_integrity(str(folder), num_processes=1)


@pytest.fixture
def no_nnunet_env(monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)


def test_convert_kvasir_like_folder_is_accepted_by_nnunet_and_keeps_pixels(tmp_path, monkeypatch, no_nnunet_env):
    truth = _source(tmp_path / "src")
    assert _convert(tmp_path / "src", tmp_path / "raw") == 0
    folder = tmp_path / "raw" / "Dataset611_Tiny"
    js = json.loads((folder / "dataset.json").read_text())
    assert js["channel_names"] == {"0": "R", "1": "G", "2": "B"} and js["labels"] == {"background": 0, "foreground": 1}
    assert js["numTraining"] == 6 and js["file_ending"] == ".png"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"case{i}_0000.png" for i in range(6)]
    assert not (folder / "imagesTs").exists() and not (folder / "splits_final.json").exists()
    _verify(folder, monkeypatch)
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    raw = np.asarray(Image.open(tmp_path / "src" / "masks" / "case0.jpg")).max(-1)
    assert (truth["case0"] != (raw > 0)).any()  # the JPEG noise is really there: "> 0" would give another mask
    for case, want in truth.items():
        image, _ = NaturalImage2DIO().read_images([str(folder / "imagesTr" / f"{case}_0000.png")])
        source = np.asarray(Image.open(tmp_path / "src" / "images" / f"{case}.png"))
        np.testing.assert_array_equal(image[:, 0], source.transpose(2, 0, 1))  # channels R, G, B in that order
        label = np.asarray(Image.open(folder / "labelsTr" / f"{case}.png"))
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        np.testing.assert_array_equal(label, want.astype(np.uint8))


@pytest.mark.parametrize("extra, grey, files", [
    (["--separate-channels"], False, ["_0000", "_0001", "_0002"]),  # three grey PNGs per RGB case
    ([], True, ["_0000"]),  # a grey folder: one channel
])
def test_channel_layouts_are_accepted_by_nnunet(tmp_path, monkeypatch, no_nnunet_env, extra, grey, files):
    _source(tmp_path / "src", cases=4, jpeg_masks=False, grey=grey)
    assert _convert(tmp_path / "src", tmp_path / "raw", *extra) == 0
    folder = tmp_path / "raw" / "Dataset611_Tiny"
    assert sorted(p.name for p in (folder / "imagesTr").glob("case0_*")) == [f"case0{f}.png" for f in files]
    assert len(json.loads((folder / "dataset.json").read_text())["channel_names"]) == len(files)
    _verify(folder, monkeypatch)
    source = np.asarray(Image.open(tmp_path / "src" / "images" / "case1.png"))
    for c, suffix in enumerate(files):
        got = np.asarray(Image.open(folder / "imagesTr" / f"case1{suffix}.png"))
        np.testing.assert_array_equal(got, source if grey else source[..., c])


def test_split_size_and_imagests_match_medsegs_folder_reader(tmp_path, monkeypatch):
    truth = _source(tmp_path / "src")
    pre = tmp_path / "pre"
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))  # the default output folder
    args = ["--split", "random", "--val-fraction", "0.2", "--test-fraction", "0.34", "--seed", "3", "--size", "16"]
    assert cli_main(["nnunet", "convert", str(tmp_path / "src"), "--dataset-id", "611", "--name", "Tiny", *args]) == 0
    folder = tmp_path / "raw" / "Dataset611_Tiny"
    # medseg's own split of the same folder: the oracle for which case goes where (val and test splits: no
    # augmentation pipeline is built, so torchvision is not imported)
    kw = dict(kind="folder2d", root=str(tmp_path / "src"), image_size=[16, 16], in_channels=3)
    cfg = DataConfig(**kw, split={"mode": "random", "val_fraction": 0.2, "test_fraction": 0.34, "seed": 3})
    val_ids, test_ids = sorted(Folder2D(cfg, "val").ids), sorted(Folder2D(cfg, "test").ids)
    train_ids = sorted(set(truth) - set(val_ids) - set(test_ids))
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == [{"train": train_ids, "val": val_ids}] and len(test_ids) == 2
    assert json.loads((pre / "Dataset611_Tiny" / "splits_final.json").read_text()) == splits  # where nnU-Net reads it
    assert sorted(p.name[:-9] for p in (folder / "imagesTs").iterdir()) == test_ids
    assert sorted(p.stem for p in (folder / "labelsTs").iterdir()) == test_ids
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 4
    assert json.loads((folder / "medseg_split.json").read_text())["test"] == test_ids
    _verify(folder, monkeypatch)
    every = Folder2D(DataConfig(**kw, split={"mode": "fixed"}), "test")  # every case, as medseg's training reads it
    for i, case in enumerate(every.ids):
        sub = "Ts" if case in test_ids else "Tr"
        label = np.asarray(Image.open(folder / f"labels{sub}" / f"{case}.png"))
        image = np.asarray(Image.open(folder / f"images{sub}" / f"{case}_0000.png"))
        assert label.shape == (16, 16) and image.shape == (16, 16, 3)
        if truth[case].shape == (32, 32):  # exact factor 2: nearest reads source pixel 2i (cv2's rule)
            np.testing.assert_array_equal(label, truth[case][::2, ::2].astype(np.uint8))
        medseg_image, medseg_label, _ = every._prepared(i)
        np.testing.assert_array_equal(label, medseg_label)
        np.testing.assert_array_equal(image, medseg_image)


# ------------------------------------------------------------------------------------------ bad input
def _error(args: list[str], capsys) -> str:
    assert cli_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_existing_dataset_is_kept_without_overwrite(tmp_path, capsys, no_nnunet_env):
    _source(tmp_path / "src", cases=3, jpeg_masks=False)
    assert _convert(tmp_path / "src", tmp_path / "raw") == 0
    marker = tmp_path / "raw" / "Dataset611_Tiny" / "imagesTr" / "keep.txt"
    marker.write_text("x")
    msg = _error(["nnunet", "convert", str(tmp_path / "src"), "--dataset-id", "611", "--name", "Tiny", "--output",
                  str(tmp_path / "raw")], capsys)
    assert "Dataset611_Tiny already exists" in msg and "--overwrite" in msg and marker.is_file()
    msg = _error(["nnunet", "convert", str(tmp_path / "src"), "--dataset-id", "611", "--name", "Other", "--output",
                  str(tmp_path / "raw")], capsys)  # same id, other name: nnU-Net could not tell them apart
    assert "Dataset611_Tiny with dataset id 611" in msg
    capsys.readouterr()
    assert _convert(tmp_path / "src", tmp_path / "raw", "--overwrite") == 0
    assert not marker.exists() and len(list((tmp_path / "raw" / "Dataset611_Tiny" / "imagesTr").iterdir())) == 3


def test_grey_mask_pixels_are_refused_naming_the_file_or_thresholded_on_request(tmp_path, capsys, no_nnunet_env):
    _source(tmp_path / "src", cases=3, jpeg_masks=False)
    bad = tmp_path / "src" / "masks" / "case1.png"
    mask = np.asarray(Image.open(bad))[..., 0].copy()
    mask[0, :3] = (100, 128, 200)  # antialiased edge pixels on a 0/255 mask: medseg refuses to guess
    Image.fromarray(mask).save(bad)
    msg = _error(["nnunet", "convert", str(tmp_path / "src"), "--dataset-id", "611", "--name", "Tiny", "--output",
                  str(tmp_path / "raw")], capsys)
    assert str(bad) in msg and "--mask-threshold 127" in msg and "data.mask_threshold" not in msg
    assert not list((tmp_path / "raw").iterdir())  # nothing half-written
    assert _convert(tmp_path / "src", tmp_path / "raw", "--mask-threshold", "127") == 0
    label = np.asarray(Image.open(tmp_path / "raw" / "Dataset611_Tiny" / "labelsTr" / "case1.png"))
    np.testing.assert_array_equal(label, (mask > 127).astype(np.uint8))


@pytest.mark.parametrize("args, fragment", [
    (["--dataset-id", "1000", "--name", "Tiny"], "--dataset-id must be 1..999"),
    (["--dataset-id", "611", "--name", "Tiny Set"], "--name 'Tiny Set' must be letters"),
    (["--dataset-id", "611", "--name", "Tiny", "--split", "random", "--val-fraction", "0", "--test-fraction", "0"],
     "set --val-fraction > 0"),
    (["--dataset-id", "611", "--name", "Tiny", "--split", "nosuch.json"], "split file not found"),
    (["--dataset-id", "611", "--name", "Tiny", "--split", "random", "--test-fraction", "1.5"],
     "--test-fraction must be in [0, 1), got 1.5"),
    (["--dataset-id", "611", "--name", "Tiny", "--size", "4"], "--size takes one or two sizes >= 8"),
])
def test_bad_options_name_the_fix(tmp_path, capsys, no_nnunet_env, args, fragment):
    _source(tmp_path / "src", cases=3, jpeg_masks=False)
    msg = _error(["nnunet", "convert", str(tmp_path / "src"), "--output", str(tmp_path / "raw"), *args], capsys)
    assert fragment in msg


def test_bad_pairs_name_the_files(tmp_path, capsys, no_nnunet_env):
    _source(tmp_path / "src", cases=3, jpeg_masks=False)
    small = tmp_path / "src" / "masks" / "case2.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small)
    msg = _error(["nnunet", "convert", str(tmp_path / "src"), "--dataset-id", "611", "--name", "T", "--output",
                  str(tmp_path / "raw")], capsys)
    assert "case2.png" in msg and str(small) in msg and "same size" in msg
    (tmp_path / "src" / "images" / "orphan.png").write_bytes((tmp_path / "src" / "images" / "case0.png").read_bytes())
    msg = _error(["nnunet", "convert", str(tmp_path / "src"), "--dataset-id", "611", "--name", "T", "--output",
                  str(tmp_path / "raw")], capsys)
    assert "no mask" in msg and "orphan.png" in msg


def test_no_output_folder_names_nnunet_raw(tmp_path, capsys, no_nnunet_env):
    _source(tmp_path / "src", cases=3, jpeg_masks=False)
    msg = _error(["nnunet", "convert", str(tmp_path / "src"), "--dataset-id", "611", "--name", "T"], capsys)
    assert "--output" in msg and "nnUNet_raw" in msg


# --------------------------------------------------------------- medseg metrics on nnU-Net prediction folders
def _nnunet_prediction_folder(folder: Path, writer, segs: dict[str, np.ndarray], properties: dict) -> None:
    """What nnUNetPredictor.predict_from_files leaves in its output folder: one segmentation per case (written
    by nnU-Net's reader/writer), its three json files, and with --save_probabilities an .npz and .pkl per case."""
    folder.mkdir()
    for case, seg in segs.items():
        writer.write_seg(seg if seg.ndim == 3 else seg[None], str(folder / f"{case}{properties['ending']}"),
                         properties)
        np.savez_compressed(folder / f"{case}.npz", probabilities=np.stack([1.0 - seg, seg]).astype(np.float16))
        (folder / f"{case}.pkl").write_bytes(pickle.dumps({"spacing": [1.0, 1.0]}))
    for name in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
        (folder / name).write_text(json.dumps({"file_ending": properties["ending"]}))


@pytest.mark.parametrize("fmt", ["png", "nifti"])
def test_metrics_scores_nnunet_prediction_folders_like_medpy(tmp_path, fmt, no_nnunet_env):
    medpy_binary = pytest.importorskip("medpy.metric.binary")
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(1)
    if fmt == "png":  # GT as the converter writes labelsTr / labelsTs; predictions as NaturalImage2DIO
        _source(tmp_path / "src", cases=4, jpeg_masks=True)
        assert _convert(tmp_path / "src", tmp_path / "raw", "--split", "random", "--test-fraction", "0.5",
                        "--val-fraction", "0.25") == 0
        gt_dir = tmp_path / "raw" / "Dataset611_Tiny" / "labelsTs"
        gts = {p.stem: np.asarray(Image.open(p)) for p in gt_dir.iterdir()}
        writer, props = NaturalImage2DIO(), {"ending": ".png"}
    else:  # 3-D labelsTr and predictions as nnU-Net's SimpleITKIO writes them
        gt_dir = tmp_path / "labelsTr"
        gt_dir.mkdir()
        writer = SimpleITKIO()
        props = {"ending": ".nii.gz", "sitk_stuff": {"spacing": (0.8, 0.8, 2.5), "origin": (0.0, 0.0, 0.0),
                                                     "direction": tuple(np.eye(3).ravel())}}
        gts = {f"case{i}": (rng.random((5, 16, 12)) > 0.7).astype(np.uint8) for i in range(3)}
        for case, gt in gts.items():
            writer.write_seg(gt, str(gt_dir / f"{case}.nii.gz"), props)
    preds = {}
    for k, (case, gt) in enumerate(sorted(gts.items())):
        flip = rng.random(gt.shape) > 0.8
        preds[case] = np.where(flip, 1 - gt, gt).astype(np.uint8)
        if k == 0:
            preds[case][:] = 0  # an empty prediction: Dice 0 (medpy's dc gives 0 too)
    _nnunet_prediction_folder(tmp_path / "pred", writer, preds, props)
    out = tmp_path / "scores.csv"
    assert cli_main(["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(gt_dir), "--metrics", "dice",
                     "--workers", "1", "--output", str(out)]) == 0
    rows = {r["case"]: float(r["dice"]) for r in csv.DictReader(out.open())}
    assert sorted(rows) == sorted(gts)
    for case, gt in gts.items():
        assert rows[case] == pytest.approx(medpy_binary.dc(preds[case], gt), abs=1e-12)
