"""Seed sweep (``medseg sweep CONFIG --seeds 0 1 2``): one run folder per training seed, resumable.

Every run is the config with ``train.seed`` set to one seed (the data split, ``data.split.seed``, is kept,
so every seed is scored on the same test cases and the runs can be compared per image and per seed with
``medseg compare --arm NAME PARENT/seed_*``).

Layout::

    <parent>/seed_<s>/               a complete run folder (config.yaml, checkpoints/, logs/, metrics/)
    <parent>/sweep_results.csv|.md   one row per seed, then mean, sd and a 95% Student-t interval

Resumable seed by seed, as ``medseg cv`` is fold by fold (:func:`medseg.engine.cv.train_and_evaluate`): a
seed whose ``metrics/summary.json`` exists is skipped, a seed with ``checkpoints/last.pt`` continues from
it, any other seed starts afresh.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from medseg.config import ConfigError, RunConfig
from medseg.engine.cv import metric_means, train_and_evaluate, with_updates, write_tables
from medseg.metrics.stats import mean_ci


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """The run config of one seed: ``train.seed`` replaced, the name suffixed ``_seed<s>``."""
    return with_updates(cfg, {"train.seed": seed, "name": f"{cfg.name}_seed{seed}"})


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The seeds as a list; raise ConfigError on none or on a repeated seed."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("give at least one seed: --seeds 0 1 2")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"seed(s) {repeated} given twice in --seeds; each seed is one run folder")
    return seeds


def sweep(cfg: RunConfig, seeds: Sequence[int], output: str | Path | None = None, split: str = "test",
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate one run per seed (skipping complete ones, resuming interrupted ones).

    Returns ``{"parent", "complete", "seeds": [per-seed metric means], "summary": {metric: mean_ci}, "table"}``;
    ``complete`` is False when a run stopped early (interrupted, ``train.session_epochs``): run again.
    """
    seeds = check_seeds(seeds)
    parent = Path(output) if output is not None else Path(cfg.output_dir) / f"{cfg.name}_sweep"
    parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        out = train_and_evaluate(seed_config(cfg, seed), parent / f"seed_{seed}", split, log)
        if out is None:
            return {"parent": str(parent), "complete": False, "seeds": rows}
        rows.append({"seed": seed, "cases": out["summary"].get("cases"), **metric_means(out["summary"])})
    keys = [k for k in rows[0] if k not in ("seed", "cases")]
    summary = {k: mean_ci([r.get(k, float("nan")) for r in rows]) for k in keys}
    csv_extra = [{"seed": "mean", **{k: s["mean"] for k, s in summary.items()}},
                 {"seed": "sd", **{k: s["sd"] for k, s in summary.items()}},
                 {"seed": "ci95_low", **{k: s["low"] for k, s in summary.items()}},
                 {"seed": "ci95_high", **{k: s["high"] for k, s in summary.items()}}]
    md = {"seed": "mean [95% CI]", **{k: f"{s['mean']:.4f} [{s['low']:.4f}, {s['high']:.4f}]"
                                      for k, s in summary.items()}}
    table = write_tables(rows, ["cases", *keys], "seed", parent / "sweep_results", csv_extra=csv_extra, md_extra=[md])
    return {"parent": str(parent), "complete": True, "seeds": rows, "summary": summary, "table": table}
