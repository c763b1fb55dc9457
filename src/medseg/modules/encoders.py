"""The one place that builds a timm feature encoder and loads its weights.

Every encoder-based model (CHNet, SINet-V2, DeepLabV3+, the coarse-to-fine ResNet-18, UNet with
``encoder="tu-<timm name>"``) calls :func:`timm_encoder`:
``timm.create_model(name, features_only=True, out_indices=..., in_chans=...)`` with

* a clear error for an unknown name (the nearest timm names) or feature levels the model cannot give;
* ``pretrained`` as everywhere in medseg:

  - ``False`` / ``None`` (default): random initialisation;
  - ``"path/to/weights.pth"`` (``.pt``, ``.bin``, ``.ckpt`` or ``.safetensors``): a local state dict of the
    *full* timm architecture (also inside ``{"state_dict": ...}`` / ``{"model": ...}``, with wrapper prefixes
    such as ``module.``), or the ``encoder.*`` part of a medseg checkpoint. Loading is strict: every encoder key
    must be there with the right shape, the keys of the parts the ``features_only`` cut removes (``fc``, a
    dropped ``layer4``) are dropped and reported in ``encoder.dropped_modules``, any other key is an error
    that names it. A first convolution with another number of input channels is adapted as timm does
    (``adapt_input_conv``: summed for grey, repeated and rescaled otherwise), like smp's ``set_in_channels``;
  - ``True``: timm's hub download, which fails offline with a message asking for a local file.

Encoders used by the IFE networks (``docs/ife.md``, section Networks):

* ``res2net50d`` in timm is Res2Net-50-v1b-26w-4s (PraNet / SINet-V2 / IFE): deep stem 3x3 s2 (3->32),
  3x3 (32->32), 3x3 (32->64), then BN, ReLU, max-pool; projection shortcuts ``AvgPool(s, s, ceil_mode,
  count_include_pad=False) -> 1x1 conv -> BN``; first block of each stage pools the last split with a 3x3
  AvgPool. Its state-dict keys equal those of the official ``res2net50_v1b_26w_4s-3cf99910.pth``, which
  therefore loads directly.
* ``resnet101.tv_in1k`` is torchvision's ResNet-101 (DeepLabV3+ in jfzhang95's code uses these weights).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from medseg.errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "model", "model_state", "net")
PREFIXES = ("module.", "model.", "backbone.", "encoder.", "bkbone.")
SHOW = 8  # keys named in an error message before "... and N more"


def timm_encoder(name: str, out_indices: Sequence[int], pretrained: bool | str | Path | None = False,
                 output_stride: int | None = None, **kwargs: Any) -> nn.Module:
    """A timm ``features_only`` encoder giving the feature maps ``out_indices`` (see the module docstring).

    ``kwargs`` go to ``timm.create_model`` (e.g. ``in_chans``); local weights are loaded strictly and their
    first convolution adapted to ``in_chans``; ``encoder.dropped_modules`` lists what the cut removed.
    """
    import timm

    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ValueError(f"unknown timm encoder '{name}'.{hint} (timm.list_models() lists them)")
    extra = dict(kwargs)
    if output_stride is not None:
        extra["output_stride"] = output_stride
    create = dict(features_only=True, out_indices=tuple(out_indices), **extra)
    try:
        encoder = timm.create_model(name, pretrained=False, **create)
    except (RuntimeError, AssertionError, IndexError) as err:
        raise ValueError(f"timm encoder '{name}' cannot provide features {tuple(out_indices)}: {err}") from None
    if pretrained is True:
        try:
            encoder = timm.create_model(name, pretrained=True, **create)
        except Exception as err:  # noqa: BLE001 - hub download impossible (offline, no cache): one clear message
            raise _hub_error(name, err) from None
    encoder.dropped_modules = []  # type: ignore[attr-defined]
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        encoder.dropped_modules = load_encoder_weights(encoder, pretrained, name)  # type: ignore[attr-defined]
    return encoder


def _hub_error(name: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"could not fetch ImageNet weights for encoder '{name}' from the timm / Hugging Face hub "
        f"({type(err).__name__}); offline machines must pass a local file instead: "
        f"pretrained='path/to/weights.pth' (a state dict of timm's '{name}'), or pretrained=False")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file (``.pth``/``.pt``/``.bin``/``.ckpt``/``.safetensors``), unwrapped
    from ``state_dict`` / ``model`` / ``model_state`` / ``net``; never unpickles code (weights-only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file not found: {path}; pass the path of a local state "
                              f"dict (.pth or .safetensors) or pretrained=False")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = _weights_only_load(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointError(f"cannot read pretrained weights {path}: {type(err).__name__}: {err}") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return dict(obj)


def _weights_only_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a medseg training checkpoint (NumPy RNG states beside the weights)
    loads with NumPy's array types allowed, never with arbitrary pickled code."""
    import pickle

    import numpy as np

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        numpy_types = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                       *(type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG")]
        with torch.serialization.safe_globals(numpy_types):
            return torch.load(path, map_location="cpu", weights_only=True)


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Take a medseg model's ``encoder.*`` subset; strip wrapper prefixes (``module.``...) shared by all keys."""
    if any(k.startswith("encoder.") for k in state) and not all(k.startswith("encoder.") for k in state):
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    changed = True
    while changed and state:
        changed = False
        for p in PREFIXES:
            if all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                changed = True
    return state


def name_keys(keys: Sequence[str]) -> str:
    """Up to :data:`SHOW` key names, then how many more."""
    keys = sorted(keys)
    more = f" ... and {len(keys) - SHOW} more" if len(keys) > SHOW else ""
    return ", ".join(keys[:SHOW]) + more


def load_encoder_weights(encoder: nn.Module, path: str | Path, arch: str) -> list[str]:
    """Load a full-architecture state dict into a ``features_only`` encoder, strictly.

    Returns the top-level module names whose keys the cut dropped (e.g. ``["fc", "layer4"]``). Raises a
    :class:`CheckpointError` naming the missing, unexpected or wrongly shaped keys otherwise.
    """
    import timm
    from timm.models import adapt_input_conv

    state = strip_prefixes(read_state_dict(path))
    own = encoder.state_dict()
    with torch.device("meta"):
        full_keys = set(timm.create_model(arch, pretrained=False).state_dict())
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and k not in full_keys]
    if missing or unexpected:
        parts = [f"weights file {path} does not match encoder '{arch}'"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {name_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {name_keys(unexpected)}")
        parts.append(f"the file is probably for another architecture; use weights of timm's '{arch}'")
        raise CheckpointError("; ".join(parts))
    first_conv = (getattr(encoder, "pretrained_cfg", None) or {}).get("first_conv")
    load = {k: v for k, v in state.items() if k in own}
    if first_conv and f"{first_conv}.weight" in load:
        key = f"{first_conv}.weight"
        if load[key].shape[1] != own[key].shape[1]:  # e.g. grey input: timm's channel adaptation
            load[key] = adapt_input_conv(own[key].shape[1], load[key])
    bad = [f"{k} {tuple(v.shape)} (encoder expects {tuple(own[k].shape)})"
           for k, v in load.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"weights file {path} has wrong shapes for encoder '{arch}': {name_keys(bad)}")
    encoder.load_state_dict(load, strict=False)
    return sorted({k.split(".")[0] for k in state if k not in own})
