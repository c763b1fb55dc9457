"""BraTS training targets on samples (see :mod:`medseg.regions` and ``docs/cwcd.md``, regions).

* :func:`remap_sample` -- softmax training: ``brats`` label 4 -> 3 so one-hot has 4 channels (0..3);
  ``brats2015`` labels 0..4 are kept.
* :func:`add_region_targets` -- sigmoid region outputs: ``sample["regions"]`` = float WT/TC/ET channels
  ``3 x *spatial`` from the (original or remapped) label map, for a 3-channel sigmoid head.
"""
from __future__ import annotations

from typing import Any

from medseg.regions import region_targets, remap_labels


def remap_sample(sample: dict[str, Any], scheme: str = "brats") -> dict[str, Any]:
    """The sample with its label remapped to contiguous values (a new dict; the input is not changed)."""
    case = str(sample.get("meta", {}).get("id", ""))
    return {**sample, "label": remap_labels(sample["label"], scheme, case)}


def add_region_targets(sample: dict[str, Any], scheme: str = "brats") -> dict[str, Any]:
    """The sample with ``regions`` (float ``3 x *spatial``: WT, TC, ET) added (a new dict)."""
    return {**sample, "regions": region_targets(sample["label"], scheme)}
