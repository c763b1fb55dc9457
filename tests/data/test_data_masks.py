"""Training reads masks by the rule ``medseg metrics`` uses (``medseg.masks``): label maps in a binary task,
stray grey pixels, JPEG noise, truncated JPEGs. Expected labels come from independent NumPy/Pillow reads."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.config import DataConfig
from medseg.data import build_dataset, read_image, read_mask
from medseg.errors import DataError

RNG = np.random.default_rng(3)


def _folder(root: Path, masks: dict[str, np.ndarray], mask_ext: str = "png") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, mask in masks.items():
        Image.fromarray(RNG.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        if mask_ext in ("tif", "tiff"):
            tifffile.imwrite(root / "masks" / f"{stem}.{mask_ext}", mask)
        else:
            Image.fromarray(mask).save(root / "masks" / f"{stem}.{mask_ext}")
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    base = dict(kind="folder2d", root=str(root), image_size=[16, 16], split=dict(mode="fixed"),
                augment=dict(enabled=False))
    return DataConfig.model_validate({**base, **kw})


def _label_map() -> np.ndarray:
    labels = np.zeros((24, 30), np.uint8)
    labels[2:10, 3:12], labels[12:20, 15:28] = 1, 2
    return labels


def _disk(shape: tuple[int, int], r: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, (shape[1] // 2, shape[0] // 2), r, 255, -1)
    return m


def test_label_map_mask_in_a_binary_task_is_an_error_naming_file_values_and_fixes(tmp_path: Path) -> None:
    labels = _label_map()
    ok = _disk((24, 30), 8)
    root = _folder(tmp_path / "d", {"c00": ok, "c01": labels})
    ds = build_dataset(_cfg(root), "test")
    np.testing.assert_array_equal(ds.read_original(0)[0], (ok == 255).astype(np.uint8))
    pattern = (r"(?s)masks/c01\.png.*not binary.*0 \(x544\), 1 \(x72\), 2 \(x104\).*"
               r"data\.num_classes: 3 with data\.mask_mode: labels.*data\.mask_threshold: T")
    with pytest.raises(DataError, match=pattern):
        ds[1]  # before: an empty mask, trained on silently
    with pytest.raises(DataError, match=pattern):
        ds.read_original(1)  # evaluation reads the original-size label the same way
    # the two fixes named in the message
    fg = build_dataset(_cfg(root, mask_threshold=0), "test").read_original(1)[0]
    np.testing.assert_array_equal(fg, (labels > 0).astype(np.uint8))
    multi = build_dataset(_cfg(root, num_classes=3, mask_mode="labels"), "test").read_original(1)[0]
    np.testing.assert_array_equal(multi, labels.astype(np.int64))


def test_medseg_train_on_label_map_masks_stops_with_one_line_before_training(tmp_path: Path, capsys) -> None:
    import yaml

    from medseg.cli import main

    masks = {f"c{k}": _disk((24, 30), 6 + k) for k in range(3)}
    masks["c1"] = _label_map()
    root = _folder(tmp_path / "d", masks)
    raw = {"name": "lm", "output_dir": str(tmp_path / "runs"),
           "data": {"kind": "folder2d", "root": str(root), "image_size": [16, 16], "batch_size": 2,
                    "split": {"mode": "fixed"}, "augment": {"enabled": False}},
           "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}},
           "train": {"epochs": 1, "progress": False, "max_steps_per_epoch": 1}, "eval": {"metrics": ["dice"]}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks/c1.png" in err[0] and "data.mask_threshold" in err[0]
    assert not list((tmp_path / "runs").rglob("*.pt"))


def test_stray_grey_tiff_mask_is_refused_with_threshold_advice(tmp_path: Path) -> None:
    mask = _disk((40, 40), 12)
    edge = np.argwhere(mask ^ cv2.erode(mask, np.ones((3, 3), np.uint8)))[:30]
    mask[edge[:, 0], edge[:, 1]] = np.linspace(1, 250, len(edge)).astype(np.uint8)
    root = _folder(tmp_path / "d", {"p1": mask}, mask_ext="tif")
    with pytest.raises(DataError, match=r"(?s)p1\.tif.*30 stray grey.*data\.mask_threshold: 127"):
        build_dataset(_cfg(root), "test")[0]
    got = build_dataset(_cfg(root, mask_threshold=127), "test").read_original(0)[0]
    np.testing.assert_array_equal(got, (mask > 127).astype(np.uint8))


def test_jpeg_noisy_01_and_0255_masks_are_read(tmp_path: Path) -> None:
    disk = _disk((48, 64), 15)
    Image.fromarray(disk).convert("RGB").save(tmp_path / "j.jpg", quality=75)
    noisy = np.array(Image.open(tmp_path / "j.jpg"))
    assert len(np.unique(noisy)) > 10
    np.testing.assert_array_equal(read_mask(tmp_path / "j.jpg"), (noisy.max(axis=-1) > 127).astype(np.uint8))
    for name, arr in (("a.png", disk), ("b.png", (disk > 0).astype(np.uint8))):
        Image.fromarray(arr).save(tmp_path / name)
        np.testing.assert_array_equal(read_mask(tmp_path / name), (disk > 0).astype(np.uint8))
        # a threshold meant for 8-bit masks does not empty a 0/1 mask
        np.testing.assert_array_equal(read_mask(tmp_path / name, threshold=127), (disk > 0).astype(np.uint8))
    Image.fromarray((disk > 0).astype(np.uint8) * 2).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png.*data\.num_classes: 3"):  # {0, 2}: labels, not noise
        read_mask(tmp_path / "c.png")


def _truncated_jpeg(path: Path, array: np.ndarray) -> bytes:
    Image.fromarray(array).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # cut off the last third
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None  # OpenCV half-decodes it
    return data


def test_truncated_jpeg_image_or_mask_is_unreadable(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", {"c00": _disk((60, 80), 20), "c01": _disk((60, 80), 25)})
    image = cv2.GaussianBlur(RNG.integers(0, 255, (60, 80, 3), dtype=np.uint8), (0, 0), 2)
    (root / "images" / "c00.png").unlink()
    data = _truncated_jpeg(root / "images" / "c00.jpg", image)
    with pytest.raises(DataError, match=r"images/c00\.jpg.*truncated"):
        read_image(root / "images" / "c00.jpg")
    with pytest.raises(DataError, match=r"c00\.jpg.*truncated"):
        build_dataset(_cfg(root), "test")[0]
    (root / "images" / "c00.jpg").write_bytes(data + b"\x00" * 16)  # bytes after the end marker are fine
    assert read_image(root / "images" / "c00.jpg").shape == (60, 80, 3)
    (root / "masks" / "c01.png").unlink()
    _truncated_jpeg(root / "masks" / "c01.jpg", _disk((60, 80), 25))
    with pytest.raises(DataError, match=r"masks/c01\.jpg.*truncated"):
        build_dataset(_cfg(root), "test")[1]


@pytest.mark.realdata
@pytest.mark.parametrize("name,suffix,stride,oracle", [
    ("kvasir-seg", "", 20, lambda im: np.array(im.convert("L")) >= 128),  # SOURCE.md: RGB, equal channels, threshold 128
    ("covid-semiseg", "", 4, lambda im: np.array(im) == 255),  # SOURCE.md: values exactly {0, 255}
    ("chase-db1", "_1stHO", 2, lambda im: np.array(im)),  # SOURCE.md: 1-bit PNG, True = vessel
])
def test_real_masks_read_as_before(real_dataset, name: str, suffix: str, stride: int, oracle) -> None:
    files = sorted(p for p in (real_dataset(name) / "masks").iterdir() if p.stem.endswith(suffix))[::stride]
    assert files
    for path in files:
        with Image.open(path) as im:
            expected = oracle(im).astype(np.uint8)
        np.testing.assert_array_equal(read_mask(path), expected, err_msg=str(path))
