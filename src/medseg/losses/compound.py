"""Default compound losses (Dice+BCE, Dice+CE) and the weighted sum of named terms.

(Bootstrap version; the loss catalogue extends this package.)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.losses import create_loss, register_loss
from medseg.losses._common import Schedule, as_float


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
        logits = as_float(main_logits(outputs))
        target = batch["label"].to(logits.dtype)
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
        logits = as_float(main_logits(outputs))
        label = batch["label"].long()
        ce = F.cross_entropy(logits, label)
        prob = logits.softmax(1)
        onehot = F.one_hot(label, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        dice = soft_dice_loss(prob[:, 1:], onehot[:, 1:])
        return {"loss": self.dice_weight * dice + self.ce_weight * ce, "dice": dice, "ce": ce}


ITEM_KEYS = ("name", "weight", "kwargs", "as", "schedule")


class WeightedSum(nn.Module):
    """``L = Σ_i w_i·s_i(e)·L_i``; each term is logged under its name (``as``), its own sub-terms as
    ``"<name>.<sub>"``.

    Config form: a list of ``{name, weight, kwargs, as, schedule}``; ``schedule`` (optional) is an
    epoch-dependent factor ``{start, step, min, max, from_epoch}`` (see :class:`medseg.losses._common.Schedule`),
    e.g. Kervadec's region/boundary hand-over or a term switched on at epoch 12. ``requires`` is the union of
    the terms' derived targets; ``set_epoch`` reaches every term.
    """

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float],
                 schedules: dict[str, Schedule | None] | None = None) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = weights
        self.schedules = schedules or {}
        self.epoch = 0
        self.requires: set[str] = set().union(*(getattr(t, "requires", set()) for t in terms.values()))

    @classmethod
    def from_spec(cls, spec: list[dict[str, Any]], num_classes: int = 1) -> "WeightedSum":
        terms, weights, schedules = {}, {}, {}
        for i, item in enumerate(spec):
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or "name" not in item:
                raise ValueError(f"loss term {i}: expected a mapping with 'name' (and optional weight, kwargs, "
                                 f"as, schedule), got {item!r}")
            bad = [k for k in item if k not in ITEM_KEYS]
            if bad:
                raise ValueError(f"loss term {i} ('{item['name']}'): unknown key(s) {bad}; valid: "
                                 f"{', '.join(ITEM_KEYS)}")
            key = item.get("as", item["name"])
            if key in terms:
                raise ValueError(f"loss term '{key}' appears twice; give one of them another name with 'as'")
            terms[key] = create_loss({"name": item["name"], "kwargs": item.get("kwargs") or {}},
                                     num_classes=num_classes)
            weights[key] = float(item.get("weight", 1.0))
            schedules[key] = Schedule.build(item.get("schedule"))
        return cls(terms, weights, schedules)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for term in self.terms.values():
            if hasattr(term, "set_epoch"):
                term.set_epoch(epoch)

    def factor(self, key: str) -> float:
        schedule = self.schedules.get(key)
        return self.weights[key] * (schedule(self.epoch) if schedule else 1.0)

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total: Any = 0.0
        for key, term in self.terms.items():
            values = term(outputs, batch)
            out[key] = values["loss"]
            out.update({f"{key}.{sub}": v for sub, v in values.items() if sub not in ("loss", key)})
            total = total + self.factor(key) * values["loss"]
        out["loss"] = total
        return out
