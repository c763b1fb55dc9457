"""CHNet and the encoder + head family (Wei et al., *Only Classification Head is Sufficient for Medical Image
Segmentation*, PRCV 2023; code ``wei-hongbin/CHNet``).

``create_model("chnet")`` is a timm encoder cut into feature levels plus a pixel-classification head from
:mod:`medseg.modules.heads`. The default is the paper's network (``methods.md`` §3.1):

- encoder Res2Net-50-26w-4s (timm ``res2net50_26w_4s``: single 7x7 s2 stem, strided 1x1 projection shortcuts),
  ``features_only`` with ``out_indices=(0, 1, 2, 3)``: E1 = conv1+BN+ReLU (64 ch, stride 2), E2 = max-pool +
  layer1 (256, 4), E3 = layer2 (512, 8), E4 = layer3 (1024, 16); layer4 and fc are dropped;
- head ``classification`` (1x1 reductions to 64, bilinear upsampling to the input size, concat to 256,
  ``1x1 256->32 -> ReLU -> BN -> 1x1 32->K``).

Any timm model that supports ``features_only`` can be the encoder (``encoder="resnet50"``) and any registered
head can replace the classifier (``head="fcn32s" | "classification3x3" | "unet_decoder"``), which is what the
paper's decoupling study and Table 6 vary. The encoder sits in ``model.encoder`` so that the trainer can
freeze it (``train.freeze_encoder``) or give it its own learning rate (``optim.encoder_lr``): every encoder
parameter is named ``encoder.*``, every head parameter ``head.*``.

Pretrained weights: ``pretrained=True`` uses timm's hub download (needs a network), ``pretrained="path"``
loads a local ``.pth``/``.bin``/``.safetensors`` state dict of the *full* timm architecture (e.g. saved with
``torch.save(timm.create_model("res2net50_26w_4s").state_dict(), path)``, or the original
``res2net50_26w_4s-06e79181.pth``, whose key names are the same), or the encoder of a medseg checkpoint
(``runs/x/checkpoints/best.pt``: its ``encoder.*`` weights, for the paper's decoupling experiments). Every encoder key must be present with the
right shape; the keys of the parts the cut removes (``layer4``, ``fc``) are dropped; any other key is an
error that names it.
"""
from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import CheckpointError
from medseg.models import register_model
from medseg.modules.heads import HEADS, create_head
from medseg.registry import RegistryError

_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "bkbone.")
_SHOW = 8  # keys named in an error message before "... and N more"


class EncoderHeadNet(nn.Module):
    """``logits = crop(head(encoder(pad(x)), size(pad(x))))``: a feature encoder and a pixel head.

    Attributes:
        encoder: the timm ``features_only`` module (parameters ``encoder.*``).
        head: the head module (parameters ``head.*``).
        spatial_dims: 2.
        input_divisor: the deepest feature's stride (16 for CHNet); other sizes are zero-padded up to a
            multiple and the logits cropped back (a one-time warning says so), or rejected with the nearest
            valid size when ``pad_input=False``.
    """

    spatial_dims = 2

    def __init__(self, encoder: nn.Module, head: nn.Module, input_divisor: int, pad_input: bool = True,
                 encoder_name: str = "", head_name: str = "") -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.input_divisor = int(input_divisor)
        self.pad_input = pad_input
        self.encoder_name = encoder_name
        self.head_name = head_name
        self._pad_noted = False

    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter requires a gradient (``train.freeze_encoder``)."""
        return not any(p.requires_grad for p in self.encoder.parameters())

    def train(self, mode: bool = True) -> "EncoderHeadNet":
        """As ``nn.Module.train``, but a frozen encoder stays in eval mode (its BN statistics are kept)."""
        super().train(mode)
        if mode and self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} is 2-D and expects B x C x H x W, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = self._pad(x)
        logits = self.head(self.encoder(x), x.shape[-2:])
        return logits[..., :h, :w]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad H and W at the bottom/right up to multiples of ``input_divisor`` (or raise)."""
        d = self.input_divisor
        h, w = x.shape[-2:]
        ph, pw = (-h) % d, (-w) % d
        if not (ph or pw):
            return x
        fix = (h + ph, w + pw)
        if not self.pad_input:
            low = (max(d, h - h % d), max(d, w - w % d))
            raise ValueError(f"{self.encoder_name or 'encoder'}: input size {(h, w)} is not divisible by its "
                             f"stride {d}; resize to {fix} or {low}, or build the model with pad_input=True")
        if not self._pad_noted:
            warnings.warn(f"input size {(h, w)} is not a multiple of {d}: zero-padding to {fix} and cropping "
                          "the logits back (noted once per model)", stacklevel=3)
            self._pad_noted = True
        return F.pad(x, (0, pw, 0, ph))


def build_encoder(name: str, in_channels: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                  pretrained: bool = False) -> nn.Module:
    """timm ``features_only`` encoder, with clear errors for unknown names and unsupported models."""
    import timm

    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ValueError(f"unknown timm encoder '{name}'.{hint} (timm.list_models() lists them)")
    try:
        return timm.create_model(name, features_only=True, out_indices=tuple(out_indices),
                                 in_chans=in_channels, pretrained=pretrained)
    except OSError as err:  # hub download impossible (offline, no cache)
        raise CheckpointError(f"cannot download ImageNet weights for '{name}' from the timm hub ({err}); "
                              "pass pretrained=/path/to/weights.pth (a state dict of timm's "
                              f"'{name}') or pretrained=None") from None
    except (RuntimeError, AssertionError, IndexError) as err:
        raise ValueError(f"timm encoder '{name}' cannot provide features {tuple(out_indices)}: {err}") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt``/``.bin``/``.ckpt`` (optionally under ``state_dict``/``model``) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = _torch_load(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointError(f"cannot read weights from {path}: {err}") from None
    for key in ("state_dict", "model", "model_state", "net"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return dict(obj)


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a medseg training checkpoint (numpy RNG states beside the weights)
    loads with numpy's array types allowed, never with arbitrary pickled code."""
    import pickle

    import numpy as np

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        numpy_types = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                       *(type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG")]
        with torch.serialization.safe_globals(numpy_types):
            return torch.load(path, map_location="cpu", weights_only=True)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Take a medseg model's ``encoder.*`` subset; strip wrapper prefixes (``module.``...) shared by all keys."""
    if any(k.startswith("encoder.") for k in state) and not all(k.startswith("encoder.") for k in state):
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    changed = True
    while changed and state:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                changed = True
    return state


def _name_keys(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_encoder_weights(encoder: nn.Module, path: str | Path, arch: str) -> list[str]:
    """Load a full-architecture state dict into a ``features_only`` encoder, strictly.

    Returns the top-level module names whose keys were dropped by the cut (e.g. ``["fc", "layer4"]``).
    Raises :class:`CheckpointError` naming the missing, unexpected or wrongly shaped keys otherwise.
    """
    import timm
    from timm.models import adapt_input_conv

    state = _strip_prefixes(read_state_dict(path))
    own = encoder.state_dict()
    with torch.device("meta"):
        full_keys = set(timm.create_model(arch, pretrained=False).state_dict())
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and k not in full_keys]
    if missing or unexpected:
        parts = [f"weights file {path} does not match encoder '{arch}'"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_name_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_name_keys(unexpected)}")
        parts.append(f"the file is probably for another architecture; use weights of timm's '{arch}'")
        raise CheckpointError("; ".join(parts))
    first_conv = (getattr(encoder, "pretrained_cfg", None) or {}).get("first_conv")
    load = {k: v for k, v in state.items() if k in own}
    if first_conv and f"{first_conv}.weight" in load:
        key = f"{first_conv}.weight"
        if load[key].shape[1] != own[key].shape[1]:  # e.g. grayscale input: timm's channel adaptation
            load[key] = adapt_input_conv(own[key].shape[1], load[key])
    bad = [f"{k} {tuple(v.shape)} (encoder expects {tuple(own[k].shape)})"
           for k, v in load.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"weights file {path} has wrong shapes for encoder '{arch}': {_name_keys(bad)}")
    encoder.load_state_dict(load, strict=False)
    return sorted({k.split(".")[0] for k in state if k not in own})


@register_model("chnet", aliases=("encoder_head",))
def chnet(encoder: str = "res2net50_26w_4s", head: str = "classification", in_channels: int = 3,
          out_channels: int = 1, pretrained: bool | str | None = None,
          out_indices: Sequence[int] = (0, 1, 2, 3), head_kwargs: dict[str, Any] | None = None,
          pad_input: bool = True) -> EncoderHeadNet:
    """CHNet: Res2Net-50 E1-E4 + pixel-classification head (any timm encoder, any head by name).

    Args:
        encoder: timm model name supporting ``features_only``.
        head: ``classification`` (CHNet), ``classification3x3``, ``fcn32s``, ``unet_decoder``.
        in_channels: image channels (pretrained first-conv weights are adapted as timm does).
        out_channels: logit channels (1 = binary).
        pretrained: ``None``/``False`` (random init), ``True`` (timm hub) or a path to a state dict.
        out_indices: encoder feature levels (CHNet: E1-E4 = 0..3, which drops Res2Net's layer4).
        head_kwargs: extra head options (e.g. ``decoder_channels`` for ``unet_decoder``).
        pad_input: pad inputs not divisible by the encoder stride (else raise with the nearest valid size).
    """
    try:
        HEADS.get(head)  # fail on a bad head name before building the encoder
    except RegistryError as err:
        raise ValueError(str(err)) from None
    hub = pretrained is True
    enc = build_encoder(encoder, in_channels, out_indices, pretrained=hub)
    if isinstance(pretrained, (str, Path)):
        dropped = load_encoder_weights(enc, pretrained, encoder)
        enc.dropped_modules = dropped  # type: ignore[attr-defined]
    channels = enc.feature_info.channels()
    divisor = max(enc.feature_info.reduction())
    head_module = create_head(head, channels, out_channels, **(head_kwargs or {}))
    return EncoderHeadNet(enc, head_module, divisor, pad_input, encoder_name=encoder, head_name=head)
