"""Shared by the nnU-Net integration tests (``test_nnunet.py``, ``test_nnunet_3d.py``): imported after
``sys.path.insert(0, <tests/integrations>)``, as ``nnunet_helpers``.

nnU-Net's fingerprinting and preprocessing run their worker pools as threads here: a spawned process per step
costs tens of seconds on a shared machine.
"""
from __future__ import annotations

import multiprocessing.pool
import types
from pathlib import Path

import pytest


def run_env(root: Path) -> dict[str, str]:
    """The three nnU-Net environment variables for folders under ``root``."""
    return {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
            "nnUNet_results": str(root / "res")}


def set_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    for var, value in run_env(root).items():
        mp.setenv(var, value)
    mp.setenv("nnUNet_compile", "false")


def plan_and_preprocess(mp: pytest.MonkeyPatch, dataset: int, configurations: tuple[str, ...]) -> None:
    """``nnUNetv2_plan_and_preprocess -d dataset -c configurations`` through nnU-Net's API, pools as threads."""
    import nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor as fingerprint
    import nnunetv2.preprocessing.preprocessors.default_preprocessor as preprocessor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)

    threads = types.SimpleNamespace(get_context=lambda *_: types.SimpleNamespace(Pool=multiprocessing.pool.ThreadPool))
    mp.setattr(fingerprint, "multiprocessing", threads)
    mp.setattr(preprocessor, "multiprocessing", threads)
    extract_fingerprints([dataset], num_processes=1, check_dataset_integrity=False, verbose=False,
                         show_progress_bar=False)
    plan_experiments([dataset])
    preprocess([dataset], configurations=configurations, num_processes=(1,) * len(configurations), verbose=False,
               show_progress_bar=False)
