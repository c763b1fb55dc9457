"""Seed-aware comparison of run folders grouped by arm (``medseg compare --arm NAME RUN...``).

An *arm* is one method (config) trained with several seeds, one run folder per seed (``medseg sweep``
makes them). Each run folder must hold ``metrics/per_case.csv`` (``medseg evaluate RUN`` writes it; ``medseg
sweep`` and ``medseg cv`` evaluate every run they train). For one metric this module reports:

* per arm: the mean over seeds of each run's mean over the test cases, with a Student-t confidence interval
  (:func:`medseg.metrics.stats.mean_ci`);
* between the first arm (the baseline) and every other arm: the **seed-level** test, with the seed as the
  unit (paired t-test when the arms ran the same seeds, Welch otherwise;
  :func:`medseg.metrics.stats.seed_level_test`), which answers "does the method help", and the
  **per-image** paired tests (t-test, Wilcoxon) on each case's value averaged over the arm's seeds, which
  only say whether these trained networks differ on these images (docs/compare.md);
* for multi-class runs (columns ``dice_1``, ``dice_2`` ...) and region runs (``dice_WT``, ``dice_TC``,
  ``dice_ET``): the same per class / region.

``drop_zero=True`` applies the convention of some papers (CWCD) of leaving values equal to 0 out of averages
(a class with DSC = 0 in a case does not enter that case's mean over classes, nor the class's mean over
cases); every output that uses it is labelled. The tests still see every case.

Example::

    from medseg.engine.compare import compare_arms, format_arms
    result = compare_arms({"unet": ["runs/u/seed_0", "runs/u/seed_1"], "ife": ["runs/i/seed_*"]}, "dice")
    print(format_arms(result))
"""
from __future__ import annotations

import csv
import glob
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from medseg.errors import DataError
from medseg.metrics.stats import mean_ci, paired_comparison, seed_level_test
from medseg.regions import REGION_NAMES

PER_CASE = Path("metrics") / "per_case.csv"
NOT_METRICS = ("case", "dataset")
DROP_LABEL = "values = 0 dropped from averages (paper convention, --drop-zero)"
ANSWER = ("Does the method help? Read the seed-level test: it treats each training seed as one sample, so "
          "it includes the variation between trainings. The per-image tests fix the trained networks and "
          "treat each image as a sample: they say whether these particular networks differ on these images.")


@dataclass
class RunRecord:
    """One evaluated run folder: its seed, task signature and per-case columns."""

    name: str
    folder: Path
    seed: int | None
    task: dict[str, Any]
    columns: tuple[str, ...]
    values: dict[str, dict[str, float]] = field(repr=False)  # column -> {case: value}


def expand_runs(patterns: Sequence[str]) -> list[str]:
    """Run paths with glob patterns (``runs/unet_sweep/seed_*``) expanded, sorted; a pattern that matches
    nothing raises."""
    out: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            hits = sorted(glob.glob(pattern))
            if not hits:
                raise DataError(f"'{pattern}' matches no run folder; check the path (quote it for the shell)")
            out += hits
        else:
            out.append(pattern)
    return out


def load_run(path: str | Path) -> RunRecord:
    """Read a run folder (or its ``metrics/per_case.csv``): per-case values, seed and task from config.yaml."""
    path = Path(path)
    folder = path.parent.parent if path.is_file() and path.parent.name == "metrics" else path
    csv_path = path if path.is_file() else folder / PER_CASE
    if not folder.exists():
        raise DataError(f"run folder not found: {folder}")
    if not csv_path.is_file():
        raise DataError(f"{folder}: no {PER_CASE} (no test metrics yet); make them with `medseg evaluate "
                        f"{folder}` (medseg sweep and medseg cv evaluate every run they train)")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f for f in reader.fieldnames or [] if f]
        if "case" not in fields:
            raise DataError(f"{csv_path}: no 'case' column; pass a run folder evaluated by `medseg evaluate`")
        rows = list(reader)
    columns = tuple(f for f in fields if f not in NOT_METRICS)
    values = {c: {r["case"]: _number(r[c]) for r in rows} for c in columns}
    cfg = _config(folder)
    task = {"data.kind": cfg.get("data", {}).get("kind"), "data.root": cfg.get("data", {}).get("root"),
            "data.num_classes": cfg.get("data", {}).get("num_classes"),
            "eval.regions": cfg.get("eval", {}).get("regions")}
    seed = cfg.get("train", {}).get("seed")
    return RunRecord(folder.resolve().name, folder, seed if isinstance(seed, int) else None, task, columns, values)


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    return raw if isinstance(raw, dict) else {}


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in ("", None) else math.nan
    except ValueError:
        return math.nan


def check_compatible(runs: Sequence[RunRecord]) -> None:
    """Raise unless every run has the same task (data kind, root, classes, regions), metric columns and cases."""
    ref = runs[0]
    for run in runs[1:]:
        for key, value in ref.task.items():
            if run.task[key] != value:
                raise DataError(f"runs of different tasks: {ref.folder} has {key} = {value}, {run.folder} has "
                                f"{run.task[key]}; compare runs of one task only")
        if set(run.columns) != set(ref.columns):
            diff = sorted(set(run.columns) ^ set(ref.columns))
            raise DataError(f"runs with different metric sets: {ref.folder} and {run.folder} differ in "
                            f"{', '.join(diff[:8])}; evaluate both with the same --metrics")
        cases_ref, cases_run = set(next(iter(ref.values.values()), {})), set(next(iter(run.values.values()), {}))
        if cases_ref != cases_run:
            raise DataError(f"runs scored on different cases: {ref.folder} ({len(cases_ref)}) and {run.folder} "
                            f"({len(cases_run)}), {len(cases_ref ^ cases_run)} differ; evaluate on the same split")


def class_columns(columns: Sequence[str], metric: str) -> list[str]:
    """Per-class (``dice_1``) or per-region (``dice_WT``) columns of ``metric``, in file order."""
    pre = f"{metric}_"
    return [c for c in columns if c.startswith(pre) and (c[len(pre):].isdigit() or c[len(pre):] in REGION_NAMES)]


def case_values(run: RunRecord, column: str, drop_zero: bool = False) -> dict[str, float]:
    """``{case: value}`` of ``column``; with ``drop_zero`` the plain metric of a multi-class / region run is
    recomputed per case as the mean of its class columns that are finite and not 0."""
    parts = class_columns(run.columns, column) if drop_zero else []
    if not parts:
        return dict(run.values[column])
    table = np.array([[run.values[p][c] for p in parts] for c in run.values[column]], dtype=np.float64)
    table[table == 0] = np.nan
    with np.errstate(all="ignore"):
        counts = np.isfinite(table).sum(axis=1)
        means = np.where(counts > 0, np.nansum(table, axis=1) / np.maximum(counts, 1), np.nan)
    return dict(zip(run.values[column], means.tolist()))


def average(values: dict[str, float], drop_zero: bool = False) -> float:
    """Mean over cases of the finite values (and, with ``drop_zero``, not 0)."""
    v = np.array(list(values.values()), dtype=np.float64)
    keep = np.isfinite(v) & ((v != 0) if drop_zero else True)
    return float(v[keep].mean()) if keep.any() else math.nan


def seed_key(runs: Sequence[RunRecord]) -> list[Any]:
    """The seeds of an arm's runs, or their names when a seed is missing or repeated (then no pairing)."""
    seeds = [r.seed for r in runs]
    if None in seeds or len(set(seeds)) != len(seeds):
        return [r.name for r in runs]
    return seeds


def arm_stats(runs: Sequence[RunRecord], column: str, drop_zero: bool, confidence: float) -> dict[str, Any]:
    """Per-seed scores, their mean with CI, and each case's value averaged over the seeds."""
    per_run = [case_values(r, column, drop_zero) for r in runs]
    scores = {k: average(v, drop_zero) for k, v in zip(seed_key(runs), per_run)}
    cases = list(per_run[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN case: stays NaN, excluded by the test
        mean_case = np.nanmean(np.array([[v[c] for c in cases] for v in per_run]), axis=0)
    return {"seeds": scores, "summary": mean_ci(list(scores.values()), confidence),
            "per_case": dict(zip(cases, mean_case.tolist()))}


def compare_column(arms: dict[str, list[RunRecord]], column: str, drop_zero: bool,
                   confidence: float) -> dict[str, Any]:
    """Arm statistics of one column and the tests of every arm against the first."""
    stats = {name: arm_stats(runs, column, drop_zero, confidence) for name, runs in arms.items()}
    names = list(arms)
    base = names[0]
    tests = {}
    for other in names[1:]:
        tests[other] = {
            "seed_level": seed_level_test(stats[base]["seeds"], stats[other]["seeds"], base, other),
            "per_image": paired_comparison(stats[base]["per_case"], stats[other]["per_case"], base, other)}
    return {"column": column, "arms": {n: {"seeds": s["seeds"], **s["summary"]} for n, s in stats.items()},
            "baseline": base, "tests": tests}


def compare_arms(arms: dict[str, Sequence[str]], metric: str = "dice", drop_zero: bool = False,
                 confidence: float = 0.95) -> dict[str, Any]:
    """Compare arms of run folders (glob patterns allowed) on ``metric``; the first arm is the baseline.

    Returns ``{"metric", "drop_zero", "label", "answer", "overall": compare_column(...), "per_class": [...],
    "notes": [...]}``. Raises DataError on a run without metrics, runs of different tasks or metric sets,
    a metric no run has, or fewer than two arms.
    """
    if len(arms) < 2:
        raise DataError(f"give at least two arms to compare (got {len(arms)}): --arm NAME RUN... --arm NAME RUN...")
    records = {name: [load_run(p) for p in expand_runs(paths)] for name, paths in arms.items()}
    for name, runs in records.items():
        if not runs:
            raise DataError(f"arm '{name}' has no run folder")
    everything = [r for runs in records.values() for r in runs]
    check_compatible(everything)
    if metric not in everything[0].columns:
        raise DataError(f"{everything[0].folder}: no metric '{metric}' in {PER_CASE}; available: "
                        f"{', '.join(everything[0].columns)}")
    notes = [f"arm '{n}' has one seed: reported, but no seed-level test is possible" for n, r in records.items()
             if len(r) < 2]
    notes += [f"arm '{n}': seeds missing or repeated in config.yaml; runs are not paired by seed (Welch)"
              for n, r in records.items() if len(r) > 1 and seed_key(r) != [x.seed for x in r]]
    return {"metric": metric, "drop_zero": drop_zero, "label": DROP_LABEL if drop_zero else "",
            "answer": ANSWER, "confidence": confidence,
            "runs": {n: [str(r.folder) for r in runs] for n, runs in records.items()},
            "overall": compare_column(records, metric, drop_zero, confidence),
            "per_class": [compare_column(records, c, drop_zero, confidence)
                          for c in class_columns(everything[0].columns, metric)],
            "notes": notes}


def _g(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _p(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def format_arms(result: dict[str, Any]) -> str:
    """Readable report: arm means with CI, the seed-level and per-image tests, the per-class table."""
    metric, label = result["metric"], result["label"]
    ov = result["overall"]
    conf = int(round(result["confidence"] * 100))
    lines = [f"{metric}: mean over seeds of each run's mean over cases" + (f" [{label}]" if label else ""),
             f"| arm | seeds | mean | sd | {conf}% CI |", "|---|---|---|---|---|"]
    for name, a in ov["arms"].items():
        lines.append(f"| {name} | {a['n']} | {_g(a['mean'])} | {_g(a['sd'])} | {_g(a['low'])} .. {_g(a['high'])} |")
    lines.append("")
    for other, t in ov["tests"].items():
        s, i = t["seed_level"], t["per_image"]
        lines.append(f"{other} - {ov['baseline']}:")
        if s["test"] is None:
            lines.append(f"  seed-level (answers 'does the method help'): {s['reason']}")
        else:
            lines.append(f"  seed-level (answers 'does the method help'): {s['test']}, n = {s['n_a']} vs "
                         f"{s['n_b']} seeds, difference {_g(s['mean_difference'])}, t = {_g(s['statistic'], 3)}, "
                         f"df = {_g(s['df'], 1)}, p = {_p(s['p'])}")
        lines.append(f"  per-image (these trained networks on these {i['n']} images, seeds averaged per image): "
                     f"difference {_g(i['mean_difference'])}, paired t p = {_p(i['t_p'])}, "
                     f"Wilcoxon p = {_p(i['wilcoxon_p'])}")
    if result["per_class"]:
        lines += ["", _class_table(result)]
    lines += ["", result["answer"], *[f"note: {n}" for n in result["notes"]]]
    return "\n".join(lines)


def _class_table(result: dict[str, Any]) -> str:
    """Markdown table: one row per class / region, arm means then p-values against the baseline."""
    first = result["per_class"][0]
    arms, others = list(first["arms"]), list(first["tests"])
    head = ["class"] + [f"{a} mean" for a in arms]
    for o in others:
        head += [f"{o}: seed p", f"{o}: image t p", f"{o}: image Wilcoxon p"]
    title = f"per class / region {result['metric']}" + (f" [{result['label']}]" if result["label"] else "")
    lines = [title, "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["per_class"]:
        cells = [row["column"][len(result["metric"]) + 1:]] + [_g(row["arms"][a]["mean"]) for a in arms]
        for o in others:
            t = row["tests"][o]
            cells += [_p(t["seed_level"]["p"]), _p(t["per_image"]["t_p"]), _p(t["per_image"]["wilcoxon_p"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
