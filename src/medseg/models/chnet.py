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
error that names it (``medseg.modules.encoders``, shared by every encoder-based model).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.modules.encoders import timm_encoder
from medseg.modules.heads import HEADS, create_head
from medseg.registry import RegistryError


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
    enc = timm_encoder(encoder, out_indices, pretrained, in_chans=in_channels)
    channels = enc.feature_info.channels()
    divisor = max(enc.feature_info.reduction())
    head_module = create_head(head, channels, out_channels, **(head_kwargs or {}))
    return EncoderHeadNet(enc, head_module, divisor, pad_input, encoder_name=encoder, head_name=head)
