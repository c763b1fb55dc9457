"""``medseg compare`` over arms of run folders: seed-level tests, CIs, per-image and per-class tests.

Run folders are written by hand (config.yaml + metrics/per_case.csv) with numbers chosen so that each run's
mean over cases is a round value; every statistic is checked against scipy or a hand-worked value.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from medseg.cli import main
from medseg.engine.compare import DROP_LABEL, compare_arms, format_arms
from medseg.errors import DataError
from medseg.metrics.stats import mean_ci, seed_level_test

T_975_DF2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables)


def make_run(root: Path, name: str, seed: int | None, rows: dict[str, dict[str, float]], num_classes: int = 1,
             regions: str | None = None, metrics: bool = True) -> Path:
    """A run folder with config.yaml (seed, task) and, unless ``metrics`` is False, metrics/per_case.csv."""
    run = root / name
    run.mkdir(parents=True)
    cfg = {"name": name, "data": {"kind": "synthetic2d", "num_classes": num_classes},
           "train": {"seed": seed} if seed is not None else {}, "eval": {"regions": regions}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if metrics:
        (run / "metrics").mkdir()
        columns = list(next(iter(rows.values())))
        with (run / "metrics" / "per_case.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["case", "dataset", *columns])
            w.writeheader()
            for case, values in rows.items():
                w.writerow({"case": case, "dataset": "", **values})
    return run


def binary_run(root: Path, name: str, seed: int | None, mean: float, spread: float = 0.1) -> Path:
    """Two cases at mean -/+ spread (their mean is ``mean``) and a third at ``mean``."""
    return make_run(root, name, seed, {"c1": {"dice": mean - spread, "iou": 0.5},
                                       "c2": {"dice": mean + spread, "iou": 0.5},
                                       "c3": {"dice": mean, "iou": 0.5}})


A_MEANS = {0: 0.70, 1: 0.60, 2: 0.80}
B_MEANS = {0: 0.72, 1: 0.64, 2: 0.86}  # differences 0.02, 0.04, 0.06


def test_seed_level_paired_by_seed_matches_scipy_and_hand(tmp_path: Path) -> None:
    a = [binary_run(tmp_path, f"a{s}", s, m) for s, m in A_MEANS.items()]
    b = [binary_run(tmp_path, f"b{s}", s, B_MEANS[s]) for s in (2, 0, 1)]  # other order: pairing is by seed
    res = compare_arms({"base": [str(p) for p in a], "new": [str(p) for p in b]}, "dice")
    t = res["overall"]["tests"]["new"]["seed_level"]
    va, vb = [A_MEANS[s] for s in (0, 1, 2)], [B_MEANS[s] for s in (0, 1, 2)]
    oracle = stats.ttest_rel(vb, va)
    assert t["test"].startswith("paired")
    assert t["statistic"] == pytest.approx(0.04 / (0.02 / math.sqrt(3)), rel=1e-9)  # mean(d) / (sd(d)/sqrt n)
    assert t["statistic"] == pytest.approx(oracle.statistic, rel=1e-9)
    assert t["p"] == pytest.approx(oracle.pvalue, rel=1e-9)
    assert t["df"] == 2 and t["mean_difference"] == pytest.approx(0.04)
    arm = res["overall"]["arms"]["base"]  # mean 0.7, sd 0.1, n 3
    assert arm["mean"] == pytest.approx(0.7) and arm["sd"] == pytest.approx(0.1)
    assert arm["low"] == pytest.approx(0.7 - T_975_DF2 * 0.1 / math.sqrt(3), rel=1e-9)
    assert arm["high"] == pytest.approx(0.7 + T_975_DF2 * 0.1 / math.sqrt(3), rel=1e-9)


def test_seed_level_welch_when_seeds_differ_matches_scipy() -> None:
    a = {0: 0.70, 1: 0.60, 2: 0.80}
    b = {3: 0.90, 4: 0.70}
    res = seed_level_test(a, b, "A", "B")
    oracle = stats.ttest_ind([0.90, 0.70], [0.70, 0.60, 0.80], equal_var=False)
    assert res["test"].startswith("Welch")
    assert res["statistic"] == pytest.approx(oracle.statistic, rel=1e-9)
    assert res["p"] == pytest.approx(oracle.pvalue, rel=1e-9)
    sa, sb = 0.01 / 3, 0.02 / 2  # sample variances 0.01 and 0.02 over n
    assert res["df"] == pytest.approx((sa + sb) ** 2 / (sa ** 2 / 2 + sb ** 2 / 1), rel=1e-9)


def test_mean_ci_hand_worked() -> None:
    ci = mean_ci([0.7, 0.6, 0.8, float("nan")])
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(0.7)
    assert ci["high"] - ci["mean"] == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3), rel=1e-9)
    one = mean_ci([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["sd"]) and math.isnan(one["low"])


def test_per_image_tests_use_the_seed_average_of_each_case(tmp_path: Path) -> None:
    a = [make_run(tmp_path, f"a{s}", s, {"x": {"dice": 0.5 + s / 10}, "y": {"dice": 0.6}, "z": {"dice": 0.9},
                                         "w": {"dice": 0.3}}) for s in (0, 1)]
    b = [make_run(tmp_path, f"b{s}", s, {"x": {"dice": 0.7}, "y": {"dice": 0.6 + s / 5}, "z": {"dice": 0.95},
                                         "w": {"dice": 0.2}}) for s in (0, 1)]
    res = compare_arms({"a": [str(p) for p in a], "b": [str(p) for p in b]}, "dice")
    img = res["overall"]["tests"]["b"]["per_image"]
    va = [0.55, 0.6, 0.9, 0.3]  # x, y, z, w averaged over seeds 0 and 1
    vb = [0.7, 0.7, 0.95, 0.2]
    ordered = sorted(zip(["x", "y", "z", "w"], va, vb))
    va, vb = [v[1] for v in ordered], [v[2] for v in ordered]
    assert img["n"] == 4
    assert img["t_p"] == pytest.approx(stats.ttest_rel(vb, va).pvalue, rel=1e-9)
    assert img["wilcoxon_p"] == pytest.approx(stats.wilcoxon(vb, va).pvalue, rel=1e-9)


def test_one_seed_arm_is_reported_without_seed_level_test(tmp_path: Path, capsys) -> None:
    a = [binary_run(tmp_path, f"a{s}", s, m) for s, m in A_MEANS.items()]
    b = binary_run(tmp_path, "b0", 0, 0.9)
    res = compare_arms({"a": [str(p) for p in a], "b": [str(b)]}, "dice")
    t = res["overall"]["tests"]["b"]["seed_level"]
    assert t["test"] is None and math.isnan(t["p"])
    assert "no seed-level test is possible" in t["reason"] and "b has 1 seed" in t["reason"]
    assert res["overall"]["arms"]["b"]["mean"] == pytest.approx(0.9)
    assert any("one seed" in n for n in res["notes"])
    assert main(["compare", "--arm", "a", str(tmp_path / "a*"), "--arm", "b", str(b)]) == 0  # glob + report
    out = capsys.readouterr().out
    assert "no seed-level test is possible" in out and "does the method help" in out


def test_bad_input_one_line_errors(tmp_path: Path, capsys) -> None:
    good = [binary_run(tmp_path, f"a{s}", s, 0.7) for s in (0, 1)]
    bare = make_run(tmp_path, "bare", 0, {}, metrics=False)
    with pytest.raises(DataError, match=r"no metrics.per_case.csv.*medseg evaluate"):
        compare_arms({"a": [str(p) for p in good], "b": [str(bare)]})
    multi = make_run(tmp_path, "multi", 0, {"c1": {"dice": 0.5, "iou": 0.5}}, num_classes=3)
    with pytest.raises(DataError, match=r"different tasks.*data.num_classes"):
        compare_arms({"a": [str(p) for p in good], "b": [str(multi)]})
    other_metrics = make_run(tmp_path, "hd", 0, {c: {"dice": 0.5, "hd95": 3.0} for c in ("c1", "c2", "c3")})
    with pytest.raises(DataError, match=r"different metric sets.*hd95"):
        compare_arms({"a": [str(p) for p in good], "b": [str(other_metrics)]})
    with pytest.raises(DataError, match="matches no run folder"):
        compare_arms({"a": [str(p) for p in good], "b": [str(tmp_path / "nothing_*")]})
    assert main(["compare", "--arm", "a", *map(str, good), "--arm", "b", str(bare)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "medseg evaluate" in err


def multiclass_rows(d1: list[float], d2: list[float]) -> dict[str, dict[str, float]]:
    rows = {}
    for i, (x, y) in enumerate(zip(d1, d2)):
        rows[f"c{i}"] = {"dice": (x + y) / 2, "dice_1": x, "dice_2": y}
    return rows


def test_per_class_table_paired_tests_and_drop_zero_label(tmp_path: Path, capsys) -> None:
    a1 = [[0.8, 0.6, 0.7, 0.9], [0.8, 0.62, 0.7, 0.9]]  # dice_1 of case c0..c3, seeds 0 and 1
    a2 = [[0.0, 0.5, 0.4, 0.6], [0.2, 0.5, 0.4, 0.6]]
    b1 = [[0.85, 0.7, 0.72, 0.95], [0.83, 0.68, 0.74, 0.93]]
    b2 = [[0.0, 0.55, 0.5, 0.62], [0.0, 0.53, 0.5, 0.66]]
    a = [make_run(tmp_path, f"a{s}", s, multiclass_rows(a1[s], a2[s]), num_classes=3) for s in (0, 1)]
    b = [make_run(tmp_path, f"b{s}", s, multiclass_rows(b1[s], b2[s]), num_classes=3) for s in (0, 1)]
    arms = {"a": [str(p) for p in a], "b": [str(p) for p in b]}
    res = compare_arms(arms, "dice")
    rows = {r["column"]: r for r in res["per_class"]}
    assert list(rows) == ["dice_1", "dice_2"]
    va, vb = np.mean(a2, axis=0), np.mean(b2, axis=0)  # class 2 per case, averaged over seeds
    img = rows["dice_2"]["tests"]["b"]["per_image"]
    assert img["t_p"] == pytest.approx(stats.ttest_rel(vb, va).pvalue, rel=1e-9)
    seed = rows["dice_1"]["tests"]["b"]["seed_level"]
    assert seed["p"] == pytest.approx(stats.ttest_rel(np.mean(b1, axis=1), np.mean(a1, axis=1)).pvalue, rel=1e-9)
    assert rows["dice_2"]["arms"]["b"]["mean"] == pytest.approx(np.mean(np.mean(b2, axis=1)))  # zeros count
    assert res["label"] == ""

    dropped = compare_arms(arms, "dice", drop_zero=True)
    drows = {r["column"]: r for r in dropped["per_class"]}
    # class 2 of arm b: zeros left out of each seed's mean over cases, then mean over seeds
    hand_b2 = np.mean([np.mean([0.55, 0.5, 0.62]), np.mean([0.53, 0.5, 0.66])])
    assert drows["dice_2"]["arms"]["b"]["mean"] == pytest.approx(hand_b2, rel=1e-12)
    # case c0 of arm a, seed 0: classes (0.8, 0.0) -> mean over classes without the 0 is 0.8, not 0.4
    hand_a_seed0 = np.mean([0.8, (0.6 + 0.5) / 2, (0.7 + 0.4) / 2, (0.9 + 0.6) / 2])
    assert dropped["overall"]["arms"]["a"]["seeds"][0] == pytest.approx(hand_a_seed0, rel=1e-12)
    assert res["overall"]["arms"]["a"]["seeds"][0] == pytest.approx(np.mean(np.add(a1[0], a2[0]) / 2))
    text = format_arms(dropped)
    assert text.count(DROP_LABEL) == 2  # the headline table and the per-class table are both labelled
    assert DROP_LABEL not in format_arms(res)
    out = tmp_path / "cmp.json"
    assert main(["compare", "--arm", "a", *arms["a"], "--arm", "b", *arms["b"], "--drop-zero", "--json",
                 str(out)]) == 0
    assert json.loads(out.read_text())["label"] == DROP_LABEL
    assert "| 2 |" in capsys.readouterr().out


def test_region_columns_are_per_region_rows(tmp_path: Path) -> None:
    def rows(shift: float) -> dict[str, dict[str, float]]:
        return {f"c{i}": {"dice": 0.7, "dice_WT": 0.9 - i / 10 + shift, "dice_TC": 0.7, "dice_ET": 0.5 + shift,
                          "hd95": 3.0, "hd95_WT": 2.0, "hd95_TC": 3.0, "hd95_ET": 4.0} for i in range(3)}
    a = [make_run(tmp_path, f"a{s}", s, rows(s / 100), num_classes=4, regions="brats") for s in (0, 1)]
    b = [make_run(tmp_path, f"b{s}", s, rows(0.05 + s / 50), num_classes=4, regions="brats") for s in (0, 1)]
    res = compare_arms({"a": [str(p) for p in a], "b": [str(p) for p in b]}, "dice")
    assert [r["column"] for r in res["per_class"]] == ["dice_WT", "dice_TC", "dice_ET"]
    et = {r["column"]: r for r in res["per_class"]}["dice_ET"]
    assert et["arms"]["b"]["mean"] - et["arms"]["a"]["mean"] == pytest.approx(0.56 - 0.505)  # (0.55 + 0.57) / 2 - (0.50 + 0.51) / 2
