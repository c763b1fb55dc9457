"""CWCD recipes (Tables 1-3 and their CPU variants): each validates without training (model built on the meta
device, loss built, metrics resolved), follows the paper's protocol, and the rows of a table differ only in
what the table compares; one CPU recipe trains a step on a tiny synthetic NIfTI folder."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import config_diff, load_config, model_kwargs
from medseg.errors import DataError
from medseg.losses import create_loss
from medseg.metrics.suite import resolve_names
from medseg.models import create_model

RECIPES = Path(__file__).resolve().parents[2] / "src" / "medseg" / "recipes" / "cwcd"
ALL = sorted(RECIPES.glob("*.yaml"))
TABLE1_LOSSES = ["cedl", "cwcd", "cwce", "dwce", "gdl"]
NETWORKS = ["deeplabv3_3d", "unet3d", "unetr", "vnet"]
CPU = ["brats_regions_cpu", "table1_brats_cpu", "table2_brats_cpu", "table3_brats_cpu"]
COMPARE = "table1_brats_cpu_compare"  # the three-loss comparison on the local data, ~50 min of one CPU thread


def _load(stem: str, overrides: list[str] | None = None):
    return load_config(RECIPES / f"{stem}.yaml", overrides)


def _diff_keys(a, b) -> set[str]:
    """Top-level config sections in which two validated configs differ (``name`` left out)."""
    lines = config_diff(a.model_dump(mode="json"), b.model_dump(mode="json"))
    return {line.split(":")[0].split(".")[0] for line in lines} - {"name"}


def test_one_recipe_per_table_row() -> None:
    stems = {p.stem for p in ALL}
    table1 = {f"table1_{ds}_{loss}" for ds in ("amos", "brats") for loss in TABLE1_LOSSES}
    table2 = {f"table2_amos_{net}_{loss}" for net in NETWORKS for loss in ("cedl", "cwcd")}
    table3 = {"table3_amos_cwce_dice", "table3_amos_ce_sdl"}
    assert stems == table1 | table2 | table3 | set(CPU) | {COMPARE}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_recipe_validates_without_training(path: Path) -> None:
    cfg = load_config(path)  # the config validator: components, kwargs, dims, region rules
    with torch.device("meta"):  # the network at its real size, without memory or weights
        model = create_model(cfg.model.name, **model_kwargs(cfg))
    assert model.spatial_dims == 3 and cfg.spatial_dims == 3
    patch = cfg.data.nifti.patch_size
    assert all(p % int(getattr(model, "input_divisor", 1)) == 0 for p in patch), "patch not a multiple of the divisor"
    if getattr(model, "fixed_input_size", None):
        assert list(model.fixed_input_size) == list(patch)  # UNETR: the patch is its one input size
    loss = create_loss(cfg.loss, num_classes=cfg.data.num_classes)
    assert callable(loss)
    assert set(resolve_names(cfg.eval.metrics)) >= {"dice", "hd95"}
    assert cfg.name == (path.stem if "_cpu" not in path.stem else cfg.name)
    # the paper's protocol, in every recipe (CPU ones: smaller network, patches and epochs only)
    assert (cfg.optim.name, cfg.optim.lr) == ("adam", 3e-4)
    assert cfg.schedule.name == "step" and cfg.schedule.gamma == 0.5
    assert cfg.schedule.step_size * 2 < cfg.train.epochs + 1  # halved twice
    n = cfg.data.nifti
    assert (n.orientation, n.target_spacing) == ("RAS", [1.0, 1.0, 1.0])
    aug = cfg.data.augment3d
    assert aug.enabled and (aug.rotate_deg, aug.rotate_p) == (15, 0.2) and aug.flip_p == [0.2, 0.2, 0.0]
    assert aug.scale_p == 0 and aug.gamma_p == 0
    assert cfg.train.best_metric == "dice" and cfg.train.best_mode == "max"
    if cfg.model.name == "unet3d":
        assert cfg.model.kwargs["norm"] == "batch" and cfg.model.kwargs["depth"] == 4
    if "_cpu" in path.stem:
        assert cfg.data.root == "../shared/data/brats2015-deepmedic" and cfg.eval.regions == "brats2015"
        if path.stem != COMPARE:
            assert max(n.patch_size) <= 32 and cfg.train.epochs <= 4
    else:
        assert cfg.train.epochs == 50 and cfg.model.kwargs.get("base", 16) == 16
        amos = "_amos_" in path.stem
        assert cfg.data.num_classes == (16 if amos else 4)
        assert cfg.eval.regions == (None if amos else "brats")
        assert n.layout == ("nnunet" if amos else "case_folders")
        if not amos:
            assert n.label_map == {4: 3} and cfg.data.in_channels == 4


@pytest.mark.parametrize("dataset", ["amos", "brats"])
def test_table1_rows_differ_only_in_the_loss(dataset: str) -> None:
    rows = {loss: _load(f"table1_{dataset}_{loss}") for loss in TABLE1_LOSSES}
    base = rows["cedl"]
    for loss, cfg in rows.items():
        assert _diff_keys(base, cfg) <= {"loss"}, (loss, _diff_keys(base, cfg))
    names = {cfg.loss if isinstance(cfg.loss, str) else cfg.loss.name for cfg in rows.values()}
    assert names == set(TABLE1_LOSSES)  # five different losses


def test_table2_rows_differ_only_in_model_and_loss() -> None:
    rows = {(net, loss): _load(f"table2_amos_{net}_{loss}") for net in NETWORKS for loss in ("cedl", "cwcd")}
    base = rows[("unet3d", "cedl")]
    for key, cfg in rows.items():
        assert _diff_keys(base, cfg) <= {"model", "loss"}, key
        assert (cfg.model.name, cfg.loss.name) == key
    # the U-Net rows are Table 1's AMOS rows
    assert not _diff_keys(rows[("unet3d", "cwcd")], _load("table1_amos_cwcd"))


def test_table3_ablation_rows_differ_only_in_the_loss() -> None:
    rows = [_load(s) for s in ("table1_amos_cedl", "table1_amos_cwcd", "table3_amos_cwce_dice", "table3_amos_ce_sdl")]
    for cfg in rows[1:]:
        assert _diff_keys(rows[0], cfg) <= {"loss"}
    terms = [sorted(t["name"] for t in cfg.loss) for cfg in rows[2:]]
    assert terms == [["cedl", "cwce"], ["ce", "sdl"]]
    assert rows[2].loss[1]["kwargs"] == {"lambda_ce": 0.0}  # the baseline's Dice term alone


def test_cpu_variants_differ_only_in_what_their_table_varies() -> None:
    t1, t2, t3 = (_load(s) for s in CPU[1:])
    assert not _diff_keys(t1, t2)  # Table 2 CPU: swap the network with --set model=...
    assert _diff_keys(t1, t3) <= {"loss"}


def test_cpu_compare_recipe_is_the_smoke_recipe_resized_with_three_test_volumes() -> None:
    smoke, cmp = _load("table1_brats_cpu"), _load(COMPARE)
    assert _diff_keys(smoke, cmp) <= {"data", "model", "schedule", "train", "output_dir"}
    assert cmp.loss == smoke.loss and cmp.eval == smoke.eval and cmp.data.nifti.channels == smoke.data.nifti.channels
    assert cmp.model.kwargs == {"base": 16, "depth": 4, "norm": "batch"}  # the paper's 3-D U-Net
    assert cmp.schedule.step_size * 5 == cmp.train.epochs * 2  # halved at 40% and 80%, as 20 and 40 of 50
    assert cmp.train.val_every == cmp.train.epochs  # validated once, after the last epoch
    script = (RECIPES.parents[3] / "scripts" / "cwcd_brats_cpu.sh").read_text()
    assert f"{COMPARE}.yaml" in script and 'ARMS="cedl cwcd gdl"' in script
    assert f"OUT=${{1:-{cmp.output_dir}}}" in script and cmp.data.split.file == f"{cmp.output_dir}/split.json"
    split = json.loads(script.split("<<'JSON'\n")[1].split("\nJSON\n")[0])  # the split the script writes
    train, val, test = (set(split[k]) for k in ("train", "val", "test"))
    assert len(train) == len(test) == 3 and not train & test and val <= train  # val: a training case, no selection
    assert train | test == {f"brats_2013_pat000{i}_1" for i in range(1, 7)}


# ------------------------------------------------------------------------------ one training step
def _write_case(root: Path, case: str, rng: np.random.Generator, shape=(32, 32, 32)) -> None:
    lab = np.zeros(shape, np.float32)  # float, as DeepMedic stores it
    lab[8:24, 8:24, 8:24] = 2
    lab[11:21, 11:21, 11:21] = 3
    lab[13:19, 13:19, 13:19] = 1
    lab[15:17, 15:17, 15:17] = 4
    for folder, name, arr in (("images", "Flair_subtrMeanDivStd.nii.gz", rng.normal(size=shape) + lab),
                              ("images", "T1c_subtrMeanDivStd.nii.gz", rng.normal(size=shape)),
                              ("masks", "OTMultiClass.nii.gz", lab)):
        (root / folder / case).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), root / folder / case / name)


def test_cpu_recipe_trains_one_step_on_a_synthetic_nifti_folder(tmp_path: Path) -> None:
    from medseg.engine.trainer import train_run

    rng = np.random.default_rng(0)
    data = tmp_path / "brats"
    for k in range(3):
        _write_case(data, f"case{k}", rng)
    cfg = _load("table1_brats_cpu", [f"data.root={data}", f"output_dir={tmp_path / 'runs'}", "train.epochs=1",
                                     "train.val_every=1", "train.max_steps_per_epoch=1", "train.device=cpu",
                                     "eval.sliding_window=[32, 32, 32]", "data.batch_size=1",
                                     "data.nifti.samples_per_volume=1"])
    train_run(cfg)
    run = tmp_path / "runs" / cfg.name
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.yaml").is_file()
    steps = (run / "logs" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 1 and "cwce" in steps[0] and "sdl" in steps[0]  # the CWCD terms were logged
    epochs = (run / "logs" / "epochs.csv").read_text().splitlines()
    assert len(epochs) == 2 and "dice" in epochs[0]  # validated once (whole volumes, sliding windows)


def test_brats2021_recipe_reads_the_distributed_folder_layout(tmp_path: Path) -> None:
    """<root>/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz: channels in the recipe's order, ET 4 -> 3."""
    from medseg.data import build_dataset

    shape = (16, 16, 16)
    lab = np.zeros(shape, np.uint8)
    lab[4:12, 4:12, 4:12], lab[6:10, 6:10, 6:10], lab[7:9, 7:9, 7:9] = 2, 1, 4
    for case in ("BraTS2021_00000", "BraTS2021_00001"):
        (tmp_path / case).mkdir()
        for k, seq in enumerate(("t1", "t1ce", "t2", "flair")):  # channel k: constant k + 1 inside the head
            img = np.zeros(shape, np.float32)
            img[2:14, 2:14, 2:14] = k + 1 + np.linspace(0, 1, 12)[:, None, None]
            nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / case / f"{case}_{seq}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / case / f"{case}_seg.nii.gz")
    cfg = _load("table1_brats_cwcd", [f"data.root={tmp_path}", "data.split.mode=fixed"])
    ds = build_dataset(cfg.data, "test")
    assert ds.case_ids == ["BraTS2021_00000", "BraTS2021_00001"]
    order = [f"BraTS2021_00000_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")]
    assert [p.name for p in ds.cases[0].images] == order
    sample = ds[0]
    assert tuple(sample["image"].shape) == (4, *shape)
    assert sorted(torch.unique(sample["label"]).tolist()) == [0, 1, 2, 3]  # 4 remapped to 3
    np.testing.assert_array_equal(sample["label"].numpy() == 3, lab == 4)

    (tmp_path / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz").unlink()  # a missing channel is named
    with pytest.raises(DataError, match=r"BraTS2021_00001.*\['flair.nii.gz'\] not found"):
        build_dataset(cfg.data, "test")
