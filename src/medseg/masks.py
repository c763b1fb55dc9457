"""How a stored mask becomes a binary mask: the one rule used by training (``medseg.data``) and by
``medseg metrics`` (``medseg.metrics``). It lives here, beside ``errors.py``, because ``data/`` and
``metrics/`` do not import each other. NumPy only.

The rule (``docs/metrics.md``, "Reading masks"), with no threshold given:

- boolean, ``{0, 1}`` or ``{0, 255}`` (a uint16 ``{0, 65535}`` too): foreground is the non-zero value;
- an 8-bit 0/255 mask with JPEG-like noise: every value within 32 of 0 or of 255, and 255 the most
  frequent of the values near 255 (Kvasir-SEG's JPEG masks: <= 30 or >= 225): foreground is ``> 127``;
- anything else raises :class:`~medseg.errors.DataError` naming the file, the values found (the most
  frequent, with counts) and the two fixes: read it as a label map, or give a threshold. Small integers
  (``{0, 1, 2}``) are a label map, never noise around a 0/255 mask; a 0/255 mask with a few stray grey
  pixels (values like 1, 2, ... 250 along an edge) is refused with advice to threshold at 127.

With a threshold ``T``: foreground is ``value > T``; boolean and 0/1 masks are kept as they are (a
threshold meant for 8-bit masks would otherwise empty them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import DataError

JPEG_TOLERANCE = 32  # "near 0 / near 255": within this many grey levels
JPEG_THRESHOLD = 127  # JPEG-like 0/255 masks: foreground is value > 127
_SHOWN = 6  # values listed in an error message


@dataclass(frozen=True)
class MaskFixes:
    """How the caller's user spells the two fixes (``{k}``: number of classes, ``{t}``: threshold)."""

    labels: str
    threshold: str


CLI_FIXES = MaskFixes(labels="--num-classes {k}", threshold="--gt-threshold {t}")
CONFIG_FIXES = MaskFixes(labels="data.num_classes: {k} with data.mask_mode: labels",
                         threshold="data.mask_threshold: {t}")


def value_counts(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of the distinct values of ``arr`` (one ``bincount`` for 8-bit arrays)."""
    if arr.dtype == np.uint8:
        counts = np.bincount(arr.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        return values.astype(np.uint8), counts[values]
    return np.unique(arr, return_counts=True)


def is_jpeg_like(values: np.ndarray, counts: np.ndarray) -> bool:
    """8-bit values all near 0 or near 255, with 255 the most frequent of those near 255."""
    values = values.astype(np.int64)
    near_low = values <= JPEG_TOLERANCE
    near_high = values >= 255 - JPEG_TOLERANCE
    if not np.all(near_low | near_high) or not near_high.any() or values[-1] != 255:
        return False
    return bool(counts[-1] == counts[near_high].max())


def binary_mask(arr: np.ndarray, threshold: float | None = None, *, path: str | Path = "",
                fixes: MaskFixes = CONFIG_FIXES, what: str = "mask") -> np.ndarray:
    """A boolean mask from a one-channel stored mask, by the rule in the module docstring.

    Args:
        arr: the decoded mask (one channel; callers reduce colour channels first).
        threshold: ``None`` for the rule; a number ``T`` for ``value > T``.
        path: the file, named in the error.
        fixes: how the two fixes are spelled for this caller (:data:`CLI_FIXES`, :data:`CONFIG_FIXES`).
        what: what the file is, for the message ("ground truth", "mask").
    """
    if arr.dtype == bool:
        return arr
    values, counts = value_counts(arr)
    if values.size == 0 or (values.min() >= 0 and values.max() <= 1 and np.all(values == np.round(values))):
        return arr.astype(bool)  # {0, 1} (or empty): kept as is, with or without a threshold
    if threshold is not None:
        return arr > threshold
    present = set(values.tolist())
    if present <= {0, 255} or (arr.dtype == np.uint16 and present <= {0, 65535}):
        return arr > 0
    if arr.dtype == np.uint8 and is_jpeg_like(values, counts):
        return arr > JPEG_THRESHOLD
    raise DataError(not_binary_message(values, counts, path=path, fixes=fixes, what=what))


def not_binary_message(values: np.ndarray, counts: np.ndarray, *, path: str | Path, fixes: MaskFixes,
                       what: str = "mask") -> str:
    """The error for a mask that is not binary: the values found, what it looks like, the two fixes."""
    top = np.sort(np.argsort(counts, kind="stable")[::-1][:_SHOWN])
    shown = ", ".join(f"{values[i]:g} (x{counts[i]})" for i in top)
    more = f" ... {values.size} distinct values" if values.size > _SHOWN else ""
    where = f"{path}: the" if str(path) else "The"
    head = (f"{where} {what} is not binary (values {shown}{more}); a binary mask is {{0,1}}, {{0,255}} "
            f"or 0/255 with JPEG-like noise (every value within {JPEG_TOLERANCE} of 0 or 255).")
    ints = bool(np.all(values == np.round(values))) and values.min() >= 0
    total = int(counts.sum())
    extreme = int(counts[(values == 0) | (values == 255)].sum())
    if ints and values.max() < 256 and 0 in values and 255 in values and extreme >= 0.95 * total:
        stray = total - extreme
        return (f"{head} It looks like a 0/255 mask with {stray} stray grey pixel(s): binarise it with "
                f"{fixes.threshold.format(t=127)} (foreground where value > 127); if it is a label map "
                f"instead, use {fixes.labels.format(k='K')} (labels 0..K-1).")
    if ints and values.max() < 255 and values.size <= 64:
        k = int(values.max()) + 1
        return (f"{head} If it is a label map (labels 0..{k - 1}), use {fixes.labels.format(k=k)}; to binarise "
                f"it, use {fixes.threshold.format(t='T')} (foreground where value > T, e.g. T = 0 for any label).")
    return (f"{head} Binarise it with {fixes.threshold.format(t='T')} (foreground where value > T), or, if it "
            f"is a label map, use {fixes.labels.format(k='K')} (labels 0..K-1).")
