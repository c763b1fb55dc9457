"""Default compound losses (Dice+BCE, Dice+CE) and the weighted sum of named terms.

(Bootstrap version; the loss catalogue extends this package.)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.losses import create_loss, register_loss
from medseg.losses._common import (Schedule, as_float, foreground, get_label, main_logits, prepare_target,
                                   soft_dice)


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """``1 - mean_c (2 sum p t + s) / (sum p + sum t + s)``, sums over batch and space per channel."""
    return 1 - soft_dice(prob, target, [0, *range(2, prob.ndim)], smooth).mean()


@register_loss("dice_bce")
class DiceBCELoss(nn.Module):
    """Soft Dice + binary cross-entropy on sigmoid logits: ``L = w_d·(1 - Dice(σ(z), g)) + w_b·BCE(z, g)``.

    One logit channel with a 0/1 label ``B x 1 x *spatial`` (an int label may omit the channel axis), or
    C channels against a float label of the same shape (C independent binary maps). Dice sums over the
    batch and space per channel (smooth 1e-5 in numerator and denominator), then averages the channels;
    BCE is the mean over voxels. Equals MONAI ``DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-5,
    smooth_dr=1e-5)`` for one channel. Labels outside [0, 1] or of another shape are refused.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, loss="dice_bce"))
        target = prepare_target(logits, get_label(batch, "dice_bce"), "dice_bce", allow_multiclass=False).onehot
        bce = F.binary_cross_entropy_with_logits(logits, target)
        dice = soft_dice_loss(torch.sigmoid(logits), target)
        return {"loss": self.dice_weight * dice + self.bce_weight * bce, "dice": dice, "bce": bce}


@register_loss("dice_ce")
class DiceCELoss(nn.Module):
    """Soft Dice over the foreground classes + cross-entropy, softmax over K >= 2 channels.

    ``L = w_d·(1 - mean_{c>=1} Dice_c) + w_c·CE`` with an int64 label ``B x *spatial`` (or ``B x 1 x
    *spatial``); background (class 0) is left out of the Dice, each Dice_c sums over the batch and space
    (smooth 1e-5). Equals MONAI ``DiceCELoss(softmax=True, to_onehot_y=True, include_background=False,
    batch=True, smooth_nr=1e-5, smooth_dr=1e-5)``. Label values outside ``0..K-1`` are refused.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        logits = as_float(main_logits(outputs, loss="dice_ce"))
        target = prepare_target(logits, get_label(batch, "dice_ce"), "dice_ce", allow_binary=False)
        ce = F.cross_entropy(logits, target.index)
        dice = soft_dice_loss(foreground(logits.softmax(1), target), foreground(target.onehot, target))
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

    @property
    def reads_aux(self) -> bool:
        """True when a term reads the auxiliary outputs itself (e.g. ``structure`` with deep supervision)."""
        return any(getattr(term, "reads_aux", False) for term in self.terms.values())

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
