"""medseg's 2-D folder layout to nnU-Net v2's raw layout (``medseg nnunet convert``; ``docs/nnunet.md``).

Input: ``SOURCE/images/<stem>.<ext>`` + ``SOURCE/masks/<stem><suffix>.<ext>`` (PNG, JPEG, BMP, TIFF), paired,
decoded and binarised exactly as medseg's ``folder2d`` data kind does (:func:`medseg.data.datasets2d.pair_folder`,
:func:`medseg.data.io.read_image`, :func:`medseg.data.io.mask_to_binary`: {0, 1}, {0, 255} and JPEG-noisy 0/255
masks such as Kvasir-SEG's are read, foreground ``> 127`` for the latter; anything else is refused naming the
file, unless ``mask_threshold`` gives ``value > T``; RGB masks by their channel maximum). Label maps with
``num_classes >= 2`` are read as their stored values (:func:`medseg.data.io.mask_to_labels`).

Output: ``OUTPUT/Dataset<ID>_<Name>/`` with ``imagesTr/<case>_0000.png``, ``labelsTr/<case>.png`` (uint8 labels
0/1, or 0..K-1) and ``dataset.json`` (``channel_names``, ``labels``, ``numTraining``, ``file_ending``), as nnU-Net's
own natural-image conversion writes it (``nnunetv2/dataset_conversion/Dataset120_RoadSegmentation.py``): an RGB
image stays one RGB PNG ``<case>_0000.png`` declared as three channels ``{"0": "R", "1": "G", "2": "B"}``, which
nnU-Net's ``NaturalImage2DIO`` reads as three channels; ``separate_channels`` writes three grey PNGs
``_0000/_0001/_0002`` instead (nnU-Net stacks them the same way). Grey images are one channel; when a folder
mixes grey and RGB images the grey ones are repeated to three channels (medseg's ``match_channels``). JPEG
inputs become PNG: nnU-Net reads no JPEG, and labels must be lossless.

``size``: images are resized bilinearly and labels by nearest neighbour after binarisation, the order medseg's
own 2-D pipeline uses (``Base2D._prepared``). ``split``: medseg's train/val/test split
(:func:`medseg.data.splits.split_ids`); train and val cases go to ``imagesTr``/``labelsTr`` and
``splits_final.json`` holds one fold ``[{"train": [...], "val": [...]}]`` (nnU-Net's fold 0), test cases go to
``imagesTs``/``labelsTs``; ``medseg_split.json`` keeps the three lists in medseg's split-file format.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from medseg.config import SplitConfig
from medseg.data.datasets2d import _resize, pair_folder
from medseg.data.io import mask_to_binary, mask_to_labels, read_image
from medseg.data.splits import SPLITS, split_ids
from medseg.data.transforms import match_channels
from medseg.errors import DataError
from medseg.integrations.nnunet.errors import NNUNetError
from medseg.masks import MaskFixes

log = logging.getLogger("medseg")

FIXES = MaskFixes(labels="--num-classes {k}", threshold="--mask-threshold {t}")
RGB_NAMES = {"0": "R", "1": "G", "2": "B"}  # nnU-Net's Dataset120_RoadSegmentation
SPLITS_FILE = "splits_final.json"
MEDSEG_SPLIT_FILE = "medseg_split.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass
class Converted:
    """What :func:`convert_folder` wrote: the dataset folder and the case names of each part."""

    folder: Path
    channels: int
    parts: dict[str, list[str]] = field(default_factory=dict)
    splits_files: list[Path] = field(default_factory=list)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<ID, 3 digits>_<Name>`` after checking both (nnU-Net ids are 1..999)."""
    if not 1 <= int(dataset_id) <= 999:
        raise NNUNetError(f"--dataset-id must be 1..999 (nnU-Net folder Dataset<ID>_<Name>), got {dataset_id}")
    if not _NAME.fullmatch(name):
        raise NNUNetError(f"--name '{name}' must be letters, digits, '_' or '-' (it becomes part of the folder name "
                          f"Dataset{int(dataset_id):03d}_<Name>), e.g. --name KvasirSEG")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _output_root(output: str | Path | None) -> Path:
    if output is not None:
        return Path(output).expanduser()
    if not os.environ.get("nnUNet_raw"):
        raise NNUNetError("no output folder: pass --output or export nnUNet_raw=/data/nnUNet_raw (see docs/nnunet.md)")
    return Path(os.environ["nnUNet_raw"])


def _check_target(root: Path, folder_name: str, overwrite: bool) -> Path:
    """The dataset folder to write; refuses an existing one without ``overwrite`` and another name for the id."""
    target = root / folder_name
    prefix = folder_name[:len("Dataset000")]
    clash = sorted(p.name for p in root.glob(f"{prefix}_*") if p.name != folder_name) if root.is_dir() else []
    if clash:
        raise NNUNetError(f"{root} already has {clash[0]} with dataset id {int(prefix[7:])}; nnU-Net resolves an id "
                          f"to one folder only: pick another --dataset-id or remove {root / clash[0]}")
    if target.exists() and not overwrite:
        raise NNUNetError(f"{target} already exists; pass --overwrite to replace it (the folder is deleted and "
                          f"rewritten) or choose another --dataset-id/--name")
    return target


def split_parts(stems: Sequence[str], split: SplitConfig | None, root: Path) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` by medseg's split rules, or every case in ``train`` without ``split``."""
    if split is None:
        return {"train": list(stems), "val": [], "test": []}
    parts = {s: split_ids(stems, split, s, root) for s in SPLITS}
    if not parts["val"]:
        raise NNUNetError("the split has no validation case, but nnU-Net's fold 0 validates on it: set "
                          "--val-fraction > 0 or give a split file with a 'val' list")
    return parts


def _image_channels(paths: Sequence[Path]) -> int:
    """3 when any image has colour bands (read from the file headers), else 1."""
    for path in paths:
        try:
            with Image.open(path) as img:
                bands = len(img.getbands()) if img.mode != "P" else 1  # palette: medseg reads the indices
        except (OSError, ValueError):
            img_arr = read_image(path)
            bands = img_arr.shape[-1] if img_arr.ndim == 3 else 1
        if bands >= 3:
            return 3
    return 1


def _as_png_image(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if image.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: image dtype {image.dtype} cannot be stored losslessly as an 8/16-bit PNG for "
                        f"nnU-Net; convert the image to 8 or 16 bit first")
    return image


def _read_label(mask_path: Path, num_classes: int, threshold: float | None) -> np.ndarray:
    raw = read_image(mask_path)
    if num_classes > 1:
        return mask_to_labels(raw, num_classes, mask_path).astype(np.uint8)
    return mask_to_binary(raw, threshold, mask_path, fixes=FIXES)


def _write_png(path: Path, array: np.ndarray) -> None:
    data = array[..., ::-1] if array.ndim == 3 else array  # OpenCV writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        raise DataError(f"cannot write {path}; check the folder is writable and has space")


def convert_case(image_path: Path, mask_path: Path, case: str, images_out: Path, labels_out: Path, channels: int,
                 size: Sequence[int] | None = None, num_classes: int = 1, mask_threshold: float | None = None,
                 separate_channels: bool = False) -> None:
    """One pair to ``images_out/<case>_000C.png`` and ``labels_out/<case>.png``."""
    image = _as_png_image(read_image(image_path), image_path)
    label = _read_label(mask_path, num_classes, mask_threshold)
    if image.shape[:2] != label.shape[:2]:
        raise DataError(f"case '{case}': image {image_path} is {image.shape[:2]} but its mask {mask_path} is "
                        f"{label.shape[:2]}; image and mask must have the same size (fix or remove the pair)")
    image = match_channels(image, channels)
    if size is not None:
        image = _resize(image, size, nearest=False)  # bilinear, as medseg's 2-D pipeline
        label = _resize(label, size, nearest=True)
    if separate_channels or channels == 1:
        for c in range(channels):
            _write_png(images_out / f"{case}_{c:04d}.png", image[..., c])
    else:
        _write_png(images_out / f"{case}_0000.png", image)
    _write_png(labels_out / f"{case}.png", label.astype(np.uint8))


def dataset_json(channels: int, separate_channels: bool, num_classes: int, label_names: Sequence[str] | None,
                 num_training: int, **extra) -> dict:
    """nnU-Net's ``dataset.json`` (the keys ``generate_dataset_json`` writes) for the converted PNGs."""
    names = list(label_names or (["foreground"] if num_classes == 1 else [f"class_{k}" for k in
                                                                         range(1, num_classes)]))
    if len(names) != max(1, num_classes - 1):
        raise NNUNetError(f"--label-names gives {len(names)} name(s) but the task has {max(1, num_classes - 1)} "
                          f"foreground label(s); give one name per label 1..{max(1, num_classes - 1)}")
    if channels == 3:
        channel_names = dict(RGB_NAMES)
    else:
        channel_names = {"0": "grey"}
    labels = {"background": 0, **{n: k for k, n in enumerate(names, start=1)}}
    return {"channel_names": channel_names, "labels": labels, "numTraining": num_training, "file_ending": ".png",
            "converted_by": "medseg nnunet convert", **extra}


def _write_splits(folder: Path, parts: dict[str, list[str]], name: str, overwrite: bool) -> list[Path]:
    """``splits_final.json`` (one fold) in the raw folder and, with ``nnUNet_preprocessed`` set, where nnU-Net
    reads it (``$nnUNet_preprocessed/<name>/``); a different existing file there is kept unless ``overwrite``."""
    splits = [{"train": sorted(parts["train"]), "val": sorted(parts["val"])}]
    text = json.dumps(splits, indent=2)
    (folder / SPLITS_FILE).write_text(text)
    (folder / MEDSEG_SPLIT_FILE).write_text(json.dumps({k: sorted(v) for k, v in parts.items()}, indent=2))
    written = [folder / SPLITS_FILE]
    if os.environ.get("nnUNet_preprocessed"):
        target = Path(os.environ["nnUNet_preprocessed"]) / name / SPLITS_FILE
        if target.is_file() and target.read_text() != text and not overwrite:
            raise NNUNetError(f"{target} exists with another split; pass --overwrite to replace it, or remove it")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written


def convert_folder(source: str | Path, dataset_id: int, name: str, output: str | Path | None = None,
                   split: SplitConfig | None = None, size: Sequence[int] | None = None, overwrite: bool = False,
                   num_classes: int = 1, mask_threshold: float | None = None, separate_channels: bool = False,
                   label_names: Sequence[str] | None = None, images_dir: str = "images", masks_dir: str = "masks",
                   mask_suffix: str = "") -> Converted:
    """Write ``Dataset<ID>_<Name>`` in nnU-Net's raw layout from a medseg 2-D folder (module docstring).

    The dataset is written into a hidden ``.<folder>.partial`` folder and renamed when complete, so a failure
    (an unreadable file, a mask that is not binary) leaves no half dataset behind.
    """
    source = Path(source).expanduser()
    folder_name = dataset_folder_name(dataset_id, name)
    root = _output_root(output)
    target = _check_target(root, folder_name, overwrite)
    if size is not None and (len(size) != 2 or min(size) < 8):
        raise NNUNetError(f"--size takes one or two sizes >= 8 (H [W]), got {list(size)}")
    pairs = pair_folder(source, images_dir, masks_dir, mask_suffix)
    parts = split_parts([stem for stem, _, _ in pairs], split, source)
    by_stem = {stem: (image, mask) for stem, image, mask in pairs}
    channels = _image_channels([image for _, image, _ in pairs])
    work = root / f".{folder_name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _write_parts(work, parts, by_stem, channels, size, num_classes, mask_threshold, separate_channels)
        info = {"name": folder_name, "medseg": {
            "source": str(source), "size": list(size) if size is not None else None, "channels_as": (
                "one RGB PNG per case (_0000)" if channels == 3 and not separate_channels else "one PNG per channel"),
            "mask_rule": f"value > {mask_threshold}" if mask_threshold is not None else "medseg.masks.binary_mask",
            "cases": {k: len(v) for k, v in parts.items()}}}
        js = dataset_json(channels, separate_channels, num_classes, label_names,
                          len(parts["train"]) + len(parts["val"]), **info)
        (work / "dataset.json").write_text(json.dumps(js, indent=2))
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    splits_files = _write_splits(target, parts, folder_name, overwrite) if split is not None else []
    log.info("wrote %s: %d training case(s) (imagesTr), %d test case(s) (imagesTs), %d channel(s)", target,
             len(parts["train"]) + len(parts["val"]), len(parts["test"]), channels)
    return Converted(target, channels, parts, splits_files)


def _write_parts(work: Path, parts: dict[str, list[str]], by_stem: dict[str, tuple[Path, Path]], channels: int,
                 size: Sequence[int] | None, num_classes: int, mask_threshold: float | None,
                 separate_channels: bool) -> None:
    for part, cases in (("Tr", parts["train"] + parts["val"]), ("Ts", parts["test"])):
        if not cases:
            continue
        images_out, labels_out = work / f"images{part}", work / f"labels{part}"
        images_out.mkdir(parents=True)
        labels_out.mkdir()
        for case in cases:
            image_path, mask_path = by_stem[case]
            convert_case(image_path, mask_path, case, images_out, labels_out, channels, size, num_classes,
                         mask_threshold, separate_channels)
