"""Deep supervision: one loss applied to the main output and to every auxiliary (lower decoder) output.

``L = Σ_i w_i · L_inner(o_i, batch)`` with ``o_0 = outputs["out"]`` and ``o_i = outputs["aux"][i-1]`` (Lee et
al., "Deeply-Supervised Nets", AISTATS 2015). ``weights="nnunet"`` is nnU-Net's rule (Isensee et al., Nature
Methods 2021): ``w_i ∝ 2^-i`` over the outputs received, normalised to sum 1 (three outputs: 4/7, 2/7, 1/7).
The auxiliary maps must already have the label's size (medseg's ``nnunet`` upsamples them to the input size;
nnU-Net itself downsamples the label instead). A plain tensor (eval mode) gets the inner loss alone.

The trainer wraps the configured loss in this automatically for a model that declares
``deep_supervision_weights`` (``nnunet``) when the loss does not read the auxiliary outputs itself
(:func:`with_deep_supervision`); ``loss: {name: deep_supervision, kwargs: {loss: dice_ce, weights: [...]}}``
sets it explicitly for any model that returns ``{"out", "aux"}``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from medseg.losses import register_loss
from medseg.losses._common import LossInputError, main_logits


def nnunet_weights(n: int) -> list[float]:
    """``2^-i`` for ``i = 0 .. n-1``, normalised to sum 1."""
    raw = [0.5 ** i for i in range(n)]
    return [r / sum(raw) for r in raw]


def reads_aux(loss: nn.Module) -> bool:
    """Whether ``loss`` uses the auxiliary outputs itself (then it must not be wrapped again)."""
    return bool(getattr(loss, "reads_aux", False))


@register_loss("deep_supervision")
class DeepSupervisionLoss(nn.Module):
    """Deep supervision ``Σ_i w_i L(o_i)`` over ``[out, *aux]``, nnU-Net weights ``∝ 2^-i`` by default.

    ``loss`` is a loss name or ``{name, kwargs}`` (or a built loss).

    Args:
        loss: the inner loss applied at every output.
        weights: ``"nnunet"`` (``2^-i``, normalised) or one weight per output, main output first.
        aux_key: the key of the list of auxiliary outputs.
    """

    reads_aux = True

    def __init__(self, loss: Any = "dice_bce", weights: str | Sequence[float] = "nnunet", aux_key: str = "aux") -> None:
        super().__init__()
        from medseg.losses import create_loss

        self.inner = loss if isinstance(loss, nn.Module) else create_loss(loss)
        if reads_aux(self.inner):
            raise ValueError("loss 'deep_supervision': the inner loss already reads the auxiliary outputs "
                             "(e.g. structure with deep_supervision: true); use one of the two")
        if isinstance(weights, str):
            if weights != "nnunet":
                raise ValueError(f"loss 'deep_supervision': weights must be 'nnunet' or a list of numbers, "
                                 f"got {weights!r}")
            self.weights: list[float] | None = None
        else:
            self.weights = [float(w) for w in weights]
            if not self.weights or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"loss 'deep_supervision': weights {list(weights)} must be >= 0 with a positive sum")
        self.aux_key = aux_key
        self.requires: set[str] = set(getattr(self.inner, "requires", set()) or set())

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def _maps(self, outputs: Any) -> list[torch.Tensor]:
        main = main_logits(outputs, loss="deep_supervision")
        aux = outputs.get(self.aux_key, []) if isinstance(outputs, dict) else []
        return [main, *aux]

    def _weights(self, n: int) -> list[float]:
        if self.weights is None:
            return nnunet_weights(n)
        if n == 1:  # eval mode: the main output alone
            return [1.0]
        if len(self.weights) != n:
            raise LossInputError(f"loss 'deep_supervision': {len(self.weights)} weights for {n} outputs "
                                 f"(out + {n - 1} aux); give {n} weights or weights: nnunet")
        return self.weights

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        maps = self._maps(outputs)
        weights = self._weights(len(maps))
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        for i, (w, logits) in enumerate(zip(weights, maps)):
            inner = self.inner(logits, batch)
            name = "out" if i == 0 else f"aux{i}"
            terms[name] = inner["loss"]
            if i == 0:
                terms.update({f"out.{k}": v for k, v in inner.items() if k != "loss"})
            total = total + w * inner["loss"]
        return {"loss": total, **terms}


def with_deep_supervision(loss: nn.Module, model: nn.Module) -> nn.Module:
    """``loss`` wrapped in :class:`DeepSupervisionLoss` with the model's own weights when the model trains with
    deep supervision (``deep_supervision_weights`` and ``deep_supervision`` set) and the loss does not read
    the auxiliary outputs itself; otherwise ``loss`` unchanged."""
    weights = getattr(model, "deep_supervision_weights", None)
    if weights is None or not getattr(model, "deep_supervision", False) or reads_aux(loss):
        return loss
    return DeepSupervisionLoss(loss, weights=list(weights))
