"""NIfTI datasets: case discovery (nnU-Net/MSD, case-folder and flat layouts), intensity
normalisation (CT window + z-score, MRI non-zero z-score), label remapping, and :class:`NiftiVolumes`
(with ``nifti.regions``: BraTS WT/TC/ET channels as the training label, ``docs/cwcd.md``).

Items (patches, slices, whole volumes) follow :class:`medseg.data.volumes.VolumeDataset`.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import DataConfig, NiftiConfig
from medseg.data.io import check_labels
from medseg.data.nifti_io import load_nifti
from medseg.data.regions import region_label_sample
from medseg.data.resample import to_network_grid
from medseg.data.splits import split_ids
from medseg.data.views import window_scale
from medseg.data.volumes import VolumeDataset
from medseg.errors import DataError

NII = (".nii.gz", ".nii")


@dataclass
class VolumeCase:
    """One case on disk: channel files (or one 4-D file) and the label file."""

    id: str
    images: list[Path]
    label: Path | None
    meta: dict[str, Any] = field(default_factory=dict)


def _strip_nii(name: str) -> str:
    for ext in NII:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _nii_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(NII) and not p.name.startswith("."))


# ----------------------------------------------------------------------------------- discovery
def discover(root: Path, cfg: DataConfig) -> list[VolumeCase]:
    """Cases under ``root`` for the configured (or detected) layout; errors name folders and files."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} (set data.root)")
    layout = cfg.nifti.layout
    if layout == "auto":
        img_dir = root / cfg.images_dir
        if (root / "imagesTr").is_dir():
            layout = "nnunet"
        elif img_dir.is_dir() and any(p.is_dir() for p in img_dir.iterdir()):
            layout = "case_folders"
        else:
            layout = "flat"
    cases = {"nnunet": _nnunet, "case_folders": _case_folders, "flat": _flat}[layout](root, cfg)
    if not cases:
        raise DataError(f"no NIfTI cases found in {root} (layout '{layout}'): the dataset has no pairs")
    return cases


def _nnunet(root: Path, cfg: DataConfig) -> list[VolumeCase]:
    """``imagesTr/<case>_0000.nii.gz`` (+ ``_0001`` ...) with ``labelsTr/<case>.nii.gz``; MSD 4-D files
    (``imagesTr/<case>.nii.gz``) are also accepted. ``dataset.json``'s modality is recorded in meta."""
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise DataError(f"folder not found: {d} (nnU-Net layout needs imagesTr/ and labelsTr/)")
    info = {}
    if (root / "dataset.json").is_file():
        try:
            info = json.loads((root / "dataset.json").read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{root / 'dataset.json'}: not valid JSON ({err})") from None
    modality = info.get("channel_names") or info.get("modality") or {}
    groups: dict[str, list[Path]] = {}
    for p in _nii_files(img_dir):
        stem = _strip_nii(p.name)
        base = stem[:-5] if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() else stem
        groups.setdefault(base, []).append(p)
    if cfg.nifti.channels:
        wanted = cfg.nifti.channels
        groups = {k: [p for s in wanted for p in v if _strip_nii(p.name).endswith(s)] for k, v in groups.items()}
    labels = {_strip_nii(p.name): p for p in _nii_files(lab_dir)}
    unpaired = sorted(k for k in groups if k not in labels)
    if unpaired:
        raise DataError(
            f"{len(unpaired)} cases in {img_dir} have no label in {lab_dir}, first: {unpaired[:5]}; "
            "add the labels or remove the images"
        )
    meta = {"channel_names": modality} if modality else {}
    return [VolumeCase(k, groups[k], labels[k], dict(meta)) for k in sorted(groups)]


def _named(files: list[Path], name: str) -> list[Path]:
    """The files called ``name``, else those ending in ``_<name>`` (BraTS 2021: ``<case>_t1ce.nii.gz``)."""
    exact = [p for p in files if p.name == name]
    return exact or [p for p in files if p.name.endswith("_" + name)]


def _case_folders(root: Path, cfg: DataConfig) -> list[VolumeCase]:
    """``images/<case>/<channel>.nii.gz`` with ``masks/<case>/<label>.nii.gz`` (DeepMedic's BraTS), or one
    folder per case holding channels and label (BraTS 2021: ``images_dir`` = ``masks_dir`` = ``.``). A
    ``nifti.channels`` / ``nifti.label_file`` entry names a file exactly or by its ``_<name>`` suffix."""
    img_dir, lab_dir = root / cfg.images_dir, root / cfg.masks_dir
    if not lab_dir.is_dir():
        raise DataError(f"folder not found: {lab_dir} (set data.masks_dir)")
    cases, unpaired = [], []
    for case_dir in sorted(p for p in img_dir.iterdir() if p.is_dir()):
        files = _nii_files(case_dir)
        if cfg.nifti.channels:
            found = {c: _named(files, c) for c in cfg.nifti.channels}
            bad = [c for c, hits in found.items() if len(hits) != 1]
            if bad:
                raise DataError(f"{case_dir}: channel files {bad} not found, or not unique (nifti.channels: a file "
                                f"name, or its suffix after '_'); found {[p.name for p in files]}")
            files = [found[c][0] for c in cfg.nifti.channels]
        lab_case = lab_dir / case_dir.name
        labs = _nii_files(lab_case) if lab_case.is_dir() else []
        if cfg.nifti.label_file:
            labs = _named(labs, cfg.nifti.label_file)
        if len(labs) != 1:
            unpaired.append(case_dir.name)
            continue
        cases.append(VolumeCase(case_dir.name, files, labs[0]))
    if unpaired:
        raise DataError(
            f"{len(unpaired)} cases in {img_dir} have no single label file in {lab_dir}/<case>/ "
            f"(set nifti.label_file when there are several), first: {unpaired[:5]}"
        )
    return cases


def _flat(root: Path, cfg: DataConfig) -> list[VolumeCase]:
    """``images/<case>.nii.gz`` with ``masks/<case><mask_suffix>.nii.gz``."""
    img_dir, lab_dir = root / cfg.images_dir, root / cfg.masks_dir
    for d, key in ((img_dir, "images_dir"), (lab_dir, "masks_dir")):
        if not d.is_dir():
            raise DataError(f"folder not found: {d} (set data.{key} or nifti.layout)")
    labels = {}
    for p in _nii_files(lab_dir):
        stem = _strip_nii(p.name)
        if cfg.mask_suffix and stem.endswith(cfg.mask_suffix):
            stem = stem[: -len(cfg.mask_suffix)]
        labels[stem] = p
    images = {_strip_nii(p.name): p for p in _nii_files(img_dir)}
    unpaired = sorted(k for k in images if k not in labels)
    if unpaired:
        raise DataError(
            f"{len(unpaired)} images in {img_dir} have no label in {lab_dir}, first: "
            f"{[images[k].name for k in unpaired[:5]]}; add the labels or set data.mask_suffix"
        )
    return [VolumeCase(k, [images[k]], labels[k]) for k in sorted(images)]


# ------------------------------------------------------------------------------- normalisation
def replace_nonfinite(image: np.ndarray, policy: str = "error", sources: Sequence[str] | None = None) -> np.ndarray:
    """Refuse (``policy="error"``) or replace (``"replace"``) the NaN/inf voxels of a ``C x *S`` image.

    One NaN makes its whole channel NaN after z-scoring, so the default is a :class:`DataError` naming each
    bad channel's file (``sources[c]``), the channel, the count and the two fixes. ``"replace"`` sets them
    to the channel's smallest finite value (0 when it has none): air for CT, background for MRI, which the
    non-zero statistics ignore; one warning per file and channel gives the count.
    """
    bad = ~np.isfinite(image)
    counts = bad.reshape(image.shape[0], -1).sum(axis=1)
    if not counts.any():
        return image
    names = list(sources) if sources is not None else ["image"] * image.shape[0]
    where = {int(c): f"{names[c]} channel {c}: {int(counts[c])} of {bad[c].size} voxels "
                     f"({int(np.isnan(image[c]).sum())} NaN)" for c in np.flatnonzero(counts)}
    if policy != "replace":
        raise DataError(
            f"non-finite (NaN or inf) image voxels in {'; '.join(where.values())}; z-scoring would turn the "
            "whole channel into NaN. Fix the file (e.g. write 0 where the scanner left no data), or set "
            "data.nifti.nonfinite=replace to replace them by the channel's smallest finite value (counted per file)"
        )
    image = image.copy()
    for c, text in where.items():
        finite = image[c][~bad[c]]
        fill = float(finite.min()) if finite.size else 0.0
        image[c][bad[c]] = fill
        warnings.warn(f"{text} were NaN/inf; replaced by the channel's smallest finite value {fill:g} "
                      "(data.nifti.nonfinite=replace)", stacklevel=3)
    return image


def normalize_volume(image: np.ndarray, cfg: NiftiConfig, sources: Sequence[str] | None = None) -> np.ndarray:
    """Per-volume intensity normalisation of ``C x *S`` (nnU-Net's schemes, statistics per volume).

    Non-finite voxels are first refused or replaced per ``cfg.nonfinite`` (:func:`replace_nonfinite`;
    ``sources[c]`` names channel ``c``'s file in the message). Then:

    - ``CT``: clip to ``window`` (HU, when given), then z-score ``(x - mean) / std`` over the volume, or with
      ``ct_scale="window01"`` scale the window to [0, 1] (``(x - low) / (high - low)``, no mean subtraction);
    - ``MRI``: per channel, z-score using the mean/std of the non-zero voxels; zero voxels stay 0
      (background outside the head after skull stripping);
    - ``none``: unchanged.
    """
    image = replace_nonfinite(image.astype(np.float32, copy=False), cfg.nonfinite, sources)
    if cfg.modality == "CT":
        if cfg.ct_scale == "window01":  # RSTN / MLL: clip, then scale the window to [0, 1]
            if cfg.window is None:
                raise DataError("data.nifti.ct_scale=window01 needs data.nifti.window, e.g. [-100, 240]")
            return window_scale(image, cfg.window)
        if cfg.window is not None:
            image = np.clip(image, cfg.window[0], cfg.window[1])
        return ((image - image.mean()) / max(float(image.std()), 1e-6)).astype(np.float32)
    if cfg.modality == "MRI":
        out = np.zeros_like(image)
        for c in range(image.shape[0]):
            ch = image[c]
            nz = ch != 0
            if nz.any():
                vals = ch[nz]
                out[c][nz] = (vals - vals.mean()) / max(float(vals.std()), 1e-6)
        return out
    return image


def remap_labels(label: np.ndarray, mapping: dict[int, int] | None) -> np.ndarray:
    """Apply ``{old: new}`` to an integer label array with one vectorised lookup."""
    if not mapping:
        return label
    lo = min(0, int(label.min(initial=0)))
    table = np.arange(lo, max(int(label.max(initial=0)), max(mapping)) + 1, dtype=np.int64)
    for old, new in mapping.items():
        table[int(old) - lo] = int(new)
    return table[label - lo]


def read_label(path: Path, mapping: dict[int, int] | None = None, geometry: bool = False):
    """An integer label volume (float files rounded); NaN/inf voxels and a non-3-D label are a
    :class:`DataError`. With ``geometry``: ``(label, spacing, affine)``."""
    raw, spacing, affine, _ = load_nifti(path)
    raw = _squeeze_trailing(raw)
    if raw.ndim != 3:
        raise DataError(f"label {path}: shape {raw.shape} is {raw.ndim}-D but a label volume must be 3-D "
                        "(one class index per voxel); re-export it as a single 3-D volume")
    if np.issubdtype(raw.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(raw)))
        if bad:
            raise DataError(
                f"label {path}: {bad} of {raw.size} voxels are NaN or inf; a label holds class indices, so "
                "re-export it with every voxel set (data.nifti.nonfinite applies to images only)"
            )
        raw = np.rint(raw)
    label = remap_labels(raw.astype(np.int64), mapping)
    return (label, spacing, affine) if geometry else label


def _squeeze_trailing(arr: np.ndarray) -> np.ndarray:
    """Drop trailing length-1 axes beyond the third (``X x Y x Z x 1`` is a 3-D volume)."""
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def check_geometry(path: Path, spacing, affine: np.ndarray, ref: Path, ref_spacing, ref_affine: np.ndarray,
                   tol: float) -> None:
    """:class:`DataError` when ``path``'s voxel spacing or affine (origin, axis directions) differs from
    ``ref``'s by more than ``tol`` (mm, ``data.nifti.geometry_tol``); the message says which."""
    ds = float(np.max(np.abs(np.subtract(spacing[:3], ref_spacing[:3]))))
    if ds > tol:
        raise DataError(f"{path}: voxel spacing {tuple(round(float(v), 4) for v in spacing[:3])} differs from "
                        f"{ref} {tuple(round(float(v), 4) for v in ref_spacing[:3])} by {ds:.4g} mm "
                        f"(> data.nifti.geometry_tol={tol:g}); resample one onto the other's grid")
    da = float(np.max(np.abs(np.asarray(affine)[:3] - np.asarray(ref_affine)[:3])))
    if da > tol:
        raise DataError(f"{path}: affine (origin / axis directions) differs from {ref}'s by {da:.4g} "
                        f"(> data.nifti.geometry_tol={tol:g}) although the spacing matches; the two files are "
                        "not on the same grid: fix the header or resample one onto the other")


class NiftiVolumes(VolumeDataset):
    """NIfTI cases found by :func:`discover`; the spacing and affine come from the image header."""

    def __init__(self, cfg: DataConfig, split: str) -> None:
        if cfg.root is None:
            raise DataError("data.kind is 'nifti' but data.root is not set; give the dataset folder")
        root = Path(cfg.root).expanduser()
        cases = {c.id: c for c in discover(root, cfg)}
        ids = split_ids(sorted(cases), cfg.split, split, root)
        super().__init__(cfg, split, ids, cfg.name or root.name)
        self.cases = [cases[i] for i in ids]

    def _read(self, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        case, tol = self.cases[k], self.cfg.nifti.geometry_tol
        arrays, sources, spacing, affine = [], [], None, None
        for path in case.images:
            arr, sp, aff, _ = load_nifti(path, np.float32)
            arr = _squeeze_trailing(arr)
            if arr.ndim not in (3, 4) or (arr.ndim == 4 and len(case.images) > 1):
                raise DataError(f"{path}: image of shape {arr.shape} is {arr.ndim}-D where a 3-D volume is expected "
                                + ("(one file per channel: each must be 3-D)" if arr.ndim == 4 else "")
                                + "; only a case's single image file may be 4-D (channels last, MSD)")
            arr = np.moveaxis(arr, -1, 0) if arr.ndim == 4 else arr[None]  # MSD 4-D: channels last
            if spacing is not None and arr.shape[1:] != arrays[0].shape[1:]:
                raise DataError(f"case '{case.id}': channel {path} has shape {arr.shape[1:]}, first channel {arrays[0].shape[1:]}")
            if spacing is not None:
                check_geometry(path, sp, aff, case.images[0], spacing, affine, tol)
            spacing, affine = (spacing or sp), (affine if affine is not None else aff)
            arrays.append(arr)
            sources += [str(path)] * arr.shape[0]
        image = normalize_volume(np.concatenate(arrays, axis=0), self.cfg.nifti, sources)
        label, lsp, laff = read_label(case.label, self.cfg.nifti.label_map, geometry=True)
        if label.shape != image.shape[1:]:
            raise DataError(f"label {case.label}: spatial shape {label.shape} differs from its image {case.images[0]} "
                            f"{image.shape[1:]}; they must match voxel for voxel")
        check_geometry(case.label, lsp, laff, case.images[0], spacing, affine, tol)
        if not self.binary and not self.cfg.nifti.regions:  # regions: the scheme checks the labels
            check_labels(label, self.cfg.num_classes, case.label)
        original_shape = tuple(int(s) for s in label.shape)
        n = self.cfg.nifti
        image, label, grid = to_network_grid(image, label, affine, n.orientation, n.target_spacing)
        meta = {
            "id": case.id,
            "dataset": self.name,
            "modality": self.cfg.modality or self.cfg.nifti.modality,
            "spacing": tuple(spacing),
            "original_shape": original_shape,
            "path": str(case.images[0]),
            "label_path": str(case.label),
            "affine": np.asarray(affine).tolist(),
            **case.meta,
        }
        if grid is not None:
            meta["grid"] = grid
        return image, label, meta

    def _original_label(self, k: int) -> np.ndarray:
        """The label as stored in the file (before reorientation / resampling), for scoring."""
        return read_label(self.cases[k].label, self.cfg.nifti.label_map)

    def _sample(self, image, label, meta: dict[str, Any]) -> dict[str, Any]:
        """The sample; with ``nifti.regions`` its label is float WT/TC/ET channels ``3 x *spatial``
        (:func:`medseg.data.regions.region_label_sample`). ``read_original`` keeps the label map (scoring)."""
        sample = super()._sample(image, label, meta)
        if self.cfg.nifti.regions:
            sample = region_label_sample(sample, self.cfg.nifti.regions)
        return sample


