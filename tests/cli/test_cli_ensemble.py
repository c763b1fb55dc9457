"""`medseg predict --run CV_DIR [--tta flip]` and `medseg evaluate ... --tta flip` end to end on a tiny CV
folder built from saved checkpoints (no training); written masks are compared with probabilities computed
by hand with torch; bad folders and flag combinations give one line and write nothing."""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from ensemble_helpers import make_cv, save_fold, save_png  # noqa: E402

from medseg.cli import main
from medseg.engine.predict import prepare_image
from medseg.engine.trainer import model_from_checkpoint

FLIPS_2D = [(), (2,), (3,), (2, 3)]


def hand_tta_fg(models: list, x: torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    """Oracle: mean over models and the four 2-D flips of sigmoid(resize(flip back(model(flip(x)))))."""
    probs = []
    with torch.no_grad():
        for model in models:
            for d in FLIPS_2D:
                logits = model(x.flip(d)).flip(d) if d else model(x)
                probs.append(torch.sigmoid(F.interpolate(logits, size=size, mode="bilinear", align_corners=False)))
    return (sum(probs) / len(probs))[0, 0].numpy()


def fold_models(cv: Path, folds: int = 2) -> list:
    return [model_from_checkpoint(cv / f"fold_{k}" / "checkpoints" / "best.pt")[0] for k in range(folds)]


@pytest.fixture()
def cv(tmp_path: Path) -> Path:
    return make_cv(tmp_path / "cv", seeds=(0, 1), biases=(0.0, 1.0), gain=200.0)


def predict(cv: Path, src: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--run", str(cv), "--input", str(src), "--output", str(out), *extra])


def test_predict_run_with_flip_tta_writes_the_ensemble_mean(tmp_path: Path, cv: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    shapes = {"a": (20, 24), "b": (16, 16)}
    for i, (name, shape) in enumerate(shapes.items()):
        save_png(src / f"{name}.png", shape, seed=i)
    assert predict(cv, src, out, "--tta", "flip") == 0
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    models = fold_models(cv)
    cfg = model_from_checkpoint(cv / "fold_0" / "checkpoints" / "best.pt")[1]
    for name, shape in shapes.items():
        fg = hand_tta_fg(models, prepare_image(src / f"{name}.png", cfg)[0], shape)
        mask = np.array(Image.open(out / f"{name}.png"))
        np.testing.assert_array_equal(mask, np.where(fg >= 0.5, 255, 0))
        assert 0 < (fg >= 0.5).mean() < 1  # near the threshold: a wrong mean would change the mask


def test_run_together_with_checkpoint_is_refused(tmp_path: Path, cv: Path, capsys: pytest.CaptureFixture) -> None:
    save_png(tmp_path / "in" / "a.png")
    code = predict(cv, tmp_path / "in", tmp_path / "out", "--checkpoint", str(cv / "fold_0"))
    err = capsys.readouterr().err
    assert code == 1 and "give either --run or --checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_fold_is_one_line_naming_the_fold_and_the_fix(tmp_path: Path, cv: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    save_png(tmp_path / "in" / "a.png")
    (cv / "fold_1" / "checkpoints" / "best.pt").unlink()
    assert predict(cv, tmp_path / "in", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "fold_1 has no checkpoints/best.pt" in err and "medseg cv CONFIG --folds 2" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_run_on_a_single_run_folder_says_what_was_expected(tmp_path: Path, cv: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    save_png(tmp_path / "in" / "a.png")
    assert predict(cv / "fold_0", tmp_path / "in", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "is a single run folder" in err and "folds.json" in err and "Traceback" not in err


def test_run_keeps_the_predict_safety_rules(tmp_path: Path, cv: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    save_png(src / "a.png")
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")
    assert predict(cv, src, out) == 1  # an existing prediction needs --overwrite
    assert "already holds" in capsys.readouterr().err and (out / "a.png").read_bytes() == b"keep me"
    assert predict(cv, src, out, "--overwrite") == 1  # one unreadable input: listed, the other written
    captured = capsys.readouterr()
    assert "wrote 1 prediction(s)" in captured.out and "bad.png" in captured.err
    assert np.array(Image.open(out / "a.png")).shape == (20, 24)


def test_weights_only_loading_names_the_fold(tmp_path: Path, cv: Path, capsys: pytest.CaptureFixture) -> None:
    save_png(tmp_path / "in" / "a.png")
    save_fold(cv, 1, seed=1, extra={"note": argparse.Namespace(a=1)})  # a pickled object in fold 1 only
    assert predict(cv, tmp_path / "in", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "fold_1" in err and "re-save it as tensors" in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_run_with_flip_tta(cv: Path) -> None:
    """A single run: the saved TTA predictions are the hand-made flip means; the plain summary is kept."""
    from medseg.data import build_dataset

    run = cv / "fold_0"
    assert main(["evaluate", str(run), "--tta", "flip"]) == 0
    summary = json.loads((run / "metrics" / "test_tta_flip_summary.json").read_text())
    assert summary["tta"] == "flip" and summary["cases"] == 3
    assert not (run / "metrics" / "summary.json").exists()  # the run's plain result is not replaced
    model, cfg = model_from_checkpoint(run / "checkpoints" / "best.pt")
    dataset = build_dataset(cfg.data, "test")
    foreground = []
    for i in range(len(dataset)):
        gt, meta = dataset.read_original(i)
        fg = hand_tta_fg([model], dataset[i]["image"][None], tuple(gt.shape))
        saved = np.array(Image.open(run / "predictions" / "test_tta_flip" / f"{meta['id']}.png"))
        np.testing.assert_array_equal(saved, np.where(fg >= 0.5, 255, 0))
        foreground.append((fg >= 0.5).mean())
    assert 0 < np.mean(foreground) < 1  # masks that a wrong TTA would change


def test_evaluate_cv_folder_scores_each_fold_on_its_own_split(cv: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(cv), "--tta", "flip", "--no-predictions"]) == 0
    assert "fold_1: evaluating on its own test split" in capsys.readouterr().out
    with open(cv / "cv_evaluate_test_tta_flip.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "std"]
    dice = [json.loads((cv / f"fold_{k}" / "metrics" / "test_tta_flip_summary.json").read_text())
            ["metrics"]["dice"]["mean"] for k in (0, 1)]
    assert [float(r["dice"]) for r in rows[:2]] == pytest.approx(dice, abs=1e-5)
    assert float(rows[2]["dice"]) == pytest.approx(statistics.mean(dice), abs=1e-5)
    assert float(rows[3]["dice"]) == pytest.approx(statistics.stdev(dice), abs=1e-5)
