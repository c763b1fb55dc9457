"""medseg's nnU-Net trainers on a 3-D plan (``3d_fullres``): the 3-D twin of ``test_nnunet.py``.

A tiny synthetic 3-D dataset (6 NIfTI volumes of 32^3 at 1.5 mm, labels 0/1/2) is written in nnU-Net's raw
layout and planned and preprocessed by nnU-Net's own API. Oracles: the IFE channel arithmetic worked by hand,
scipy's correlation for the in-plane curvature score summed over slices, scipy's binary erosion with a 3x3x3
cube for the CWCD contour bands, nnU-Net's own deep-supervision weights; nibabel reads the predictions.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (the nnunet extra: pip install 'medseg[nnunet]')")
nib = pytest.importorskip("nibabel")
ndimage = pytest.importorskip("scipy.ndimage")
signal = pytest.importorskip("scipy.signal")

sys.path.insert(0, str(Path(__file__).parent))
from nnunet_helpers import plan_and_preprocess, set_env  # noqa: E402

from medseg.cli import main as cli_main  # noqa: E402
from medseg.integrations.nnunet import network as nnnet  # noqa: E402
from medseg.integrations.nnunet import run  # noqa: E402
from medseg.losses import create_loss  # noqa: E402

DATASET = 903
NAME = "Dataset903_MedsegTiny3D"
SPACING = (1.5, 1.5, 1.5)
SIDE = 32


def _nifti(array: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), str(path))


def _write_case(folder: Path, case: str, rng: np.random.Generator) -> None:
    zz, yy, xx = np.mgrid[:SIDE, :SIDE, :SIDE]
    cz, cy, cx = rng.integers(11, 21, size=3)
    r = rng.integers(5, 9)
    label = (((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8)
    label[(zz > 24) & (yy > 24) & (xx > 24)] = 2
    image = (label * 80.0 + 40.0 + rng.normal(0, 10, label.shape)).astype(np.float32)
    _nifti(image, folder / "imagesTr" / f"{case}_0000.nii.gz")
    _nifti(label, folder / "labelsTr" / f"{case}.nii.gz")


@pytest.fixture(scope="module")
def nnunet_3d(tmp_path_factory):
    """nnU-Net folders in tmp with Dataset903 planned and preprocessed (3d_fullres)."""
    root = tmp_path_factory.mktemp("nnunet3d")
    mp = pytest.MonkeyPatch()
    set_env(mp, root)
    folder = root / "raw" / NAME
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        _write_case(folder, f"vol{i:03d}", rng)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "ball": 1, "corner": 2},
        "numTraining": 6, "file_ending": ".nii.gz"}))
    plan_and_preprocess(mp, DATASET, ("3d_fullres",))
    yield root
    mp.undo()


def _trainer(trainer: str):
    instance = run.build_trainer(DATASET, "3d_fullres", 0, trainer, device="cpu")
    instance.initialize()
    return instance


def test_3d_plan_has_four_stages_on_the_whole_volume(nnunet_3d):
    _, plans, _ = run.load_plans(DATASET, "3d_fullres")
    config = plans["configurations"]["3d_fullres"]
    assert config["patch_size"] == [SIDE] * 3 and config["spacing"] == list(SPACING)
    # 32 -> 16 -> 8 -> 4 (nnU-Net stops pooling at 4 voxels): 4 stages, widths 32 x 2^s
    assert config["architecture"]["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256]
    assert len(list((nnunet_3d / "pre" / NAME / "nnUNetPlans_3d_fullres").glob("*.pkl"))) == 6


@pytest.mark.parametrize("trainer, widths", [
    ("nnUNetTrainer", [256, 128, 64]),  # 2 C_skip per decoder stage, skips 128, 64, 32
    ("nnUNetTrainerIFECurvature", [320, 176, 64]),  # 128 + 128 + floor(0.5 * 128), 64 + 64 + floor(0.75 * 64)
    ("nnUNetTrainerIFEEntropy", [320, 160, 64]),  # ratios 0.5 / 0.5
])
def test_3d_decoder_widths_follow_the_ife_arithmetic_and_deep_supervision_is_kept(nnunet_3d, trainer, widths):
    net = _trainer(trainer).network
    assert isinstance(net.decoder.stages[0].convs[0].conv, torch.nn.Conv3d)
    assert nnnet.decoder_input_widths(net) == widths
    net.train()
    outs = net(torch.randn(2, 1, SIDE, SIDE, SIDE))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16), (2, 3, 8, 8, 8)]


def test_3d_ife_selects_channels_per_sample_by_in_plane_curvature(nnunet_3d):
    net = _trainer("nnUNetTrainerIFECurvature").network.eval()
    seen = {}
    ife = net.decoder.ife["1"]  # encoder stage 2: 64 channels of 16^3, ratio 0.75 -> 48 selected
    ife.register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach(), y=out.detach()))
    with torch.no_grad():
        net(torch.randn(2, 1, SIDE, SIDE, SIDE))
    x, y = seen["x"].double().numpy(), seen["y"].double().numpy()
    kernel = (np.array([[-1, 5, -1], [5, -16, 5], [-1, 5, -1]]) / 16)[None]  # 1 x 3 x 3: per slice
    orders = []
    for b in range(2):
        scores = [np.abs(signal.correlate(x[b, c], kernel, mode="valid")).sum() for c in range(64)]
        order = np.argsort(scores)[::-1][:48]
        orders.append(order)
        np.testing.assert_allclose(y[b], np.concatenate([x[b], x[b][order]]), rtol=0, atol=0)
    assert not np.array_equal(orders[0], orders[1])


def _contour_oracle_3d(label: np.ndarray, classes: int, iterations: int = 6) -> torch.Tensor:
    """C_k = G_k - erode(G_k), a 3x3x3 cube iterated 6 times, no erosion at the border (scipy)."""
    out = np.zeros((label.shape[0], classes, *label.shape[1:]), bool)
    cube = np.ones((3, 3, 3))
    for b in range(label.shape[0]):
        for k in range(classes):
            g = label[b] == k
            out[b, k] = g & ~ndimage.binary_erosion(g, cube, iterations=iterations, border_value=1)
    return torch.from_numpy(out)


def test_3d_cwcd_trainer_loss_is_create_loss_cwcd_at_nnunets_scales(nnunet_3d):
    trainer = _trainer("nnUNetTrainerCWCD")
    weights = trainer.loss.weight_factors
    assert weights == pytest.approx((2 / 3, 1 / 3, 0.0)) == _trainer("nnUNetTrainer").loss.weight_factors
    label = torch.zeros(2, 1, SIDE, SIDE, SIDE)
    label[:, :, 4:26, 6:22, 8:24] = 1
    label[1, :, 24:, 24:, 24:] = 2
    targets = [label, label[:, :, ::2, ::2, ::2], label[:, :, ::4, ::4, ::4]]
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 3, s, s, s, dtype=torch.float64, generator=gen) for s in (32, 16, 8)]
    got = trainer.loss(logits, targets)
    cwcd = create_loss("cwcd")
    want = sum(w * cwcd(lg, {"label": t[:, 0].long(), "contour": _contour_oracle_3d(t[:, 0].numpy(), 3)})["loss"]
               for w, lg, t in zip(weights[:2], logits[:2], targets[:2]))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("trainer", ["nnUNetTrainerIFECurvature", "nnUNetTrainerCWCD"])
def test_3d_trainer_trains_on_cpu_then_predicts_nifti_through_the_cli(nnunet_3d, monkeypatch, trainer):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    out = run.train(DATASET, "3d_fullres", 0, trainer, device="cpu", validate=False, seed=0,
                    settings={"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1})
    assert (out / "checkpoint_final.pth").is_file()
    images = nnunet_3d / f"imagesTs_{trainer}"
    images.mkdir()
    source = nnunet_3d / "raw" / NAME / "imagesTr" / "vol000_0000.nii.gz"
    (images / source.name).write_bytes(source.read_bytes())
    pred = nnunet_3d / f"pred_{trainer}"
    assert cli_main(["nnunet", "predict", str(DATASET), "3d_fullres", "-i", str(images), "-o", str(pred), "-f", "0",
                     "--trainer", trainer, "--device", "cpu", "--processes", "0", "--no-mirroring"]) == 0
    volume = nib.load(str(pred / "vol000.nii.gz"))
    assert volume.shape == (SIDE,) * 3
    assert np.allclose(volume.header.get_zooms(), SPACING)
    assert set(np.unique(np.asarray(volume.dataobj))) <= {0, 1, 2}
