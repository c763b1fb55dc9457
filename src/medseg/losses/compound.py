"""Default compound losses (Dice+BCE, Dice+CE) and the weighted sum of named terms.

(Bootstrap version; the loss catalogue extends this package.)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.losses import create_loss, register_loss


def main_logits(outputs: Any) -> torch.Tensor:
    return outputs["out"] if isinstance(outputs, dict) else outputs


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """``1 - mean_c (2 sum p t + s) / (sum p + sum t + s)``, sums over batch and space per channel."""
    dims = [0, *range(2, prob.ndim)]
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


@register_loss("dice_bce")
class DiceBCELoss(nn.Module):
    """Soft Dice + binary cross-entropy on one logit channel: ``L = (1 - Dice(σ(z), g)) + BCE(z, g)``."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = main_logits(outputs).float()
        target = batch["label"].float()
        bce = F.binary_cross_entropy_with_logits(logits, target)
        dice = soft_dice_loss(torch.sigmoid(logits), target)
        return {"loss": self.dice_weight * dice + self.bce_weight * bce, "dice": dice, "bce": bce}


@register_loss("dice_ce")
class DiceCELoss(nn.Module):
    """Soft Dice (per-class mean over foreground) + cross-entropy, softmax over K channels."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = main_logits(outputs).float()
        label = batch["label"].long()
        ce = F.cross_entropy(logits, label)
        prob = logits.softmax(1)
        onehot = F.one_hot(label, logits.shape[1]).movedim(-1, 1).float()
        dice = soft_dice_loss(prob[:, 1:], onehot[:, 1:])
        return {"loss": self.dice_weight * dice + self.ce_weight * ce, "dice": dice, "ce": ce}


class WeightedSum(nn.Module):
    """``L = Σ_i w_i · L_i``; each term is logged under its name."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = weights

    @classmethod
    def from_spec(cls, spec: list[dict[str, Any]], num_classes: int = 1) -> "WeightedSum":
        terms, weights = {}, {}
        for item in spec:
            key = item.get("as", item["name"])
            terms[key] = create_loss({"name": item["name"], "kwargs": item.get("kwargs", {})},
                                     num_classes=num_classes)
            weights[key] = float(item.get("weight", 1.0))
        return cls(terms, weights)

    def set_epoch(self, epoch: int) -> None:
        for term in self.terms.values():
            if hasattr(term, "set_epoch"):
                term.set_epoch(epoch)

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for key, term in self.terms.items():
            value = term(outputs, batch)["loss"]
            out[key] = value
            total = total + self.weights[key] * value
        out["loss"] = total
        return out
