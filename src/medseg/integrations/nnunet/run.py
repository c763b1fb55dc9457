"""Run medseg's nnU-Net trainers through nnU-Net's own training and prediction code (``docs/nnunet.md``).

No file is written into nnU-Net's package: :func:`train` constructs the trainer class itself (as nnU-Net's
``get_trainer_from_args`` does once it has found the class) and calls nnU-Net's ``maybe_load_checkpoint``,
``run_training`` and ``perform_actual_validation``; :func:`predict` uses nnU-Net's ``nnUNetPredictor``, which
looks the trainer up by the name stored in the checkpoint, found through nnU-Net's external-trainer variable
``nnUNet_extTrainer`` pointed at :func:`ext_trainer_dir` (set for the call only). Exporting that variable
makes plain ``nnUNetv2_train`` / ``nnUNetv2_predict`` find the trainers too.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from medseg.integrations.nnunet.errors import NNUNetError, require_env, require_nnunet
from medseg.integrations.nnunet.trainers import TRAINERS, trainer_classes

EXT_VAR = "nnUNet_extTrainer"


def ext_trainer_dir() -> Path:
    """The folder holding the ``nnUNet_extTrainer`` shim module."""
    return Path(__file__).resolve().parent / "ext"


@contextmanager
def ext_trainers_visible() -> Iterator[None]:
    """``nnUNet_extTrainer`` includes :func:`ext_trainer_dir` inside the block (restored afterwards)."""
    old = os.environ.get(EXT_VAR)
    paths = [p for p in (old or "").split(os.pathsep) if p]
    os.environ[EXT_VAR] = os.pathsep.join([*paths, str(ext_trainer_dir())])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(EXT_VAR, None)
        else:
            os.environ[EXT_VAR] = old


def trainer_class(name: str) -> type:
    """One of medseg's trainers by name, or any trainer nnU-Net itself finds (e.g. ``nnUNetTrainer``)."""
    require_nnunet()
    if name in TRAINERS:
        return trainer_classes()[name]
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except (RuntimeError, AssertionError):
        raise NNUNetError(f"unknown trainer '{name}'; medseg's: {', '.join(TRAINERS)} (or any nnU-Net trainer, "
                          f"e.g. nnUNetTrainer)") from None


def dataset_name(dataset: str | int) -> str:
    """``DatasetXXX_Name`` for an id or name, as nnU-Net resolves it, or one error naming the folders."""
    require_nnunet()
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    text = str(dataset)
    try:
        return maybe_convert_to_dataset_name(text if text.startswith("Dataset") else int(text))
    except ValueError:
        raise NNUNetError(f"dataset '{dataset}' is neither an id (e.g. 4) nor a name DatasetXXX_Name") from None
    except RuntimeError:
        raise NNUNetError(f"dataset '{dataset}' not found under nnUNet_raw, nnUNet_preprocessed or nnUNet_results; "
                          f"convert it to nnU-Net's raw layout first (see docs/nnunet.md)") from None


def _dataset_id(name: str) -> str:
    return str(int(name[len("Dataset"):len("Dataset") + 3]))


def load_plans(dataset: str | int, configuration: str, plans: str = "nnUNetPlans") -> tuple[str, dict, dict]:
    """(dataset name, plans, dataset.json) of a planned and preprocessed configuration, or one error naming
    the nnU-Net command that produces what is missing."""
    require_env("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    name = dataset_name(dataset)
    folder = Path(os.environ["nnUNet_preprocessed"]) / name
    command = f"nnUNetv2_plan_and_preprocess -d {_dataset_id(name)}"
    plans_file = folder / f"{plans}.json"
    if not plans_file.is_file() or not (folder / "dataset.json").is_file():
        raise NNUNetError(f"dataset {name} is not planned/preprocessed ({plans_file} missing); run: {command}")
    plan = json.loads(plans_file.read_text())
    configs = plan.get("configurations", {})
    if configuration not in configs:
        raise NNUNetError(f"configuration '{configuration}' is not in {plans_file} (planned: "
                          f"{', '.join(configs)}); use one of those or plan it with {command}")
    identifier = configs[configuration].get("data_identifier") or \
        configs.get(configs[configuration].get("inherits_from", ""), {}).get("data_identifier")
    if identifier and not (folder / identifier).is_dir():
        raise NNUNetError(f"configuration '{configuration}' of {name} is planned but not preprocessed "
                          f"({folder / identifier} missing); run: {command} -c {configuration}")
    return name, plan, json.loads((folder / "dataset.json").read_text())


def _device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NNUNetError("--device cuda requested but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def _fold(fold: str | int) -> int | str:
    if str(fold) == "all":
        return "all"
    try:
        return int(fold)
    except ValueError:
        raise NNUNetError(f"fold must be an integer (0-4 for nnU-Net's 5-fold split) or 'all', got '{fold}'") from None


def build_trainer(dataset: str | int, configuration: str, fold: str | int, trainer: str | type,
                  plans: str = "nnUNetPlans", device: str = "auto", continue_training: bool = False,
                  settings: dict[str, Any] | None = None, batch_size: int | None = None):
    """An nnU-Net trainer instance for a preprocessed dataset; ``settings`` overrides trainer attributes
    (e.g. ``{"num_epochs": 1, "num_iterations_per_epoch": 2}`` for a smoke run); ``batch_size`` replaces the
    planned batch size in the plans the trainer receives (and saves as the fold's ``plans.json``)."""
    cls = trainer_class(trainer) if isinstance(trainer, str) else trainer
    _, plan, dataset_json = load_plans(dataset, configuration, plans)
    if batch_size is not None:
        if batch_size < 1:
            raise NNUNetError(f"--batch-size must be >= 1, got {batch_size}")
        plan["configurations"][configuration]["batch_size"] = int(batch_size)
    plan["continue_training"] = continue_training  # read (and removed) by nnUNetTrainer.__init__
    instance = cls(plans=plan, configuration=configuration, fold=_fold(fold), dataset_json=dataset_json,
                   device=_device(device))
    for key, value in (settings or {}).items():
        if not hasattr(instance, key):
            raise NNUNetError(f"trainer setting '{key}' is not an attribute of {cls.__name__} (e.g. num_epochs, "
                              f"num_iterations_per_epoch, num_val_iterations_per_epoch, initial_lr)")
        setattr(instance, key, value)
    return instance


def train(dataset: str | int, configuration: str, fold: str | int, trainer: str | type,
          plans: str = "nnUNetPlans", device: str = "auto", continue_training: bool = False,
          validate: bool = True, pretrained_weights: str | None = None,
          settings: dict[str, Any] | None = None, seed: int | None = None, batch_size: int | None = None) -> Path:
    """nnU-Net's single-process training (``nnUNetv2_train``'s path) with the given trainer; returns the fold's
    output folder under ``nnUNet_results``.

    ``seed``: seeds Python's, NumPy's and torch's global generators before the network is built (nnU-Net seeds
    nothing itself): the weight initialisation and, with ``nnUNet_n_proc_DA=0`` (augmentation in this process),
    the patch sampling and augmentation draw from them. Bit-exact repeats are not checked (nor expected across
    machines or thread counts).
    """
    require_nnunet()  # before the import below: one line naming the extra, not a ModuleNotFoundError
    from nnunetv2.run.run_training import maybe_load_checkpoint

    if seed is not None:
        seed_everything(seed)
    instance = build_trainer(dataset, configuration, fold, trainer, plans, device, continue_training, settings,
                             batch_size)
    maybe_load_checkpoint(instance, continue_training, False, pretrained_weights)
    instance.run_training()
    if validate:
        with ext_trainers_visible():
            instance.perform_actual_validation(False)
    return Path(instance.output_folder)


def seed_everything(seed: int) -> None:
    """Seed ``random``, NumPy's and torch's global generators (what nnU-Net's data loader and init draw from)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_folder(dataset: str | int, configuration: str, trainer: str, plans: str = "nnUNetPlans") -> Path:
    """``$nnUNet_results/DatasetXXX/<trainer>__<plans>__<configuration>``, checked to exist."""
    require_env("nnUNet_results")
    name = dataset_name(dataset)
    folder = Path(os.environ["nnUNet_results"]) / name / f"{trainer}__{plans}__{configuration}"
    if not folder.is_dir():
        raise NNUNetError(f"no trained model at {folder}; train it first: medseg nnunet train {_dataset_id(name)} "
                          f"{configuration} FOLD --trainer {trainer}")
    return folder


def predict(input_folder: str | Path, output_folder: str | Path, dataset: str | int, configuration: str,
            trainer: str, folds: Sequence[str | int] | None = None, plans: str = "nnUNetPlans",
            checkpoint: str = "checkpoint_final.pth", device: str = "auto", overwrite: bool = False,
            save_probabilities: bool = False, step_size: float = 0.5, mirroring: bool = True,
            processes: int = 3) -> Path:
    """nnU-Net's ``nnUNetPredictor`` on a folder of raw images (nnU-Net file names ``CASE_0000.ext``).

    ``processes=0`` predicts in this process (``predict_from_files_sequential``); otherwise nnU-Net's
    worker processes preprocess and export. Existing outputs are kept unless ``overwrite``.
    """
    require_nnunet()
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if not Path(input_folder).is_dir():
        raise NNUNetError(f"input folder {input_folder} does not exist (raw images named CASE_0000.ext)")
    folder = model_folder(dataset, configuration, trainer, plans)
    use_folds = None if folds is None else tuple(_fold(f) for f in folds)
    for f in use_folds or ():
        if not (folder / f"fold_{f}" / checkpoint).is_file():
            raise NNUNetError(f"{folder / f'fold_{f}' / checkpoint} missing; finish training fold {f} or pick "
                              f"another --checkpoint (checkpoint_best.pth, checkpoint_latest.pth)")
    torch_device = _device(device)
    predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                                verbose=False, allow_tqdm=False)
    with ext_trainers_visible():
        predictor.initialize_from_trained_model_folder(str(folder), use_folds, checkpoint)
    Path(output_folder).mkdir(parents=True, exist_ok=True)
    if processes == 0:
        predictor.predict_from_files_sequential(str(input_folder), str(output_folder), save_probabilities, overwrite)
    else:
        predictor.predict_from_files(str(input_folder), str(output_folder), save_probabilities, overwrite,
                                     processes, processes)
    return Path(output_folder)
