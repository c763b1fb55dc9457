"""Fold ensembles and flip TTA (``medseg.engine.ensemble``): checked against probabilities computed by hand
with torch (each fold's sigmoid/softmax, the flips written out one by one), never against the code itself."""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from ensemble_helpers import fold_raw, make_cv, save_fold, save_png  # noqa: E402

from medseg.config import RunConfig
from medseg.engine.ensemble import FoldError, load_fold_ensemble, member_probabilities
from medseg.engine.predict import predict_case, prepare_image
from medseg.engine.runtime import make_runtime
from medseg.errors import CheckpointError


def hand_probabilities(model: nn.Module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Oracle: one model's probabilities at the original size (bilinear resize of the logits, then
    sigmoid for one channel, softmax otherwise)."""
    with torch.no_grad():
        logits = F.interpolate(model(x), size=size, mode="bilinear", align_corners=False)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)


# ------------------------------------------------------------------------------ fold ensembles
def test_ensemble_of_identical_folds_equals_one_fold(tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    make_cv(cv, seeds=(0,), biases=(0.3,))
    for k in (1, 2):
        shutil.copytree(cv / "fold_0", cv / f"fold_{k}")
    (cv / "folds.json").write_text('{"folds": 3}')
    models, cfg, paths = load_fold_ensemble(cv)
    assert len(models) == 3 and [p.parent.parent.name for p in paths] == ["fold_0", "fold_1", "fold_2"]
    png = save_png(tmp_path / "a.png")
    rt = make_runtime(cfg.train, 2)
    lab_e, fg_e = predict_case(models, [png], cfg, rt)
    lab_1, fg_1 = predict_case(models[0], [png], cfg, rt)
    np.testing.assert_allclose(fg_e, fg_1, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(lab_e, lab_1)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_two_fold_ensemble_is_the_mean_of_the_folds_probabilities(tmp_path: Path, num_classes: int) -> None:
    cv = make_cv(tmp_path / "cv", seeds=(0, 1), biases=(2.0, -1.5), raw=fold_raw(num_classes))
    models, cfg, _ = load_fold_ensemble(cv)
    png = save_png(tmp_path / "a.png", (20, 24))
    labels, fg = predict_case(models, [png], cfg, make_runtime(cfg.train, 2))

    x = prepare_image(png, cfg)[0]
    mean = (hand_probabilities(models[0], x, (20, 24)) + hand_probabilities(models[1], x, (20, 24))) / 2
    want_fg = mean[0, 0] if num_classes == 1 else 1 - mean[0, 0]
    want_labels = (mean[0, 0] >= 0.5).long() if num_classes == 1 else mean[0].argmax(0)
    np.testing.assert_allclose(fg, want_fg.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(labels, want_labels.numpy())
    single = hand_probabilities(models[0], x, (20, 24))[0, 0]  # the folds really disagree
    assert float((single - mean[0, 0]).abs().max()) > 0.05


# ------------------------------------------------------------------------------ flip TTA
class Net(nn.Module):
    """A one-layer model: a 1x1 conv is flip-equivariant, a random 3x3 one is not."""

    input_divisor = 1

    def __init__(self, dims: int, kernel: int, out: int = 1, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.spatial_dims = dims
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(1, out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 3


def config(dims: int, num_classes: int = 1) -> RunConfig:
    if dims == 2:
        return RunConfig.model_validate(dict(data=dict(kind="synthetic2d", in_channels=1, num_classes=num_classes,
                                                       image_size=[16, 16]), train=dict(amp="off")))
    return RunConfig.model_validate(dict(data=dict(kind="synthetic3d", in_channels=1, num_classes=num_classes,
                                                   image_size=[8, 8, 8]), eval=dict(sliding_window=[8, 8, 8]),
                                     train=dict(amp="off")))


def tta_probabilities(model: nn.Module, x: torch.Tensor, cfg: RunConfig, tta: str) -> torch.Tensor:
    from medseg.engine.infer import case_logits

    rt = make_runtime(cfg.train, x.ndim - 2)
    with torch.no_grad():
        return member_probabilities(model, x, lambda m, v, **kw: case_logits(m, v, cfg, rt, **kw),
                                    lambda logits: logits, tta, cfg)


@pytest.mark.parametrize("dims", [2, 3])
def test_flip_tta_of_a_flip_equivariant_model_changes_nothing(dims: int) -> None:
    x = torch.randn(1, 1, *([8] * dims), generator=torch.Generator().manual_seed(0))
    model, cfg = Net(dims, kernel=1), config(dims)
    plain, tta = tta_probabilities(model, x, cfg, "none"), tta_probabilities(model, x, cfg, "flip")
    torch.testing.assert_close(tta, plain, atol=1e-6, rtol=0)


def test_flip_tta_2d_is_the_mean_of_the_four_flipped_probabilities() -> None:
    x = torch.randn(1, 1, 12, 16, generator=torch.Generator().manual_seed(1))
    model, cfg = Net(2, kernel=3, out=3), config(2, num_classes=3)
    with torch.no_grad():
        passes = [model(x).softmax(1),                                   # identity
                  model(x.flip(2)).flip(2).softmax(1),                   # H
                  model(x.flip(3)).flip(3).softmax(1),                   # W
                  model(x.flip(2).flip(3)).flip(3).flip(2).softmax(1)]   # H and W
    want = sum(passes) / 4
    got = tta_probabilities(model, x, cfg, "flip")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float((got - passes[0]).abs().max()) > 1e-3  # the model is not flip-equivariant


def test_flip_tta_3d_sliding_window_averages_the_eight_mirrored_logits() -> None:
    """3-D goes through the sliding window's own mirroring: the 8 flips' logits are averaged (nnU-Net), then
    the sigmoid. One window covers the volume, so the Gaussian weights cancel."""
    x = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    model, cfg = Net(3, kernel=3), config(3)
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    with torch.no_grad():
        logits = [model(x.flip(d)).flip(d) if d else model(x) for d in flips]
    want = torch.sigmoid(sum(logits) / 8)
    got = tta_probabilities(model, x, cfg, "flip")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert float((got - torch.sigmoid(logits[0])).abs().max()) > 1e-3


# ------------------------------------------------------------------------------ bad CV folders
def test_fold_without_best_checkpoint_is_named_with_the_resume_command(tmp_path: Path) -> None:
    cv = make_cv(tmp_path / "cv", seeds=(0, 1, 2), biases=(0, 0, 0))
    (cv / "fold_1" / "checkpoints" / "best.pt").unlink()
    with pytest.raises(FoldError, match=r"fold_1 has no checkpoints/best\.pt.*medseg cv CONFIG --folds 3 --output"):
        load_fold_ensemble(cv)


def test_fewer_fold_folders_than_folds_json_lists(tmp_path: Path) -> None:
    cv = make_cv(tmp_path / "cv", seeds=(0, 1), biases=(0, 0))
    (cv / "folds.json").write_text('{"folds": 4}')
    with pytest.raises(FoldError, match=r"lists 4 folds but fold_2, fold_3 have no.*found: fold_0, fold_1.*--folds 4"):
        load_fold_ensemble(cv)


def test_a_folder_that_is_not_a_cv_folder_says_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FoldError, match=r"not a cross-validation folder; expected .*folds\.json.*fold_0/"):
        load_fold_ensemble(tmp_path / "empty")
    save_fold(tmp_path / "runs", 0, seed=0)  # runs/fold_0 is an ordinary run folder
    with pytest.raises(FoldError, match=r"is a single run folder; predict with it through --checkpoint"):
        load_fold_ensemble(tmp_path / "runs" / "fold_0")


@pytest.mark.parametrize(("key", "fold_data", "shown"), [
    ("data.in_channels", dict(in_channels=3), "3"), ("data.normalize", dict(normalize="imagenet"), "'imagenet'"),
    ("data.image_size", dict(image_size=[48, 48]), "[48, 48]")])
def test_folds_with_different_input_contracts_are_refused(tmp_path: Path, key: str, fold_data: dict,
                                                          shown: str) -> None:
    cv = make_cv(tmp_path / "cv", seeds=(0, 1), biases=(0, 0))
    save_fold(cv, 1, seed=1, raw=fold_raw(**fold_data))
    with pytest.raises(FoldError, match=rf"{key} is {re.escape(shown)} in fold_1 but .* in fold_0"):
        load_fold_ensemble(cv)


def test_weights_only_loading_applies_to_every_fold(tmp_path: Path) -> None:
    cv = make_cv(tmp_path / "cv", seeds=(0, 1), biases=(0, 0))
    save_fold(cv, 1, seed=1, extra={"note": argparse.Namespace(a=1)})  # needs full unpickling
    with pytest.raises(CheckpointError, match=r"fold_1.checkpoints.best\.pt.*re-save it as tensors"):
        load_fold_ensemble(cv)

