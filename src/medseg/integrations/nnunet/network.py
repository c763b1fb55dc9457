"""IFE on the skip connections of nnU-Net's planned U-Net (``docs/nnunet.md``; ``docs/ife.md``).

nnU-Net builds its network from the plans (``dynamic_network_architectures``: ``PlainConvUNet``,
``ResidualEncoderUNet``); this module changes that network in place and changes nothing else:

* IFE (Liu et al., MICCAI 2023, :class:`medseg.modules.ife.IFE`) on the skip features of encoder stages
  ``stages`` (default 2 and 3, counting the full-resolution stage as 1, as IFE's UNet uses c2 and c3), with
  ratio ``r`` per stage: the skip of ``C`` channels becomes ``[skip, top_k(skip)]`` with ``k = floor(r C)``
  channels chosen per sample;
* the first convolution of the decoder stage that consumes that skip takes ``C_up + C + floor(r C)`` input
  channels instead of ``2 C`` (``C_up = C``: nnU-Net's transposed conv maps to the skip width); it is
  initialised as nnU-Net initialises its convolutions (``network.initialize``);
* the decoder's class gains a ``forward`` that enhances the skips and then runs nnU-Net's own decoder forward,
  so deep supervision, ``decoder.deep_supervision`` switching and the segmentation heads are nnU-Net's.

The bottleneck (the last encoder stage) is not a skip and cannot take IFE.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch.nn as nn

from medseg.errors import UserError
from medseg.modules.ife import IFE, check_ratio

IFE_STAGES = (2, 3)


class IFEPlanError(UserError, ValueError):
    """IFE settings that do not fit the planned network (stage or ratio)."""


class _IFESkips:
    """Mixin for nnU-Net's decoder: enhance the skips named in ``self.ife`` (ModuleDict keyed by the skip's
    0-based encoder index), then run the decoder's own ``forward``."""

    def forward(self, skips):  # noqa: D401 (nnU-Net's signature)
        skips = list(skips)
        for key, ife in self.ife.items():
            skips[int(key)] = ife(skips[int(key)])
        return super().forward(skips)


@lru_cache(maxsize=None)
def _ife_decoder_class(cls: type) -> type:
    return type(f"IFE{cls.__name__}", (_IFESkips, cls), {"__module__": __name__})


def _first_conv(stage: nn.Module) -> nn.Module:
    """The first convolution inside a decoder stage."""
    for module in stage.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module
    raise IFEPlanError(f"nnU-Net decoder stage {type(stage).__name__} has no convolution to widen for IFE")


def _widen_first_conv(stage: nn.Module, extra: int, init=None) -> nn.Module:
    """Replace the first conv of ``stage`` by one with ``extra`` more input channels (same everything else).

    nnU-Net registers a conv twice (``ConvDropoutNormReLU.conv`` and ``.all_modules[0]``, which ``forward``
    uses), so every reference to it is replaced; ``input_channels`` bookkeeping follows.
    """
    conv = _first_conv(stage)
    wide = type(conv)(conv.in_channels + extra, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    wide = wide.to(device=conv.weight.device, dtype=conv.weight.dtype)
    if init is not None:
        wide.apply(init)
    for module in list(stage.modules()):
        for attr, child in list(module._modules.items()):
            if child is conv:
                setattr(module, attr, wide)
                if getattr(module, "input_channels", None) == conv.in_channels:
                    module.input_channels = wide.in_channels
    if getattr(stage, "input_channels", None) == conv.in_channels:
        stage.input_channels = wide.in_channels
    return wide


def check_ife_settings(widths: Sequence[int], score: str, ratios: Sequence[float],
                       stages: Sequence[int] = IFE_STAGES) -> None:
    """Validate stages and ratios against the encoder widths of a plan (one line naming the fix)."""
    if len(ratios) != len(stages):
        raise IFEPlanError(f"IFE: {len(ratios)} ratio(s) {list(ratios)} for {len(stages)} stage(s) {list(stages)}; "
                           f"give one ratio per stage")
    n = len(widths)
    for stage, ratio in zip(stages, ratios):
        if not 1 <= stage <= n - 1:
            raise IFEPlanError(f"IFE: stage {stage} is not a skip connection of this plan (encoder stages 1..{n}, "
                               f"stage {n} is the bottleneck); use stages in 1..{n - 1}")
        try:
            check_ratio(ratio, f"nnunet.stage{stage}", widths[stage - 1])
        except ValueError as err:
            raise IFEPlanError(str(err)) from None


def add_ife(network: nn.Module, score: str, ratios: Sequence[float], stages: Sequence[int] = IFE_STAGES,
            entropy_mode: str = "hist1d") -> nn.Module:
    """Put IFE on the skips of encoder ``stages`` (1 = full resolution) of an nnU-Net U-Net, in place.

    Decoder stage ``s`` (0 = lowest resolution) consumes the skip of encoder index ``n - 2 - s``; its first conv
    input grows by ``floor(r C)``. Returns ``network``.
    """
    decoder = network.decoder
    widths = [int(c) for c in decoder.encoder.output_channels]
    check_ife_settings(widths, score, ratios, stages)
    init = getattr(network, "initialize", None)
    modules = {}
    for stage, ratio in zip(stages, ratios):
        index = stage - 1
        ife = IFE(ratio, score, entropy_mode, channels=widths[index], name=f"nnunet.stage{stage}")
        _widen_first_conv(decoder.stages[len(widths) - 2 - index], ife.num_selected(widths[index]), init)
        modules[str(index)] = ife
    decoder.ife = nn.ModuleDict(modules)
    decoder.__class__ = _ife_decoder_class(type(decoder))
    return network


def decoder_input_widths(network: nn.Module) -> list[int]:
    """Input channels of the first conv of each decoder stage, lowest resolution first."""
    return [_first_conv(stage).in_channels for stage in network.decoder.stages]
