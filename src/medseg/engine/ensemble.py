"""Fold ensembles and flip test-time augmentation (``medseg predict --run CV_DIR --tta flip``).

**Fold ensemble** (as nnU-Net's ``nnUNetv2_predict -f 0 1 2 3 4``, Isensee et al., Nature Methods 2021):
the ``K`` run folders that ``medseg cv CONFIG --folds K`` writes (``<cv>/folds.json``,
``<cv>/fold_<i>/checkpoints/best.pt``, see :mod:`medseg.engine.cv`) each predict the case, and the mean of
their probabilities is thresholded (binary) or arg-maxed (multi-class)::

    p(x) = 1/K * sum_k  sigma(z_k(x))            sigma = sigmoid (K = 1 channel) or softmax over channels

with ``z_k`` fold ``k``'s logits at the case's original size. The folds must share the input contract
(:data:`CONTRACT`: channels, classes, image size, spatial dims, normalisation, 3-D grid, threshold);
a difference is refused, naming the key and the fold.

**Flip TTA** (``--tta flip``): the case is also predicted mirrored and each prediction is flipped back
before averaging. 2-D: the identity, H, W and H+W flips (4 passes), mean of the probabilities. Volumes with
a 2-D model (slice by slice): the two in-plane axes (4 passes; a flip across slices changes nothing for a
per-slice model). Volumes with a 3-D model (sliding window): all ``2^3 = 8`` subsets of the three spatial
axes, through :func:`medseg.engine.sliding_window.sliding_window_inference`'s ``mirror_axes``, which averages
each window's *logits* over the 8 passes before the Gaussian blending (nnU-Net's mirroring); the sigmoid /
softmax is then taken once. See ``docs/ensemble.md``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from medseg.config import RunConfig
from medseg.engine.infer import probabilities, slice_axis
from medseg.engine.sliding_window import mirror_flips
from medseg.errors import UserError

TTA_CHOICES = ("none", "flip")

#: config keys every fold of an ensemble must share (``data.nifti`` is compared key by key)
CONTRACT = ("spatial_dims", "data.in_channels", "data.num_classes", "data.image_size", "data.normalize",
            "data.pad_square", "data.nifti", "eval.threshold", "eval.sliding_window", "eval.overlap")

#: keys of ``data.nifti`` that only concern training sampling: they may differ between folds
NIFTI_TRAIN_ONLY = ("fg_oversample", "samples_per_volume", "oversample", "slice_fg_only")

LogitsFn = Callable[..., torch.Tensor]  # (model, image, **kw) -> logits on the network grid


class FoldError(UserError):
    """A CV folder that cannot be used as an ensemble (missing fold, differing contracts, not a CV folder)."""


# ------------------------------------------------------------------------------ TTA
def tta_flips(tta: str | None, spatial_dims: int, skip_axis: int | None = None) -> list[tuple[int, ...]]:
    """The tensor dims to flip for each pass, the identity first: ``[()]`` without TTA; with ``"flip"``
    every subset of the spatial axes ``0..spatial_dims-1`` except ``skip_axis``."""
    if tta in (None, "none"):
        return [()]
    if tta != "flip":
        raise UserError(f"--tta {tta}: expected one of {', '.join(TTA_CHOICES)}")
    return mirror_flips([a for a in range(spatial_dims) if a != skip_axis], spatial_dims)


def member_probabilities(model: nn.Module, image: torch.Tensor, logits_of: LogitsFn,
                         finish: Callable[[torch.Tensor], torch.Tensor], tta: str | None = None,
                         cfg: RunConfig | None = None) -> torch.Tensor:
    """Probabilities of one model on ``image`` (``1 x C x *spatial``), averaged over the TTA passes.

    ``logits_of(model, x)`` gives the network-grid logits (``mirror_axes=`` is passed to it only for a 3-D
    model on a volume: the sliding window mirrors inside); ``finish`` maps logits to the original grid.
    """
    dims = image.ndim - 2
    model_dims = int(getattr(model, "spatial_dims", dims))
    sigmoid = bool(cfg is not None and cfg.data.nifti.regions)  # region outputs overlap: no softmax
    if tta not in (None, "none") and dims == 3 and model_dims == 3:  # sliding window: reuse its mirroring
        tta_flips(tta, 3)  # validates the choice
        return probabilities(finish(logits_of(model, image, mirror_axes=(0, 1, 2))), sigmoid)
    skip = slice_axis(cfg) if dims == 3 and model_dims == 2 and cfg is not None else None
    flips = tta_flips(tta, dims, skip)
    total: torch.Tensor | None = None
    for d in flips:
        logits = logits_of(model, image.flip(d) if d else image)
        prob = probabilities(finish(logits.flip(d) if d else logits), sigmoid)
        total = prob if total is None else total.add_(prob)
    return total / len(flips) if len(flips) > 1 else total


def ensemble_probabilities(models: Sequence[nn.Module], image: torch.Tensor, logits_of: LogitsFn,
                           finish: Callable[[torch.Tensor], torch.Tensor], tta: str | None = None,
                           cfg: RunConfig | None = None) -> torch.Tensor:
    """``1/K sum_k`` of each model's (TTA-averaged) probabilities: :func:`member_probabilities` per model."""
    total: torch.Tensor | None = None
    for model in models:
        prob = member_probabilities(model, image, logits_of, finish, tta, cfg)
        total = prob if total is None else total.add_(prob)
    return total / len(models) if len(models) > 1 else total


# ------------------------------------------------------------------------------ CV folders
def is_cv_folder(path: str | Path) -> bool:
    return (Path(path) / "folds.json").is_file()


def fold_checkpoints(cv_dir: str | Path) -> list[Path]:
    """``fold_<i>/checkpoints/best.pt`` for every fold ``folds.json`` lists, or a :class:`FoldError` saying
    what is missing and how to finish it (``medseg cv CONFIG --folds K`` resumes)."""
    cv_dir = Path(cv_dir)
    if not cv_dir.is_dir():
        raise FoldError(f"--run {cv_dir}: no such folder; give the folder `medseg cv CONFIG --folds K` wrote "
                        "(it holds folds.json and fold_0/, fold_1/, ...)")
    if not is_cv_folder(cv_dir):
        single = (cv_dir / "checkpoints").is_dir() or (cv_dir / "config.yaml").is_file()
        what = ("a single run folder; predict with it through --checkpoint " + str(cv_dir) + ", or give"
                if single else "not a cross-validation folder; expected")
        raise FoldError(f"--run {cv_dir} is {what} the folder `medseg cv CONFIG --folds K` writes: folds.json "
                        "beside fold_0/, fold_1/, ... each with checkpoints/best.pt")
    folds = _fold_count(cv_dir / "folds.json")
    paths = [cv_dir / f"fold_{k}" / "checkpoints" / "best.pt" for k in range(folds)]
    missing = [k for k, p in enumerate(paths) if not p.is_file()]
    if missing:
        found = sorted(p.name for p in cv_dir.glob("fold_*") if p.is_dir())
        names = ", ".join(f"fold_{k}" for k in missing)
        raise FoldError(f"--run {cv_dir}: folds.json lists {folds} folds but {names} "
                        f"{'has' if len(missing) == 1 else 'have'} no checkpoints/best.pt (fold folders found: "
                        f"{', '.join(found) or 'none'}). Finish the folds with `medseg cv CONFIG --folds {folds} "
                        f"--output {cv_dir}` (it resumes the unfinished ones), or predict with one finished fold "
                        f"through --checkpoint {cv_dir}/fold_<i>")
    return paths


def _fold_count(path: Path) -> int:
    try:
        folds = json.loads(path.read_text()).get("folds")
    except (OSError, ValueError, AttributeError) as err:
        raise FoldError(f"{path}: not readable as the folds.json `medseg cv` writes ({err})") from None
    if not isinstance(folds, int) or folds < 1:
        raise FoldError(f"{path}: 'folds' must be a positive number of folds, got {folds!r}")
    return folds


def contract_values(cfg: RunConfig) -> dict[str, Any]:
    """The :data:`CONTRACT` keys of a config, flattened (``data.nifti.orientation``, ...)."""
    dump = cfg.model_dump(mode="json")
    out: dict[str, Any] = {"spatial_dims": cfg.spatial_dims}
    for key in CONTRACT[1:]:
        node: Any = dump
        for part in key.split("."):
            node = node[part]
        if isinstance(node, dict):
            out.update({f"{key}.{k}": v for k, v in node.items() if k not in NIFTI_TRAIN_ONLY})
        else:
            out[key] = node
    return out


def check_contract(configs: Sequence[RunConfig], names: Sequence[str]) -> None:
    """Raise a :class:`FoldError` naming the first key on which a fold differs from the first fold."""
    ref = contract_values(configs[0])
    for cfg, name in zip(configs[1:], names[1:]):
        values = contract_values(cfg)
        for key, value in values.items():
            if value != ref.get(key):
                raise FoldError(f"the folds do not share the model input contract: {key} is {value!r} in {name} "
                                f"but {ref.get(key)!r} in {names[0]}; an ensemble averages predictions of one "
                                "input, so every fold must be trained with the same value (retrain that fold, "
                                "or predict with the folds separately through --checkpoint)")


def load_fold_ensemble(cv_dir: str | Path) -> tuple[list[nn.Module], RunConfig, list[Path]]:
    """The models of every fold of a CV folder (``best.pt``, weights-only), the first
    fold's config (its pre/post-processing applies to all, the contract being checked) and the
    checkpoint paths."""
    from medseg.engine.trainer import model_from_checkpoint

    paths = fold_checkpoints(cv_dir)
    models, configs = [], []
    for path in paths:
        model, cfg = model_from_checkpoint(path)  # one CheckpointError per fold, naming its file
        models.append(model)
        configs.append(cfg)
    names = [p.parent.parent.name for p in paths]
    check_contract(configs, names)
    dims = {name: int(getattr(m, "spatial_dims", configs[0].spatial_dims)) for name, m in zip(names, models)}
    if len(set(dims.values())) > 1:
        raise FoldError(f"the folds' models differ in spatial dims ({dims}); an ensemble needs one kind")
    return models, configs[0], paths


__all__ = ["CONTRACT", "TTA_CHOICES", "FoldError", "check_contract", "contract_values", "ensemble_probabilities", "fold_checkpoints", "is_cv_folder", "load_fold_ensemble",
           "member_probabilities", "tta_flips"]
