"""`medseg c2f train` / `medseg c2f predict` end to end on a tiny phantom, then `medseg metrics`; the bundled
recipes validate; bad inputs give one line and write nothing."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medseg.cli import main
from medseg.engine.c2f_train import load_recipe
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from c2f_helpers import tiny_registered  # noqa: E402

RECIPES = sorted((Path(__file__).resolve().parents[2] / "src" / "medseg" / "recipes" / "mll").glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _tiny_models():
    """c2f_tiny_coarse / c2f_tiny_fine in the model registry while this module runs, never at import."""
    with tiny_registered():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny phantom recipe trained through the CLI (axial and coronal views)."""
    root = tmp_path_factory.mktemp("c2f")
    raw = yaml.safe_load((RECIPES[0].parent / "phantom.yaml").read_text())
    raw["data"]["root"] = str(root / "data")
    raw["data"]["phantom"].update(n=3, shape=[40, 32, 12], spacing=[4.0, 4.0, 6.0])
    raw["data"]["split"].update(folds=3)
    raw["coarse"], raw["fine"] = {"name": "c2f_tiny_coarse"}, {"name": "c2f_tiny_fine"}
    raw["train"].update(epochs=2, max_steps_per_epoch=2, val_rounds=1)
    (root / "tiny.yaml").write_text(yaml.safe_dump(raw))
    assert main(["c2f", "train", str(root / "tiny.yaml"), "--view", "axial", "--output", str(root / "runs")]) == 0
    assert main(["c2f", "train", str(root / "tiny.yaml"), "--view", "coronal", "--output", str(root / "runs")]) == 0
    return root, root / "runs" / raw["name"]


def _set_coarse_bias(run_view: Path, value: float) -> None:
    """Make the coarse net predict nothing (-) or everything (+) by its last bias, in every checkpoint."""
    for path in (run_view / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        key = [k for k in state["model"]["coarse"] if k.endswith("bias")][-1]
        state["model"]["coarse"][key] = torch.full_like(state["model"]["coarse"][key], value)
        save_checkpoint(state, path)


def test_bundled_recipes_validate_and_pair():
    names = {p.stem for p in RECIPES}
    assert {"phantom", "phantom_dice", "nih_pancreas_mll", "nih_pancreas_dice", "msd_spleen_mll",
            "msd_spleen_dice"} <= names
    recipes = {p.stem: load_recipe(p) for p in RECIPES}
    nih, spleen = recipes["nih_pancreas_mll"], recipes["msd_spleen_mll"]
    assert list(nih.data.window) == [-100, 240] and nih.data.views == ["axial", "coronal", "sagittal"]
    assert nih.data.split.mode == "kfold" and nih.data.split.folds == 4
    assert list(spleen.data.window) == [-125, 275] and spleen.data.views == ["axial"]
    assert spleen.data.split.mode == "random" and spleen.data.split.val == 20
    for r in (nih, spleen):
        assert (r.stages.s, r.stages.j_from, r.train.margin, r.train.epochs) == (2, 8, 20, 20)
        assert (r.schedule.lr, r.schedule.decay_from, r.schedule.halve_every, r.schedule.reset_at) == (1e-5, 8, 2, [12])
        assert r.loss.kwargs["beta"] == {"from_epoch": 12} and r.loss.kwargs["alpha"]["step"] == 0.2
    for mll, dice in [("phantom", "phantom_dice"), ("nih_pancreas_mll", "nih_pancreas_dice"),
                      ("msd_spleen_mll", "msd_spleen_dice"), ("brats_tc_cpu", "brats_tc_cpu_dice")]:
        a, b = recipes[mll].model_dump(), recipes[dice].model_dump()
        assert a["name"] != b["name"] and a["loss"] != b["loss"]
        a.pop("name"), b.pop("name"), a.pop("loss"), b.pop("loss")
        assert a == b, f"{mll} and {dice} differ beyond the loss"
        assert recipes[dice].loss.kwargs["alpha"]["max"] == 0.0
    assert recipes["phantom"].data.phantom is not None  # the default runs with no download


def test_every_mll_recipe_builds_its_loss_and_names_valid_model_options():
    """Each bundled recipe validates, its loss builds with its kwargs, and its networks' kwargs are accepted by
    the registered factories (checked against their signatures without building the ResNets)."""
    from medseg.losses import create_loss
    from medseg.models import MODELS
    from medseg.registry import check_kwargs

    assert len(RECIPES) >= 11
    for path in RECIPES:
        r = load_recipe(path)
        loss = create_loss(r.loss.model_dump(), num_classes=1)
        assert hasattr(loss, "set_epoch"), path.name
        for comp in (r.coarse, r.fine):
            check_kwargs(MODELS.get(comp.name), comp.kwargs, f"{path.name}: {comp.name}")


def test_mln_recipes_train_mln_with_eq13_and_pair_with_mll():
    """The MLN recipes: fine `mln`, loss `mln` with the fusion term switched on with the branches; same data,
    split, seed and schedule as the MLL recipe beside them."""
    from medseg.losses import create_loss

    for mln, mll, switch in [("phantom_mln", "phantom", 8), ("nih_pancreas_mln", "nih_pancreas_mll", 12),
                             ("msd_spleen_mln", "msd_spleen_mll", 12)]:
        a, b = load_recipe(RECIPES[0].parent / f"{mln}.yaml"), load_recipe(RECIPES[0].parent / f"{mll}.yaml")
        assert (a.fine.name, a.loss.name) == ("mln", "mln")
        assert a.fine.kwargs["branches_from_epoch"] == switch
        loss = create_loss(a.loss.model_dump(), num_classes=1)
        assert loss.weights(switch - 1) == (1.0, 0.0, 0.0) and loss.weights(switch) == (1.0, 1.0, 1.0), mln
        assert a.loss.kwargs["coarse_key"] == "coarse"
        for key in ("data", "stages", "schedule", "train", "coarse", "output_dir"):
            assert getattr(a, key) == getattr(b, key), (mln, key)


def test_brats_recipes_read_the_tumour_core_of_t1c_case_folders():
    r = load_recipe(RECIPES[0].parent / "brats_tc_cpu.yaml")
    assert r.data.files.image == "images/{case}/T1c_subtrMeanDivStd.nii.gz"
    assert r.data.files.label == "masks/{case}/OTMultiClass.nii.gz" and r.data.label_values == [1, 3, 4]
    assert (r.data.downsample, r.data.crop_foreground, r.train.val_every) == (2, True, 0)
    assert r.data.split.mode == "kfold" and r.data.split.folds == 3


def test_predict_end_to_end_then_metrics(trained, capsys):
    root, run = trained
    _set_coarse_bias(run / "axial", 50.0)  # coarse says "everything": fine rounds must run
    _set_coarse_bias(run / "coronal", 50.0)
    images = root / "data" / "imagesTr"
    out = root / "pred"
    assert main(["c2f", "predict", "--run", str(run), "--input", str(images), "--output", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "c2f_cases.csv")))
    assert [r["case"] for r in rows] == ["phantom_000", "phantom_001", "phantom_002"]
    assert all(r["empty_coarse"] == "0" and 1 <= int(r["rounds"]) <= 10 and float(r["seconds"]) > 0 for r in rows)
    src = nib.load(images / "phantom_000_0000.nii.gz")
    pred = nib.load(out / "phantom_000.nii.gz")
    assert np.allclose(pred.affine, src.affine) and pred.header.get_zooms() == src.header.get_zooms()
    assert pred.shape == src.shape and set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
    assert not list(out.glob(".*"))  # no temporary file left
    # evaluation through the normal `medseg metrics`, beside c2f_cases.csv
    assert main(["metrics", "--pred", str(out), "--gt", str(root / "data" / "labelsTr"), "--metrics", "dice", "hd95",
                 "--output", str(out / "metrics.csv"), "--workers", "1"]) == 0
    per_case = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(per_case) == 3 and {"dice", "hd95"} <= set(per_case[0])
    # a second run refuses to overwrite; --overwrite replaces
    capsys.readouterr()
    assert main(["c2f", "predict", "--run", str(run), "--input", str(images), "--output", str(out)]) == 1
    assert "already holds" in capsys.readouterr().err


def test_evaluate_matches_medpy_on_the_mask_predict_writes(trained, capsys):
    """`medseg c2f evaluate` scores the run's held-out case (fold 0 of 3: phantom_000) with Algorithm 1 over
    both views; its DSC / HD95 (mm) / rounds equal medpy's on the mask `c2f predict` writes for that case."""
    from medpy.metric.binary import dc, hd95

    root, run = trained
    _set_coarse_bias(run / "axial", 50.0)
    _set_coarse_bias(run / "coronal", 50.0)
    out = root / "pred_eval"
    assert main(["c2f", "predict", "--run", str(run), "--input", str(root / "data" / "imagesTr"),
                 "--output", str(out)]) == 0
    table = root / "eval.csv"
    assert main(["c2f", "evaluate", "--run", str(run), "--output", str(table)]) == 0
    assert f"scored 1 held-out volume(s) -> {table}" in capsys.readouterr().out
    (row,) = list(csv.DictReader(open(table)))
    pred = np.asarray(nib.load(out / "phantom_000.nii.gz").dataobj) > 0
    label_img = nib.load(root / "data" / "labelsTr" / "phantom_000.nii.gz")
    label = np.asarray(label_img.dataobj) > 0
    assert row["case"] == "phantom_000" and pred.any()
    assert float(row["dice"]) == pytest.approx(dc(pred, label), abs=1e-9)
    assert float(row["hd95_mm"]) == pytest.approx(hd95(pred, label, voxelspacing=label_img.header.get_zooms()),
                                                  abs=1e-9)
    predicted = next(r for r in csv.DictReader(open(out / "c2f_cases.csv")) if r["case"] == "phantom_000")
    assert row["rounds"] == predicted["rounds"]
    assert main(["c2f", "evaluate", "--run", str(run), "--output", str(table)]) == 1  # no silent overwrite
    assert "already exists" in capsys.readouterr().err


def test_empty_coarse_prediction_is_reported(trained, capsys):
    root, run = trained
    _set_coarse_bias(run / "axial", -50.0)
    out = root / "pred_empty"
    assert main(["c2f", "predict", "--run", str(run / "axial"), "--input", str(root / "data" / "imagesTr"),
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "phantom_000_0000.nii.gz: the coarse pass found no target" in text and "3 case(s) had an empty" in text
    rows = list(csv.DictReader(open(out / "c2f_cases.csv")))
    assert all(r["empty_coarse"] == "1" and r["rounds"] == "0" for r in rows)
    assert not np.asarray(nib.load(out / "phantom_001.nii.gz").dataobj).any()


def test_run_of_another_view_or_network_is_refused(trained, tmp_path, capsys):
    root, run = trained
    images = root / "data" / "imagesTr"
    out = tmp_path / "out"
    assert main(["c2f", "predict", "--run", str(run / "axial"), "--view", "sagittal", "--input", str(images),
                 "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "trained for the axial view, not sagittal" in err and "Traceback" not in err
    assert main(["c2f", "predict", "--run", str(run), "--view", "sagittal", "--input", str(images),
                 "--output", str(out)]) == 1
    assert "no trained sagittal view" in capsys.readouterr().err
    # a folder whose checkpoint is labelled another view than its folder name
    fake = tmp_path / "run" / "coronal" / "checkpoints"
    fake.mkdir(parents=True)
    state = load_checkpoint(run / "axial" / "checkpoints" / "last.pt")
    save_checkpoint(state, fake / "best.pt")
    assert main(["c2f", "predict", "--run", str(tmp_path / "run"), "--input", str(images), "--output", str(out)]) == 1
    assert "trained for the axial view, not coronal" in capsys.readouterr().err
    # a plain `medseg train` checkpoint
    save_checkpoint({"model": {}, "config": {}, "model_name": "unet"}, fake / "best.pt")
    assert main(["c2f", "predict", "--run", str(tmp_path / "run"), "--input", str(images), "--output", str(out)]) == 1
    assert "not a coarse-to-fine checkpoint" in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_output_inside_input_and_failed_write_leave_nothing(trained, monkeypatch, capsys):
    root, run = trained
    images = root / "data" / "imagesTr"
    assert main(["c2f", "predict", "--run", str(run), "--input", str(images), "--output", str(images / "p")]) == 1
    assert "inside the input folder" in capsys.readouterr().err and not (images / "p").exists()
    import medseg.data.nifti_io as nio

    def broken(array, path, affine=None, header=None):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nio, "save_nifti", broken)
    out = root / "pred_broken"
    assert main(["c2f", "predict", "--run", str(run / "axial"), "--input", str(images), "--output", str(out)]) == 1
    assert "3 of 3 input(s) could not be predicted" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["c2f_cases.csv"]  # no mask, no partial file


def test_train_refuses_existing_run_and_bad_view(trained, capsys):
    root, _ = trained
    assert main(["c2f", "train", str(root / "tiny.yaml"), "--view", "axial", "--output", str(root / "runs")]) == 1
    assert "already holds a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["c2f", "train", str(root / "tiny.yaml"), "--view", "oblique"])


def test_help_example_names_a_bundled_recipe(capsys):
    from medseg.cli.c2f import recipe_path

    assert recipe_path("mll/phantom").is_file() and recipe_path("phantom").is_file()
    with pytest.raises(SystemExit):
        main(["c2f", "train", "--help"])
    assert "medseg c2f train mll/phantom" in capsys.readouterr().out
