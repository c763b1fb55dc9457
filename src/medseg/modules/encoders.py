"""timm feature encoders with local-weights loading.

``pretrained`` everywhere in medseg means:

* ``False`` (default): random initialisation;
* ``"path/to/weights.pth"`` (or ``.safetensors``): a local state dict (also inside ``{"state_dict": ...}``
  or ``{"model": ...}``, with any ``module.`` prefix) loaded into the encoder; the classifier keys
  (``fc.*``) are ignored, other unexpected keys are named in a warning, missing keys are an error naming them;
* ``True``: timm's normal hub download, which fails offline with a message asking for a local file.

Encoders used by the IFE networks (``docs/ife.md``, section Networks):

* ``res2net50d`` in timm is Res2Net-50-v1b-26w-4s (PraNet / SINet-V2 / IFE): deep stem 3x3 s2 (3->32),
  3x3 (32->32), 3x3 (32->64), then BN, ReLU, max-pool; projection shortcuts ``AvgPool(s, s, ceil_mode,
  count_include_pad=False) -> 1x1 conv -> BN``; first block of each stage pools the last split with a 3x3
  AvgPool. Its state-dict keys equal those of the official ``res2net50_v1b_26w_4s-3cf99910.pth``, which
  therefore loads directly.
* ``resnet101.tv_in1k`` is torchvision's ResNet-101 (DeepLabV3+ in jfzhang95's code uses these weights).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from medseg.errors import CheckpointError

IGNORED_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.pth``/``.pt``/``.bin``/``.safetensors`` file (unwrapped, prefix-free)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file not found: {path}; pass the path of a local state "
                              f"dict (.pth or .safetensors) or pretrained=False")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise CheckpointError(f"cannot read pretrained weights {path}: {type(err).__name__}: {err}") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _names(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_local_weights(module: nn.Module, path: str | Path, what: str) -> None:
    """Load ``path`` into ``module``; missing keys raise, unexpected ones (other than a classifier) warn."""
    state = read_state_dict(path)
    own = module.state_dict()
    bad_shape = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                 if k in own and own[k].shape != v.shape]
    if bad_shape:
        raise CheckpointError(f"{path} does not fit {what}: shape mismatch for {_names(bad_shape)}")
    result = module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{path} does not fit {what}: missing keys {_names(missing)}; "
                              f"is it the right architecture?")
    unexpected = [k for k in state if k not in own and not k.startswith(IGNORED_PREFIXES)]
    if unexpected:
        warnings.warn(f"{what}: ignored unexpected keys in {path}: {_names(unexpected)}", stacklevel=3)


def timm_encoder(name: str, out_indices: Sequence[int], pretrained: bool | str | Path = False,
                 output_stride: int | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)`` returning a list of feature maps.

    ``pretrained`` as in the module docstring.
    """
    import timm

    extra = dict(kwargs)
    if output_stride is not None:
        extra["output_stride"] = output_stride
    hub = pretrained is True
    try:
        model = timm.create_model(name, pretrained=hub, features_only=True, out_indices=tuple(out_indices), **extra)
    except Exception as err:
        if not hub:
            raise
        raise CheckpointError(
            f"could not fetch ImageNet weights for encoder '{name}' from the timm / Hugging Face hub "
            f"({type(err).__name__}); offline machines must pass a local file instead: "
            f"pretrained='path/to/weights.pth'") from None
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        load_local_weights(model, pretrained, f"encoder '{name}'")
    return model
