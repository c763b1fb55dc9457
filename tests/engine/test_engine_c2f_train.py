"""Coarse-to-fine training (engine/c2f_train.py): stages, crop boxes, learning rates, early stopping, exact
resume, and a loss that goes down on the phantom. Tiny phantom volumes; stub networks where the test is
about the loop and not the networks."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from medseg.engine import c2f_train as ct
from medseg.engine.checkpoint import load_checkpoint
from medseg.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).parent))
from c2f_helpers import TINY, TinyC2F, tiny_registered  # noqa: E402

PHANTOM = {"n": 3, "seed": 0, "shape": [40, 32, 8], "spacing": [4.0, 4.0, 8.0], "target_length": 40.0,
           "target_radius": 8.0}


def recipe(root: Path, out: Path, **over) -> ct.C2FRecipe:
    raw = {"name": "t", "output_dir": str(out),
           "data": {"root": str(root), "window": [-100, 240], "views": ["axial"], "phantom": PHANTOM,
                    "split": {"mode": "kfold", "folds": 3, "fold": 0}},
           "loss": {"name": "mll", "kwargs": {"coarse_key": "coarse", "fine_key": "out", "num_points": 32}},
           "stages": {"s": 1, "j_from": 2},
           "schedule": {"lr": 1e-3, "decay_from": 2, "halve_every": 2, "reset_at": [3]},
           "train": {"epochs": 2, "max_steps_per_epoch": 2, "val_rounds": 1}}
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return ct.validate_recipe(raw)


@pytest.fixture(scope="module", autouse=True)
def _tiny_models():
    """c2f_tiny_coarse / c2f_tiny_fine in the model registry while this module runs, never at import."""
    with tiny_registered():
        yield


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    ct.ensure_data(recipe(root, root).data)
    return root


# ----------------------------------------------------------------------------- stub networks
class StubCoarse(nn.Module):
    """Logits +10 inside a fixed square, -10 elsewhere (plus a trainable scalar)."""

    def __init__(self, square: tuple[int, int, int, int] | None) -> None:
        super().__init__()
        self.square, self.w = square, nn.Parameter(torch.zeros(()))

    def forward(self, x):
        logits = torch.full_like(x, -10.0)
        if self.square is not None:
            y0, y1, x0, x1 = self.square
            logits[..., y0:y1, x0:x1] = 10.0
        return {"out": logits + self.w}


class StubFine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 3, 1)
        self.inputs: list[torch.Tensor] = []
        self.epochs: list[int] = []

    def set_epoch(self, e):
        self.epochs.append(e)

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return {"out": self.conv(x)}


class RecordLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.batches, self.epochs = [], []

    def set_epoch(self, e):
        self.epochs.append(e)

    def forward(self, outputs, batch):
        self.batches.append(batch)
        self.outputs = outputs
        loss = outputs["out"].sigmoid().mean() + outputs["coarse"].sigmoid().mean()
        return {"loss": loss}


def stub_nets(square=None) -> ct.Nets:
    from medseg.modules.saliency import SaliencyTransform

    return ct.Nets(StubCoarse(square), StubFine(), SaliencyTransform(3))


# ------------------------------------------------------------------------------------- schedule
def test_learning_rate_hand_worked():
    """MLL schedule: 1e-5 for 8 epochs, halved every 2 from epoch 8, reset to 1e-5 at 12 and halved again."""
    sched = ct.C2FSchedule(lr=1e-5, decay_from=8, halve_every=2, reset_at=[12])
    want = [1e-5] * 8 + [1e-5, 1e-5, 5e-6, 5e-6] + [1e-5, 1e-5, 5e-6, 5e-6, 2.5e-6, 2.5e-6, 1.25e-6, 1.25e-6]
    assert [ct.learning_rate(e, sched) for e in range(20)] == pytest.approx(want, rel=0, abs=1e-12)


def test_stage_of_configured_epochs():
    stages = ct.C2FStages(s=2, j_from=8)
    assert [ct.stage_of(e, stages) for e in range(10)] == ["S"] * 2 + ["I"] * 6 + ["J"] * 2


# ---------------------------------------------------------------------------------- one step
def test_train_step_box_and_input_per_stage():
    """S and I crop at the GT box, J at the coarse prediction's box (GT box when it is empty); S feeds the
    raw unit twice, I/J the saliency-weighted unit."""
    label = torch.zeros(1, 3, 64, 64)
    label[..., 30:34, 40:44] = 1
    image = torch.rand(1, 3, 64, 64)
    loss = RecordLoss()
    gt_box = (10, 54, 20, 64)  # (30-20, 34+20, 40-20, min(64, 44+20))
    for stage, square, want in [("S", (0, 8, 0, 8), gt_box), ("I", (0, 8, 0, 8), gt_box),
                                ("J", (0, 8, 0, 8), (0, 28, 0, 28)), ("J", None, gt_box)]:
        nets = stub_nets(square)
        terms = ct.train_step(nets, loss, image, label, stage, 20, None)
        assert loss.batches[-1]["box"] == want, stage
        x = nets.fine.inputs[-1]
        assert x.shape[-2:] == (want[1] - want[0], want[3] - want[2])
        same = torch.allclose(x[:, :3], x[:, 3:])
        assert same == (stage == "S"), stage
        assert torch.isfinite(terms["loss"])


def test_train_step_gradient_reaches_coarse_only_through_saliency_after_s():
    """Stage S: the coarse net is not linked to the fine loss; stage I: gradients flow through F_S."""
    label = torch.zeros(1, 3, 32, 32)
    label[..., 10:20, 10:20] = 1
    image = torch.rand(1, 3, 32, 32)

    class FineOnly(RecordLoss):
        def forward(self, outputs, batch):
            return {"loss": outputs["out"].sigmoid().mean()}

    grads = {}
    for stage in ("S", "I"):
        nets = stub_nets((12, 18, 12, 18))
        ct.train_step(nets, FineOnly(), image, label, stage, 4, None)["loss"].backward()
        grads[stage] = nets.saliency.conv2.weight.grad
    assert grads["S"] is None and grads["I"] is not None and grads["I"].abs().sum() > 0


def test_crop_grid_logits_are_not_passed_as_full_slice_logits():
    """The fine model's stride-4 logits cover the crop: they reach the loss as ``crop_logits`` with the crop's
    label, never as ``logits`` beside the full-slice label."""
    label = torch.zeros(1, 3, 64, 64)
    label[..., 30:34, 40:44] = 1
    nets = ct.Nets(StubCoarse(None), TinyC2F(6, 3), stub_nets().saliency)
    loss = RecordLoss()
    ct.train_step(nets, loss, torch.rand(1, 3, 64, 64), label, "I", 20, None)
    out, batch = loss.outputs, loss.batches[-1]
    assert "logits" not in out and out["crop_logits"].shape[-2:] == (11, 11)  # 44 x 44 crop at stride 4
    assert out["out"].shape == label.shape and torch.equal(batch["label_crop"], label[..., 10:54, 20:64])


def test_view_with_fewer_than_three_slices_is_refused(tmp_path):
    import nibabel as nib

    from medseg.errors import DataError

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 2), np.int16), affine), tmp_path / "imagesTr" / "a_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((16, 16, 2), np.uint8), affine), tmp_path / "labelsTr" / "a.nii.gz")
    cases = ct.dataset_cases(tmp_path)
    with pytest.raises(DataError, match="a_0000.nii.gz: only 2 slice"):
        ct.load_volumes(cases, ["a"], "axial", (-100, 240))
    assert len(ct.load_volumes(cases, ["a"], "coronal", (-100, 240))[0].image) == 16


# ----------------------------------------------------------------------------------- the loop
def _stub_trainer(monkeypatch, rec: ct.C2FRecipe, out: Path, values=None, square=None):
    nets = stub_nets(square)
    monkeypatch.setattr(ct, "build_nets", lambda r, device="cpu": nets)
    loss = RecordLoss()
    monkeypatch.setattr(ct, "create_loss", lambda spec, num_classes=1: loss)
    stages: list[str] = []
    real = ct.train_step

    def spy(nets, loss_fn, image, label, stage, margin, rng):
        stages.append(stage)
        return real(nets, loss_fn, image, label, stage, margin, rng)

    monkeypatch.setattr(ct, "train_step", spy)
    seq = iter(values or [])
    validate = (lambda t: next(seq)) if values is not None else (lambda t: 0.5)
    loss.nets = nets
    return loss, stages, validate


def test_stage_switch_and_loss_epoch_at_configured_epochs(monkeypatch, data_root, tmp_path):
    rec = recipe(data_root, tmp_path, stages={"s": 1, "j_from": 3}, train={"epochs": 4, "max_steps_per_epoch": 2})
    loss, stages, validate = _stub_trainer(monkeypatch, rec, tmp_path)
    result = ct.train_view(rec, "axial", validate_fn=validate, echo=None)
    assert result["status"] == "finished" and result["epochs"] == 4
    assert stages == ["S", "S", "I", "I", "I", "I", "J", "J"]
    assert loss.epochs == [0, 1, 2, 3] and loss.nets.fine.epochs == [0, 1, 2, 3]  # loss and MLN-style nets
    rows = list(csv.DictReader(open(tmp_path / "t" / "axial" / "logs" / "epochs.csv")))
    assert [r["stage"] for r in rows] == ["S", "I", "I", "J"]
    # the optimiser trained each epoch at the schedule's rate (lr 1e-3, halving from 2, reset at 3)
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3])


def test_optimizer_uses_the_schedule(monkeypatch, data_root, tmp_path):
    rec = recipe(data_root, tmp_path, schedule={"lr": 0.1, "decay_from": 1, "halve_every": 1, "reset_at": [3]},
                 train={"epochs": 4, "max_steps_per_epoch": 1})
    _, _, validate = _stub_trainer(monkeypatch, rec, tmp_path)
    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    ct.train_view(rec, "axial", validate_fn=validate, echo=None)
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.1])


def test_early_stopping_on_validation_dice(monkeypatch, data_root, tmp_path):
    rec = recipe(data_root, tmp_path, train={"epochs": 10, "max_steps_per_epoch": 1, "patience": 2})
    _, stages, validate = _stub_trainer(monkeypatch, rec, tmp_path, values=[0.5, 0.6, 0.55, 0.58, 0.9, 0.9])
    result = ct.train_view(rec, "axial", validate_fn=validate, echo=None)
    assert result["status"] == "stopped_early" and result["epochs"] == 4 and len(stages) == 4
    assert result["best_dice"] == 0.6 and result["best_epoch"] == 1
    best = load_checkpoint(tmp_path / "t" / "axial" / "checkpoints" / "best.pt")
    assert best["epoch"] == 2 and best["best"]["value"] == 0.6
    # resuming an early-stopped run does not train further
    again = ct.train_view(rec, "axial", resume=True, validate_fn=validate, echo=None)
    assert again["epochs"] == 4 and len(stages) == 4


def test_resume_from_epoch_boundary_matches_uninterrupted(data_root, tmp_path):
    """BN, dropout, random points, jitter; stages S, I, J: 1 epoch + resume == 3 epochs straight."""
    over = {"train": {"epochs": 3, "max_steps_per_epoch": 3, "jitter": True, "val_rounds": 1}, **TINY}
    full = recipe(data_root, tmp_path / "a", **over)
    ct.train_view(full, "axial", validate_fn=lambda t: 0.5, echo=None)
    part = recipe(data_root, tmp_path / "b", **over)
    first = ct.ViewTrainer(part, "axial", ct.view_run_dir(part, "axial"), lambda t: 0.5, None)
    ct._prepare(first.run_dir, part, False, False, False)
    first.setup(None)
    assert first.train_epoch()  # one epoch, saved; the process "dies" here
    ct.train_view(part, "axial", resume=True, validate_fn=lambda t: 0.5, echo=None)
    a = load_checkpoint(tmp_path / "a" / "t" / "axial" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "t" / "axial" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for net in ("coarse", "fine", "saliency"):
        for k, v in a["model"][net].items():
            assert torch.equal(v, b["model"][net][k]), f"{net}.{k}"


@pytest.mark.slow
def test_few_steps_lower_the_loss(data_root, tmp_path):
    """The real c2f networks (ResNet-18 + ASPP) on one phantom unit: 2 Adam steps lower the MLL loss."""
    rec = recipe(data_root, tmp_path)
    torch.manual_seed(0)
    nets = ct.build_nets(rec)
    loss_fn = ct.create_loss(rec.loss.model_dump(), num_classes=1)
    cases = ct.dataset_cases(data_root)
    vols = ct.load_volumes(cases, sorted(cases)[:1], "axial", rec.data.window)
    image, label = ct.unit_tensors(vols[0], int(ct.unit_index(vols, 0.98)[0][1]))
    opt = torch.optim.Adam(nets.parameters(), lr=1e-3)
    nets.train(True)
    losses = []
    for step in range(3):
        torch.manual_seed(1)  # same dropout mask and points each step: only the weights change
        terms = ct.train_step(nets, loss_fn, image, label, "S", 20, None)
        losses.append(float(terms["loss"].detach()))
        if step < 2:
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
    assert losses[-1] < losses[0] - 0.005, losses


def test_training_loop_lowers_the_loss(data_root, tmp_path):
    """The loop itself (tiny networks, stage S, the Dice-only recipe's loss, whose weights do not change with
    the epoch): the epoch's mean training loss goes down."""
    dice_only = {"name": "mll", "kwargs": {"coarse_key": "coarse", "fine_key": "out", "num_points": 32,
                                           "alpha": {"start": 0.0, "step": 0.0, "max": 0.0},
                                           "beta": {"from_epoch": 1000}}}
    rec = recipe(data_root, tmp_path, stages={"s": 6, "j_from": 6}, train={"epochs": 6, "max_steps_per_epoch": 4},
                 schedule={"lr": 1e-2, "decay_from": 6}, loss=dice_only, **TINY)
    ct.train_view(rec, "axial", validate_fn=lambda t: 0.5, echo=None)
    rows = list(csv.DictReader(open(tmp_path / "t" / "axial" / "logs" / "epochs.csv")))
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0] - 0.02, losses


# ------------------------------------------------------------------------------------ bad input
def test_resume_refuses_another_view_and_foreign_checkpoint(monkeypatch, data_root, tmp_path):
    rec = recipe(data_root, tmp_path, train={"epochs": 1, "max_steps_per_epoch": 1})
    _, _, validate = _stub_trainer(monkeypatch, rec, tmp_path)
    ct.train_view(rec, "axial", validate_fn=validate, echo=None)
    state = load_checkpoint(tmp_path / "t" / "axial" / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="trained for the axial view, not coronal"):
        ct.check_checkpoint(state, "x.pt", "coronal")
    with pytest.raises(CheckpointError, match="not a coarse-to-fine checkpoint"):
        ct.check_checkpoint({"model": {}, "config": {}}, "x.pt", "axial")
    other = recipe(data_root, tmp_path, fine={"name": "unet"})
    with pytest.raises(CheckpointError, match="networks c2f_coarse\\+c2f_fine"):
        ct.check_checkpoint(state, "x.pt", "axial", other)


def test_recipe_errors_name_the_key(tmp_path):
    from medseg.config import ConfigError

    with pytest.raises(ConfigError, match="data.window"):
        recipe(tmp_path, tmp_path, data={"root": "x", "window": [240, -100]})
    with pytest.raises(ConfigError, match="fine.name 'nope'"):
        recipe(tmp_path, tmp_path, fine={"name": "nope"})
    with pytest.raises(ConfigError, match="train.epochs"):
        recipe(tmp_path, tmp_path, train={"epochs": 0})


def test_split_per_volume():
    ids = [f"c{i}" for i in range(8)]
    train, val = ct.split_cases(ids, ct.C2FSplit(mode="kfold", folds=4, fold=1))
    assert val == ["c1", "c5"] and sorted(train + val) == ids
    train, val = ct.split_cases(ids, ct.C2FSplit(mode="random", val=3, seed=0))
    assert len(val) == 3 and not set(val) & set(train)


# ------------------------------------------------------------------------------ mid-epoch resume
class StopAfter:
    """A stop flag that is raised when it is read for the ``k``-th time (it is read once per step)."""

    def __init__(self, k: int) -> None:
        self.k, self.reads = k, 0

    @property
    def requested(self):
        self.reads += 1
        return 15 if self.reads >= self.k else None


def test_mid_epoch_resume_matches_uninterrupted(data_root, tmp_path):
    """Stopped after 2 steps of epoch 1 (stage J with crop jitter, BN, dropout, MLL's random points on), the
    mid-epoch checkpoint resumes to the same weights, BN statistics and epoch loss as a run never stopped."""
    over = {"train": {"epochs": 2, "max_steps_per_epoch": 4, "jitter": True, "margin": 2, "val_rounds": 1,
                      "recalibrate_bn": 2},  # margin 2: the jittered crops differ (20 covers a whole 32 x 8 slice)
            "stages": {"s": 1, "j_from": 1},
            "loss": {"name": "mll", "kwargs": {"coarse_key": "coarse", "fine_key": "out", "num_points": 32,
                                               "beta": {"from_epoch": 1}}},
            "data": {"views": ["sagittal"]}, **TINY}  # sagittal: 27 units (axial has 2)
    full = recipe(data_root, tmp_path / "a", **over)
    ct.train_view(full, "sagittal", validate_fn=lambda t: 0.5, echo=None)
    part = recipe(data_root, tmp_path / "b", **over)
    first = ct.ViewTrainer(part, "sagittal", ct.view_run_dir(part, "sagittal"), lambda t: 0.5, None)
    ct._prepare(first.run_dir, part, False, False, False)
    first.setup(None)
    assert first.train_epoch() and not first.train_epoch(StopAfter(2))  # the process "dies" here
    mid = load_checkpoint(first.run_dir / "checkpoints" / "last.pt")  # weights_only
    assert (mid["epoch"], mid["step_in_epoch"]) == (1, 2)
    first.logger.close()
    ct.train_view(part, "sagittal", resume=True, validate_fn=lambda t: 0.5, echo=None)
    a = load_checkpoint(tmp_path / "a" / "t" / "sagittal" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "t" / "sagittal" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and b["step_in_epoch"] == 0
    for net in ("coarse", "fine", "saliency"):
        for k, v in a["model"][net].items():
            assert torch.equal(v, b["model"][net][k]), f"{net}.{k}"
    rows = [list(csv.DictReader(open(p / "t" / "sagittal" / "logs" / "epochs.csv")))
            for p in (tmp_path / "a", tmp_path / "b")]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]
    steps = (tmp_path / "b" / "t" / "sagittal" / "logs" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 8  # the 2 steps before the stop are not logged twice


# ----------------------------------------------------------------------- BatchNorm recalibration
def test_recalibrate_bn_sets_the_mean_of_per_unit_statistics():
    """Oracle by hand: the first BN of the coarse net gets the average over units of each unit's batch mean
    and (unbiased) variance of the first conv's output; dropout is off, no random number is drawn and the
    training flags come back."""
    torch.manual_seed(0)
    nets = ct.Nets(TinyC2F(3, 3), TinyC2F(6, 3), stub_nets().saliency)
    units = []
    for i in range(3):
        label = torch.zeros(1, 3, 24, 24)
        label[..., 8 + i:14, 6:12 + i] = 1
        units.append((torch.rand(1, 3, 24, 24) * (i + 1), label))
    conv, bn = nets.coarse.body[0], nets.coarse.body[1]
    with torch.no_grad():
        feats = [conv(img) for img, _ in units]
    want_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    want_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    nets.train(True)
    rng = torch.get_rng_state()
    assert ct.recalibrate_bn(nets, units, "I", 4) == 2
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.allclose(bn.running_mean, want_mean, atol=1e-6) and torch.allclose(bn.running_var, want_var, atol=1e-6)
    assert bn.momentum == 0.1 and nets.coarse.training and nets.fine.body[3].training


def test_epoch_ends_with_recalibrated_bn(data_root, tmp_path):
    """The checkpoint of an epoch holds BN statistics re-estimated at the final weights (not the lagging
    running averages of batch-size-1 training, which emptied the phantom's coarse masks)."""
    rec = recipe(data_root, tmp_path, train={"epochs": 1, "max_steps_per_epoch": 3}, **TINY)
    seen = {}
    ct.train_view(rec, "axial", validate_fn=lambda t: seen.setdefault("t", t) and 0.5, echo=None)
    t = seen["t"]
    state = load_checkpoint(tmp_path / "t" / "axial" / "checkpoints" / "last.pt")
    units = t._recalibration_units(rec.train.recalibrate_bn)
    assert len(units) == len(t.units)
    t.nets.load_state_dict(state["model"], "x")
    ct.recalibrate_bn(t.nets, units, ct.stage_of(0, rec.stages), rec.train.margin)
    for net in ("coarse", "fine"):
        for k, v in t.nets.modules()[net].state_dict().items():
            if "running" in k:
                assert torch.allclose(v, state["model"][net][k], atol=1e-6), f"{net}.{k}"


def test_stale_phantom_in_data_root_is_refused(tmp_path):
    """A phantom written with other settings (e.g. the old invisible 45 HU target) is not trained on."""
    from medseg.data.phantom import PhantomSpec, write_phantom_dataset
    from medseg.errors import DataError

    rec = recipe(tmp_path, tmp_path)
    p = rec.data.phantom
    write_phantom_dataset(tmp_path, p.n, p.seed, PhantomSpec(p.shape, p.spacing, p.target_length, p.target_radius,
                                                             target_hu=45.0))
    with pytest.raises(DataError, match="dataset.json records"):
        ct.ensure_data(rec.data)
    write_phantom_dataset(tmp_path, p.n, p.seed, p.spec(), overwrite=True)
    assert ct.ensure_data(rec.data) == tmp_path
