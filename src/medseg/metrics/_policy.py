"""The empty-mask policy and input checks shared by every metric (``metrics-policy.md``).

Rule: a ratio whose denominator is zero is 1 when prediction and GT are both empty and 0 otherwise; a
distance is 0 when both are empty and the image diagonal in physical units (the worst value) when only
one is. ``empty="nan"`` turns every such filled-in value into NaN (the summary then counts the excluded
cases); ``compat="ife"`` gives 0 as the IFE code does; ``compat="medpy"`` gives medpy's value, or raises
where medpy raises.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

EMPTY_MODES = ("worst", "nan")
COMPAT_MODES = (None, "ife", "medpy")
HD95_MODES = ("pooled", "max_directed")
ASSD_MODES = ("pooled", "mean_of_directed")
HCE_MODES = ("dis", "ife64")


class EmptyMaskError(RuntimeError):
    """Raised under ``compat="medpy"`` where medpy raises (a distance or RVD with an empty mask)."""


@dataclass(frozen=True)
class Policy:
    """How edge cases are reported and which published-code quirks are reproduced.

    Attributes:
        empty: ``"worst"`` (default: the table of ``metrics-policy.md``) or ``"nan"`` (undefined -> NaN).
        compat: ``None``, ``"ife"`` (IFE code: 0 on empty masks, uint8 MAE, HCE at 64x64, |RVD|,
            Conformity 0 when DSC <= 0.01, ASSD as the mean of the two directed means, a probability
            map min-max normalised per image before the 0.5 threshold) or ``"medpy"``
            (the values medpy 0.5.2 returns: NaN for Dice/precision/recall/specificity on a zero
            denominator, 1 for Jaccard; raises where medpy raises: distances and RVD on empty masks).
        hd95_mode: ``"pooled"`` (95th percentile of both directions pooled, medpy) or
            ``"max_directed"`` (max of the two directed 95th percentiles, MONAI).
        assd_mode: ``"pooled"`` (mean of all surface distances of both directions, medpy 0.5 and MONAI)
            or ``"mean_of_directed"`` (mean of the two directed ASDs, medpy <= 0.4 and IFE).
        hce_mode: ``"dis"`` (full resolution, DIS) or ``"ife64"`` (IFE: both masks resized to 64x64).
        nsd_tolerance: tolerance of the normalised surface Dice, in physical units.
        threshold: a probability map is binarised as ``prob > threshold`` for overlap/distance metrics.
        minmax: min-max normalise the probability map before saliency metrics (PySODMetrics convention).
    """

    empty: str = "worst"
    compat: str | None = None
    hd95_mode: str = "pooled"
    assd_mode: str | None = None
    hce_mode: str | None = None
    nsd_tolerance: float = 1.0
    threshold: float = 0.5
    minmax: bool = True

    def __post_init__(self) -> None:
        _check_choice("empty", self.empty, EMPTY_MODES)
        _check_choice("compat", self.compat, COMPAT_MODES)
        _check_choice("hd95_mode", self.hd95_mode, HD95_MODES)
        _check_choice("assd_mode", self.assd_mode, (None, *ASSD_MODES))
        _check_choice("hce_mode", self.hce_mode, (None, *HCE_MODES))
        if not (math.isfinite(self.nsd_tolerance) and self.nsd_tolerance >= 0):
            raise ValueError(f"nsd_tolerance must be a finite number >= 0 (physical units), got {self.nsd_tolerance}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")

    @property
    def assd(self) -> str:
        """The ASSD definition in force (``compat="ife"`` implies the mean of the two directed means)."""
        return self.assd_mode or ("mean_of_directed" if self.compat == "ife" else "pooled")

    @property
    def hce(self) -> str:
        """The HCE definition in force (``compat="ife"`` implies the 64x64 variant)."""
        return self.hce_mode or ("ife64" if self.compat == "ife" else "dis")

    def describe(self) -> dict[str, object]:
        """The conventions in force, for summaries (``hd95`` names its definition)."""
        return {"empty": self.empty, "compat": self.compat, "hd95_mode": self.hd95_mode, "assd_mode": self.assd,
                "hce_mode": self.hce, "nsd_tolerance": self.nsd_tolerance, "threshold": self.threshold,
                "minmax": self.minmax}

    def fill(self, value: np.ndarray, undefined: np.ndarray, default: np.ndarray | float,
             ife: float = 0.0, medpy: float | None = None, what: str = "") -> np.ndarray:
        """Replace ``value`` where ``undefined`` by the policy's value.

        ``default`` is the policy-table value, ``ife`` the IFE code's, ``medpy`` medpy's (``None``: medpy
        raises :class:`EmptyMaskError`).
        """
        undefined = np.asarray(undefined, dtype=bool)
        if not undefined.any():
            return value
        if self.compat == "medpy":
            if medpy is None:
                raise EmptyMaskError(f"{what}: an empty prediction or ground truth (medpy raises here; "
                                     f"use the default policy or empty='nan' to keep going)")
            fill: np.ndarray | float = medpy
        elif self.compat == "ife":
            fill = ife
        elif self.empty == "nan":
            fill = np.nan
        else:
            fill = default
        return np.where(undefined, fill, value)


def _check_choice(key: str, value: object, valid: Sequence[object]) -> None:
    if value not in valid:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}")


def as_policy(policy: Policy | None = None, **options: object) -> Policy:
    """A :class:`Policy` from an existing one updated with keyword ``options`` (None values ignored)."""
    base = policy or Policy()
    updates = {k: v for k, v in options.items() if v is not None}
    if not updates:
        return base
    fields = base.__dataclass_fields__
    for key in updates:
        if key not in fields:
            raise TypeError(f"unknown metric option '{key}'; valid options: {', '.join(fields)}")
    return Policy(**{**{k: getattr(base, k) for k in fields}, **updates})


def check_pair(pred: np.ndarray, gt: np.ndarray, case: str = "") -> None:
    """Raise a ValueError naming the case and both shapes when they differ."""
    if pred.shape != gt.shape:
        where = f"case '{case}': " if case else ""
        raise ValueError(f"{where}prediction shape {tuple(pred.shape)} differs from ground-truth shape "
                         f"{tuple(gt.shape)}; resample the prediction to the GT grid first")


def check_spacing(spacing: Sequence[float] | float | None, ndim: int, case: str = "") -> np.ndarray:
    """Spacing as a float64 vector of length ``ndim`` (``None``: ones); a clear error otherwise."""
    where = f"case '{case}': " if case else ""
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    vec = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    if vec.size == 1 and ndim > 1:
        vec = np.repeat(vec, ndim)
    if vec.size != ndim:
        raise ValueError(f"{where}spacing {tuple(vec.tolist())} has {vec.size} values but the image has "
                         f"{ndim} dimensions; give one spacing per axis (e.g. --spacing {' '.join(['1'] * ndim)})")
    if not np.all(np.isfinite(vec)) or np.any(vec <= 0):
        raise ValueError(f"{where}spacing {tuple(vec.tolist())} must be finite and positive")
    return vec


def check_prob(prob: np.ndarray, case: str = "") -> np.ndarray:
    """A probability map as float64 in [0, 1]; NaN/inf or values outside [0, 1] raise naming the case."""
    where = f"case '{case}': " if case else ""
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob / 255.0
    prob = prob.astype(np.float64, copy=False)
    if not np.isfinite(prob).all():
        bad = int(np.count_nonzero(~np.isfinite(prob)))
        raise ValueError(f"{where}the probability map holds {bad} NaN/inf values; fix the prediction "
                         f"(a diverged model or a failed resampling)")
    lo, hi = float(prob.min()), float(prob.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{where}the probability map spans [{lo:.4g}, {hi:.4g}], outside [0, 1]; pass "
                         f"probabilities (apply sigmoid/softmax) or an 8-bit map")
    return prob


def diagonal(shape: Sequence[int], spacing: np.ndarray) -> float:
    """The worst distance value: ``sqrt(sum_i (n_i * s_i)^2)`` (a 384x288 image in pixels: 480)."""
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * spacing) ** 2)))
