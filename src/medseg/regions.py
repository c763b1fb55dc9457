"""Tumour sub-region schemes (BraTS): which labels make up the whole tumour (WT), the tumour core (TC) and
the enhancing tumour (ET). One definition, used by ``data/`` (training targets) and ``metrics/`` (region
scores), as :mod:`medseg.masks` is for reading masks. See ``docs/cwcd.md`` (regions).

Two label conventions exist and they disagree on label 3:

``brats`` (BraTS 2017-2021): 0 background, 1 necrotic / non-enhancing tumour core (NCR/NET), 2 peritumoral
    oedema (ED), 4 enhancing tumour (ET); there is no label 3. WT = {1, 2, 4}, TC = {1, 4}, ET = {4}.
    Softmax training needs contiguous labels, so medseg remaps 4 -> 3 (:func:`remap_labels`); BraTS 2023
    numbers ET 3 as well. A ``brats`` map may therefore carry ET as 4 *or* as 3 -- decided per map; a map
    holding both 3 and 4 is not a ``brats`` map (it is the 2013/2015 five-label convention) and is refused.
``brats2015`` (BraTS 2013/2015, e.g. the DeepMedic copy of BraTS 2015): 0 background, 1 necrosis,
    2 oedema, 3 non-enhancing tumour, 4 enhancing tumour. WT = {1, 2, 3, 4}, TC = {1, 3, 4}, ET = {4}.
    Labels are already contiguous (no remap).

A map without any ET voxel is legitimate (some low-grade gliomas have no enhancing part): the ET region is
then empty and scored by the empty-mask policy of ``docs/metrics.md`` (both empty: DSC 1, HD95 0; one
empty: DSC 0, HD95 = the volume diagonal); callers warn, because it is also what a wrong label convention
looks like.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import DataError

REGION_NAMES = ("WT", "TC", "ET")


@dataclass(frozen=True)
class RegionScheme:
    """A label convention and its nested regions (``regions[name]`` = labels, with ET's label as 4)."""

    name: str
    meaning: dict[int, str]
    regions: dict[str, tuple[int, ...]]
    et_alternatives: tuple[int, ...] = (4,)  # labels that can carry ET in one map (one of them at most)

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(sorted({*self.meaning, *self.et_alternatives}))

    def describe(self) -> dict[str, Any]:
        return {"scheme": self.name, "labels": {str(k): v for k, v in self.meaning.items()},
                "regions": {k: list(v) for k, v in self.regions.items()},
                "et_label": "4, or 3 in a map remapped for training (never both)" if len(self.et_alternatives) > 1
                else "4"}


SCHEMES: dict[str, RegionScheme] = {
    "brats": RegionScheme(
        "brats", {0: "background", 1: "necrotic / non-enhancing core", 2: "oedema", 4: "enhancing tumour"},
        {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}, et_alternatives=(4, 3)),
    "brats2015": RegionScheme(
        "brats2015", {0: "background", 1: "necrosis", 2: "oedema", 3: "non-enhancing tumour", 4: "enhancing tumour"},
        {"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (4,)}),
}


def get_scheme(name: str | RegionScheme) -> RegionScheme:
    """The scheme called ``name`` (``brats``, ``brats2015``); an unknown name lists the valid ones."""
    if isinstance(name, RegionScheme):
        return name
    key = str(name).lower()
    if key not in SCHEMES:
        raise DataError(f"unknown region scheme '{name}'; valid: {', '.join(SCHEMES)} (brats = BraTS 2017-2021 "
                        f"labels 0/1/2/4; brats2015 = BraTS 2013/2015 labels 0-4 with 3 = non-enhancing tumour)")
    return SCHEMES[key]


def _where(what: str, case: str) -> str:
    return f"case '{case}': the {what}" if case else f"the {what}"


def present_labels(label: Any) -> set[int]:
    """The set of values in a label map (NumPy array or torch tensor)."""
    if type(label).__module__.startswith("torch"):
        return {int(v) for v in label.unique().tolist()}
    return {int(v) for v in np.unique(np.asarray(label)).tolist()}


def et_label(label: Any, scheme: str | RegionScheme = "brats", what: str = "label map", case: str = "") -> int | None:
    """The label carrying ET in this map (None when the map has no ET voxel); checks the map's values."""
    sch = get_scheme(scheme)
    values = present_labels(label)
    bad = sorted(values - set(sch.labels))
    if bad:
        raise DataError(f"{_where(what, case)} holds labels {bad} outside the {sch.name} convention "
                        f"{sorted(sch.labels)}; check the dataset's label convention (docs/cwcd.md, regions)")
    found = [v for v in sch.et_alternatives if v in values]
    if len(found) > 1:
        raise DataError(f"{_where(what, case)} holds both labels 3 and 4: that is the BraTS 2013/2015 convention "
                        f"(3 = non-enhancing tumour), not '{sch.name}'; use regions 'brats2015'")
    return found[0] if found else None


def region_labels(scheme: RegionScheme, et: int | None) -> dict[str, tuple[int, ...]]:
    """The regions' labels with ET's label replaced by ``et`` (dropped when the map has no ET)."""
    out = {}
    for name, labels in scheme.regions.items():
        out[name] = tuple(et if v == 4 else v for v in labels if v != 4 or et is not None)
    return out


def region_masks(label: Any, scheme: str | RegionScheme = "brats", what: str = "label map",
                 case: str = "", batched: bool = False) -> tuple[Any, bool]:
    """Boolean ``3 x *spatial`` masks (WT, TC, ET) of a label map, and whether the map has ET voxels.

    Works on NumPy arrays and torch tensors; ``batched``: ``B x *spatial -> B x 3 x *spatial``."""
    sch = get_scheme(scheme)
    et = et_label(label, sch, what, case)
    groups = region_labels(sch, et)
    is_torch = type(label).__module__.startswith("torch")
    masks = []
    for name in REGION_NAMES:
        labels = groups[name]
        if is_torch:
            import torch

            masks.append(torch.isin(label, torch.tensor(labels, dtype=label.dtype, device=label.device))
                         if labels else torch.zeros_like(label, dtype=torch.bool))
        else:
            masks.append(np.isin(np.asarray(label), labels))
    if is_torch:
        import torch

        return torch.stack(masks, dim=int(batched)), et is not None
    return np.stack(masks, axis=int(batched)), et is not None


def region_targets(label: Any, scheme: str | RegionScheme = "brats", batched: bool = False) -> Any:
    """Float WT/TC/ET channels for sigmoid region outputs: ``*spatial -> 3 x *spatial`` (``batched``:
    ``B x *spatial -> B x 3 x *spatial``); a map without ET gets an all-zero ET channel."""
    masks, _ = region_masks(label, scheme, "label map", batched=batched)
    return masks.float() if type(masks).__module__.startswith("torch") else masks.astype(np.float32)


def remap_labels(label: Any, scheme: str | RegionScheme = "brats", case: str = "") -> Any:
    """Contiguous labels for softmax one-hot: ``brats`` 4 -> 3 (0..3); ``brats2015`` is already 0..4.
    A map already remapped (ET as 3) is returned unchanged; 3 and 4 together are refused."""
    sch = get_scheme(scheme)
    if sch.name != "brats" or et_label(label, sch, "label map", case) != 4:
        return label
    out = label.clone() if type(label).__module__.startswith("torch") else np.array(label, copy=True)
    out[out == 4] = 3
    return out


def labels_from_regions(masks: Any, scheme: str | RegionScheme = "brats", et_value: int = 4) -> Any:
    """A label map from nested region masks ``3 x *spatial`` (WT, TC, ET; e.g. ``sigmoid > 0.5``):
    ET where ET; else the core label (1) where TC; else oedema (2) where WT. ``brats2015`` has two core labels
    (1 necrosis, 3 non-enhancing) that regions cannot separate: core becomes 1 there (say so when saving)."""
    get_scheme(scheme)
    wt, tc, et = masks[0], masks[1], masks[2]
    is_torch = type(masks).__module__.startswith("torch")
    out = (wt & ~tc).long() * 2 if is_torch else (wt & ~tc).astype(np.int64) * 2
    out[tc & ~et] = 1
    out[et] = et_value
    return out


def region_outputs(prob: Any, threshold: float = 0.5, scheme: str | RegionScheme = "brats") -> tuple[Any, Any]:
    """Sigmoid region outputs ``3 x *spatial`` (WT, TC, ET) -> ``(masks, label map)``: the masks are
    ``prob >= threshold`` per channel (no argmax: the regions are scored as predicted), the label map
    (:func:`labels_from_regions`, ET as 4) is for saving."""
    masks = prob >= threshold
    return masks, labels_from_regions(masks, scheme)
