"""``medseg report``: one self-contained HTML file (Jinja2) from evaluated run folders or result tables.

Sections (HTML ids): ``summary`` (metric summary, counts, exclusions, the empty-mask policy), ``training``
(loss terms, learning rate, validation metrics from ``logs/epochs.csv`` and ``logs/steps.jsonl``),
``cases`` (per-case table, sortable by any column), ``overlays`` (best / median / worst case: image, GT
contour, prediction contour; 3-D: the slice of largest GT area per view), ``saliency`` (PR, F-measure and
E-measure curves of binary tasks, PySODEvalToolkit-style), ``groups`` (per-dataset / per-class / per-region
bars) and ``comparison`` (several inputs). Figures are embedded as ``data:`` PNGs and also written as PNG
files to ``<output stem>_figures/`` beside the HTML. Nothing refers to the network. See ``docs/report.md``.

An input is a run folder evaluated by ``medseg evaluate RUN --split SPLIT`` (``metrics/<split>_per_case.csv``
and ``<split>_summary.json``) or a per-case CSV written by ``medseg metrics --output results.csv`` (its
summary JSON beside it).
"""
from __future__ import annotations

import base64
import csv
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from medseg.errors import UserError
from medseg.report import figures as figs
from medseg.report.per_dataset import group_means

SECTIONS = ("summary", "training", "cases", "overlays", "saliency", "groups", "comparison")
ComparisonHook = Callable[[Sequence["Source"]], str]
_COMPARISON_HOOKS: list[ComparisonHook] = []


def register_comparison(hook: ComparisonHook) -> ComparisonHook:
    """Add an HTML fragment to the ``comparison`` section of reports with several inputs.

    ``hook(sources)`` returns trusted HTML (for example the seed-aware comparison of ``medseg compare``);
    it is inserted below the side-by-side summary table. Usable as a decorator.
    """
    _COMPARISON_HOOKS.append(hook)
    return hook


@dataclass
class Source:
    """One input of the report: an evaluated run folder (``kind="run"``) or a result table (``"results"``)."""

    name: str
    path: Path
    kind: str
    split: str
    per_case: list[dict[str, str]]
    summary: dict[str, Any]
    config: dict[str, Any] | None = None
    epochs: list[dict[str, str]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    reader: Callable[[str], tuple[Any, np.ndarray]] | None = field(default=None, repr=False)  # case -> image, GT

    @property
    def metric_columns(self) -> list[str]:
        return [k for k in self.per_case[0] if k not in ("case", "dataset")] if self.per_case else []

    def values(self, column: str) -> np.ndarray:
        return np.array([_num(r.get(column)) for r in self.per_case], dtype=float)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); write it again with `medseg evaluate`") from err


def _read_steps(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    return rows


def load_source(path: str | Path, split: str = "test") -> Source:
    """Read one input: a run folder with ``metrics/`` or a per-case CSV (summary JSON beside it)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".csv":
        summary_path = path.with_suffix(".json")
        rows = _read_csv(path)
        if not rows:
            raise UserError(f"{path} has no rows; make it with `medseg metrics --pred P --gt G --output {path}`")
        summary = _read_json(summary_path) if summary_path.is_file() else {}
        return Source(path.stem, path, "results", split, rows, summary)
    if not path.is_dir():
        raise UserError(f"report input not found: {path} (give a run folder or a per-case CSV)")
    metrics = path / "metrics"
    table = metrics / f"{split}_per_case.csv"
    if not table.is_file() and split == "test" and (metrics / "per_case.csv").is_file():
        table = metrics / "per_case.csv"
    if not table.is_file():
        raise UserError(f"{path} has no metrics for the '{split}' split ({table} is missing); make them with "
                        f"`medseg evaluate {path} --split {split}`")
    rows = _read_csv(table)
    if not rows:
        raise UserError(f"{table} has no rows; run `medseg evaluate {path} --split {split}` again")
    summary_path = table.with_name(table.name.replace("per_case.csv", "summary.json"))
    summary = _read_json(summary_path) if summary_path.is_file() else {}
    cfg_path = path / "config.yaml"
    config = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else None
    logs = path / "logs"
    epochs = _read_csv(logs / "epochs.csv") if (logs / "epochs.csv").is_file() else []
    return Source(path.name, path, "run", split, rows, summary, config, epochs, _read_steps(logs / "steps.jsonl"))


# ------------------------------------------------------------------------------------ helpers
def _higher_is_better(metric: str) -> bool:
    from medseg.metrics.suite import SPECS

    base = re.sub(r"_(\d+|[A-Z]+)$", "", metric)
    spec = SPECS.get(metric) or SPECS.get(base)
    return True if spec is None else spec.higher_is_better


def _stats(values: np.ndarray) -> dict[str, float]:
    fin = values[np.isfinite(values)]
    return {"mean": float(fin.mean()) if fin.size else math.nan, "std": float(fin.std(ddof=1)) if fin.size > 1 else 0.0,
            "n": int(fin.size), "excluded": int(values.size - fin.size)}


def _unique_names(sources: Sequence[Source]) -> list[Source]:
    """The sources, with ``parent/name`` for inputs whose folder or file names are equal (``unet/seed_0``,
    ``unet_e/seed_0`` from ``medseg sweep``), so the curves, group bars and comparison keep one entry each."""
    names = [s.name for s in sources]
    out = [replace(s, name=f"{s.path.parent.name}/{s.name}") if names.count(s.name) > 1 else s for s in sources]
    names = [s.name for s in out]
    return [replace(s, name=f"{i}:{s.name}") if names.count(s.name) > 1 else s for i, s in enumerate(out)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


class _Figures:
    """Writes each figure as a PNG into the figures folder and keeps its ``data:`` URI for the HTML."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: list[Path] = []

    def add(self, draw: Callable[..., Path], name: str, *args: Any, **kw: Any) -> dict[str, str]:
        path = draw(*args, self.folder / f"{name}.png", **kw)
        self.written.append(path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return {"name": path.name, "uri": f"data:image/png;base64,{data}"}


# ----------------------------------------------------------------------------------- sections
def summary_section(src: Source) -> dict[str, Any]:
    """Summary rows (from the summary JSON, else computed from the per-case table) and the policy."""
    rows = []
    metrics = src.summary.get("metrics") or {}
    for col in src.metric_columns:
        s = metrics.get(col)
        if s is None:
            st = _stats(src.values(col))
            s = {"mean": st["mean"], "std": st["std"], "median": float(np.nanmedian(src.values(col)))
                 if st["n"] else math.nan, "count": st["n"], "excluded": st["excluded"]}
        rows.append({"metric": col, **{k: s.get(k) for k in ("mean", "std", "median", "count", "excluded")},
                     "dataset": s.get("dataset")})
    policy = src.summary.get("policy")
    if isinstance(policy, dict):
        empty = policy.get("empty", "not recorded")
    elif policy:
        empty = "not recorded"
    else:
        empty, policy = "not recorded (no summary JSON beside the table)", {}
    return {"rows": rows, "cases": src.summary.get("cases", len(src.per_case)), "policy": policy,
            "empty": empty, "checkpoint": src.summary.get("checkpoint"), "split": src.summary.get("split", src.split)}


def pick_cases(src: Source, metric: str) -> list[tuple[str, int]]:
    """``(label, row index)`` of the best, median and worst case by ``metric`` (NaN cases skipped); the
    median case is the middle of the ranking, for an even count the worse of the two middle cases."""
    values = src.values(metric)
    idx = np.flatnonzero(np.isfinite(values))
    if idx.size == 0:
        return []
    order = idx[np.argsort(values[idx], kind="stable")]
    if _higher_is_better(metric):
        order = order[::-1]
    return [("best", int(order[0])), ("median", int(order[order.size // 2])), ("worst", int(order[-1]))]


def _read_prediction(folder: Path, case: str) -> np.ndarray | None:
    png, nii = folder / f"{case}.png", folder / f"{case}.nii.gz"
    if png.is_file():
        from PIL import Image

        return np.asarray(Image.open(png))
    if nii.is_file():
        import nibabel as nib

        return np.asarray(nib.load(str(nii)).dataobj)
    return None


def _case_reader(src: Source) -> Callable[[str], tuple[np.ndarray | None, np.ndarray]]:
    """``case id -> (image, GT)`` at original resolution from the run's data (2-D images, 3-D volumes)."""
    from medseg.config import DataConfig
    from medseg.data import build_dataset

    # the data section alone: validating the whole config would import every model (seconds)
    ds = build_dataset(DataConfig.model_validate((src.config or {}).get("data") or {}), src.split)
    if hasattr(ds, "volume") and not getattr(ds, "slices_eval", False):
        index = {c: k for k, c in enumerate(ds.case_ids)}

        def read_volume(case: str) -> tuple[np.ndarray | None, np.ndarray]:
            image, label, _, _ = ds.volume(index[case])
            return image[0], np.asarray(label)
        return read_volume
    index = {c: k for k, c in enumerate(ds.ids)}

    def read_image(case: str) -> tuple[np.ndarray | None, np.ndarray]:
        k = index[case]
        if hasattr(ds, "_checked"):
            image, label, _ = ds._checked(k)
            return image, np.asarray(label)
        label, _ = ds.read_original(k)
        return None, np.asarray(label)
    return read_image


def load_cases(src: Source, cases: Sequence[str]) -> tuple[dict[str, tuple[Any, np.ndarray, np.ndarray]], str]:
    """``case -> (image, GT, prediction map)`` for cases with a saved prediction; or a note saying why not."""
    if src.kind != "run" or src.config is None:
        return {}, "a result table carries no images: give the evaluated run folder"
    folder = src.path / "predictions" / src.split
    if not folder.is_dir():
        return {}, (f"no predictions in {folder}: run `medseg evaluate {src.path} --split {src.split}` "
                    "without --no-predictions")
    try:
        reader = src.reader or _case_reader(src)
        src.reader = reader
    except Exception as err:  # data moved or not readable here: the rest of the report still stands
        return {}, f"the run's data could not be read ({type(err).__name__}: {err})"
    out = {}
    for case in cases:
        pred = _read_prediction(folder, case)
        if pred is None:
            continue
        try:
            image, gt = reader(case)
        except (KeyError, IndexError):
            continue
        prob_path = folder / f"{case}_prob.png"
        out[case] = (image, gt, _read_prediction(folder, f"{case}_prob") if prob_path.is_file() else pred)
    return out, "" if out else f"no prediction in {folder} matches the per-case table"


def overlay_section(src: Source, metric: str, fig: _Figures, name: str) -> dict[str, Any]:
    picks = pick_cases(src, metric)
    if not picks:
        return {"note": f"no case has a finite {metric}"}
    loaded, note = load_cases(src, [src.per_case[i]["case"] for _, i in picks])
    cases = []
    for label, i in picks:
        case = src.per_case[i]["case"]
        if case in loaded:
            image, gt, pred = loaded[case]
            mask = pred > (127 if pred.dtype == np.uint8 and pred.max() > 1 else 0)
            cases.append({"label": label, "case": case, "value": float(src.values(metric)[i]), "image": image,
                          "gt": gt, "pred": mask})
    if not cases:
        return {"note": note or "no case could be drawn"}
    return {"figure": fig.add(figs.plot_overlays, f"overlays_{name}", cases, metric=metric),
            "cases": [(c["label"], c["case"], c["value"]) for c in cases]}


def saliency_curves(src: Source) -> tuple[dict[str, np.ndarray] | None, str]:
    """Mean PR, F-measure and E-measure curves over the run's 2-D binary predictions (saved maps:
    ``<case>_prob.png`` when present, else the mask), with :mod:`medseg.metrics.saliency`."""
    if src.config is not None and (src.config.get("data") or {}).get("num_classes", 1) != 1:
        return None, "multi-class task: PR / F / E curves are for binary tasks"
    loaded, note = load_cases(src, [r["case"] for r in src.per_case])
    if not loaded:
        return None, note
    if any(gt.ndim != 2 for _, gt, _ in loaded.values()):
        return None, "3-D predictions: the saliency curves are for 2-D maps"
    pairs = [(pred.astype(float) / (255.0 if pred.dtype == np.uint8 and pred.max() > 1 else 1.0), gt > 0)
             for _, gt, pred in loaded.values()]
    levels = {v for m, _ in pairs for v in np.unique(m)[:3].tolist()}
    curves = mean_curves(pairs)
    note = ("" if len(levels) > 2 else "the saved predictions are binary masks, so each curve has one operating "
            "point; save probability maps (<case>_prob.png) for full curves")
    return curves, note


def mean_curves(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Image-averaged 256-threshold curves (``precision``, ``recall``, ``f``, ``e``) of ``(map in [0, 1],
    binary GT)`` pairs, maps min-max normalised first (PySODMetrics / PySODEvalToolkit conventions)."""
    from medseg.metrics import saliency as sal

    acc: dict[str, list[np.ndarray]] = {"precision": [], "recall": [], "f": [], "e": []}
    for m, gt in pairs:
        st = sal.map_stats(sal.normalize_map(np.asarray(m, dtype=float)), np.asarray(gt, dtype=bool))
        acc["precision"].append(st.tp / np.where(st.pp == 0, 1, st.pp))
        acc["recall"].append(st.tp / max(st.n_fg, 1))
        acc["f"].append(sal.f_measure_curve(st))
        acc["e"].append(sal.e_measure_curve(st))
    return {k: np.mean(np.stack(v), axis=0) for k, v in acc.items()}


def group_tables(src: Source, metric: str) -> dict[str, dict[str, dict[str, float]]]:
    """``level -> group -> stats`` of ``metric``: per dataset, per class (``metric_<k>``) and per region."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    datasets = [r.get("dataset") or "" for r in src.per_case]
    if "dataset" in src.per_case[0] and any(datasets):
        out["dataset"] = group_means(src.per_case, metric, lambda r: r.get("dataset") or "")
    classes = [c for c in src.metric_columns if re.fullmatch(rf"{re.escape(metric)}_\d+", c)]
    if classes:
        out["class"] = {c.rsplit("_", 1)[1]: _stats(src.values(c)) for c in classes}
    scheme = src.summary.get("regions")
    regions = (scheme.get("regions") or {}) if isinstance(scheme, dict) else {}
    present = [r for r in regions if f"{metric}_{r}" in src.metric_columns]
    if present:
        out["region"] = {r: _stats(src.values(f"{metric}_{r}")) for r in present}
    return out


def comparison_section(sources: Sequence[Source]) -> dict[str, Any]:
    """Side-by-side summary (mean ± std, n) of every metric any input has; plus registered hooks' HTML."""
    metrics: list[str] = []
    for s in sources:
        metrics += [m for m in s.metric_columns if m not in metrics]
    rows = []
    for m in metrics:
        cells = []
        for s in sources:
            st = _stats(s.values(m)) if m in s.metric_columns else None
            cells.append("-" if st is None or not st["n"] else f"{st['mean']:.4f} ± {st['std']:.4f} (n={st['n']})")
        rows.append({"metric": m, "cells": cells})
    return {"runs": [s.name for s in sources], "rows": rows,
            "extra": [str(hook(sources)) for hook in _COMPARISON_HOOKS]}


# -------------------------------------------------------------------------------------- build
def _check_output(output: Path, fig_dir: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    if output.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--output {output}: the report is an HTML file; name it *.html")
    for p in inputs:
        if p.resolve() == output.resolve() or (p.is_dir() and p.resolve() == fig_dir.resolve()):
            raise UserError(f"--output {output} would replace the input {p}; choose another path")
    if not overwrite:
        for p in (output, fig_dir):
            if p.exists() and (p.is_file() or any(p.iterdir())):
                raise UserError(f"{p} exists; pass --overwrite to replace the report and its figures")


def build_report(inputs: Sequence[str | Path], output: str | Path, *, split: str = "test",
                 metric: str | None = None, title: str | None = None, overwrite: bool = False) -> Path:
    """Write the HTML report of ``inputs`` (run folders / per-case CSVs) to ``output``; returns its path.

    Figures go to ``<output stem>_figures/`` beside it. An existing report is replaced only with
    ``overwrite=True``.
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    from medseg.engine.checkpoint import atomic_write_text

    if not inputs:
        raise UserError("give at least one evaluated run folder or per-case CSV")
    output = Path(output)
    fig_dir = output.with_name(f"{output.stem}_figures")
    _check_output(output, fig_dir, [Path(p) for p in inputs], overwrite)
    sources = _unique_names([load_source(p, split) for p in inputs])
    names = [_slug(s.name) for s in sources]
    names = [n if names.count(n) == 1 else f"{i}_{n}" for i, n in enumerate(names)]
    metric = metric or sources[0].metric_columns[0]
    for s in sources:
        if metric not in s.metric_columns:
            raise UserError(f"metric '{metric}' is not in {s.path}'s table; valid: {', '.join(s.metric_columns)}")
    if fig_dir.is_dir():
        for old in fig_dir.glob("*.png"):
            old.unlink()
    fig = _Figures(fig_dir)
    runs = []
    curves: dict[str, dict[str, np.ndarray]] = {}
    curve_notes = []
    for s, name in zip(sources, names):
        run: dict[str, Any] = {"name": s.name, "slug": name, "path": str(s.path), "kind": s.kind,
                               "summary": summary_section(s), "columns": s.metric_columns,
                               "cases": s.per_case, "has_dataset": "dataset" in s.per_case[0]}
        if s.epochs:
            run["training"] = fig.add(figs.plot_training, f"training_{name}", s.epochs, s.steps, title=s.name)
        else:
            run["training_note"] = ("a result table has no training logs" if s.kind == "results"
                                    else f"no logs/epochs.csv in {s.path}")
        run["overlays"] = overlay_section(s, metric, fig, name)
        c, note = saliency_curves(s)
        if c is not None:
            curves[s.name] = c
        if note:
            curve_notes.append(f"{s.name}: {note}")
        runs.append(run)
    saliency = {"figure": fig.add(figs.plot_saliency_curves, "saliency_curves", curves) if curves else None,
                "notes": curve_notes}
    groups = []
    for level in ("dataset", "class", "region"):
        per_run = {s.name: t[level] for s in sources if level in (t := group_tables(s, metric))}
        if per_run:
            groups.append({"level": level, "figure": fig.add(figs.plot_group_bars, f"per_{level}_{metric}", per_run,
                                                             metric, title=f"{metric} per {level}")})
    env = Environment(loader=PackageLoader("medseg.report", "templates"), autoescape=select_autoescape(["j2", "html"]))
    env.filters["fmt"] = lambda v, d=4: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else (
        f"{v:.{d}f}" if isinstance(v, float) else str(v))
    env.filters["cell"] = lambda v: f"{_num(v):.4f}" if math.isfinite(_num(v)) else (v or "")
    env.filters["num"] = lambda v: "" if not math.isfinite(_num(v)) else repr(_num(v))
    html = env.get_template("report.html.j2").render(
        title=title or f"medseg report: {', '.join(s.name for s in sources)}", runs=runs, metric=metric,
        split=split, saliency=saliency, groups=groups,
        comparison=comparison_section(sources) if len(sources) > 1 else None, sections=SECTIONS,
        figure_dir=fig_dir.name)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(html, output)
    return output
