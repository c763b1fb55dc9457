"""Head ablation (``medseg ablate CONFIG --heads ...``): the same encoder with each head, one comparison table.

This is the comparison of the CHNet paper (Wei et al., PRCV 2023): Table 6 (FCN-32s baseline vs the 1x1 and
3x3 classification heads) and the encoder-decoder decoupling study of its section 4 (the same backbone under
different decoders, optionally frozen: ``--freeze-encoder`` / ``train.freeze_encoder``, or trained with its
own learning rate: ``--encoder-lr`` / ``optim.encoder_lr``). Every head is trained from the one config with
only ``model.kwargs.head`` changed, so split, schedule, loss, seed and epochs are identical.

Layout::

    <parent>/<head>/                  a complete run folder per head
    <parent>/ablate_results.csv|.md   head, params (head / total, M), GFLOPs at data.image_size,
                                      best validation metric and epoch, then each test metric (mean over cases)

Resumable head by head, like :mod:`medseg.engine.cv`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from medseg.config import ConfigError, RunConfig
from medseg.engine.cv import metric_means, train_and_evaluate, with_updates, write_tables


def head_config(cfg: RunConfig, head: str) -> RunConfig:
    """``cfg`` with ``model.kwargs.head = head`` (validated: the model must accept a ``head`` keyword)."""
    from medseg.models import MODELS
    from medseg.registry import check_kwargs

    try:
        check_kwargs(MODELS.get(cfg.model.name), {"head": head}, f"model '{cfg.model.name}'")
    except TypeError:
        raise ConfigError(f"model '{cfg.model.name}' has no 'head' option; ablate needs an encoder-head model "
                          "such as 'chnet'") from None
    return with_updates(cfg, {"model.kwargs.head": head, "name": f"{cfg.name}_{head}"})


def check_heads(heads: Sequence[str]) -> list[str]:
    """Unique, registered head names (an unknown one lists the valid ones)."""
    from medseg.modules.heads import HEADS
    from medseg.registry import RegistryError

    out: list[str] = []
    for head in heads:
        try:
            HEADS.get(head)
        except RegistryError as err:
            raise ConfigError(str(err)) from None
        if head not in out:
            out.append(head)
    if not out:
        raise ConfigError("--heads needs at least one head name")
    return out


def model_cost(cfg: RunConfig) -> dict[str, float]:
    """Head / total parameters (M) and GFLOPs of one forward at ``data.image_size`` (torch's flop counter)."""
    from medseg.engine.profile import count_flops, count_parameters
    from medseg.engine.trainer import build_model

    model = build_model(cfg).eval()
    _enc, head, total = count_parameters(model)
    x = torch.randn(1, cfg.data.in_channels, *cfg.data.image_size)
    return {"params_head_M": (head or 0) / 1e6, "params_total_M": total / 1e6,
            "gflops": count_flops(model, x) / 1e9}


def ablate_heads(cfg: RunConfig, heads: Sequence[str], output: str | Path | None = None, split: str = "test",
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate ``cfg`` once per head; write the comparison table.

    Returns ``{"parent", "complete", "rows", "table"}``.
    """
    heads = check_heads(heads)
    configs = {h: head_config(cfg, h) for h in heads}  # validate every variant before training any
    parent = Path(output) if output is not None else Path(cfg.output_dir) / f"{cfg.name}_ablate"
    parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for head, run_cfg in configs.items():
        out = train_and_evaluate(run_cfg, parent / head, split, log)
        if out is None:
            return {"parent": str(parent), "complete": False, "rows": rows}
        train = out["train"]
        rows.append({"head": head, **model_cost(run_cfg),
                     f"val_{train.get('metric') or cfg.train.best_metric}": train.get("best_metric"),
                     "best_epoch": train.get("best_epoch"), **metric_means(out["summary"])})
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k != "head" and k not in keys]
    table = write_tables(rows, keys, "head", parent / "ablate_results")
    return {"parent": str(parent), "complete": True, "rows": rows, "table": table}
