"""Optimisers and learning-rate schedules from the config (stepped once per epoch)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from medseg.config import OptimConfig, ScheduleConfig


def split_encoder_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(encoder, rest): parameters whose name starts with ``encoder.`` (after any DDP ``module.``)."""
    enc, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (enc if name.removeprefix("module.").startswith("encoder.") else rest).append(p)
    return enc, rest


def freeze_encoder(model: nn.Module) -> int:
    """Freeze ``model.encoder`` (weights and BN statistics); returns the number of frozen parameters."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ValueError(f"train.freeze_encoder is set but model {type(model).__name__} has no 'encoder' "
                         "attribute; use an encoder-head model such as 'chnet'")
    count = 0
    for p in encoder.parameters():
        p.requires_grad_(False)
        count += p.numel()
    return count


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    enc, rest = split_encoder_params(model)
    if cfg.encoder_lr is not None and enc:
        groups = [{"params": rest, "lr": cfg.lr, "name": "head"},
                  {"params": enc, "lr": cfg.encoder_lr, "name": "encoder"}]
    else:
        groups = [{"params": enc + rest, "lr": cfg.lr, "name": "all"}]
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def lr_factor(cfg: ScheduleConfig, epoch: int, epochs: int, base_lr: float) -> float:
    """Multiplier of the base learning rate at (0-based) ``epoch``.

    - step: ``gamma ** (epoch // step_size)``
    - poly: ``(1 - epoch/epochs) ** power``
    - cosine: ``min + (1 - min)(1 + cos(pi e / E))/2``
    - warmup_linear: linear ramp over ``warmup_epochs`` then linear decay to ``min_lr`` at the end
    - triangular (CHNet/F3Net code): ``1 - |2(e+1)/(E+1) - 1|``
    """
    floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
    e, n = epoch, max(1, epochs)
    if cfg.warmup_epochs and e < cfg.warmup_epochs and cfg.name != "triangular":
        return (e + 1) / (cfg.warmup_epochs + 1)
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** (e // cfg.step_size)
    if cfg.name == "poly":
        return max(floor, (1 - e / n) ** cfg.power)
    if cfg.name == "cosine":
        t = (e - cfg.warmup_epochs) / max(1, n - cfg.warmup_epochs)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.name == "warmup_linear":
        t = (e - cfg.warmup_epochs) / max(1, n - cfg.warmup_epochs)
        return max(floor, 1 - t * (1 - floor))
    if cfg.name == "triangular":
        return max(floor, 1 - abs(2 * (e + 1) / (n + 1) - 1))
    raise ValueError(f"unknown schedule {cfg.name}")


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    base = opt.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e, epochs, base))
