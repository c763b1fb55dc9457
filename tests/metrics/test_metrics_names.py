"""The one table of metric names (``medseg.metrics.names``) and the layering built on it.

Every name and alias creates its metric, aliases never collide, every set member exists in the published
column order, the derived tables and the registry follow the table, ``docs/metrics.md`` and
``medseg metrics --list``/``--help`` list exactly the table; the per-case functions compute without a
``MetricSuite`` and equal it; adding a metric is one row (worked example).
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import medseg.metrics as M
from medseg.cli import main
from medseg.metrics import names, suite
from medseg.metrics.names import ALIASES, METRIC_SETS, SPECS, TABLE, MetricSpec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

#: the per-case function of each metric (the twins of ``from medseg.metrics import ...``)
TWINS = {
    "dice": M.dice, "iou": M.iou, "precision": M.precision, "recall": M.recall, "specificity": M.specificity,
    "f1_ife": M.f1_ife, "conformity": M.conformity, "rvd": M.rvd, "hd": M.hd, "hd95": M.hd95, "asd": M.asd,
    "assd": M.assd, "nsd": M.nsd, "mae": M.mae, "s_measure": M.s_measure, "wf_measure": M.weighted_f_measure,
    "f_measure_max": partial(M.f_measure, kind="max"), "f_measure_mean": partial(M.f_measure, kind="mean"),
    "f_measure_adp": partial(M.f_measure, kind="adp"), "e_measure_max": partial(M.e_measure, kind="max"),
    "e_measure_mean": partial(M.e_measure, kind="mean"), "e_measure_adp": partial(M.e_measure, kind="adp"),
    "polyp_mdice": M.polyp_mdice, "polyp_miou": M.polyp_miou, "soft_dice": M.soft_dice, "hce": M.hce,
}


def test_every_name_and_alias_creates_its_metric() -> None:
    for spec in TABLE:
        for key in (spec.name, *spec.aliases):
            for spelled in (key, key.upper()):
                metric = M.create_metric(spelled)
                assert metric.name == spec.name and metric.higher_is_better == spec.higher_is_better
                assert M.resolve_names(spelled) == [spec.name]
    assert len(ALIASES) == sum(len(s.aliases) for s in TABLE) > 0


def test_names_and_aliases_are_unique_lower_case_and_never_collide() -> None:
    keys = [k for s in TABLE for k in (s.name, *s.aliases)]
    assert len(keys) == len(set(keys)) and all(k == k.lower() and " " not in k for k in keys)
    assert not set(ALIASES) & set(SPECS) and not set(METRIC_SETS) & (set(SPECS) | set(ALIASES))


def test_set_members_exist_in_their_published_column_order() -> None:
    for set_name, members in METRIC_SETS.items():
        assert members and set(members) <= set(SPECS), set_name
        positions = sorted(SPECS[m].sets[set_name] for m in members)
        assert positions == list(range(1, len(members) + 1)), set_name
    # IFE's tables (Table 1-3 of the paper): Con, Dice, JC, F1, HCE, MAE, HD, ASD, RVD
    assert METRIC_SETS["ife"] == ["conformity", "dice", "iou", "f1_ife", "hce", "mae", "hd", "assd", "rvd"]
    assert list(METRIC_SETS) == list(names.SET_SUMMARIES)


def test_derived_tables_and_registry_follow_the_table() -> None:
    assert list(SPECS) == [s.name for s in TABLE]
    assert names.OVERLAP_FUNCTIONS == {s.name: s.fn for s in TABLE if s.kind == "overlap"}
    assert names.DISTANCE_FUNCTIONS == {s.name: s.fn for s in TABLE if s.kind == "distance"}
    assert set(M.METRICS.names()) == set(SPECS) | set(ALIASES)
    assert list(M.list_metrics()) == sorted(SPECS)
    assert all(M.list_metrics()[s.name] == s.summary for s in TABLE)
    assert M.SPECS is SPECS and suite.SPECS is SPECS and suite.ALIASES is ALIASES  # views, not copies


def _docs_rows(header: str) -> list[list[str]]:
    """The body rows (cells) of the markdown table of ``docs/metrics.md`` whose header starts with ``header``."""
    lines = DOCS.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_docs_list_the_table() -> None:
    documented = []
    for cells in _docs_rows("| Name (aliases) |"):
        name, *aliases = re.findall(r"`([^`]+)`", cells[0])
        documented.append((name, tuple(aliases), cells[1]))
    expected = [(s.name, s.aliases, "higher" if s.higher_is_better else "lower") for s in TABLE]
    assert documented == expected
    sets = {re.findall(r"`([^`]+)`", c[0])[0]: re.findall(r"`([^`]+)`", c[1]) for c in _docs_rows("| Set |")}
    assert sets == METRIC_SETS and list(sets) == list(METRIC_SETS)


def test_cli_list_and_help_show_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines if not line.startswith("set ")]
    sets = {line.split()[1]: line.split()[2:] for line in lines if line.startswith("set ")}
    assert listed == sorted(SPECS) and sets == METRIC_SETS
    with pytest.raises(SystemExit):
        main(["metrics", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(s in help_text for s in METRIC_SETS)


def test_derive_rejects_clashes() -> None:
    row = TABLE[0]
    bad_tables = {
        "alias is a name": (*TABLE, MetricSpec("x1", "overlap", True, "", row.fn, ("dice",))),
        "alias twice": (*TABLE, MetricSpec("x1", "overlap", True, "", row.fn, ("dsc",))),
        "name is a set": (*TABLE, MetricSpec("ife", "overlap", True, "", row.fn)),
        "unknown set": (*TABLE, MetricSpec("x1", "overlap", True, "", row.fn, (), {"nope": 1})),
        "position taken": (*TABLE, MetricSpec("x1", "overlap", True, "", row.fn, (), {"ife": 1})),
        "unknown kind": (*TABLE, MetricSpec("x1", "volume", True, "", row.fn)),
    }
    for why, table in bad_tables.items():
        with pytest.raises(ValueError):
            names.derive(table, names.SET_SUMMARIES)
            pytest.fail(why)
    with pytest.raises(ValueError, match="no members"):
        names.derive(TABLE, [*names.SET_SUMMARIES, "empty"])


def _cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(soft map, its mask, GT) for a few small 2-D cases, one with an empty GT."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:40, :48]
    out = []
    for i in range(3):
        gt = (yy - 20) ** 2 + (xx - 22 - 3 * i) ** 2 < (8 + 3 * i) ** 2
        if i == 2:
            gt[:] = False
        soft = np.clip(np.roll(gt, 2 + i, axis=1) * 0.8 + rng.uniform(0, 0.4, gt.shape), 0, 1)
        out.append((soft, soft > 0.5, gt))
    return out


@pytest.mark.parametrize("options", [{}, {"compat": "ife"}, {"empty": "nan", "hd95_mode": "max_directed"}])
def test_functions_compute_without_a_suite_and_equal_it(monkeypatch: pytest.MonkeyPatch, options: dict) -> None:
    assert set(TWINS) == set(SPECS)
    expected = []
    everything = M.MetricSuite(list(SPECS), **options)
    for soft, mask, gt in _cases():
        for prob in (soft, (soft * 255).astype(np.uint8)):
            # map functions take the map alone (their mask is the thresholded map, as with pred=None)
            masks, maps = everything(mask, gt, prob=prob).values, everything(None, gt, prob=prob).values
            expected.append({n: (maps if SPECS[n].kind == "map" else masks)[n] for n in SPECS})

    def no_suite(*args: object, **kwargs: object) -> None:
        raise AssertionError("a per-case function built a MetricSuite")

    monkeypatch.setattr(suite.MetricSuite, "__init__", no_suite)
    got = []
    for soft, mask, gt in _cases():
        for prob in (soft, (soft * 255).astype(np.uint8)):
            got.append({n: (f(prob, gt, **options) if SPECS[n].kind == "map" else f(mask, gt, **options))
                        for n, f in TWINS.items()})
    for want, have in zip(expected, got):
        assert have.keys() == want.keys()
        for n in want:  # the same kernels on the same shared inputs: equal to the last bit
            assert have[n] == want[n] or (np.isnan(have[n]) and np.isnan(want[n])), n


def test_adding_a_metric_is_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worked example (ARCHITECTURE.md, "Where to add things"): a false-positive rate FP / (FP + TN)."""

    def fpr_from_counts(counts: np.ndarray, policy: M.Policy) -> np.ndarray:
        tp, fp, fn, tn = np.asarray(counts, dtype=np.float64).T
        return fp / (fp + tn)

    row = MetricSpec("fpr", "overlap", False, "false-positive rate FP/(FP+TN)", fpr_from_counts, ("fall_out",),
                     {"overlap": 6})
    specs, aliases, sets = names.derive((*TABLE, row), names.SET_SUMMARIES)
    for live, derived in ((SPECS, specs), (ALIASES, aliases), (METRIC_SETS, sets)):
        for key, value in derived.items():
            monkeypatch.setitem(live, key, value)
    gt = np.zeros((4, 5), bool)
    gt[:2] = True  # 10 GT pixels, 10 background
    pred = np.zeros((4, 5), bool)
    pred[1:3] = True  # TP 5, FP 5 (row 2), TN 5 -> FPR 5 / 10
    values = M.MetricSuite(["overlap"])(pred, gt).values
    assert values["fpr"] == 0.5 and values["dice"] == 0.5
    per_class = M.MetricSuite(["fall_out"], num_classes=3)(pred.astype(int) * 2, gt.astype(int) * 2).values
    assert per_class["fpr_2"] == 0.5 and np.isnan(per_class["fpr_1"])


def test_curve_function_names_the_valid_kinds() -> None:
    gt = np.eye(6, dtype=bool)
    with pytest.raises(ValueError, match="'maximum' is not valid; choose one of max, mean, adp"):
        M.e_measure(gt.astype(float), gt, kind="maximum")
    with pytest.raises(ValueError, match="f_measure kind 'avg'"):
        M.f_measure(gt.astype(float), gt, kind="avg")
