"""Typed, validated configuration shared by every package.

A run is described by one YAML file validated into :class:`RunConfig` before anything runs:
unknown keys are errors that list the valid keys and the nearest one, and ``--set a.b=value``
overrides a field from the command line. Components (model, loss, metrics) are given by registry
name plus keyword arguments, checked against the factory's signature.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml

from medseg.errors import UserError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(UserError, ValueError):
    """A configuration that cannot run; the message says which key and how to fix it."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------------------- data
class SplitConfig(Strict):
    """How cases are divided into train / val / test."""

    mode: Literal["random", "file", "kfold", "fixed"] = "random"
    file: str | None = None  # JSON {"train": [...], "val": [...], "test": [...]} or CSV stem,split
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    folds: int = Field(5, ge=2)
    fold: int = Field(0, ge=0)
    seed: int = 0


class AugmentConfig(Strict):
    """Joint image/label augmentation (training split only)."""

    enabled: bool = True
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotate_deg: float = Field(0.0, ge=0, le=180)
    rotate_p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    crop_scale: tuple[float, float] | None = None  # random resized crop scale range, None = off


class SyntheticConfig(Strict):
    n_train: int = Field(64, ge=1)
    n_val: int = Field(16, ge=1)
    n_test: int = Field(16, ge=1)
    seed: int = 0
    noise: float = Field(0.1, ge=0)  # std of the additive Gaussian noise (structures differ by ~0.5)
    contrast: float = Field(0.5, gt=0)  # mean intensity step between structures and background


class NiftiConfig(Strict):
    """3-D volumes in the nnU-Net / MSD layout."""

    modality: Literal["CT", "MRI", "none"] = "MRI"
    window: tuple[float, float] | None = None  # CT clip window in HU, e.g. (-100, 240)
    patch_size: list[int] | None = None  # 3-D training patch; None = whole volume
    fg_oversample: float = Field(0.33, ge=0, le=1)
    samples_per_volume: int = Field(4, ge=1)
    slice_axis: int | None = None  # set to 0/1/2 to sample 2-D slices along that axis
    label_map: dict[int, int] | None = None  # e.g. BraTS {4: 3}
    layout: Literal["auto", "nnunet", "case_folders", "flat"] = "auto"
    channels: list[str] | None = None  # case_folders: channel file names in order; nnunet: "_0000" suffixes
    label_file: str | None = None  # case_folders: label file name inside masks/<case>/ (default: the only one)
    slice_eval: Literal["volume", "slices"] = "volume"  # slice_axis set: what val/test items are
    slice_fg_only: bool = False  # slice_axis set: use only slices that contain foreground
    nonfinite: Literal["error", "replace"] = "error"  # NaN/inf image voxels: refuse, or replace by the channel's finite min (warned per file)
    ct_scale: Literal["zscore", "window01"] = "zscore"  # CT after clipping: z-score, or (x - low) / (high - low) in [0, 1] (MLL/RSTN; needs window)
    # 3-D pipeline (docs/cwcd.md, Data pipeline): MONAI reorientation / resampling; None = keep the file's grid
    orientation: str | None = None  # canonical axis codes, e.g. "RAS"
    target_spacing: list[float] | None = None  # mm per axis after orientation, e.g. [1, 1, 1] (CWCD)
    oversample: Literal["foreground", "classes"] = "foreground"  # fg_oversample centres: any foreground voxel, or a class drawn uniformly among those present, then a voxel of it
    geometry_tol: float = Field(1e-3, gt=0)  # image vs label (and channel) affines: max abs difference (mm) allowed
    # train on BraTS regions: each label map becomes float WT/TC/ET channels for 3 sigmoid outputs (num_classes 3,
    # a sigmoid loss such as dice_bce); scored as regions, no argmax (docs/cwcd.md, region training)
    regions: Literal["brats", "brats2015"] | None = None


class Augment3DConfig(Strict):
    """3-D augmentation of training patches (MONAI dictionary transforms, seeded per sample); disabled =
    the older flips of every axis with ``augment.hflip``. CWCD: every probability 0.2, rotation 15 degrees."""

    enabled: bool = False
    rotate_deg: float = Field(15.0, ge=0, le=180)  # each axis, uniform in [-deg, deg]
    rotate_p: float = Field(0.2, ge=0, le=1)
    flip_p: list[float] = Field(default_factory=lambda: [0.2, 0.2, 0.2])  # per spatial axis, independent
    scale_range: tuple[float, float] = (0.85, 1.15)  # isotropic zoom factor (size kept)
    scale_p: float = Field(0.2, ge=0, le=1)
    gamma_range: tuple[float, float] = (0.7, 1.5)  # intensity gamma (image only, on its min-max range)
    gamma_p: float = Field(0.2, ge=0, le=1)

    @field_validator("flip_p")
    @classmethod
    def _flip(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or not all(0 <= p <= 1 for p in v):
            raise ValueError(f"flip_p needs 3 probabilities in [0, 1] (one per spatial axis), got {v}")
        return v


class DataConfig(Strict):
    """Where the cases come from and how they become batches."""

    kind: str = "synthetic2d"  # a registered data kind (medseg.data.registry): synthetic2d, folder2d, nifti, ...
    name: str | None = None  # dataset name in each sample's meta (default: kind or the root folder name)
    modality: str | None = None  # free text in meta (e.g. "CT", "endoscopy"); mixture metrics group by it
    weight: float = Field(1.0, ge=0)  # sampling weight when this config is a mixture member
    root: str | None = None
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_suffix: str = ""
    num_classes: int = Field(1, ge=1)  # 1 = binary (one sigmoid logit); K >= 2 = softmax incl. background
    in_channels: int = Field(3, ge=1)
    mask_mode: Literal["binary", "labels"] = "binary"
    mask_threshold: float | None = None  # binary masks: None = 0/1, 0/255 or JPEG-noisy 0/255, else an error; T = value > T
    image_size: list[int] = Field(default_factory=lambda: [64, 64])
    train_sizes: list[int] | None = None  # per-batch random square size (IFE: 224..384 step 32)
    pad_square: bool = False  # 2-D: zero-pad to a centred square before resizing (IFE); meta["pad"]
    normalize: Literal["imagenet", "zscore", "minmax", "none"] = "zscore"
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    augment3d: Augment3DConfig = Field(default_factory=Augment3DConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    nifti: NiftiConfig = Field(default_factory=NiftiConfig)
    datasets: list[dict[str, Any]] | None = None  # kind == "mixture": list of DataConfig dicts + "weight"
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    cache: bool = True

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from medseg.data.registry import DATA_KINDS
        from medseg.registry import unknown_name_message

        if v not in DATA_KINDS:
            raise ValueError(unknown_name_message("data kind", v, DATA_KINDS.names()))
        return v.lower()

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: list[int]) -> list[int]:
        if len(v) not in (2, 3) or min(v) < 8:
            raise ValueError(f"image_size must have 2 or 3 entries >= 8, got {v}")
        return v


# ------------------------------------------------------------------------------ components
class ComponentConfig(Strict):
    """A registry name and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    encoder_lr: float | None = None  # separate learning rate for parameters under `model.encoder`


class ScheduleConfig(Strict):
    name: Literal["constant", "step", "poly", "cosine", "warmup_linear", "triangular"] = "constant"
    step_size: int = Field(50, ge=1)  # epochs, for "step"
    gamma: float = Field(0.1, gt=0)
    power: float = Field(0.9, gt=0)  # "poly"
    warmup_epochs: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    val_every: int = Field(1, ge=1)
    best_metric: str = "dice"
    best_mode: Literal["max", "min"] = "max"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None  # None = pick from device
    grad_clip: float | None = None
    accumulate: int = Field(1, ge=1)
    keep_last: int = Field(2, ge=1)
    save_every: int = Field(1, ge=1)
    max_steps_per_epoch: int | None = None
    log_every: int = Field(1, ge=1)
    freeze_encoder: bool = False
    sync_bn: bool = False
    tensorboard: bool = False
    progress: bool = True
    session_epochs: int | None = Field(None, ge=1)  # stop cleanly after this many epochs in this invocation


# keys that may change between an interrupted run and its resumption without --force
SESSION_KEYS = {"train.progress", "train.session_epochs", "train.tensorboard", "data.num_workers"}


class EvalConfig(Strict):
    metrics: list[str] = Field(default_factory=lambda: ["dice", "iou"])
    threshold: float = Field(0.5, ge=0, le=1)
    sliding_window: list[int] | None = None  # 3-D roi size; None = data.nifti.patch_size or image_size
    overlap: float = Field(0.25, ge=0, lt=1)
    # score BraTS regions WT/TC/ET (DSC, HD95 + metrics) instead of classes: brats | brats2015 (docs/cwcd.md)
    regions: Literal["brats", "brats2015"] | None = None


class RunConfig(Strict):
    """Everything one ``medseg train`` needs."""

    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ComponentConfig = Field(default_factory=lambda: ComponentConfig(name="unet"))
    loss: str | ComponentConfig | list[dict[str, Any]] = "auto"  # "auto" = Dice+BCE / Dice+CE
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def spatial_dims(self) -> int:
        """Dimensionality of the model input: 3 for volumes (unless sliced along an axis), else 2."""
        from medseg.data.registry import gives_volumes

        volumes = gives_volumes(self.data.kind) and self.data.nifti.slice_axis is None
        return 3 if volumes else 2


# ------------------------------------------------------------------------- load / override
def _nearest_key_message(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = _model_at(RunConfig, e["loc"][:-1])
            valid = sorted(parent.model_fields) if parent is not None else []
            bad = str(e["loc"][-1])
            near = difflib.get_close_matches(bad, valid, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            lines.append(f"unknown config key '{loc}'{hint}; valid keys here: {', '.join(valid)}")
        else:
            lines.append(f"config key '{loc}': {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value with YAML rules (numbers, booleans, lists, null)."""
    return yaml.safe_load(text)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw config dict (new dict returned)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = parse_value(value)
    return out


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a raw mapping (merged over the defaults) into a :class:`RunConfig`."""
    model = raw.get("model")
    if isinstance(model, dict) and "name" in model and "kwargs" not in model:
        raw = {**raw, "model": {**model, "kwargs": {}}}  # a new model name starts from no kwargs
    raw = deep_merge(RunConfig().model_dump(mode="json"), raw)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_nearest_key_message(err, raw)) from None
    check_components(cfg)
    return cfg


# metrics that validation computes (what train.best_metric can select)
VALIDATION_METRICS = ("dice", "loss")


def check_components(cfg: RunConfig) -> None:
    """Resolve every component the config names (model, loss terms, metrics, mixture members) with its
    keyword arguments, and the model's dimensionality against the data's, so that a typo or a mismatch
    fails with a :class:`ConfigError` before anything is written or trained."""
    _check_model(cfg)
    _check_loss(cfg)
    _check_metrics(cfg)
    _check_data(cfg)
    _check_region_training(cfg)


def _check_model(cfg: RunConfig) -> None:
    from medseg.models import MODELS  # models/ do not import config-dependent engine code
    from medseg.registry import RegistryError, check_kwargs

    try:
        factory = MODELS.get(cfg.model.name)
    except RegistryError as err:
        raise ConfigError(f"config key 'model.name': {err}") from None
    try:
        check_kwargs(factory, cfg.model.kwargs, f"model '{cfg.model.name}'")
    except TypeError as err:
        raise ConfigError(f"config key 'model.kwargs': {err}") from None
    dims = model_spatial_dims(cfg)
    if dims is not None and dims != cfg.spatial_dims:
        raise ConfigError(_dims_message(cfg, dims))


def model_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """``model.kwargs`` with ``in_channels``/``out_channels`` defaulting to the data's, as the trainer builds it."""
    import inspect

    from medseg.models import MODELS

    kwargs = dict(cfg.model.kwargs)
    params = inspect.signature(MODELS.get(cfg.model.name)).parameters
    if "in_channels" in params:
        kwargs.setdefault("in_channels", cfg.data.in_channels)
    if "out_channels" in params:
        kwargs.setdefault("out_channels", cfg.data.num_classes)
    return kwargs


def model_spatial_dims(cfg: RunConfig) -> int | None:
    """The ``spatial_dims`` of the configured model without building real weights: a class-level value of
    the factory's return type, else the model built on the ``meta`` device (no memory, no pretrained
    weights); None when neither tells (the check is then left to the first forward)."""
    import inspect

    import torch

    from medseg.models import MODELS

    factory = MODELS.get(cfg.model.name)
    try:
        returned = inspect.signature(factory, eval_str=True).return_annotation
    except Exception:  # noqa: BLE001 - unresolvable annotation: fall through to the meta build
        returned = None
    for owner in (factory, returned):
        dims = getattr(owner, "spatial_dims", None) if isinstance(owner, type) else None
        if isinstance(dims, int):
            return dims
    if cfg.model.kwargs.get("pretrained"):
        return None  # building would read the weights
    try:
        with torch.device("meta"):
            model = factory(**model_kwargs(cfg))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'model.kwargs': model '{cfg.model.name}' cannot be built with "
                          f"{cfg.model.kwargs}: {err}") from None
    except Exception:  # noqa: BLE001 - an op without a meta kernel: not a config problem
        return None
    dims = getattr(model, "spatial_dims", None)
    return dims if isinstance(dims, int) else None


def _dims_message(cfg: RunConfig, model_dims: int) -> str:
    from medseg.data.registry import gives_volumes

    data = f"data.kind '{cfg.data.kind}'"
    volume_kind = gives_volumes(cfg.data.kind)
    if cfg.spatial_dims == 3:
        return (f"model '{cfg.model.name}' is {model_dims}-D but {data} gives 3-D volumes (image_size "
                f"{cfg.data.image_size}, no data.nifti.slice_axis): use a 3-D model (model.name: unet3d, or "
                "nnunet with a 3-entry model.kwargs.patch_size), or set data.nifti.slice_axis: 0, 1 or 2 to "
                "train the 2-D model on slices")
    return (f"model '{cfg.model.name}' is {model_dims}-D but {data} gives 2-D images"
            + (" (slices along data.nifti.slice_axis)" if volume_kind else "")
            + ": use a 2-D model (e.g. model.name: unet, or nnunet with a 2-entry model.kwargs.patch_size)"
            + (", or unset data.nifti.slice_axis to train on whole volumes"
               if volume_kind else ""))


def _check_loss(cfg: RunConfig) -> None:
    from medseg.losses import create_loss
    from medseg.registry import RegistryError

    terms: list[tuple[str, Any]] = []  # each weighted term on its own first, so the error names it
    for i, item in enumerate(cfg.loss if isinstance(cfg.loss, list) else []):
        item = {"name": item} if isinstance(item, str) else item
        if isinstance(item, dict) and "name" in item:
            terms.append((f"loss[{i}]", {"name": item["name"], "kwargs": item.get("kwargs") or {}}))
    for key, spec in [*terms, ("loss", cfg.loss)]:
        try:
            create_loss(spec, num_classes=cfg.data.num_classes)
        except (RegistryError, TypeError, ValueError) as err:
            raise ConfigError(f"config key '{key}': {err}") from None


def _check_metrics(cfg: RunConfig) -> None:
    from medseg.metrics import resolve_names

    try:
        resolve_names(cfg.eval.metrics)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"config key 'eval.metrics': {err}") from None
    if cfg.train.best_metric not in VALIDATION_METRICS:
        raise ConfigError(f"config key 'train.best_metric': '{cfg.train.best_metric}' is not computed in "
                          f"validation; choose one of {', '.join(VALIDATION_METRICS)}")


def _check_data(cfg: RunConfig) -> None:
    data = cfg.data
    if data.kind != "mixture":
        if data.datasets:
            raise ConfigError(f"config key 'data.datasets' is only used with data.kind: mixture "
                              f"(data.kind is '{data.kind}')")
        return
    from medseg.data.mixture import member_config

    if not data.datasets:
        raise ConfigError("config key 'data.datasets': data.kind is 'mixture' but no member datasets are listed")
    if data.num_classes != 1:
        raise ConfigError(f"config key 'data.num_classes': a mixture dataset is binary; set 1 "
                          f"(got {data.num_classes})")
    if len(data.image_size) != 2:
        raise ConfigError(f"config key 'data.image_size': a mixture dataset is 2-D; give 2 entries "
                          f"(got {data.image_size})")
    for i, entry in enumerate(data.datasets):
        try:
            member_config(data, entry, i)
        except (UserError, ValueError) as err:
            raise ConfigError(f"config key 'data.datasets[{i}]': {err}") from None


def _check_region_training(cfg: RunConfig) -> None:
    """``data.nifti.regions``: 3 sigmoid outputs (WT, TC, ET) trained on float region targets by a loss that
    takes them, and scored as regions (``eval.regions`` filled in with the same scheme)."""
    scheme = cfg.data.nifti.regions
    if scheme is None:
        return
    key = "config key 'data.nifti.regions'"
    if cfg.data.kind != "nifti" or cfg.data.nifti.slice_axis is not None:
        raise ConfigError(f"{key} ({scheme}) needs 3-D NIfTI volumes: set data.kind: nifti and no "
                          f"data.nifti.slice_axis, or remove data.nifti.regions")
    if cfg.data.num_classes != 3:
        raise ConfigError(f"config key 'data.num_classes': data.nifti.regions trains 3 sigmoid region channels "
                          f"(WT, TC, ET); set data.num_classes: 3 (got {cfg.data.num_classes}), or remove "
                          f"data.nifti.regions to train a softmax over the labels")
    out = model_kwargs(cfg).get("out_channels", 3)
    if out != 3:
        raise ConfigError(f"config key 'model.kwargs.out_channels': data.nifti.regions needs 3 outputs (WT, TC, "
                          f"ET), got {out}; remove it (it defaults to data.num_classes) or set 3")
    if cfg.eval.regions not in (None, scheme):
        raise ConfigError(f"config key 'eval.regions': '{cfg.eval.regions}' differs from data.nifti.regions "
                          f"'{scheme}'; region outputs are scored with the scheme they were trained on: set "
                          f"eval.regions: {scheme}")
    _probe_region_loss(cfg)
    cfg.eval.regions = scheme


def _probe_region_loss(cfg: RunConfig) -> None:
    """One forward of the loss on 3 logit channels and float WT/TC/ET targets: a softmax loss refuses them."""
    import torch

    from medseg.losses import create_loss
    from medseg.ops import prepare_targets

    loss = create_loss(cfg.loss, num_classes=3)
    batch = {"label": torch.tensor([0.0, 1.0]).repeat(32).reshape(1, 1, 4, 4, 4).expand(1, 3, 4, 4, 4).clone()}
    try:
        prepare_targets(batch, set(getattr(loss, "requires", set()) or set()), num_classes=3)
        loss(torch.zeros(1, 3, 4, 4, 4), batch)
    except (UserError, ValueError, KeyError, RuntimeError) as err:
        name = cfg.loss if isinstance(cfg.loss, str) else getattr(cfg.loss, "name", "the loss list")
        raise ConfigError(f"config key 'loss': data.nifti.regions trains 3 sigmoid channels on float WT/TC/ET "
                          f"targets, which loss '{name}' cannot use (a softmax loss needs class labels): {err}. "
                          f"Use a sigmoid loss, e.g. loss: dice_bce, or remove data.nifti.regions") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (or start from the defaults when ``path`` is None), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse {path}: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return build_config(apply_overrides(raw, overrides or []))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, as 'key: old -> new' lines."""
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            lines += config_diff(va, vb, name + ".")
        elif va != vb and name not in SESSION_KEYS:
            lines.append(f"{name}: {va!r} -> {vb!r}")
    return lines
