"""The IFE recipes (Table 1 and 2) validate, follow the paper's protocol and build their models."""
from __future__ import annotations

from pathlib import Path

import pytest

from medseg.config import load_config
from medseg.engine.trainer import build_model

RECIPES = sorted((Path(__file__).resolve().parents[2] / "src" / "medseg" / "recipes" / "ife").glob("*.yaml"))


def test_all_table_recipes_exist():
    names = {p.stem for p in RECIPES}
    for net in ("unet", "deeplabv3plus", "sinet_v2", "nnunet"):
        assert {f"table1_{net}", f"table1_{net}_c", f"table1_{net}_e"} <= names
    assert sum(n.startswith("table2_unet_") for n in names) == 8  # 4 ratio pairs x {C, E}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_protocol(path):
    cfg = load_config(path)
    assert cfg.optim.name == "adam" and cfg.optim.lr == 1e-4 and cfg.train.grad_clip == 1.0
    assert cfg.schedule.name == "step" and cfg.schedule.step_size * 2 == cfg.train.epochs
    assert cfg.data.image_size == [224, 224] and cfg.data.train_sizes == list(range(224, 385, 32))
    assert cfg.train.best_metric == "dice" and cfg.loss.name == "structure"
    assert cfg.data.kind == "mixture" and all("modality" in d or "nifti" in d for d in cfg.data.datasets)
    assert all(d["root"].startswith("../shared/data/") for d in cfg.data.datasets)
    ife = cfg.model.kwargs.get("ife")
    assert ("_c" in path.stem) == (ife == "curvature") and ("_e" in path.stem) == (ife == "entropy")


def test_table1_unet_recipe_builds_the_paper_network():
    cfg = load_config(next(p for p in RECIPES if p.stem == "table1_unet_c"))
    model = build_model(cfg)
    assert [d[0].in_channels for d in model.decoders] == [1024, 640, 352, 128]
