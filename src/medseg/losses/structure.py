"""F3Net / PraNet "structure loss": weighted BCE + weighted IoU (used by IFE and CHNet; ``methods.md`` §1.1).

Wei et al., "F3Net: Fusion, Feedback and Focus for Salient Object Detection", AAAI 2020; Fan et al.,
"PraNet", MICCAI 2020.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.losses import register_loss
from medseg.losses._common import (LossInputError, as_float, check_reduction, get_label, main_logits,
                                   prepare_target, resize_like)


def structure_weight(mask: torch.Tensor, kernel: int = 31) -> torch.Tensor:
    """``w = 1 + 5·|avgpool_k(g) − g|`` (stride 1, zero padding counted in the average)."""
    pool = F.avg_pool2d if mask.ndim == 4 else F.avg_pool3d
    return 1 + 5 * (pool(mask, kernel, stride=1, padding=kernel // 2, count_include_pad=True) - mask).abs()


def structure_loss(logits: torch.Tensor, mask: torch.Tensor, bce_weighting: str = "pixel",
                   kernel: int = 31) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(L_wbce, L_wiou)``, each of shape ``B``.

    ``L_wbce = Σ w·bce / Σ w`` (``bce_weighting="pixel"``, the intended loss) or the unweighted mean BCE over
    the whole batch (``"none"``: the released F3Net/PraNet/CHNet/IFE code, whose legacy ``reduce='none'``
    argument selects ``'mean'``); ``L_wiou = 1 − (Σ w·p·g + 1)/(Σ w·(p + g) − Σ w·p·g + 1)``; sums over the
    spatial axes (and channels) of each image.
    """
    weit = structure_weight(mask, kernel)
    dims = list(range(1, logits.ndim))
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    if bce_weighting == "pixel":
        wbce = (weit * bce).sum(dims) / weit.sum(dims)
    elif bce_weighting == "none":
        wbce = bce.mean().expand(logits.shape[0])
    else:
        raise ValueError(f"structure loss: bce_weighting must be 'pixel' or 'none', got {bce_weighting!r}")
    pred = torch.sigmoid(logits)
    inter = (pred * mask * weit).sum(dims)
    union = ((pred + mask) * weit).sum(dims)
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return wbce, wiou


@register_loss("structure")
class StructureLoss(nn.Module):
    """F3Net/PraNet structure loss ``mean_b [L_wbce + L_wiou]`` with ``w = 1 + 5|avgpool31(g) − g|``.

    ``bce_weighting="pixel"`` (default, what the papers describe) or ``"none"`` (``compat=True``: the released
    code, where only the IoU term is weighted). ``deep_supervision=True`` sums the loss of the main output
    and of every auxiliary output (``outputs["aux"]``, a list; each resized bilinearly to the label size),
    as SINet-V2 sums its four maps. Binary only (one logit channel per map).
    """

    def __init__(self, bce_weighting: str = "pixel", compat: bool = False, deep_supervision: bool = False,
                 aux_key: str = "aux", kernel: int = 31, reduction: str = "mean",
                 output_key: str | None = None) -> None:
        super().__init__()
        self.bce_weighting = "none" if compat else bce_weighting
        if self.bce_weighting not in ("pixel", "none"):
            raise ValueError(f"structure: bce_weighting must be 'pixel' or 'none', got {bce_weighting!r}")
        self.deep_supervision, self.aux_key, self.kernel = deep_supervision, aux_key, kernel
        self.reduction, self.output_key = check_reduction(reduction), output_key

    @property
    def reads_aux(self) -> bool:
        """True with ``deep_supervision``: the auxiliary outputs are this loss's own business."""
        return self.deep_supervision

    def maps(self, outputs: Any) -> list[torch.Tensor]:
        main = main_logits(outputs, self.output_key, "structure")
        if not self.deep_supervision:
            return [main]
        if not isinstance(outputs, dict) or self.aux_key not in outputs:
            raise LossInputError(f"loss 'structure' with deep_supervision=True needs outputs['{self.aux_key}'] "
                                 f"(a list of auxiliary logits); the model returned "
                                 f"{sorted(outputs) if isinstance(outputs, dict) else 'a single tensor'}")
        aux = outputs[self.aux_key]
        return [main, *(aux if isinstance(aux, (list, tuple)) else [aux])]

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        label = get_label(batch, "structure")
        wbce_all, wiou_all = 0.0, 0.0
        for logits in self.maps(outputs):
            logits = as_float(logits)
            logits = resize_like(logits, tuple(label.shape[label.ndim - logits.ndim + 2:]))
            target = prepare_target(logits, label, "structure", allow_multiclass=False)
            wbce, wiou = structure_loss(logits, target.onehot, self.bce_weighting, self.kernel)
            wbce_all, wiou_all = wbce_all + wbce, wiou_all + wiou
        per_image = wbce_all + wiou_all
        if self.reduction == "none":
            return {"loss": per_image, "wbce": wbce_all, "wiou": wiou_all}
        red = torch.mean if self.reduction == "mean" else torch.sum
        return {"loss": red(per_image), "wbce": red(wbce_all), "wiou": red(wiou_all)}
