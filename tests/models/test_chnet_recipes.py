"""CHNet recipes: each validates, follows the paper's protocol (section 5.3) and names resolvable metrics."""
from __future__ import annotations

from pathlib import Path

import pytest

from medseg.config import load_config
from medseg.metrics.suite import resolve_names

RECIPES = Path(__file__).resolve().parents[2] / "src" / "medseg" / "recipes" / "chnet"
REPO = RECIPES.parents[3]
EPOCHS = {"table1": 200, "table2": 100, "table3": 50, "table4": 50, "table6": 200}
HEADS = {"chnet": "classification", "chnet1x1": "classification", "chnet3x3": "classification3x3",
         "fcn32s": "fcn32s", "unet_r2": "unet_decoder"}
ROWS = ["table1_covid_chnet", "table1_covid_unet_r2", "table2_busi_chnet", "table2_busi_unet_r2",
        "table3_clinicdb_chnet", "table3_clinicdb_unet_r2", "table4_kvasir_chnet", "table4_kvasir_unet_r2",
        "table6_covid_fcn32s", "table6_covid_chnet3x3", "table6_covid_chnet1x1"]


def test_one_recipe_per_table_row() -> None:
    variants = ["table4_kvasir_chnet_released_code"]  # the released code's settings (tested below)
    assert sorted(p.stem for p in RECIPES.glob("table*.yaml")) == sorted(ROWS + variants)


@pytest.mark.parametrize("row", ROWS)
def test_recipe_follows_the_paper_protocol(row: str) -> None:
    cfg = load_config(RECIPES / f"{row}.yaml")
    table, _dataset, variant = row.split("_", 2)
    assert cfg.name == row
    assert cfg.model.name == "chnet" and cfg.model.kwargs["encoder"] == "res2net50_26w_4s"
    assert cfg.model.kwargs["head"] == HEADS[variant]
    assert cfg.train.epochs == EPOCHS[table]
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.9, 5e-4)
    assert cfg.schedule.name == "triangular" and cfg.loss.name == "structure"
    assert cfg.data.image_size == [352, 352] and cfg.data.batch_size == 16
    assert cfg.data.augment.hflip == 0.5 and cfg.data.augment.rotate_deg == 10
    resolve_names(cfg.eval.metrics)
    if table == "table2":
        assert cfg.data.split.mode == "kfold" and cfg.data.split.folds == 4
        assert set(resolve_names(cfg.eval.metrics)) == {"iou", "precision", "recall", "dice"}
    if table in ("table3", "table4"):
        assert resolve_names(cfg.eval.metrics)[:6] == ["polyp_mdice", "polyp_miou", "wf_measure", "s_measure",
                                                        "e_measure_max", "mae"]


def test_released_code_variant() -> None:
    cfg = load_config(RECIPES / "table4_kvasir_chnet_released_code.yaml")
    assert cfg.data.batch_size == 32 and cfg.data.train_sizes == [224, 256, 288, 320, 352]
    assert cfg.loss.kwargs == {"compat": True} and cfg.train.epochs == 100 and cfg.optim.nesterov


@pytest.mark.parametrize("recipe", ["table1_covid_chnet", "table2_busi_chnet", "table4_kvasir_chnet",
                                    "table6_covid_fcn32s"])
def test_recipe_metrics_evaluate(recipe: str) -> None:
    """Every eval.metrics name goes through the evaluation call of ``medseg evaluate`` (label maps + map)."""
    import numpy as np

    from medseg.metrics import evaluate_case

    cfg = load_config(RECIPES / f"{recipe}.yaml")
    gt = np.zeros((40, 48), np.int64)
    gt[10:30, 12:30] = 1
    prob = np.clip(gt * 0.8 + np.random.default_rng(0).random(gt.shape) * 0.3, 0, 1)
    values = evaluate_case((prob > 0.5).astype(np.int64), gt, cfg.eval.metrics, 1, prob=prob)
    assert set(values) >= set(resolve_names(cfg.eval.metrics))
    assert all(np.isfinite(v) for v in values.values())


def test_cpu_head_comparison_recipe() -> None:
    cfg = load_config(RECIPES / "kvasir_heads_cpu.yaml")
    assert cfg.data.root == "../shared/data/kvasir-seg" and cfg.train.max_steps_per_epoch


def test_local_recipes_find_their_data(real_dataset, monkeypatch) -> None:
    from medseg.data import build_dataset

    real_dataset("covid-semiseg")
    real_dataset("kvasir-seg")
    monkeypatch.chdir(REPO)  # recipes point at ../shared/data relative to the checkout
    covid = load_config(RECIPES / "table1_covid_chnet.yaml")
    assert len(build_dataset(covid.data, "test")) == 48  # the Inf-Net test split of splits.json
    kvasir = load_config(RECIPES / "table4_kvasir_chnet.yaml")
    assert len(build_dataset(kvasir.data, "test")) == 100
