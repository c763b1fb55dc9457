"""BraTS training targets on samples (see :mod:`medseg.regions` and ``docs/cwcd.md``, regions).

* :func:`remap_sample` -- softmax training: ``brats`` label 4 -> 3 so one-hot has 4 channels (0..3);
  ``brats2015`` labels 0..4 are kept.
* :func:`add_region_targets` -- sigmoid region outputs: ``sample["regions"]`` = float WT/TC/ET channels
  ``3 x *spatial`` from the (original or remapped) label map, for a 3-channel sigmoid head.
* :func:`region_label_sample` -- region training (``data.nifti.regions``): the label itself becomes those
  channels, so any sigmoid loss (``dice_bce``) trains on them unchanged.
"""
from __future__ import annotations

from typing import Any

from medseg.regions import region_masks, region_targets, remap_labels


def remap_sample(sample: dict[str, Any], scheme: str = "brats") -> dict[str, Any]:
    """The sample with its label remapped to contiguous values (a new dict; the input is not changed)."""
    case = str(sample.get("meta", {}).get("id", ""))
    return {**sample, "label": remap_labels(sample["label"], scheme, case)}


def add_region_targets(sample: dict[str, Any], scheme: str = "brats") -> dict[str, Any]:
    """The sample with ``regions`` (float ``3 x *spatial``: WT, TC, ET) added (a new dict)."""
    return {**sample, "regions": region_targets(sample["label"], scheme)}


def region_label_sample(sample: dict[str, Any], scheme: str = "brats") -> dict[str, Any]:
    """The sample with its label map replaced by float WT/TC/ET channels ``3 x *spatial`` (a new dict).

    Applied after cropping and augmentation, so the regions are those of the label the network sees; a
    label outside the scheme is a :class:`~medseg.errors.DataError` naming the case."""
    case = str(sample.get("meta", {}).get("id", ""))
    masks, _ = region_masks(sample["label"], scheme, "label map", case)
    return {**sample, "label": masks.float() if hasattr(masks, "float") else masks.astype("float32")}
