"""``medseg predict``: masks (and optional probability maps) for new images or volumes.

2-D images are normalised as in training, resized to the training size, and the logits are resized
back to the original size before the sigmoid/softmax. NIfTI volumes (one file per case, or nnU-Net
``_0000``-style channel files) go through MONAI's sliding-window inference and are written with the
input's affine and header.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medseg.config import RunConfig
from medseg.engine.checkpoint import resolve_checkpoint
from medseg.engine.infer import case_logits, forward_logits, labels_from_probabilities, probabilities
from medseg.engine.runtime import Runtime, make_runtime
from medseg.engine.runtime import progress as progress_bar
from medseg.engine.trainer import model_from_checkpoint
from medseg.errors import DataError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_EXT = (".nii", ".nii.gz")
CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")


def stem_of(path: Path) -> str:
    name = path.name
    for ext in VOLUME_EXT + IMAGE_EXT:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def collect_inputs(source: Path) -> list[list[Path]]:
    """Cases to predict: each a list of files (several for multi-channel NIfTI ``_0000``, ``_0001``)."""
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.name.lower().endswith(IMAGE_EXT + VOLUME_EXT))
    else:
        raise DataError(f"input not found: {source}")
    if not files:
        raise DataError(f"no images (PNG/JPG/BMP/TIFF) or volumes (NIfTI) found in {source}")
    groups: dict[str, list[Path]] = {}
    for f in files:
        stem = stem_of(f)
        key = CHANNEL_SUFFIX.sub("", stem) if f.name.lower().endswith(VOLUME_EXT) else stem
        groups.setdefault(key, []).append(f)
    return [sorted(g) for _, g in sorted(groups.items())]


def prepare_image(path: Path, cfg: RunConfig) -> tuple[torch.Tensor, tuple[int, int], tuple | None]:
    """A 2-D image file -> normalised ``1 x C x h x w`` tensor at the training size, its original size, and
    the square padding applied (``data.pad_square``) or None."""
    from medseg.data.datasets2d import resize_to_input, unit_tensor  # the datasets' own preprocessing
    from medseg.data.io import read_image
    from medseg.data.transforms import normalize_image, square_pad_widths

    array = read_image(path)
    original = tuple(array.shape[:2])
    pad = square_pad_widths(original) if cfg.data.pad_square else None
    image = normalize_image(unit_tensor(resize_to_input(array, cfg.data, pad)).float(), cfg.data.normalize)
    return image[None], original, pad


def prepare_volume(paths: Sequence[Path], cfg: RunConfig) -> torch.Tensor:
    """NIfTI channel files -> normalised ``1 x C x D x H x W`` tensor (same normalisation as training)."""
    from medseg.data.nifti_io import load_nifti

    channels = [load_nifti(p)[0].astype(np.float32) for p in paths]
    volume = np.stack(channels, 0)
    try:
        from medseg.data.nifti import normalize_volume

        volume = normalize_volume(volume, cfg.data.nifti)
    except ImportError:  # pragma: no cover - data package without the helper
        pass
    if volume.shape[0] != cfg.data.in_channels:
        raise DataError(f"{paths[0]}: the model expects {cfg.data.in_channels} channel file(s) per case "
                        f"(name_0000.nii.gz, name_0001.nii.gz, ...), found {volume.shape[0]}")
    return torch.from_numpy(np.ascontiguousarray(volume))[None]


def predict_case(model: torch.nn.Module, files: list[Path], cfg: RunConfig, rt: Runtime
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(label map, probability map) of one case at its original size."""
    with torch.no_grad():
        if files[0].name.lower().endswith(VOLUME_EXT):
            volume = prepare_volume(files, cfg)
            logits = case_logits(model, volume, cfg, rt)
        else:
            from medseg.data.transforms import to_original_size

            image, original, pad = prepare_image(files[0], cfg)
            logits = to_original_size(forward_logits(model, image, rt), original, pad)
        prob = probabilities(logits)
        labels = labels_from_probabilities(prob, cfg.eval.threshold)[0].cpu().numpy()
    fg = prob[0, 0] if prob.shape[1] == 1 else 1 - prob[0, 0]
    return labels.astype(np.uint8), fg.cpu().numpy()


def predict_paths(checkpoint: str | Path, source: str | Path, output: str | Path, *,
                  save_probabilities: bool = False, progress: bool = True) -> list[Path]:
    """Predict every image/volume in ``source``; returns the written mask files."""
    from medseg.data.io import write_prediction

    model, cfg = model_from_checkpoint(resolve_checkpoint(checkpoint))
    rt = make_runtime(cfg.train, 2)
    model = model.to(rt.device)
    out_dir = Path(output)
    written: list[Path] = []
    for files in progress_bar(collect_inputs(Path(source)), desc="predict", disable=not progress):
        labels, fg = predict_case(model, files, cfg, rt)
        volume = files[0].name.lower().endswith(VOLUME_EXT)
        name = CHANNEL_SUFFIX.sub("", stem_of(files[0])) if volume else stem_of(files[0])
        suffix = ".nii.gz" if volume else ".png"
        reference = files[0] if volume else None
        written.append(write_prediction(labels, out_dir / f"{name}{suffix}", reference=reference))
        if save_probabilities:
            write_prediction(fg.astype(np.float32), out_dir / f"{name}_prob{suffix}", reference=reference)
    return written
