"""Config validation: unknown keys name the valid keys and the nearest one; overrides; components."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.config import ConfigError, RunConfig, apply_overrides, config_diff, load_config


def test_defaults_validate() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig) and cfg.model.name == "unet" and cfg.spatial_dims == 2


@pytest.mark.parametrize("override, expected", [
    ("train.epoch=3", r"unknown config key 'train.epoch' \(did you mean 'epochs'\?\); valid keys here: .*epochs"),
    ("data.imagesize=[64,64]", r"'data.imagesize' \(did you mean 'image_size'\?\)"),
    ("optimiser.lr=1", r"unknown config key 'optimiser' \(did you mean 'optim'\?\)"),
    ("data.split.mode=weird", r"config key 'data.split.mode'"),
    ("train.epochs=0", r"config key 'train.epochs'"),
    ("model.name=unett", r"unknown model 'unett'. Did you mean 'unet'\?"),
    ("model.kwargs={bse: 3}", r"model 'unet' has no option 'bse'. Did you mean 'base'\?"),
])
def test_bad_keys_fail_before_training(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 7}, "data": {"image_size": [32, 48]}}))
    cfg = load_config(path, ["optim.lr=0.5", "data.split.seed=9"])
    assert (cfg.train.epochs, cfg.optim.lr, cfg.data.split.seed, cfg.data.image_size) == (7, 0.5, 9, [32, 48])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def test_override_syntax_and_diff() -> None:
    assert apply_overrides({}, ["a.b=[1, 2]", "c=null"]) == {"a": {"b": [1, 2]}, "c": None}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["nonsense"])
    a = {"train": {"epochs": 1, "progress": True}, "x": 1}
    b = {"train": {"epochs": 2, "progress": False}, "x": 1}
    assert config_diff(a, b) == ["train.epochs: 1 -> 2"]  # progress is a session key
