"""``medseg report`` over sweep folders: inputs with the same name (``a/seed_0``, ``b/seed_0``) stay apart."""
from __future__ import annotations

import csv
from pathlib import Path

from medseg.report import html as report_html
from medseg.report.html import build_report


def _table(path: Path, dice: list[float]) -> Path:
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "dataset", "dice"])
        w.writerows([f"c{i}", "kvasir", d] for i, d in enumerate(dice))
    return path


def test_same_folder_names_keep_one_bar_and_column_each(tmp_path, monkeypatch):
    a = _table(tmp_path / "unet" / "seed_0.csv", [0.2, 0.4])       # mean 0.3
    b = _table(tmp_path / "unet_e" / "seed_0.csv", [0.8, 0.6])     # mean 0.7
    seen = {}
    real = report_html.figs.plot_group_bars

    def spy(per_run, *args, **kw):
        seen.update(per_run)
        return real(per_run, *args, **kw)

    monkeypatch.setattr(report_html.figs, "plot_group_bars", spy)
    text = build_report([a, b], tmp_path / "r.html", metric="dice").read_text()
    assert sorted(seen) == ["unet/seed_0", "unet_e/seed_0"]          # one bar per input, none overwritten
    assert "0.3000 ± 0.1414 (n=2)" in text and "0.7000 ± 0.1414 (n=2)" in text   # hand-worked mean ± sd
    assert "unet/seed_0" in text and "unet_e/seed_0" in text
