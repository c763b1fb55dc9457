"""Statistics of ``medseg compare``: per-image paired tests and seed-level tests between arms.

Per image (two runs, or two arms with their seeds averaged per image): paired t-test (``scipy.stats.ttest_rel``) with Cohen's d_z = mean(d) / sd(d), and the Wilcoxon
signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped) with the matched-pairs
rank-biserial correlation r = (R+ − R−) / (R+ + R−) (Kerby 2014), on the cases both runs scored.

Per seed (:func:`seed_level_test`): each training seed gives one number per arm (its mean over the test
cases); the arms are compared with the seed as the unit: a paired t-test when both arms ran the same seeds,
Welch's unequal-variance t-test otherwise. :func:`mean_ci` gives an arm's mean over seeds with a Student-t
confidence interval. docs/compare.md says which test answers "does the method help".
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError


def read_metric_column(path: str | Path, metric: str) -> dict[str, float]:
    """``{case: value}`` of one column of a per-case CSV written by ``medseg metrics``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"results file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "case" not in fields:
            raise DataError(f"{path}: no 'case' column (columns: {', '.join(fields)}); pass a per-case CSV")
        if metric not in fields:
            raise DataError(f"{path}: no column '{metric}'; available: {', '.join(f for f in fields if f != 'case')}")
        return {row["case"]: float(row[metric]) if row[metric] not in ("", None) else math.nan for row in reader}


def paired_comparison(a: dict[str, float], b: dict[str, float], name_a: str = "A", name_b: str = "B") -> dict[str, Any]:
    """Statistics of ``b - a`` over the cases present in both with finite values in both.

    Cases in only one run raise (a paired test needs the same cases); NaN pairs are excluded and counted.
    """
    from scipy import stats

    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise DataError(f"the runs score different cases: {len(only_a)} only in {name_a} {only_a[:5]}, "
                        f"{len(only_b)} only in {name_b} {only_b[:5]}; compare runs on the same cases")
    cases = sorted(a)
    va = np.array([a[c] for c in cases], dtype=np.float64)
    vb = np.array([b[c] for c in cases], dtype=np.float64)
    ok = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[ok], vb[ok]
    diff = vb - va
    n = int(diff.size)
    out: dict[str, Any] = {"n": n, "excluded": int((~ok).sum()), "a": name_a, "b": name_b,
                           "mean_a": _f(va.mean()) if n else math.nan, "mean_b": _f(vb.mean()) if n else math.nan,
                           "mean_difference": _f(diff.mean()) if n else math.nan}
    if n < 2:
        out.update(t=math.nan, t_p=math.nan, cohens_dz=math.nan, wilcoxon_w=math.nan, wilcoxon_p=math.nan,
                   rank_biserial=math.nan)
        return out
    sd = diff.std(ddof=1)
    if sd == 0:
        out.update(t=math.nan, t_p=1.0 if diff.mean() == 0 else 0.0, cohens_dz=math.nan if diff.mean() == 0 else
                   math.copysign(math.inf, diff.mean()))
    else:
        t = stats.ttest_rel(vb, va)
        out.update(t=_f(t.statistic), t_p=_f(t.pvalue), cohens_dz=_f(diff.mean() / sd))
    nonzero = diff[diff != 0]
    if nonzero.size == 0:
        out.update(wilcoxon_w=math.nan, wilcoxon_p=1.0, rank_biserial=0.0)
    else:
        w = stats.wilcoxon(vb, va)
        ranks = stats.rankdata(np.abs(nonzero))
        r_plus, r_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
        out.update(wilcoxon_w=_f(w.statistic), wilcoxon_p=_f(w.pvalue),
                   rank_biserial=_f((r_plus - r_minus) / (r_plus + r_minus)))
    return out


def _f(x: Any) -> float:
    return float(x)


def mean_ci(values: Any, confidence: float = 0.95) -> dict[str, Any]:
    """Mean of the finite ``values`` with a Student-t confidence interval (sample sd, ddof = 1).

    Returns ``{"n", "mean", "sd", "low", "high", "confidence"}``; with fewer than two values the sd and the
    interval are NaN (one seed says nothing about seed-to-seed spread).
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    out: dict[str, Any] = {"n": n, "mean": _f(v.mean()) if n else math.nan, "sd": math.nan,
                           "low": math.nan, "high": math.nan, "confidence": confidence}
    if n >= 2:
        sd = _f(v.std(ddof=1))
        half = _f(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        out.update(sd=sd, low=out["mean"] - half, high=out["mean"] + half)
    return out


def seed_level_test(a: dict[Any, float], b: dict[Any, float], name_a: str = "A", name_b: str = "B") -> dict[str, Any]:
    """Test ``b`` against ``a`` with the training seed as the unit: ``{seed: arm score of that seed}`` each.

    Both arms with the same seeds (at least two): paired t-test over seeds (``scipy.stats.ttest_rel``);
    otherwise Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``). An arm with fewer than two seeds
    gets no test: ``test`` is None and ``reason`` says why. NaN scores are dropped (with their pair).
    """
    from scipy import stats

    a = {k: float(v) for k, v in a.items() if math.isfinite(float(v))}
    b = {k: float(v) for k, v in b.items() if math.isfinite(float(v))}
    va, vb = np.array(list(a.values())), np.array(list(b.values()))
    out: dict[str, Any] = {"a": name_a, "b": name_b, "n_a": len(a), "n_b": len(b),
                           "mean_a": _f(va.mean()) if len(a) else math.nan,
                           "mean_b": _f(vb.mean()) if len(b) else math.nan,
                           "test": None, "statistic": math.nan, "p": math.nan, "df": math.nan, "reason": ""}
    out["mean_difference"] = out["mean_b"] - out["mean_a"]
    if len(a) < 2 or len(b) < 2:
        few = ", ".join(f"{n} has {k} seed{'s' if k != 1 else ''}" for n, k in ((name_a, len(a)), (name_b, len(b)))
                        if k < 2)
        out["reason"] = (f"no seed-level test is possible: {few}; seed-to-seed variation cannot be estimated "
                         f"from one seed (train more seeds: medseg sweep CONFIG --seeds 0 1 2)")
        return out
    if set(a) == set(b):
        seeds = sorted(a)
        pa, pb = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        diff = pb - pa
        out.update(test="paired t-test over seeds", df=len(seeds) - 1)
        if np.all(diff == diff[0]):  # zero spread of the differences: t undefined
            out.update(p=1.0 if diff[0] == 0 else 0.0, reason="identical differences on every seed")
        else:
            r = stats.ttest_rel(pb, pa)
            out.update(statistic=_f(r.statistic), p=_f(r.pvalue))
        return out
    out["test"] = "Welch t-test over seeds (seeds differ between arms)"
    r = stats.ttest_ind(vb, va, equal_var=False)
    sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
    df = (sa + sb) ** 2 / (sa ** 2 / (va.size - 1) + sb ** 2 / (vb.size - 1)) if sa + sb > 0 else math.nan
    out.update(statistic=_f(r.statistic), p=_f(r.pvalue), df=_f(df))
    return out


def format_comparison(result: dict[str, Any], metric: str) -> str:
    """Readable lines for the CLI."""
    r = result
    name_a, name_b = r["a"], r["b"]
    return "\n".join([
        f"{metric}: {name_b} - {name_a} over n = {r['n']} paired cases ({r['excluded']} excluded: NaN in a run)",
        f"  mean {name_a} = {r['mean_a']:.6g}, mean {name_b} = {r['mean_b']:.6g}, "
        f"mean difference = {r['mean_difference']:.6g}",
        f"  paired t-test:        t = {r['t']:.4g}, p = {r['t_p']:.4g}, Cohen's d_z = {r['cohens_dz']:.4g}",
        f"  Wilcoxon signed-rank: W = {r['wilcoxon_w']:.4g}, p = {r['wilcoxon_p']:.4g}, "
        f"rank-biserial r = {r['rank_biserial']:.4g}",
    ])
