"""Library messages go through logging; the CLI shows notes by default, hides them with -q; the library
used from Python prints nothing on stdout unless the caller configures logging."""
from __future__ import annotations

import logging

import pytest
import yaml

from medseg.cli import main
from medseg.config import build_config
from medseg.log import logger

TINY = {"name": "tiny", "data": {"kind": "synthetic2d", "image_size": [16, 16], "batch_size": 4,
                                 "synthetic": {"n_train": 4, "n_val": 2, "n_test": 2}},
        "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}},
        "train": {"epochs": 1, "device": "cpu", "progress": True}}


@pytest.fixture(autouse=True)
def fresh_logger():
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    for h in handlers:
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in handlers:
        logger.addHandler(h)
    logger.setLevel(level)
    logger.propagate = propagate


def _config(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "runs")}))
    return str(path)


def test_cli_shows_notes_and_quiet_hides_them(tmp_path, capsys) -> None:
    assert main(["train", _config(tmp_path)]) == 0
    assert "training unet on synthetic2d" in capsys.readouterr().out
    assert main(["-q", "train", _config(tmp_path), "--overwrite"]) == 0
    assert "training unet" not in capsys.readouterr().out


def test_library_prints_nothing_unless_configured(tmp_path, capsys, caplog) -> None:
    from medseg.engine.trainer import train_run

    with caplog.at_level(logging.INFO, logger="medseg"):
        train_run(build_config(TINY), tmp_path / "run")
    assert "training unet" not in capsys.readouterr().out
    assert any("training unet on synthetic2d" in r.getMessage() for r in caplog.records)
