"""The data-kind registry: built-in kinds resolve to their datasets, a new kind is one module and one
entry (then validates, builds and trains like the others), and an unknown kind fails at config time."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from medseg.config import ConfigError, RunConfig, build_config
from medseg.data import build_dataset
from medseg.data.datasets2d import Synthetic2D
from medseg.data.registry import DATA_KINDS, create_dataset, gives_volumes, is_divisible, register_data_kind
from medseg.data.volumes import Synthetic3D


def test_builtin_kinds_build_their_datasets() -> None:
    assert set(DATA_KINDS.names()) >= {"synthetic2d", "synthetic3d", "folder2d", "nifti", "mixture"}
    cfg2 = build_config({"data": {"kind": "synthetic2d", "image_size": [32, 32]}}).data
    assert isinstance(build_dataset(cfg2, "train"), Synthetic2D)
    cfg3 = build_config({"data": {"kind": "synthetic3d", "image_size": [16, 16, 16]},
                         "model": {"name": "unet3d"}}).data
    assert isinstance(create_dataset(cfg3, "val"), Synthetic3D)


def test_kind_facts_drive_dims_and_cv() -> None:
    assert gives_volumes("nifti") and gives_volumes("synthetic3d")
    assert not gives_volumes("folder2d") and not gives_volumes("mixture")
    assert is_divisible("folder2d") and is_divisible("nifti") and not is_divisible("synthetic2d")
    assert RunConfig.model_validate({"data": {"kind": "synthetic3d"}}).spatial_dims == 3
    sliced = {"data": {"kind": "synthetic3d", "nifti": {"slice_axis": 2}}}
    assert RunConfig.model_validate(sliced).spatial_dims == 2


def test_unknown_kind_fails_at_config_time_with_the_nearest_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown data kind 'foldr2d'.*Did you mean 'folder2d'"):
        build_config({"data": {"kind": "foldr2d"}})


class _Stripes(Dataset):
    """A new data source: vertical stripes, label = the left half."""

    def __init__(self, cfg, split: str) -> None:
        self.size = cfg.image_size
        self.n = {"train": 4, "val": 2, "test": 2}[split]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        h, w = self.size
        image = torch.zeros(3, h, w)
        image[:, :, ::2] = 1.0
        label = torch.zeros(1, h, w)
        label[:, :, : w // 2] = 1.0
        return {"image": image, "label": label, "meta": {"id": f"s{i}", "dataset": "stripes", "modality": "",
                                                          "spacing": [1.0, 1.0], "original_shape": [h, w],
                                                          "path": f"stripes://{i}"}}


@pytest.fixture
def stripes_kind():
    register_data_kind("stripes_test", volumes=False, divisible=False)(lambda cfg, split: _Stripes(cfg, split))
    yield "stripes_test"
    DATA_KINDS._entries.pop("stripes_test")


def test_a_new_kind_is_one_entry(stripes_kind: str) -> None:
    cfg = build_config({"data": {"kind": stripes_kind, "image_size": [16, 16], "batch_size": 2},
                        "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}}})
    ds = build_dataset(cfg.data, "train")
    assert isinstance(ds, _Stripes) and len(ds) == 4
    item = ds[0]
    assert np.array_equal(item["label"][0, 0].numpy(), (np.arange(16) < 8).astype(np.float32))


def test_a_new_kind_trains_like_the_others(stripes_kind: str, tmp_path) -> None:
    from medseg.engine.trainer import train_run

    cfg = build_config({"name": "stripes", "data": {"kind": stripes_kind, "image_size": [16, 16], "batch_size": 2},
                        "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}},
                        "train": {"epochs": 1, "device": "cpu", "progress": False}})
    train_run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_validating_a_config_imports_no_reader() -> None:
    """The registry's factories import their module when called: validation stays light."""
    import subprocess
    import sys

    code = ("import sys; from medseg.config import build_config; build_config({'data': {'kind': 'nifti'}, "
            "'model': {'name': 'unet3d'}}); print(sorted(m for m in sys.modules if m.startswith('medseg.data.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "medseg.data.nifti'" not in out and "medseg.data.datasets2d" not in out, out
