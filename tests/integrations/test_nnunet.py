"""medseg's IFE / CWCD trainers inside nnU-Net v2 (medseg.integrations.nnunet, `medseg nnunet`).

A tiny synthetic 2-D dataset (6 cases of 32x32 PNG, labels 0/1/2) is written in nnU-Net's raw layout, planned and
preprocessed by nnU-Net's own API (``nnunet_helpers``; the 3-D twin is ``test_nnunet_3d.py``). Oracles: the IFE channel arithmetic worked by hand, scipy's correlation for the
curvature score, scipy's binary erosion for the CWCD contour bands, nnU-Net's own loss for the deep-supervision
weights.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (the nnunet extra: pip install 'medseg[nnunet]')")
ndimage = pytest.importorskip("scipy.ndimage")
signal = pytest.importorskip("scipy.signal")
Image = pytest.importorskip("PIL.Image")

sys.path.insert(0, str(Path(__file__).parent))
from nnunet_helpers import plan_and_preprocess, set_env  # noqa: E402

from medseg.cli import main as cli_main  # noqa: E402
from medseg.integrations.nnunet import network as nnnet  # noqa: E402
from medseg.integrations.nnunet import run  # noqa: E402
from medseg.integrations.nnunet.trainers import trainer_classes  # noqa: E402
from medseg.losses import create_loss  # noqa: E402

DATASET = 901
NAME = "Dataset901_MedsegTiny"


def _write_case(folder: Path, case: str, rng: np.random.Generator) -> None:
    yy, xx = np.mgrid[:32, :32]
    cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 8)
    label = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8)
    label[(xx > 25) & (yy > 25)] = 2
    image = (label * 80 + 40 + rng.normal(0, 10, label.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(folder / "imagesTr" / f"{case}_0000.png")
    Image.fromarray(label).save(folder / "labelsTr" / f"{case}.png")


def _raw_dataset(raw: Path, name: str, cases: int, seed: int = 0) -> Path:
    folder = raw / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(cases):
        _write_case(folder, f"case{i:03d}", rng)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "gray"}, "labels": {"background": 0, "disc": 1, "corner": 2},
        "numTraining": cases, "file_ending": ".png"}))
    return folder


@pytest.fixture(scope="module")
def nnunet_env(tmp_path_factory):
    """nnU-Net folders in tmp with Dataset901 planned and preprocessed (2d), Dataset902 raw only."""
    root = tmp_path_factory.mktemp("nnunet")
    mp = pytest.MonkeyPatch()
    set_env(mp, root)
    _raw_dataset(root / "raw", NAME, 6)
    _raw_dataset(root / "raw", "Dataset902_NotPlanned", 2, seed=1)
    plan_and_preprocess(mp, DATASET, ("2d",))
    yield root
    mp.undo()


def test_plan_and_preprocess_ran_and_load_plans_reads_them(nnunet_env):
    name, plans, dataset_json = run.load_plans(DATASET, "2d")
    assert name == NAME and dataset_json["labels"]["corner"] == 2
    arch = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    assert plans["configurations"]["2d"]["patch_size"] == [32, 32]
    assert arch["features_per_stage"] == [32, 64, 128, 256]  # 4 stages: 32 -> 16 -> 8 -> 4
    cases = sorted(p.name for p in (nnunet_env / "pre" / NAME / "nnUNetPlans_2d").glob("*.pkl"))
    assert len(cases) == 6


def _network(trainer: str):
    instance = run.build_trainer(DATASET, "2d", 0, trainer, device="cpu")
    instance.initialize()
    return instance


@pytest.mark.parametrize("trainer, widths", [
    ("nnUNetTrainer", [256, 128, 64]),  # nnU-Net: 2 C_skip per decoder stage, skips 128, 64, 32
    # IFE on stage 3 (128 ch, r 0.5: +64) and stage 2 (64 ch, r 0.75: +48): 128 + 128 + 64, 64 + 64 + 48
    ("nnUNetTrainerIFECurvature", [320, 176, 64]),
    ("nnUNetTrainerIFEEntropy", [320, 160, 64]),  # r 0.5 on both: 64 + 64 + 32
])
def test_decoder_input_widths_follow_the_ife_arithmetic(nnunet_env, trainer, widths):
    net = _network(trainer).network
    assert nnnet.decoder_input_widths(net) == widths
    net.train()
    outs = net(torch.randn(2, 1, 32, 32))  # nnU-Net's deep supervision kept: full, 1/2, 1/4 resolution
    assert [tuple(o.shape) for o in outs] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]


def test_ife_selects_channels_per_sample_by_curvature(nnunet_env):
    net = _network("nnUNetTrainerIFECurvature").network.eval()
    seen = {}
    ife = net.decoder.ife["1"]  # encoder stage 2: 64 channels, ratio 0.75 -> 48 selected
    ife.register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach(), y=out.detach()))
    with torch.no_grad():
        net(torch.randn(2, 1, 32, 32))
    x, y = seen["x"].double().numpy(), seen["y"].double().numpy()
    kernel = np.array([[-1, 5, -1], [5, -16, 5], [-1, 5, -1]]) / 16
    orders = []
    for b in range(2):
        scores = [np.abs(signal.correlate2d(x[b, c], kernel, mode="valid")).sum() for c in range(64)]
        order = np.argsort(scores)[::-1][:48]
        orders.append(order)
        np.testing.assert_allclose(y[b], np.concatenate([x[b], x[b][order]]), rtol=0, atol=0)
    assert not np.array_equal(orders[0], orders[1])  # each sample its own channels


def _contour_oracle(label: np.ndarray, classes: int, iterations: int = 6) -> torch.Tensor:
    """C_k = G_k - erode(G_k) with a 3x3 square iterated 6 times, no erosion at the border (scipy)."""
    out = np.zeros((label.shape[0], classes, *label.shape[1:]), bool)
    for b in range(label.shape[0]):
        for k in range(classes):
            g = label[b] == k
            out[b, k] = g & ~ndimage.binary_erosion(g, np.ones((3, 3)), iterations=iterations, border_value=1)
    return torch.from_numpy(out)


def test_cwcd_trainer_loss_is_create_loss_cwcd_with_nnunets_deep_supervision_weights(nnunet_env):
    trainer = _network("nnUNetTrainerCWCD")
    weights = trainer.loss.weight_factors
    # nnU-Net: 1, 1/2, 1/4 with the lowest scale set to 0, normalised -> 2/3, 1/3, 0
    assert weights == pytest.approx((2 / 3, 1 / 3, 0.0))
    assert weights == _network("nnUNetTrainer").loss.weight_factors
    torch.manual_seed(0)
    label = torch.zeros(2, 1, 32, 32)
    label[:, :, 8:20, 6:22] = 1
    label[1, :, 24:, 24:] = 2
    targets = [label, label[:, :, ::2, ::2], label[:, :, ::4, ::4]]
    logits = [torch.randn(2, 3, s, s, dtype=torch.float64) for s in (32, 16, 8)]
    got = trainer.loss(logits, targets)
    cwcd = create_loss("cwcd")
    want = sum(w * cwcd(lg, {"label": t[:, 0].long(), "contour": _contour_oracle(t[:, 0].numpy(), 3)})["loss"]
               for w, lg, t in zip(weights[:2], logits[:2], targets[:2]))
    torch.testing.assert_close(got, want)
    step = trainer.train_step({"data": torch.randn(2, 1, 32, 32), "target": targets})  # nnU-Net's own step
    assert np.isfinite(step["loss"])


def test_train_two_iterations_on_cpu_then_predict_through_the_cli(nnunet_env, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # single-threaded augmentation (set after planning: 0 breaks it)
    out = run.train(DATASET, "2d", 0, "nnUNetTrainerIFECurvature", device="cpu", validate=False,
                    settings={"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1})
    assert (out / "checkpoint_final.pth").is_file()
    images = nnunet_env / "imagesTs"
    images.mkdir()
    for case in ("case000", "case001"):
        source = nnunet_env / "raw" / NAME / "imagesTr" / f"{case}_0000.png"
        (images / source.name).write_bytes(source.read_bytes())
    pred = nnunet_env / "pred"
    rc = cli_main(["nnunet", "predict", str(DATASET), "2d", "-i", str(images), "-o", str(pred), "-f", "0",
                   "--trainer", "nnUNetTrainerIFECurvature", "--device", "cpu", "--processes", "0"])
    assert rc == 0
    masks = sorted(pred.glob("case*.png"))
    assert [m.name for m in masks] == ["case000.png", "case001.png"]
    arr = np.asarray(Image.open(masks[0]))
    assert arr.shape == (32, 32) and set(np.unique(arr)) <= {0, 1, 2}


# ------------------------------------------------------------------------------------------ bad input
def _cli_error(args: list[str], capsys) -> str:
    assert cli_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_nnunet_missing_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nnunetv2", None)
    msg = _cli_error(["nnunet", "train", "1", "2d", "0", "--trainer", "nnUNetTrainerCWCD"], capsys)
    assert "pip install 'medseg[nnunet]'" in msg


def test_dataset_not_preprocessed_names_the_nnunet_command(nnunet_env, capsys):
    msg = _cli_error(["nnunet", "train", "902", "2d", "0", "--trainer", "nnUNetTrainerCWCD"], capsys)
    assert "nnUNetv2_plan_and_preprocess -d 902" in msg


def test_unknown_trainer_lists_medsegs(nnunet_env, capsys):
    msg = _cli_error(["nnunet", "train", str(DATASET), "2d", "0", "--trainer", "nnUNetTrainerIFECurvatur"], capsys)
    assert "unknown trainer 'nnUNetTrainerIFECurvatur'" in msg and "nnUNetTrainerIFECurvature" in msg


def test_missing_environment_variables_are_named(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    monkeypatch.setenv("nnUNet_raw", "/nonexistent")
    msg = _cli_error(["nnunet", "train", "1", "2d", "0", "--trainer", "nnUNetTrainerCWCD"], capsys)
    assert "nnUNet_preprocessed, nnUNet_results not set" in msg


@pytest.mark.parametrize("ratios, stages, fragment", [
    ((0.01, 0.5), (2, 3), "selects floor(0.01*64) = 0 of the 64 channels"),
    ((0.5,), (4,), "stage 4 is not a skip connection"),  # stage 4 is the bottleneck of this plan
])
def test_ife_settings_that_do_not_fit_the_plan(nnunet_env, ratios, stages, fragment):
    base = trainer_classes()["nnUNetTrainerIFECurvature"]
    bad = type("nnUNetTrainerIFEBad", (base,), {"ife_ratios": ratios, "ife_stages": stages})
    with pytest.raises(nnnet.IFEPlanError, match="IFE") as info:
        run.build_trainer(DATASET, "2d", 0, bad, device="cpu").initialize()
    assert fragment in str(info.value)


# ------------------------------------------------------------------------- short-budget training options
class _Stop(Exception):
    pass


def test_train_seeds_python_numpy_and_torch_before_building_the_trainer(monkeypatch):
    import random

    drawn = []

    def record(*args, **kwargs):
        drawn.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
        raise _Stop

    monkeypatch.setattr(run, "build_trainer", record)
    for _ in range(2):
        with pytest.raises(_Stop):
            run.train(DATASET, "2d", 0, "nnUNetTrainer", seed=5)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    assert drawn[0] == drawn[1] == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_cli_passes_the_short_budget_options(monkeypatch):
    seen = {}
    monkeypatch.setattr(run, "train", lambda *args: seen.update(args=args) or Path("out"))
    assert cli_main(["nnunet", "train", "517", "2d", "0", "--trainer", "nnUNetTrainer", "--epochs", "10",
                     "--iterations", "20", "--val-iterations", "2", "--batch-size", "12", "--seed", "3"]) == 0
    settings, seed, batch = seen["args"][-3:]
    assert settings == {"num_epochs": 10, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 2}
    assert (seed, batch) == (3, 12)


def test_batch_size_replaces_the_planned_one(nnunet_env):
    instance = run.build_trainer(DATASET, "2d", 0, "nnUNetTrainer", device="cpu", batch_size=3)
    instance.initialize()
    assert instance.batch_size == 3 and instance.plans_manager.plans["configurations"]["2d"]["batch_size"] == 3
    assert run.load_plans(DATASET, "2d")[1]["configurations"]["2d"]["batch_size"] != 3  # the plans file is kept
