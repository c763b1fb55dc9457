"""Folder datasets: pairing, resizing, original-size labels, splits and every bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medseg.config import DataConfig, SplitConfig
from medseg.data import build_dataset, split_ids
from medseg.errors import DataError

RNG = np.random.default_rng(1)


def make_folder(root, n=6, size=(20, 30), suffix="", ext="png", rgb=True, labels=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(n):
        shape = (size[0] + k, size[1]) + ((3,) if rgb else ())
        Image.fromarray(RNG.integers(0, 255, shape, dtype=np.uint8)).save(root / "images" / f"c{k:02d}.{ext}")
        if labels is None:
            m = np.zeros(shape[:2], np.uint8)
            m[2:8, 3:12] = 255
        else:
            m = RNG.integers(0, labels, shape[:2]).astype(np.uint8)
        Image.fromarray(m).save(root / "masks" / f"c{k:02d}{suffix}.png")
    return root


def cfg_for(root, **kw) -> DataConfig:
    base = dict(kind="folder2d", root=str(root), image_size=[16, 16], split=dict(mode="fixed"), augment=dict(enabled=False))
    base.update(kw)
    return DataConfig.model_validate(base)


def test_pairs_resize_and_original_label(tmp_path):
    root = make_folder(tmp_path / "d", suffix="_1stHO")
    ds = build_dataset(cfg_for(root, mask_suffix="_1stHO", normalize="none"), "test")
    assert len(ds) == 6 and ds.ids == [f"c{k:02d}" for k in range(6)]
    s = ds[2]
    assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.float32
    assert s["label"].shape == (1, 16, 16) and set(s["label"].unique().tolist()) == {0.0, 1.0}
    assert s["meta"]["original_shape"] == (22, 30) and s["meta"]["dataset"] == "d"
    # oracle: resize the source file independently (bilinear, align_corners False)
    src = np.array(Image.open(root / "images" / "c02.png")).astype(np.float32) / 255
    ref = F.interpolate(torch.from_numpy(src).permute(2, 0, 1)[None], size=(16, 16), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(s["image"], ref, atol=1.5 / 255)
    label, meta = ds.read_original(2)
    expected = (np.array(Image.open(root / "masks" / "c02_1stHO.png")) > 127).astype(np.uint8)
    np.testing.assert_array_equal(label, expected)
    assert meta["path"].endswith("c02.png")


def test_grey_images_repeat_to_three_channels_and_imagenet_norm(tmp_path):
    root = make_folder(tmp_path / "g", rgb=False, ext="bmp")
    ds = build_dataset(cfg_for(root, normalize="imagenet"), "train")
    img = ds[0]["image"]
    assert img.shape == (3, 16, 16)
    raw = img * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)


def test_multiclass_labels(tmp_path):
    root = make_folder(tmp_path / "m", labels=3)
    ds = build_dataset(cfg_for(root, num_classes=3, mask_mode="labels"), "test")
    s = ds[0]
    assert s["label"].dtype == torch.int64 and s["label"].shape == (16, 16)
    assert set(s["label"].unique().tolist()) <= {0, 1, 2}
    with pytest.raises(DataError, match="outside the declared classes"):
        build_dataset(cfg_for(root, num_classes=2, mask_mode="labels"), "test")[0]


def test_cache_holds_resized_cases(tmp_path):
    root = make_folder(tmp_path / "c")
    ds = build_dataset(cfg_for(root), "test")
    a = ds[1]["image"]
    (root / "images" / "c01.png").unlink()  # served from the cache now
    assert torch.equal(ds[1]["image"], a)


# ----------------------------------------------------------------------------------- errors
def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        build_dataset(cfg_for(tmp_path / "absent"), "train")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="images"):
        build_dataset(cfg_for(tmp_path / "x"), "train")


def test_no_pairs(tmp_path):
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    with pytest.raises(DataError, match="no pairs"):
        build_dataset(cfg_for(tmp_path / "e"), "train")


def test_unpaired_images_are_listed(tmp_path):
    root = make_folder(tmp_path / "u")
    (root / "masks" / "c01.png").unlink()
    (root / "masks" / "c04.png").unlink()
    with pytest.raises(DataError, match=r"2 of 6 images.*c01\.png.*c04\.png"):
        build_dataset(cfg_for(root), "train")


def test_size_mismatch(tmp_path):
    root = make_folder(tmp_path / "s")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "c03.png")
    ds = build_dataset(cfg_for(root), "test")
    with pytest.raises(DataError, match=r"c03.*same size"):
        ds[3]


def test_truncated_image_in_dataset(tmp_path):
    root = make_folder(tmp_path / "t")
    p = root / "images" / "c00.png"
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DataError, match="c00.png"):
        build_dataset(cfg_for(root), "test")[0]


# ----------------------------------------------------------------------------------- splits
IDS = [f"s{k:03d}" for k in range(50)]


def test_random_split_partitions_and_is_seeded():
    cfg = SplitConfig(mode="random", val_fraction=0.2, test_fraction=0.1, seed=3)
    parts = {s: split_ids(IDS, cfg, s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [35, 10, 5]
    assert sorted(sum(parts.values(), [])) == IDS
    assert split_ids(IDS, cfg, "test") == parts["test"]
    assert split_ids(IDS, SplitConfig(mode="random", seed=4), "test") != split_ids(IDS, SplitConfig(mode="random", seed=3), "test")


def test_kfold_test_parts_partition_the_cases():
    tests = [split_ids(IDS, SplitConfig(mode="kfold", folds=5, fold=f, val_fraction=0.1), "test") for f in range(5)]
    assert sorted(sum(tests, [])) == IDS and all(len(t) == 10 for t in tests)
    cfg = SplitConfig(mode="kfold", folds=5, fold=2, val_fraction=0.1)
    tr, va = split_ids(IDS, cfg, "train"), split_ids(IDS, cfg, "val")
    assert len(va) == 4 and not set(tr) & set(va) and not (set(tr) | set(va)) & set(tests[2])
    with pytest.raises(DataError, match="fold"):
        split_ids(IDS, SplitConfig(mode="kfold", folds=3, fold=3), "train")


def test_split_file_json_with_val_carved_from_train(tmp_path):
    (tmp_path / "splits.json").write_text(json.dumps({"train": IDS[:40], "test": IDS[40:]}))
    cfg = SplitConfig(mode="file", file="splits.json", val_fraction=0.25)
    tr, va, te = (split_ids(IDS, cfg, s, tmp_path) for s in ("train", "val", "test"))
    assert te == IDS[40:] and len(va) == 10 and sorted(tr + va) == IDS[:40]


def test_split_file_csv_and_unknown_ids(tmp_path):
    rows = ["stem,split"] + [f"{s},{'train' if k < 30 else 'val' if k < 40 else 'test'}" for k, s in enumerate(IDS)]
    (tmp_path / "s.csv").write_text("\n".join(rows))
    cfg = SplitConfig(mode="file", file=str(tmp_path / "s.csv"))
    assert split_ids(IDS, cfg, "val") == IDS[30:40]
    (tmp_path / "bad.json").write_text(json.dumps({"train": ["nope"]}))
    with pytest.raises(DataError, match="nope"):
        split_ids(IDS, SplitConfig(mode="file", file=str(tmp_path / "bad.json")), "train")
    with pytest.raises(DataError, match="split file not found"):
        split_ids(IDS, SplitConfig(mode="file", file=str(tmp_path / "zz.json")), "train")


def test_pad_square_and_back_to_original(tmp_path):
    from medseg.data import to_original_size

    root = tmp_path / "p"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    img = np.zeros((10, 20), np.uint8)
    img[:, :10] = 255  # left half bright
    Image.fromarray(img).save(root / "images" / "a.png")
    Image.fromarray(img).save(root / "masks" / "a.png")
    ds = build_dataset(cfg_for(root, pad_square=True, image_size=[20, 20], in_channels=1, normalize="none"), "test")
    s = ds[0]
    assert s["meta"]["pad"] == (5, 5, 0, 0)
    lab = s["label"][0]
    assert lab[:5].sum() == 0 and lab[15:].sum() == 0 and lab[5:15, :10].all() and lab[5:15, 10:].sum() == 0
    back = to_original_size(s["label"][None], (10, 20), s["meta"]["pad"])[0, 0]
    label, meta = ds.read_original(0)
    np.testing.assert_array_equal((back.numpy() > 0.5).astype(np.uint8), label)
    assert meta["pad"] == (5, 5, 0, 0)
