"""``medseg report``: the self-contained HTML report, rendered in headless Chromium.

One tiny trained and evaluated run (module fixture) serves every test; the browser is Debian's
``chromium`` package (installed here with apt-get when missing; the browser tests skip, with the reason,
only where it cannot be installed).
"""
from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.errors import UserError
from medseg.report import html as report_html
from medseg.report.figures import largest_gt_slices, overlay_views, plot_overlays
from medseg.report.html import SECTIONS, Source, build_report, group_tables, mean_curves, pick_cases

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_helpers import tiny_raw  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny 2-D binary run, trained (8 epochs, ~5 s) and evaluated on its 3 test cases."""
    from medseg.config import build_config
    from medseg.engine.evaluate import evaluate_run
    from medseg.engine.trainer import train_run

    raw = tiny_raw(epochs=8)
    raw["eval"]["metrics"] = ["dice", "iou", "hd95"]
    path = tmp_path_factory.mktemp("report") / "tiny"
    train_run(build_config(raw), path)
    evaluate_run(path, "test", progress=False)
    return path


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("no chromium and it could not be installed (apt-get install -y chromium needs root and the "
                    "Debian archive)")
    return found


@pytest.fixture(scope="module")
def browser():
    return _chromium()


def _chrome(browser: str, tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile{len(list(tmp.glob('profile*')))}"
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                           "--window-size=1280,4000", *extra, url], capture_output=True, text=True, timeout=120)


def _dump_dom(browser: str, tmp: Path, url: str) -> str:
    out = _chrome(browser, tmp, url, "--dump-dom")
    assert out.returncode == 0 and "<html" in out.stdout, out.stderr[-2000:]
    return out.stdout


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _section(dom: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', dom, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


@pytest.fixture(scope="module")
def report(run, tmp_path_factory) -> Path:
    """The report of the run and of a copy of its per-case table (two inputs: the comparison section)."""
    out = tmp_path_factory.mktemp("out")
    table = out / "results.csv"
    shutil.copy(run / "metrics" / "per_case.csv", table)
    return build_report([run, table], out / "report.html")


def test_report_renders_every_section_in_chromium(report, run, browser, tmp_path):
    shot = tmp_path / "shot.png"
    done = _chrome(browser, tmp_path, report.resolve().as_uri(), f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (4000, 1280)
    dark = pixels < 200
    assert dark.mean() > 0.02 and pixels.std() > 20  # not a blank page: text, tables and figures drawn
    rows_drawn = np.flatnonzero(dark.any(axis=1))
    assert rows_drawn[-1] - rows_drawn[0] > 2000  # content runs down the page, not one line

    dom = _dump_dom(browser, tmp_path, report.resolve().as_uri())
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in dom, sid
    per_case = _rows(run / "metrics" / "per_case.csv")
    summary = json.loads((run / "metrics" / "summary.json").read_text())
    s = _section(dom, "summary")
    assert f"cases: <b>{summary['cases']}</b>" in s
    assert 'empty-mask policy: <b class="empty-policy">worst</b>' in s
    for metric, stats in summary["metrics"].items():  # the summary JSON's numbers, counts and exclusions
        assert f"<td>{metric}</td><td>{stats['mean']:.4f}</td><td>{stats['std']:.4f}</td><td>{stats['median']:.4f}" \
               f"</td>\n<td>{stats['count']}</td><td>{stats['excluded']}</td>" in s
    for sid in ("training", "overlays", "saliency", "groups"):
        assert '<img alt="' in _section(dom, sid) and 'src="data:image/png;base64,' in _section(dom, sid), sid
    cases = _section(dom, "cases")
    assert all(r["case"] in cases for r in per_case) and '<th data-key="hd95" data-type="num">' in cases
    comp = _section(dom, "comparison")
    assert 'id="comparison-table"' in comp and "<th>tiny</th><th>results</th>" in comp


def test_figures_are_embedded_and_written_beside_the_report(report):
    folder = report.with_name("report_figures")
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names == ["overlays_tiny.png", "per_dataset_dice.png", "saliency_curves.png", "training_tiny.png"]
    html = report.read_text()
    for name in names:  # each embedded image is byte for byte the PNG beside the report
        data = base64.b64encode((folder / name).read_bytes()).decode()
        assert f'src="data:image/png;base64,{data}"' in html, name


def test_report_has_no_external_url(report):
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<link\b", html, re.I) and not re.search(r"https?://", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I)  # no CSS fetch either


@pytest.mark.parametrize("column,desc", [("dice", True), ("hd95", False), ("iou", False)])
def test_per_case_table_sorts_by_any_metric(report, run, browser, tmp_path, column, desc):
    per_case = _rows(run / "metrics" / "per_case.csv")
    keyed = sorted(per_case, key=lambda r: float(r[column]), reverse=desc)  # ties keep the input order
    url = report.resolve().as_uri() + f"#sort={column}" + (":desc" if desc else "")
    table = re.search(r'<table class="sortable" id="cases-tiny">(.*?)</table>', _dump_dom(browser, tmp_path, url), re.S)
    shown = re.findall(r"<tr><td>([^<]+)</td>", table.group(1))
    assert shown == [r["case"] for r in keyed]


def test_sorting_is_not_the_input_order(report, run, browser, tmp_path):
    """The fixture's Dice differ between cases, so descending Dice must reorder the rows."""
    per_case = _rows(run / "metrics" / "per_case.csv")
    dice = [float(r["dice"]) for r in per_case]
    assert len(set(dice)) == len(dice)
    dom = _dump_dom(browser, tmp_path, report.resolve().as_uri() + "#sort=dice:desc")
    shown = re.findall(r"<tr><td>([^<]+)</td>", re.search(r'id="cases-tiny">(.*?)</table>', dom, re.S).group(1))
    by_case = {r["case"]: float(r["dice"]) for r in per_case}
    assert [by_case[c] for c in shown] == sorted(dice, reverse=True)


def _source(values: dict[str, list[float]], **kw) -> Source:
    n = len(next(iter(values.values())))
    rows = [{"case": f"c{i}", "dataset": kw.get("datasets", ["d"] * n)[i],
             **{k: repr(v[i]) for k, v in values.items()}} for i in range(n)]
    return Source("s", Path("."), "results", "test", rows, kw.get("summary", {}))


def test_best_median_worst_by_direction_and_without_nan():
    src = _source({"dice": [0.5, float("nan"), 0.9, 0.1, 0.7], "hd95": [3.0, 1.0, float("nan"), 9.0, 2.0]})
    # dice, higher is better: finite 0.5 0.9 0.1 0.7 -> best c2 (0.9), median c0 (0.5: the worse middle of 4), worst c3
    assert pick_cases(src, "dice") == [("best", 2), ("median", 0), ("worst", 3)]
    # hd95, lower is better: finite 3 1 9 2 -> best c1 (1), median c0 (3: the worse middle), worst c3 (9)
    assert pick_cases(src, "hd95") == [("best", 1), ("median", 0), ("worst", 3)]
    odd = _source({"dice": [0.3, 0.8, 0.6]})
    assert pick_cases(odd, "dice") == [("best", 1), ("median", 2), ("worst", 0)]
    assert pick_cases(_source({"dice": [float("nan")]}), "dice") == []


def test_group_tables_per_dataset_class_and_region():
    nan = float("nan")
    src = _source({"dice": [0.2, 0.4, 0.9], "dice_1": [0.1, nan, 0.8], "dice_2": [0.3, 0.5, 1.0],
                   "dice_WT": [0.6, 0.7, 0.8]}, datasets=["a", "b", "a"],
                  summary={"regions": {"regions": {"WT": [1, 2, 4], "TC": [1, 4]}}})
    t = group_tables(src, "dice")
    assert t["dataset"]["a"]["mean"] == pytest.approx(0.55) and t["dataset"]["a"]["n"] == 2
    assert t["dataset"]["a"]["std"] == pytest.approx(np.std([0.2, 0.9], ddof=1))
    assert t["dataset"]["b"] == {"mean": pytest.approx(0.4), "std": 0.0, "n": 1, "excluded": 0}
    assert t["class"]["1"]["mean"] == pytest.approx(0.45) and t["class"]["1"]["excluded"] == 1
    assert t["class"]["2"]["mean"] == pytest.approx(0.6)
    assert list(t["region"]) == ["WT"] and t["region"]["WT"]["mean"] == pytest.approx(0.7)


def test_curves_match_pysodmetrics():
    sod = pytest.importorskip("py_sod_metrics")
    rng = np.random.default_rng(0)
    f, e = sod.Fmeasure(), sod.Emeasure()
    pairs = []
    for k in range(3):
        gt = np.zeros((40, 50), np.uint8)
        gt[5 + k:25, 10:30 + 3 * k] = 255
        m = np.clip(gt * 0.6 + rng.random(gt.shape) * 120, 0, 255).astype(np.uint8)
        f.step(pred=m, gt=gt)
        e.step(pred=m, gt=gt)
        pairs.append((m / 255.0, gt > 0))
    c = mean_curves(pairs)
    res_f, res_e = f.get_results(), e.get_results()
    np.testing.assert_allclose(c["f"], res_f["fm"]["curve"], atol=1e-12)
    np.testing.assert_allclose(c["precision"], res_f["pr"]["p"], atol=1e-12)
    np.testing.assert_allclose(c["recall"], res_f["pr"]["r"], atol=1e-12)
    np.testing.assert_allclose(c["e"], res_e["em"]["curve"], atol=1e-12)


def test_3d_overlays_use_the_slice_of_largest_gt_area_per_view(tmp_path):
    gt = np.zeros((6, 7, 8), np.uint8)
    gt[2, 1:6, 1:7] = 1  # the biggest axial slice: 5 x 6 at depth 2
    gt[1:5, 3, 2:4] = 1
    # hand counts: per depth d: d=2 -> 30 (+0: the bar at row 3 lies inside it), d=1,3,4 -> 2
    # per row h: h=3 -> 6 (slice 2) + 2*3 other depths = 12; other rows 1..5 -> 6
    # per column w: w=2,3 -> 5 (depth 2) + 3 = 8; other columns 1,4,5,6 -> 5
    assert largest_gt_slices(gt) == {0: 2, 1: 3, 2: 2}
    pred = np.roll(gt, 1, axis=2)
    views = overlay_views(np.arange(gt.size, dtype=float).reshape(gt.shape), gt, pred)
    assert [v[0] for v in views] == ["axial 2", "coronal 3", "sagittal 2"]
    np.testing.assert_array_equal(views[1][2], gt[:, 3, :])
    np.testing.assert_array_equal(views[2][3], pred[:, :, 2])
    path = plot_overlays([{"label": "best", "case": "v", "value": 0.5, "image": None, "gt": gt, "pred": pred}],
                         tmp_path / "o.png", "dice")
    height, width = np.asarray(Image.open(path)).shape[:2]
    assert width > 2 * height  # one row of three views


def test_run_without_metrics_names_the_command(run, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("metrics", "checkpoints"))
    with pytest.raises(UserError, match=re.escape(f"medseg evaluate {bare} --split test")):
        build_report([bare], tmp_path / "r.html")
    assert main(["report", str(bare), "--output", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "medseg evaluate" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_refuses_to_overwrite_without_flag(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("keep me")
    assert main(["report", str(run), "--output", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["report", str(run), "--output", str(out), "--overwrite", "--metric", "hd95"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and "ranking metric: hd95" in out.read_text()
    assert main(["report", str(run), "--output", str(out), "--overwrite", "--metric", "nope"]) == 1
    assert "valid: dice, iou, hd95" in capsys.readouterr().err


def test_comparison_hook_adds_its_fragment(run, tmp_path):
    hook = report_html.register_comparison(lambda sources: f"<p id='seed-hook'>{len(sources)} runs</p>")
    try:
        out = build_report([run, run / "metrics" / "per_case.csv"], tmp_path / "r.html")
        single = build_report([run], tmp_path / "one.html")
    finally:
        report_html._COMPARISON_HOOKS.remove(hook)
    comp = _section(out.read_text(), "comparison")
    assert "<p id='seed-hook'>2 runs</p>" in comp
    assert "seed-hook" not in single.read_text() and "give several run folders" in single.read_text()
