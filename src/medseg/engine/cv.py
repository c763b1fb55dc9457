"""k-fold cross-validation (``medseg cv CONFIG --folds K``): one run folder per fold, mean ± std per metric.

The CHNet paper (Wei et al., PRCV 2023, Table 2) reports BUSI as mean ± std over a 4-fold cross-validation.
Each fold ``i`` is an ordinary run with ``data.split.mode = "kfold"``, ``data.split.folds = K`` and
``data.split.fold = i``: the data layer cuts a seeded permutation of the case ids into K parts, part ``i`` is
the test set and a seeded ``val_fraction`` of the rest is the validation set. Before training, the K test
sets are checked to partition the cases exactly (disjoint, union = all cases) and written to ``folds.json``.

Layout::

    <parent>/folds.json           the partition (case ids per fold)
    <parent>/fold_<i>/            a complete run folder (config.yaml, checkpoints/, logs/, metrics/)
    <parent>/cv_results.csv|.md   one row per fold, then mean and std (sample std, ddof = 1) per metric

Resumable fold by fold: a fold whose ``metrics/summary.json`` exists is skipped; a fold with a
``checkpoints/last.pt`` continues from it (``--resume`` of the trainer); any other fold starts afresh.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from medseg.config import ConfigError, RunConfig
from medseg.engine.checkpoint import atomic_write_text

SUMMARY = Path("metrics") / "summary.json"


def with_updates(cfg: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """A validated copy of ``cfg`` with dotted keys replaced (``{"data.split.fold": 2}``)."""
    from medseg.config import build_config

    raw = cfg.model_dump(mode="json")
    for key, value in updates.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return build_config(raw)


def fold_config(cfg: RunConfig, folds: int, fold: int) -> RunConfig:
    """The run config of fold ``fold`` of ``folds``."""
    return with_updates(cfg, {"data.split.mode": "kfold", "data.split.folds": folds, "data.split.fold": fold,
                              "name": f"{cfg.name}_fold{fold}"})


def count_cases(cfg: RunConfig) -> list[str]:
    """Every case id of the dataset (all splits), as the data layer lists them."""
    from medseg.data import build_dataset

    from medseg.data.registry import is_divisible

    if not is_divisible(cfg.data.kind):
        raise ConfigError(f"cross-validation needs a dataset whose cases data.split divides (folder2d, nifti, "
                          f"mixture); data.kind '{cfg.data.kind}' has fixed train/val/test cases")
    everything = with_updates(cfg, {"data.split.mode": "fixed"})
    return [str(i) for i in _ids(build_dataset(everything.data, "test"))]


def _ids(dataset: Any) -> list[str]:
    ids = getattr(dataset, "ids", None)
    if ids is None:
        raise ConfigError(f"{type(dataset).__name__} does not expose case ids; cross-validation cannot check "
                          "its folds")
    return list(ids)


def fold_partition(cfg: RunConfig, folds: int) -> list[list[str]]:
    """The test ids of each fold, checked to partition the cases exactly.

    Raises ConfigError when ``folds`` exceeds the number of cases, or when the folds overlap or miss cases.
    """
    from medseg.data import build_dataset

    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    cases = count_cases(cfg)
    if folds > len(cases):
        raise ConfigError(f"--folds {folds} is larger than the number of cases ({len(cases)}) in "
                          f"{cfg.data.root or cfg.data.kind}; use at most --folds {len(cases)}")
    parts = [[str(i) for i in _ids(build_dataset(fold_config(cfg, folds, k).data, "test"))] for k in range(folds)]
    check_partition(cases, parts)
    return parts


def check_partition(cases: Sequence[str], parts: Sequence[Sequence[str]]) -> None:
    """Raise unless ``parts`` are disjoint, non-empty and together hold exactly ``cases``."""
    seen: dict[str, int] = {}
    for k, part in enumerate(parts):
        if not part:
            raise ConfigError(f"fold {k} has no test case")
        for case in part:
            if case in seen:
                raise ConfigError(f"case '{case}' is in the test sets of folds {seen[case]} and {k}")
            seen[case] = k
    missing = sorted(set(cases) - set(seen))
    extra = sorted(set(seen) - set(cases))
    if missing or extra:
        raise ConfigError(f"the folds do not partition the cases: missing {missing[:5]}, unknown {extra[:5]}")


def run_complete(run_dir: Path) -> bool:
    return (run_dir / SUMMARY).is_file()


def train_and_evaluate(cfg: RunConfig, run_dir: Path, split: str = "test",
                       log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train (or continue) the run in ``run_dir`` and evaluate it on ``split``; skip a complete run.

    Returns ``{"train": ..., "summary": ...}``, or None when training stopped early (interrupted or
    ``train.session_epochs``): run the command again to continue.
    """
    from medseg.engine.evaluate import evaluate_run
    from medseg.engine.trainer import train_run

    if run_complete(run_dir):
        log(f"{run_dir}: complete, skipped")
        return {"train": _train_record(run_dir), "summary": json.loads((run_dir / SUMMARY).read_text())}
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    log(f"{run_dir}: {'resuming' if resume else 'training'}")
    result = train_run(cfg, run_dir, resume=resume, overwrite=not resume)
    if result.get("status", "finished") != "finished":
        log(f"{run_dir}: training {result.get('status')}; run the same command again to continue")
        return None
    summary = evaluate_run(run_dir, split, progress=cfg.train.progress)
    if split != "test":  # keep the completion marker in one place
        atomic_write_text(json.dumps(summary, indent=2), run_dir / SUMMARY)
    train = {k: result.get(k) for k in ("best_metric", "best_epoch", "metric", "epochs")}
    atomic_write_text(json.dumps(train, indent=2), run_dir / "metrics" / "train_result.json")
    return {"train": train, "summary": summary}


def _train_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics" / "train_result.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def metric_means(summary: dict[str, Any]) -> dict[str, float]:
    """``{metric: mean over cases}`` from an ``evaluate_run`` summary."""
    return {k: float(v["mean"]) for k, v in summary.get("metrics", {}).items()}


def mean_std(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Per key: mean and sample standard deviation (ddof = 1; 0 for one row) over the finite values."""
    means, stds = {}, {}
    for key in keys:
        values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        n = len(values)
        mu = sum(values) / n if n else float("nan")
        means[key] = mu
        stds[key] = math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return means, stds


def write_tables(rows: list[dict[str, Any]], keys: Sequence[str], label: str, path_stem: Path,
                 csv_extra: Sequence[dict[str, Any]] = (), md_extra: Sequence[dict[str, Any]] = ()) -> str:
    """Write ``<stem>.csv`` (rows + ``csv_extra``) and ``<stem>.md`` (rows + bold ``md_extra``); return the
    markdown."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[label, *keys], extrasaction="ignore")
    writer.writeheader()
    for row in [*rows, *csv_extra]:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(buf.getvalue(), path_stem.with_suffix(".csv"))
    md = [f"| {label} | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for row in rows:
        md.append(f"| {row[label]} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    for row in md_extra:
        md.append(f"| **{row[label]}** | " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    text = "\n".join(md) + "\n"
    atomic_write_text(text, path_stem.with_suffix(".md"))
    return text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def cross_validate(cfg: RunConfig, folds: int, output: str | Path | None = None, split: str = "test",
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every fold (skipping complete ones); write the mean ± std tables.

    Returns ``{"parent", "folds": [per-fold metric means], "mean", "std", "table", "complete"}``.
    """
    parent = Path(output) if output is not None else Path(cfg.output_dir) / f"{cfg.name}_cv{folds}"
    parent.mkdir(parents=True, exist_ok=True)
    parts = fold_partition(cfg, folds)
    atomic_write_text(json.dumps({"folds": folds, "cases": sum(map(len, parts)), "seed": cfg.data.split.seed,
                                  "test_ids": parts}, indent=2), parent / "folds.json")
    rows: list[dict[str, Any]] = []
    for k in range(folds):
        out = train_and_evaluate(fold_config(cfg, folds, k), parent / f"fold_{k}", split, log)
        if out is None:
            return {"parent": str(parent), "complete": False, "folds": rows}
        rows.append({"fold": k, "cases": out["summary"].get("cases"), **metric_means(out["summary"])})
    keys = [k for k in rows[0] if k not in ("fold", "cases")]
    means, stds = mean_std(rows, keys)
    pm = {"fold": "mean ± std", **{k: f"{means[k]:.4f} ± {stds[k]:.4f}" for k in keys}}
    table = write_tables(rows, ["cases", *keys], "fold", parent / "cv_results",
                         csv_extra=[{"fold": "mean", **means}, {"fold": "std", **stds}], md_extra=[pm])
    return {"parent": str(parent), "complete": True, "folds": rows, "mean": means, "std": stds, "table": table}
