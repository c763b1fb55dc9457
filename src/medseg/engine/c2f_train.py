"""Training of the coarse-to-fine (MLL/MLN, RSTN-based) pipeline, one view at a time (``docs/mll.md``).

Why not :mod:`medseg.engine.trainer`: that loop trains *one* model on the batches of a ``DataLoader`` and
scores it with one forward per case. A coarse-to-fine step runs two networks and the saliency module on a
3-slice unit, chooses a crop box that depends on the stage (ground truth, then the coarse prediction), and
validation needs Algorithm 1 on whole volumes. So this is a small loop of its own that reuses the generic
trainer's pieces: atomic checkpoints and weights-only ``load_checkpoint`` (:mod:`medseg.engine.checkpoint`),
the run-folder checks (:func:`medseg.engine.trainer.prepare_run_dir`), the logs
(:class:`medseg.engine.logs.RunLogger`), seeding and the SIGINT/SIGTERM flag.

A recipe (:class:`C2FRecipe`, YAML) names the data (an nnU-Net/MSD folder, or the synthetic phantom),
the HU window, the views, the networks and the loss by registry name (``create_model`` / ``create_loss``),
and the schedule. Each view is trained into its own run folder ``<output>/<name>/<view>/``.

Schedule (RSTN stages and the MLL paper, see :func:`stage_of` and :func:`learning_rate`):

- stage ``S`` for the first ``stages.s`` epochs: ground-truth box, the fine input is the raw unit twice;
- stage ``I`` until ``stages.j_from``: ground-truth box, fine input ``[image * F_S(coarse prob), image]``
  with gradients through ``F_S`` into the coarse network;
- stage ``J`` afterwards: box of the coarse prediction (``prob >= 0.5``), the ground-truth box when that
  is empty;
- learning rate ``lr`` until ``decay_from``, then halved every ``halve_every`` epochs, reset to ``lr`` at
  each epoch of ``reset_at`` (the MLL pixel term switches on there) and halved again from it;
- the loss's and the networks' ``set_epoch(e)`` run at the start of each epoch (α ramp, β/γ switches,
  MLN's branches);
- early stopping: validation DSC (Algorithm 1 on the validation volumes, this view only) after each
  epoch; ``patience`` epochs without improvement stop the run.

Every epoch's unit order, crop jitter and dropout are a pure function of ``(seed, epoch)``, so a run
resumed from an epoch checkpoint ends with the same weights as an uninterrupted one. A signal (SIGINT,
SIGTERM) stops after the current step and writes a mid-epoch ``last.pt`` (step count, generator states,
loss sums); resumed, the epoch skips the units already trained on and continues bit-identically, as
:mod:`medseg.engine.trainer` does.

After each epoch the BatchNorm statistics are re-estimated at the final weights (:func:`recalibrate_bn`):
at batch size 1 the running averages lag behind the weights, and evaluation with them gave an empty
coarse mask on the phantom.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medseg.config import ConfigError
from medseg.data.splits import _permute
from medseg.data.views import VIEWS, load_case, training_slices, view_axis
from medseg.engine import checkpoint as ckpt
from medseg.engine.c2f import ViewModels, segment_volume
from medseg.engine.logs import RunLogger, environment_record
from medseg.engine.runtime import pick_device, seed_everything
from medseg.errors import CheckpointError, DataError, TrainingError
from medseg.losses import create_loss
from medseg.metrics import dice
from medseg.models import create_model
from medseg.models.c2f import crop, crop_box, uncrop
from medseg.modules.saliency import SaliencyTransform, fine_input

FORMAT = "medseg-c2f-checkpoint-1"


# --------------------------------------------------------------------------------------------- recipe
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class PhantomConfig(_Strict):
    """Write the synthetic CT phantom into ``data.root`` when it holds no dataset yet."""

    n: int = Field(4, ge=2)
    seed: int = 0
    shape: tuple[int, int, int] = (96, 80, 32)
    spacing: tuple[float, float, float] = (1.5, 1.5, 3.0)
    target_length: float = Field(60.0, gt=0)
    target_radius: float = Field(6.0, gt=0)
    target_hu: float = 100.0
    noise: float = Field(15.0, ge=0)

    def spec(self) -> Any:
        from medseg.data.phantom import PhantomSpec

        return PhantomSpec(self.shape, self.spacing, self.target_length, self.target_radius, self.noise,
                           self.target_hu)


class C2FSplit(_Strict):
    """Per-volume split: ``kfold`` (sorted ids, fold ``fold`` of ``folds`` is validation) or ``random``
    (``val`` volumes drawn with ``seed``)."""

    mode: Literal["kfold", "random"] = "kfold"
    folds: int = Field(4, ge=2)
    fold: int = Field(0, ge=0)
    val: int = Field(1, ge=1)
    seed: int = 0


class C2FFiles(_Strict):
    """Case-folder layout: the image and label of each case as paths relative to ``data.root`` with
    ``{case}`` for the case id, e.g. ``images/{case}/T1c_subtrMeanDivStd.nii.gz`` and
    ``masks/{case}/OTMultiClass.nii.gz`` (one image channel: the 3 input channels are 3 slices)."""

    image: str
    label: str

    @model_validator(mode="after")
    def _check(self) -> "C2FFiles":
        for key, pattern in (("image", self.image), ("label", self.label)):
            if pattern.count("{case}") != 1 or any(c in pattern.replace("{case}", "") for c in "{}*?[]"):
                raise ValueError(f"data.files.{key} '{pattern}' must hold '{{case}}' exactly once and no other "
                                 "braces or wildcards, e.g. images/{case}/T1c.nii.gz")
        return self


class C2FData(_Strict):
    root: str
    window: tuple[float, float]  # intensity window clipped and scaled to [0, 1]: HU for CT, z-scores for MRI
    views: list[Literal["axial", "coronal", "sagittal"]] = ["axial", "coronal", "sagittal"]
    split: C2FSplit = C2FSplit()
    slice_threshold: float = Field(0.98, gt=0, le=1)
    phantom: PhantomConfig | None = None
    files: C2FFiles | None = None  # None: nnU-Net/MSD layout (imagesTr/<case>_0000, labelsTr/<case>)
    label_values: list[int] | None = None  # the target is "label in label_values"; None: label > 0
    downsample: int = Field(1, ge=1)  # integer block downsampling along every axis (image mean, label majority)
    crop_foreground: bool = False  # crop each volume to the voxels above window[0] (e.g. the brain)

    @model_validator(mode="after")
    def _check(self) -> "C2FData":
        if not self.window[1] > self.window[0]:
            raise ValueError(f"data.window {list(self.window)}: high must be greater than low, e.g. [-100, 240]")
        if not self.views:
            raise ValueError("data.views is empty; list at least one of axial, coronal, sagittal")
        if self.label_values is not None:
            if not self.label_values or len(set(self.label_values)) != len(self.label_values) or min(
                    self.label_values) < 1:
                raise ValueError(f"data.label_values {self.label_values}: give distinct foreground labels >= 1, "
                                 "e.g. [1, 3, 4] for the BraTS tumour core (0 is background)")
        if self.phantom is not None and (self.files is not None or self.label_values is not None):
            raise ValueError("data.phantom writes the nnU-Net layout with a 0/1 label; drop data.files and "
                             "data.label_values, or data.phantom")
        return self


class Component(_Strict):
    name: str
    kwargs: dict[str, Any] = {}


class C2FStages(_Strict):
    s: int = Field(2, ge=0)  # epochs of stage S
    j_from: int = Field(8, ge=0)  # first epoch of stage J (coarse boxes)


class C2FSchedule(_Strict):
    lr: float = Field(1e-5, gt=0)
    decay_from: int = Field(8, ge=0)
    halve_every: int = Field(2, ge=1)
    reset_at: list[int] = [12]


class C2FTrain(_Strict):
    epochs: int = Field(20, ge=1)
    seed: int = 0
    margin: int = Field(20, ge=0)
    jitter: bool = False
    max_steps_per_epoch: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)  # epochs without a better validation DSC before stopping
    val_rounds: int = Field(10, ge=0)
    # validate every N epochs and after the last; 0: never (no best.pt, no early stopping, the last epoch is used)
    val_every: int = Field(1, ge=0)
    device: str = "auto"
    weight_decay: float = Field(0.0, ge=0)
    recalibrate_bn: int = Field(200, ge=0)  # units (at most) that re-estimate BN statistics after each epoch


class C2FRecipe(_Strict):
    """A coarse-to-fine training recipe (``src/medseg/recipes/mll/*.yaml``)."""

    name: str
    output_dir: str = "runs"
    data: C2FData
    coarse: Component = Component(name="c2f_coarse")
    fine: Component = Component(name="c2f_fine")
    loss: Component = Component(name="mll", kwargs={"coarse_key": "coarse", "fine_key": "out"})
    stages: C2FStages = C2FStages()
    schedule: C2FSchedule = C2FSchedule()
    train: C2FTrain = C2FTrain()

    @model_validator(mode="after")
    def _check(self) -> "C2FRecipe":
        if self.stages.s > self.stages.j_from:
            raise ValueError(f"stages.s ({self.stages.s}) must not exceed stages.j_from ({self.stages.j_from})")
        if self.train.patience is not None and self.train.val_every == 0:
            raise ValueError("train.patience needs validation; set train.val_every >= 1 or drop train.patience")
        if self.data.split.mode == "kfold" and self.data.split.fold >= self.data.split.folds:
            raise ValueError(f"data.split.fold {self.data.split.fold} must be < folds {self.data.split.folds}")
        return self


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> C2FRecipe:
    """A validated recipe; unknown keys, bad values and unknown component names are a :class:`ConfigError`."""
    try:
        recipe = C2FRecipe.model_validate(raw)
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{source} is not a valid coarse-to-fine recipe:\n  " + "\n  ".join(lines)) from None
    from medseg.losses import LOSSES
    from medseg.models import MODELS

    for what, comp, registry in (("coarse", recipe.coarse, MODELS), ("fine", recipe.fine, MODELS),
                                 ("loss", recipe.loss, LOSSES)):
        if comp.name not in registry.names():
            raise ConfigError(f"{source}: {what}.name '{comp.name}' is not registered; choose one of "
                              f"{', '.join(sorted(registry.names()))}")
    return recipe


def load_recipe(path: str | Path) -> C2FRecipe:
    """Read and validate a recipe YAML (a :class:`ConfigError` names the file and the key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path} (see src/medseg/recipes/mll/ for examples)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a YAML mapping (name, data, ...)")
    return validate_recipe(raw, str(path))


# ------------------------------------------------------------------------------------------- schedule
def stage_of(epoch: int, stages: C2FStages) -> str:
    """RSTN stage of an epoch: ``S`` (GT box, raw fine input), ``I`` (GT box, saliency), ``J`` (coarse box)."""
    if epoch < stages.s:
        return "S"
    return "I" if epoch < stages.j_from else "J"


def learning_rate(epoch: int, schedule: C2FSchedule) -> float:
    """``lr`` before ``decay_from``; afterwards ``lr * 0.5 ** ((epoch - start) // halve_every)`` where
    ``start`` is the latest of ``decay_from`` and the ``reset_at`` epochs not after ``epoch``."""
    if epoch < schedule.decay_from:
        return schedule.lr
    start = max([schedule.decay_from] + [r for r in schedule.reset_at if r <= epoch])
    return schedule.lr * 0.5 ** ((epoch - start) // schedule.halve_every)


# ----------------------------------------------------------------------------------------------- data
@dataclass
class Volume:
    """A window-scaled volume with its binary target and the view's axis (after any ``data.downsample``
    and ``data.crop_foreground``; ``spacing`` is then the downsampled one; ``affine`` gives the orientation
    of the views and is not shifted by a crop)."""

    case: str
    image: np.ndarray
    label: np.ndarray
    axis: int
    spacing: tuple[float, ...] = ()
    affine: np.ndarray | None = None


def dataset_cases(root: str | Path, files: C2FFiles | None = None) -> dict[str, tuple[Path, Path]]:
    """``{case id: (image, label)}`` of an nnU-Net/MSD folder (``imagesTr/<id>_0000.nii.gz``,
    ``labelsTr/<id>.nii.gz``), or of a case-folder layout given by ``files`` (patterns with ``{case}``); a
    missing label or no case at all is a :class:`DataError`."""
    root = Path(root)
    if files is not None:
        return _pattern_cases(root, files)
    images = sorted((root / "imagesTr").glob("*_0000.nii*"))
    if not images:
        raise DataError(f"{root}: no imagesTr/<case>_0000.nii.gz files; a coarse-to-fine dataset needs the "
                        "nnU-Net/MSD layout (imagesTr/, labelsTr/), see docs/mll.md")
    cases = {}
    for img in images:
        case = img.name.split("_0000.nii")[0]
        ext = img.name[len(case) + 5:]
        label = root / "labelsTr" / f"{case}{ext}"
        if not label.is_file():
            raise DataError(f"{img}: no label {label}; every training image needs its label in labelsTr/")
        cases[case] = (img, label)
    return cases


def _pattern_cases(root: Path, files: C2FFiles) -> dict[str, tuple[Path, Path]]:
    import re

    head, tail = files.image.split("{case}")
    regex = re.compile(re.escape(head) + r"([^/]+)" + re.escape(tail) + "$")
    cases = {}
    for img in sorted(root.glob(files.image.replace("{case}", "*"))):
        match = regex.match(img.relative_to(root).as_posix())
        if match is None:
            continue
        case = match.group(1)
        label = root / files.label.replace("{case}", case)
        if not label.is_file():
            raise DataError(f"{img}: no label {label} (data.files.label '{files.label}'); every image needs its label")
        cases[case] = (img, label)
    if not cases:
        raise DataError(f"{root}: no file matches data.files.image '{files.image}'; check data.root and the pattern")
    return cases


def ensure_data(data: C2FData) -> Path:
    """The dataset folder; the phantom is written there first when ``data.phantom`` is set and it is empty.

    A phantom already in the folder must have been written with the recipe's settings (``dataset.json``
    records them): one written with other settings, e.g. by an older medseg whose target was invisible,
    is a :class:`DataError` rather than silently trained on."""
    root = Path(data.root)
    if data.phantom is None:
        return root
    from medseg.data.phantom import phantom_record, write_phantom_dataset

    p = data.phantom
    if not any((root / "imagesTr").glob("*_0000.nii*")):
        write_phantom_dataset(root, p.n, p.seed, p.spec())
        return root
    try:
        info = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        info = {}
    want = {"phantom": phantom_record(p.seed, p.spec()), "numTraining": p.n}
    have = {k: info.get(k) for k in want}
    if have != want:
        raise DataError(f"{root} holds a dataset that was not written with this recipe's data.phantom settings "
                        f"({root / 'dataset.json'} records {have}, the recipe asks for {want}); delete the folder "
                        "so that the phantom is written again, or set data.root to an empty folder")
    return root


def split_cases(ids: list[str], split: C2FSplit) -> tuple[list[str], list[str]]:
    """``(train, val)`` case ids, per volume (never per slice)."""
    ids = sorted(ids)
    if split.mode == "kfold":
        if len(ids) < split.folds:
            raise DataError(f"{len(ids)} cases cannot make {split.folds} folds; lower data.split.folds")
        val = [c for i, c in enumerate(ids) if i % split.folds == split.fold]
    else:
        if split.val >= len(ids):
            raise DataError(f"data.split.val = {split.val} leaves no training case out of {len(ids)}")
        val = sorted(_permute(ids, split.seed)[:split.val])
    return [c for c in ids if c not in val], val


def load_volumes(cases: dict[str, tuple[Path, Path]], ids: list[str], view: str, window: tuple[float, float], *,
                 label_values: list[int] | None = None, downsample: int = 1,
                 crop_foreground: bool = False) -> list[Volume]:
    """The window-scaled volumes and binary targets of ``ids`` for ``view`` (see :class:`C2FData` for
    ``label_values``, ``downsample`` and ``crop_foreground``)."""
    from medseg.data.views import downsample as block_downsample
    from medseg.data.views import foreground_box

    out = []
    for case in ids:
        img, lab = cases[case]
        image, label, spacing, affine = load_case(img, lab, window, label_values=label_values)
        if downsample > 1:
            image, label = block_downsample(image, label, downsample)
            spacing = tuple(s * downsample for s in spacing)
            affine = affine @ np.diag([downsample] * 3 + [1])
        if crop_foreground:
            box = foreground_box(image, label, img)
            image, label = np.ascontiguousarray(image[box]), np.ascontiguousarray(label[box])
        axis = view_axis(view, affine)
        if image.shape[axis] < 3:
            raise DataError(f"{img}: only {image.shape[axis]} slice(s) along the {view} view (shape {image.shape}); "
                            "3-slice units need at least 3. Train another view (--view) or resample the volume")
        out.append(Volume(case, image, label, axis, spacing, affine))
    return out


def recipe_volumes(data: C2FData, cases: dict[str, tuple[Path, Path]], ids: list[str], view: str) -> list[Volume]:
    """:func:`load_volumes` with the recipe's ``data`` options."""
    return load_volumes(cases, ids, view, data.window, label_values=data.label_values, downsample=data.downsample,
                        crop_foreground=data.crop_foreground)


def unit_index(volumes: list[Volume], threshold: float) -> list[tuple[int, int]]:
    """``(volume index, centre slice)`` of every training unit (RSTN's slice rule); cases without target
    voxels give none and are counted in a warning."""
    import warnings

    units, skipped = [], []
    for v, vol in enumerate(volumes):
        centres = training_slices(vol.label, vol.axis, threshold)
        if centres.size == 0:
            skipped.append(vol.case)
        units.extend((v, int(c)) for c in centres)
    if skipped:
        warnings.warn(f"{len(skipped)} of {len(volumes)} training cases have no target voxels and are skipped "
                      f"(first: {skipped[:5]})", stacklevel=2)
    if not units:
        raise DataError("no training unit: no training case has target voxels in its label")
    return units


def unit_tensors(vol: Volume, centre: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, label)`` of one unit as ``1 x 3 x H x W`` float tensors."""
    idx = np.clip(centre + np.array([-1, 0, 1]), 0, vol.image.shape[vol.axis] - 1)
    img = np.moveaxis(vol.image, vol.axis, 0)[idx]
    lab = np.moveaxis(vol.label, vol.axis, 0)[idx]
    return (torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None],
            torch.from_numpy(np.ascontiguousarray(lab, dtype=np.float32))[None])


# ---------------------------------------------------------------------------------------------- models
@dataclass
class Nets:
    coarse: nn.Module
    fine: nn.Module
    saliency: nn.Module

    def modules(self) -> dict[str, nn.Module]:
        return {"coarse": self.coarse, "fine": self.fine, "saliency": self.saliency}

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules().values() for p in m.parameters()]

    def state_dict(self) -> dict[str, Any]:
        return {k: m.state_dict() for k, m in self.modules().items()}

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        from medseg.engine.trainer import load_model_weights

        if not isinstance(state, dict) or set(state) != {"coarse", "fine", "saliency"}:
            raise CheckpointError(f"{source} does not hold coarse/fine/saliency weights (not a `medseg c2f train` "
                                  "checkpoint)")
        for k, m in self.modules().items():
            load_model_weights(m, state[k], f"{source} [{k}]")

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to every network that has ``set_epoch`` (MLN switches its branches on at 12)."""
        for m in self.modules().values():
            if hasattr(m, "set_epoch"):
                m.set_epoch(epoch)

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    def view_models(self, axis: int) -> ViewModels:
        return ViewModels(axis, self.coarse, self.fine, self.saliency)


def build_nets(recipe: C2FRecipe, device: torch.device | str = "cpu") -> Nets:
    """Coarse and fine networks by registry name (``c2f_coarse``/``c2f_fine``, or ``mln`` when registered),
    and the saliency transformation (RSTN init)."""
    coarse = create_model(recipe.coarse.name, **recipe.coarse.kwargs)
    fine = create_model(recipe.fine.name, **recipe.fine.kwargs)
    return Nets(coarse.to(device), fine.to(device), SaliencyTransform(3).to(device))


# ------------------------------------------------------------------------------------------------ step
def forward_unit(nets: Nets, image: torch.Tensor, label: torch.Tensor, stage: str, margin: int,
                 jitter_rng: np.random.Generator | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The forward of one unit in ``stage``: ``(outputs, batch)`` as the loss receives them (see
    :func:`train_step`)."""
    coarse_out = nets.coarse(image)
    coarse_logits = coarse_out["out"] if isinstance(coarse_out, dict) else coarse_out
    prob = torch.sigmoid(coarse_logits)
    box = None
    if stage == "J":
        box = crop_box((prob.detach() >= 0.5), margin, jitter_rng is not None, jitter_rng)
    if box is None:  # stages S and I, or an empty coarse prediction in J: the ground-truth box
        box = crop_box(label > 0.5, margin, jitter_rng is not None, jitter_rng)
    if stage == "S":
        x = fine_input(image, torch.ones_like(image))
    else:
        x = fine_input(image, nets.saliency(prob))
    fine_out = nets.fine(crop(x, box))
    fine_out = fine_out if isinstance(fine_out, dict) else {"out": fine_out}
    # the fine outputs other than "out" are on the crop's grid; "logits" is renamed so that a loss that
    # reads outputs["logits"] against the full-slice label cannot mix the two grids without knowing it
    extra = {("crop_logits" if k == "logits" else k): v for k, v in fine_out.items() if k != "out"}
    outputs = {**extra, "coarse": coarse_logits, "out": uncrop(fine_out["out"], box, image.shape[-2:])}
    return outputs, {"label": label, "label_crop": crop(label, box), "box": box}


def train_step(nets: Nets, loss_fn: nn.Module, image: torch.Tensor, label: torch.Tensor, stage: str,
               margin: int, jitter_rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
    """Forward of one unit in ``stage`` and the loss terms (``"loss"`` to backpropagate, plus ``"box"``).

    The loss gets ``outputs = {"coarse": full-slice coarse logits, "out": full-slice fine logits (uncropped,
    -1e7 outside the box), "crop_logits": the fine model's stride-4 logits of the crop, plus the fine
    model's other outputs (on the crop's grid)}`` and ``batch = {"label": full-slice label, "label_crop":
    the crop's label (the label of every crop-grid output), "box": box}``.
    """
    outputs, batch = forward_unit(nets, image, label, stage, margin, jitter_rng)
    requires = set(getattr(loss_fn, "requires", set()) or set())
    if requires:
        from medseg.ops import prepare_targets

        batch = prepare_targets(batch, requires, num_classes=1)
    return dict(loss_fn(outputs, batch))


def _recalibrated_norms(nets: Nets) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers whose statistics training updates (the ASPP's image-pooling BN, which at batch
    size 1 always normalises with its fixed running statistics, is left as it is)."""
    from medseg.modules.aspp import PoolBatchNorm

    return [m for net in nets.modules().values() for m in net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, PoolBatchNorm)
            and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(nets: Nets, units: list[tuple[torch.Tensor, torch.Tensor]], stage: str, margin: int) -> int:
    """Re-estimate every BatchNorm's running statistics at the current weights ("precise BN", Wu & Johnson,
    "Rethinking 'Batch' in BatchNorm", 2021): the running mean and variance become the plain average, over
    ``units`` (batch 1 each, the stage's forward with the margin fixed), of the per-unit batch statistics
    that training normalised with, i.e. ``mu = (1/n) sum_u mean_u`` and ``var = (1/n) sum_u var_u``.

    Why: training runs at batch size 1 (RSTN, the paper), so each unit is normalised by its own statistics,
    while evaluation uses the running averages (momentum 0.1), which lag far behind weights that change
    quickly and are taken with dropout on (the ASPP's dropout comes right before the head's BN). On the
    phantom this made the coarse model output ~0.47 everywhere in eval mode while the same weights gave 0.96
    on the target in train mode, so the coarse mask was empty and the validation DSC 0. Dropout is off here
    (eval mode), only the BN layers collect statistics; no random number is drawn. Returns the layers
    recalibrated.
    """
    norms = _recalibrated_norms(nets)
    if not norms or not units:
        return 0
    was = {name: m.training for name, m in nets.modules().items()}
    momenta = [m.momentum for m in norms]
    nets.train(False)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train(True)
    try:
        for image, label in units:
            forward_unit(nets, image, label, stage, margin, None)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
            m.train(False)
        for name, m in nets.modules().items():
            m.train(was[name])
    return len(norms)


# ------------------------------------------------------------------------------------------- validation
def validate_view(nets: Nets, volumes: list[Volume], rounds: int, margin: int,
                  device: torch.device | str = "cpu") -> float:
    """Mean per-volume DSC of Algorithm 1 run with this view alone (``rounds`` fine rounds at most)."""
    nets.train(False)
    scores = []
    for vol in volumes:
        result, _ = segment_volume(vol.image, [nets.view_models(vol.axis)], max_rounds=rounds, margin=margin,
                                   device=device)
        scores.append(dice(result.mask, vol.label))  # per volume; 1.0 when both are empty
    nets.train(True)
    return float(np.mean(scores)) if scores else float("nan")


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class ViewTrainer:
    """Trains one view of a recipe into ``run_dir`` (see the module docstring)."""

    recipe: C2FRecipe
    view: str
    run_dir: Path
    validate_fn: Callable[["ViewTrainer"], float] | None = None
    echo: Callable[[str], None] | None = print
    epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "epoch": None})
    stale: int = 0
    stopped_early: bool = False
    step_in_epoch: int = 0  # > 0: a mid-epoch checkpoint; the epoch continues after this many steps
    _rng: dict[str, Any] | None = None  # generator states written into a mid-epoch checkpoint
    _resume_rng: dict[str, Any] | None = None  # generator states of a mid-epoch checkpoint, applied once
    _partial: dict[str, Any] | None = None  # the interrupted epoch's loss sums

    def setup(self, state: dict[str, Any] | None) -> None:
        r = self.recipe
        self.device = pick_device(r.train.device)
        seed_everything(r.train.seed)
        self.nets = build_nets(r, self.device)
        self.loss_fn = create_loss(r.loss.model_dump(), num_classes=1).to(self.device)
        self.optimizer = torch.optim.Adam(self.nets.parameters(), lr=r.schedule.lr, weight_decay=r.train.weight_decay)
        if state is not None:
            self.restore(state)
        root = ensure_data(r.data)
        cases = dataset_cases(root, r.data.files)
        train_ids, val_ids = split_cases(list(cases), r.data.split)
        self.train_vols = recipe_volumes(r.data, cases, train_ids, self.view)
        self.val_vols = recipe_volumes(r.data, cases, val_ids, self.view)
        self.units = unit_index(self.train_vols, r.data.slice_threshold)
        self.logger = RunLogger(self.run_dir / "logs")
        if state is not None:  # drop the step records written after the checkpoint (they are redone)
            self.logger.resume(self.epoch, _global_step(self.epoch, self.step_in_epoch) - 1)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        r = self.recipe
        return {"format": FORMAT, "view": self.view, "model_name": f"{r.coarse.name}+{r.fine.name}",
                "model": self.nets.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "best": dict(self.best), "stale": self.stale, "stopped_early": self.stopped_early,
                "step_in_epoch": self.step_in_epoch, "rng": self._rng, "epoch_partial": self._partial,
                "config": r.model_dump(mode="json")}

    def restore(self, state: dict[str, Any]) -> None:
        check_checkpoint(state, "the checkpoint", self.view, self.recipe)
        self.nets.load_state_dict(state["model"], "the checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best = int(state["epoch"]), dict(state["best"])
        self.stale, self.stopped_early = int(state["stale"]), bool(state["stopped_early"])
        self.step_in_epoch = int(state.get("step_in_epoch", 0))
        if self.step_in_epoch:
            self._resume_rng, self._partial = state["rng"], state.get("epoch_partial")

    def save(self, best: bool, mid_epoch: bool = False) -> None:
        """``last.pt``; at an epoch's end also ``epoch_NNN.pt`` (the last two kept) and ``best.pt``."""
        state = self.state_dict()
        folder = self.run_dir / "checkpoints"
        ckpt.save_checkpoint(state, folder / "last.pt")
        if mid_epoch:
            return
        ckpt.save_checkpoint(state, folder / f"epoch_{self.epoch:03d}.pt")
        ckpt.prune_epoch_checkpoints(folder, 2)
        if best:
            ckpt.save_checkpoint(state, folder / "best.pt")

    # ------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        from medseg.engine.trainer import StopFlag

        r = self.recipe
        status = "finished"
        with StopFlag() as stop:
            while self.epoch < r.train.epochs and not self.stopped_early:
                if stop.requested:  # came during the last step of an epoch: last.pt is that epoch's end
                    status = "interrupted"
                    self._say(f"stopped after epoch {self.epoch - 1}; continue with: medseg c2f train RECIPE "
                              f"--view {self.view} --resume")
                    break
                if not self.train_epoch(stop):
                    status = "interrupted"
                    self._say(f"stopped during epoch {self.epoch} after step {self.step_in_epoch}; checkpoint saved "
                              f"to {self.run_dir / 'checkpoints' / 'last.pt'}; continue with: "
                              f"medseg c2f train RECIPE --view {self.view} --resume")
                    break
        if self.stopped_early:
            status = "stopped_early"
        self.logger.close()
        return {"run_dir": str(self.run_dir), "view": self.view, "status": status, "epochs": self.epoch,
                "best_dice": self.best["value"], "best_epoch": self.best["epoch"]}

    def train_epoch(self, stop: Any = None) -> bool:
        """One epoch, or its rest after a mid-epoch checkpoint; False when a signal stopped it (then
        ``last.pt`` holds the weights after the last step, the step count, the generator states and the loss
        sums, so that a resumed trainer continues the epoch bit-identically)."""
        from medseg.engine.runtime import rng_state, set_rng_state

        r, e = self.recipe, self.epoch
        stage, lr = stage_of(e, r.stages), learning_rate(e, r.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(e)
        self.nets.set_epoch(e)
        order = epoch_order(len(self.units), r.train, e)
        jitter = np.random.default_rng([r.train.seed, e, 1]) if r.train.jitter else None
        skip, done = self.step_in_epoch, (self._partial or {}) if self.step_in_epoch else {}
        if skip and self._resume_rng is not None:  # the generators exactly as the interrupted run left them
            set_rng_state(self._resume_rng["global"])
            if jitter is not None:
                jitter.bit_generator.state = self._resume_rng["jitter"]
        else:
            torch.manual_seed(_epoch_seed(r.train.seed, e))  # dropout, point sampling: a function of (seed, epoch)
        self._resume_rng, self._partial = None, None
        self.nets.train(True)
        sums: dict[str, float] = dict(done.get("sums", {}))
        t0 = time.perf_counter() - float(done.get("time_s", 0.0))
        for step in range(skip, len(order)):
            v, centre = self.units[order[step]]
            image, label = (t.to(self.device) for t in unit_tensors(self.train_vols[v], centre))
            terms = train_step(self.nets, self.loss_fn, image, label, stage, r.train.margin, jitter)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise TrainingError(f"non-finite loss at epoch {e}, step {step} (case {self.train_vols[v].case}, "
                                    f"slice {centre}); lower schedule.lr. The last good checkpoint is "
                                    f"{self.run_dir / 'checkpoints' / 'last.pt'}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            values = {k: float(t.detach()) for k, t in terms.items() if torch.is_tensor(t) and t.numel() == 1}
            for k, val in values.items():
                sums[k] = sums.get(k, 0.0) + val
            self.logger.step({"epoch": e, "step": step, "global_step": _global_step(e, step), "stage": stage,
                              "lr": lr, **values})
            if stop is not None and stop.requested and step + 1 < len(order):
                self.step_in_epoch = step + 1
                self._rng = {"global": rng_state(), "jitter": None if jitter is None else jitter.bit_generator.state}
                self._partial = {"sums": sums, "time_s": time.perf_counter() - t0}
                self.save(best=False, mid_epoch=True)
                self._rng, self._partial = None, None
                return False
        n = max(len(order), 1)
        record = {"epoch": e, "stage": stage, "lr": lr, **{f"train_{k}": s / n for k, s in sums.items()},
                  "train_time_s": round(time.perf_counter() - t0, 3)}
        self.step_in_epoch = 0
        if r.train.recalibrate_bn:
            recalibrate_bn(self.nets, self._recalibration_units(r.train.recalibrate_bn), stage, r.train.margin)
        every = r.train.val_every
        validate = every > 0 and ((e + 1) % every == 0 or e + 1 == r.train.epochs)
        dice = (self.validate_fn or _default_validate)(self) if validate else float("nan")
        record["val_dice"] = dice
        better = validate and np.isfinite(dice) and (self.best["value"] is None or dice > self.best["value"])
        if better:
            self.best = {"value": float(dice), "epoch": e}
            self.stale = 0
        elif validate:
            self.stale += 1
        self.epoch += 1
        self.stopped_early = r.train.patience is not None and self.stale >= r.train.patience
        self.logger.epoch(record)
        self.save(best=bool(better))
        self._say(f"[{self.view}] epoch {e} stage {stage} lr {lr:.3g} loss {record.get('train_loss', float('nan')):.4f} "
                  f"val DSC {dice:.4f}")
        if self.stopped_early:
            self._say(f"early stop after epoch {e}: validation DSC has not improved for {self.stale} epochs "
                      f"(best {self.best['value']} at epoch {self.best['epoch']})")
        return True

    def _recalibration_units(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """At most ``count`` training units, evenly spaced over the unit list (the same every epoch)."""
        picks = np.unique(np.linspace(0, len(self.units) - 1, min(count, len(self.units))).round().astype(int))
        units = [self.units[i] for i in picks]
        return [tuple(t.to(self.device) for t in unit_tensors(self.train_vols[v], c)) for v, c in units]

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)


def epoch_order(n_units: int, train: C2FTrain, epoch: int) -> np.ndarray:
    """The units of an epoch, in order: a permutation drawn from ``(seed, epoch)``, cut to
    ``max_steps_per_epoch``."""
    order = np.random.default_rng([train.seed, epoch]).permutation(n_units)
    return order[: train.max_steps_per_epoch] if train.max_steps_per_epoch else order


def _global_step(epoch: int, step: int) -> int:
    return epoch * 10**6 + step


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, epoch, 2]).integers(0, 2**62))


def _default_validate(t: ViewTrainer) -> float:
    return validate_view(t.nets, t.val_vols, t.recipe.train.val_rounds, t.recipe.train.margin, t.device)


def check_checkpoint(state: dict[str, Any], source: str, view: str | None, recipe: C2FRecipe | None = None) -> None:
    """Refuse a checkpoint that is not a coarse-to-fine one, or was trained for another view or network."""
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a coarse-to-fine checkpoint (written by `medseg train`, not "
                              "`medseg c2f train`); give the folder of a `medseg c2f train` run")
    if view is not None and state.get("view") != view:
        raise CheckpointError(f"{source} was trained for the {state.get('view')} view, not {view}; use the run's "
                              f"{view}/ folder or train it: medseg c2f train RECIPE --view {view}")
    if recipe is not None and state.get("model_name") != f"{recipe.coarse.name}+{recipe.fine.name}":
        raise CheckpointError(f"{source} holds the networks {state.get('model_name')}, the recipe asks for "
                              f"{recipe.coarse.name}+{recipe.fine.name}")


# ------------------------------------------------------------------------------------------------ entry
def view_run_dir(recipe: C2FRecipe, view: str, output: str | Path | None = None) -> Path:
    return Path(output if output is not None else recipe.output_dir) / recipe.name / view


def train_view(recipe: C2FRecipe, view: str, output: str | Path | None = None, *, resume: bool = False,
               overwrite: bool = False, force: bool = False,
               validate_fn: Callable[[ViewTrainer], float] | None = None,
               echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train one view into ``<output>/<name>/<view>/`` (``resume`` continues from ``checkpoints/last.pt``)."""
    if view not in VIEWS:
        raise ConfigError(f"unknown view '{view}'; use one of {', '.join(VIEWS)}")
    run_dir = view_run_dir(recipe, view, output)
    state = _prepare(run_dir, recipe, resume, overwrite, force)
    trainer = ViewTrainer(recipe, view, run_dir, validate_fn, echo)
    trainer.setup(state)  # data and networks are checked before anything is written
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), run_dir / "config.yaml")
    env = environment_record(str(trainer.device), recipe.train.seed, {"view": view})
    ckpt.atomic_write_text(json.dumps(env, indent=2), run_dir / "env.json")
    return trainer.fit()


def _prepare(run_dir: Path, recipe: C2FRecipe, resume: bool, overwrite: bool, force: bool) -> dict | None:
    import shutil

    from medseg.config import config_diff

    has_run = bool(ckpt.checkpoint_files(run_dir / "checkpoints"))
    if resume:
        if not has_run:
            raise CheckpointError(f"--resume: {run_dir} holds no checkpoint; start it without --resume")
        state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
        old = ckpt.checkpoint_config(state, run_dir)
        try:  # with the defaults of options added since the run started, which then are not a change
            old = C2FRecipe.model_validate(old).model_dump(mode="json")
        except ValidationError:
            pass  # compared as stored: the differences name the keys
        diff = config_diff(old, recipe.model_dump(mode="json"))
        if diff and not force:
            raise ConfigError(f"the recipe differs from the run being resumed ({run_dir}):\n  " + "\n  ".join(diff)
                              + "\nresume with the run's own recipe, or pass --force to accept the changes")
        return state
    if has_run and not overwrite:
        raise ConfigError(f"{run_dir} already holds a run; use --resume to continue it or --overwrite to replace it")
    if has_run:
        for sub in ("checkpoints", "logs"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    return None


def train_recipe(recipe: C2FRecipe, views: list[str] | None = None, output: str | Path | None = None,
                 **kwargs: Any) -> list[dict[str, Any]]:
    """Train each view (default: the recipe's ``data.views``) independently, one after the other."""
    return [train_view(recipe, v, output, **kwargs) for v in (views or list(recipe.data.views))]
