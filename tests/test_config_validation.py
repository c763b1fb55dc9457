"""Every component a config names is resolved before anything is written: model (and its dimensionality
against the data's), loss and each weighted term with its kwargs, metrics, mixture members."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.cli import main
from medseg.config import ConfigError, load_config
from medseg.errors import UserError
from medseg.registry import RegistryError

TINY = {
    "data": {"kind": "synthetic2d", "image_size": [32, 32], "in_channels": 1, "num_classes": 1, "batch_size": 4,
             "synthetic": {"n_train": 8, "n_val": 4, "n_test": 3}},
    "model": {"name": "unet", "kwargs": {"base": 4, "depth": 2}},
    "train": {"epochs": 1, "progress": False},
}

BAD = [
    ("loss=dice_bcee", r"config key 'loss': unknown loss 'dice_bcee'. Did you mean 'dice_bce'\?"),
    ("loss={name: dice_bce, kwargs: {dice_wieght: 2}}",
     r"config key 'loss': loss 'dice_bce' has no option 'dice_wieght'. Did you mean 'dice_weight'\?"),
    ("loss=[{name: dice_bce}, {name: boundry, weight: 0.1}]",
     r"config key 'loss\[1\]': unknown loss 'boundry'. Did you mean 'boundary'\?"),
    ("loss=[{name: dice_bce}, {name: tversky, kwargs: {alfa: 0.3}}]",
     r"config key 'loss\[1\]': loss 'tversky' has no option 'alfa'. Did you mean 'alpha'\?"),
    ("loss=[{name: dice_bce}, {name: dice_bce}]", r"config key 'loss': .*appears twice"),
    ("eval.metrics=[dice, hd59]", r"config key 'eval.metrics': unknown metric 'hd59'. Did you mean 'hd95'\?"),
    ("train.best_metric=iou", r"config key 'train.best_metric': 'iou' is not computed in validation"),
    ("model.kwargs={base: 4, depth: 0}", r"config key 'model.kwargs': model 'unet' cannot be built .*depth >= 1"),
    ("data.kind=mixture", r"config key 'data.datasets': data.kind is 'mixture' but no member datasets"),
    ("data.datasets=[{kind: folder2d, root: x}]", r"config key 'data.datasets' is only used with data.kind: mixture"),
]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.parametrize("override, expected", BAD, ids=[b[0].split("=")[0] + str(i) for i, b in enumerate(BAD)])
def test_component_typos_fail_at_validation(tiny: Path, override: str, expected: str) -> None:
    load_config(tiny)
    with pytest.raises(ConfigError, match=expected):
        load_config(tiny, [override])


def test_mixture_members_are_validated(tiny: Path) -> None:
    members = "data.datasets=[{kind: synthetic2d}, {kind: nifti, root: r, nifti: {modalty: CT}}]"
    with pytest.raises(ConfigError, match=r"config key 'data.datasets\[1\]'.*nifti.modalty"):
        load_config(tiny, ["data.kind=mixture", members])
    load_config(tiny, ["data.kind=mixture", "data.datasets=[{kind: synthetic2d}]"])


@pytest.mark.parametrize("model, data, expected", [
    ("model.name=unet", "data.kind=synthetic3d",
     r"model 'unet' is 2-D but data.kind 'synthetic3d' gives 3-D volumes.*unet3d.*data.nifti.slice_axis"),
    ("model.name=unet3d", "data.kind=synthetic2d",
     r"model 'unet3d' is 3-D but data.kind 'synthetic2d' gives 2-D images.*model.name: unet"),
    ("model.name=nnunet", "data.kind=synthetic3d", r"model 'nnunet' is 2-D .*3-entry model.kwargs.patch_size"),
    ("model.name=chnet", "data.kind=synthetic3d", r"model 'chnet' is 2-D but data.kind 'synthetic3d'"),
])
def test_model_and_data_dimensionality_must_agree(model: str, data: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [data, "data.image_size=[16, 16, 16]", model, "model.kwargs={}"])


def test_matching_dimensionalities_validate() -> None:
    base = ["data.kind=synthetic3d", "data.image_size=[16, 16, 16]", "data.in_channels=1"]
    assert load_config(None, [*base, "model.name=unet3d"]).spatial_dims == 3
    assert load_config(None, [*base, "model.name=nnunet", "model.kwargs={patch_size: [16, 16, 16]}"])
    assert load_config(None, [*base, "model.name=unet", "data.nifti.slice_axis=2"]).spatial_dims == 2


def test_registry_error_is_a_user_error() -> None:
    assert issubclass(RegistryError, UserError) and issubclass(RegistryError, KeyError)


@pytest.mark.parametrize("override", ["loss=dice_bcee", "eval.metrics=[dicee]", "data.kind=synthetic3d"])
def test_cli_prints_one_line_and_writes_nothing(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                override: str) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tiny), "--output", str(run), "--set", override]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not run.exists()



def _model_names() -> list[str]:
    from medseg.models import MODELS

    return [n for n, doc in MODELS.describe().items() if not doc.startswith("alias of")]


@pytest.mark.parametrize("name", _model_names())
def test_static_dimensionality_matches_the_built_model(name: str) -> None:
    """The check reads a class-level ``spatial_dims`` where there is one: it must be what the model has."""
    import torch

    from medseg.config import RunConfig, model_kwargs, model_spatial_dims
    from medseg.models import MODELS

    cfg = RunConfig.model_validate({"model": {"name": name}})  # no component check: any data kind
    with torch.device("meta"):
        model = MODELS.get(name)(**model_kwargs(cfg))
    assert model_spatial_dims(cfg) == model.spatial_dims
