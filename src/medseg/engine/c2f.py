"""Test-time pieces of the coarse-to-fine pipeline (MLL Algorithm 1 on RSTN's scheme, ``docs/mll.md``).

Pure functions on NumPy volumes, independent of the networks:

- :func:`fuse_views`: mean of the per-view probability volumes, thresholded at 0.5;
- :func:`keep_large_components`: RSTN's post-processing (6-connected components of at least half the
  largest one's volume; an empty mask or one covering half the volume or more is left as it is);
- :func:`rdsc`: the DSC between two rounds' binary masks;
- :func:`refine_until_stable`: the round loop, ``while RDSC < 0.99 and t < T_max`` (Algorithm 1 as printed
  says "or", which would always run ``T_max`` rounds);
- :func:`coarse_probability` / :func:`fine_probability`: one view's probability volume from the coarse
  model, or from the fine model given the previous round's fused probability and mask (the per-view part of
  a round);
- :func:`segment_volume`: Algorithm 1 on one volume with the networks of each view.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage

from medseg.data.views import extract_units, reassemble_units
from medseg.metrics import dice
from medseg.models.c2f import MARGIN, crop, crop_box, uncrop
from medseg.modules.saliency import fine_input


def fuse_views(probs: Sequence[np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """``mean(probs) >= threshold`` as a boolean volume (the views' probabilities on one grid)."""
    if not probs:
        raise ValueError("fuse_views: no view probabilities given")
    return np.mean(np.stack(probs), axis=0) >= threshold


def keep_large_components(mask: np.ndarray, ratio: float = 0.5) -> np.ndarray:
    """RSTN's post-processing of a binary volume: keep the 6-connected components whose voxel count is at
    least ``ratio`` x the largest's. An empty mask, or one covering at least half the volume, is returned
    unchanged (as RSTN's C++ code does)."""
    mask = np.asarray(mask, dtype=bool)
    total = int(mask.sum())
    if total == 0 or 2 * total >= mask.size:
        return mask.copy()
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= ratio * sizes.max()
    keep[0] = False
    return keep[labels]


def rdsc(a: np.ndarray, b: np.ndarray) -> float:
    """``2|A n B| / (|A| + |B|)`` of two binary masks; 1.0 when both are empty (nothing changed)."""
    return dice(np.asarray(a, dtype=bool), np.asarray(b, dtype=bool))


@dataclass
class RefineResult:
    """The final mask, the fine rounds run, the RDSC after each round, and whether round 0 was empty."""

    mask: np.ndarray
    rounds: int
    rdscs: list[float]
    empty_coarse: bool


def refine_until_stable(coarse_mask: np.ndarray, fine_round: Callable[[np.ndarray], np.ndarray],
                        tol: float = 0.99, max_rounds: int = 10) -> RefineResult:
    """Run ``fine_round(previous mask) -> next mask`` from ``coarse_mask`` until two consecutive masks have
    ``rdsc >= tol`` or ``max_rounds`` rounds have run. An empty coarse mask runs no round (every unit would
    be skipped): the result is empty with ``empty_coarse=True``, for the caller to report."""
    mask = np.asarray(coarse_mask, dtype=bool)
    if not mask.any():
        return RefineResult(mask.copy(), 0, [], True)
    scores: list[float] = []
    t = 0
    while (not scores or scores[-1] < tol) and t < max_rounds:
        new = np.asarray(fine_round(mask), dtype=bool)
        scores.append(rdsc(mask, new))
        mask, t = new, t + 1
    return RefineResult(mask, t, scores, False)


def _units(volume: np.ndarray, axis: int, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(extract_units(volume, axis), dtype=np.float32)).to(device)


@torch.no_grad()
def coarse_probability(volume: np.ndarray, axis: int, coarse: nn.Module, device: torch.device | str = "cpu",
                       batch_size: int = 8) -> np.ndarray:
    """Sigmoid of the coarse model on every 3-slice unit of ``volume`` (in [0, 1]) along ``axis``,
    reassembled into a probability volume (mean of the overlapping unit outputs per slice)."""
    units = _units(volume, axis, device)
    probs = [torch.sigmoid(coarse(units[i:i + batch_size])["out"]).cpu() for i in range(0, len(units), batch_size)]
    return reassemble_units(torch.cat(probs).numpy(), axis)


@torch.no_grad()
def fine_probability(volume: np.ndarray, axis: int, prev_prob: np.ndarray, prev_mask: np.ndarray,
                     fine: nn.Module, saliency: nn.Module, margin: int = MARGIN,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """One view's fine probability volume for a round (RSTN test time).

    For each unit whose 3-slice unit of ``prev_mask`` has a voxel: the fine input
    ``[image * F_S(prev_prob), image]`` is cropped to the mask unit's box (margin ``margin``, native
    resolution), the fine model's logits are put back with -1e7 outside the box, and the sigmoid is the
    unit's output; other units output 0. Units are reassembled by the mean over the overlapping outputs
    (3 per slice, 2 at the ends), skipped units counting as 0.
    """
    images, probs = _units(volume, axis, device), _units(prev_prob, axis, device)
    masks = extract_units(np.asarray(prev_mask, dtype=bool), axis)
    out = np.zeros(masks.shape, dtype=np.float32)
    for i in np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1)):
        box = crop_box(masks[i], margin)
        x = crop(fine_input(images[i:i + 1], saliency(probs[i:i + 1])), box)
        logits = uncrop(fine(x)["out"], box, masks.shape[-2:])
        out[i] = torch.sigmoid(logits)[0].cpu().numpy()
    return reassemble_units(out, axis)


@dataclass
class ViewModels:
    """The networks of one view: coarse model, fine model, saliency transformation, and the array axis."""

    axis: int
    coarse: nn.Module
    fine: nn.Module
    saliency: nn.Module


def segment_volume(volume: np.ndarray, views: Sequence[ViewModels], tol: float = 0.99, max_rounds: int = 10,
                   margin: int = MARGIN, device: torch.device | str = "cpu") -> tuple[RefineResult, np.ndarray]:
    """Algorithm 1 on one window-scaled volume: ``(result, fused probability of the last pass)``.

    Round 0: each view's coarse probability, fused (mean >= 0.5) and post-processed. Each round then runs
    every view's fine model with ``F_S`` of the previous fused probability and boxes from the previous
    mask, fuses and post-processes, until :func:`refine_until_stable` stops.
    """
    probs = [coarse_probability(volume, v.axis, v.coarse, device) for v in views]
    state = {"prob": np.mean(np.stack(probs), axis=0)}
    first = keep_large_components(fuse_views(probs))

    def fine_round(mask: np.ndarray) -> np.ndarray:
        round_probs = [fine_probability(volume, v.axis, state["prob"], mask, v.fine, v.saliency, margin, device)
                       for v in views]
        state["prob"] = np.mean(np.stack(round_probs), axis=0)
        return keep_large_components(fuse_views(round_probs))

    return refine_until_stable(first, fine_round, tol, max_rounds), state["prob"]
