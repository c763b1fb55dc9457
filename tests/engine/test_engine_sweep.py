"""``medseg sweep``: one run folder per seed; a finished seed is skipped, an interrupted one resumed."""
from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from medseg.cli import main
from medseg.config import ConfigError, build_config
from medseg.engine import trainer as trainer_mod
from medseg.engine.sweep import check_seeds, sweep

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import tiny_raw  # noqa: E402


def test_sweep_skips_finished_seed_and_resumes_interrupted_one(tmp_path: Path, monkeypatch) -> None:
    raw = tiny_raw(epochs=1, max_steps_per_epoch=2)  # 8 training images, batch 4: two steps per run
    cfg = build_config(raw)
    parent = tmp_path / "sweep"
    steps: Counter[str] = Counter()
    real_step, real_stop = trainer_mod.Trainer._train_step, trainer_mod.Trainer._stop_everywhere

    def counting_step(self, *args, **kwargs):
        steps[self.run_dir.name] += 1
        return real_step(self, *args, **kwargs)

    def stop_seed1_after_first_step(self, stop):  # stands in for a Ctrl-C during seed 1
        return self.run_dir.name == "seed_1" or real_stop(self, stop)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", counting_step)
    monkeypatch.setattr(trainer_mod.Trainer, "_stop_everywhere", stop_seed1_after_first_step)
    logs: list[str] = []
    first = sweep(cfg, [0, 1], parent, log=logs.append)
    assert not first["complete"]
    assert steps == {"seed_0": 2, "seed_1": 1}
    assert (parent / "seed_0" / "metrics" / "summary.json").is_file()
    assert (parent / "seed_1" / "checkpoints" / "last.pt").is_file()
    assert not (parent / "seed_1" / "metrics" / "summary.json").exists()
    assert not (parent / "sweep_results.csv").exists()
    done_0 = (parent / "seed_0" / "metrics" / "per_case.csv").stat().st_mtime_ns

    monkeypatch.setattr(trainer_mod.Trainer, "_stop_everywhere", real_stop)
    steps.clear()
    logs.clear()
    second = sweep(cfg, [0, 1], parent, log=logs.append)
    assert second["complete"]
    assert steps == {"seed_1": 1}  # seed 0 not trained again; seed 1 trained only its missing step
    assert any("seed_0: complete, skipped" in line for line in logs)
    assert any("seed_1: resuming" in line for line in logs)
    assert (parent / "seed_0" / "metrics" / "per_case.csv").stat().st_mtime_ns == done_0
    for seed in (0, 1):
        run_cfg = yaml.safe_load((parent / f"seed_{seed}" / "config.yaml").read_text())
        assert run_cfg["train"]["seed"] == seed and run_cfg["name"] == f"tiny_seed{seed}"
        assert run_cfg["data"]["synthetic"]["seed"] == 1  # the data (and its split) is the same for every seed
    with (parent / "sweep_results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["seed"] for r in rows] == ["0", "1", "mean", "sd", "ci95_low", "ci95_high"]
    d0, d1 = float(rows[0]["dice"]), float(rows[1]["dice"])
    assert float(rows[2]["dice"]) == pytest.approx((d0 + d1) / 2, rel=1e-5)
    assert float(rows[3]["dice"]) == pytest.approx(abs(d0 - d1) / 2 ** 0.5, rel=1e-4, abs=1e-6)  # sd, n = 2


def test_check_seeds_rejects_repeats_and_empty(tmp_path: Path, capsys) -> None:
    assert check_seeds([2, 0]) == [2, 0]
    with pytest.raises(ConfigError, match=r"\[1\] given twice"):
        check_seeds([0, 1, 1])
    with pytest.raises(ConfigError, match="at least one seed"):
        check_seeds([])
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(epochs=1)))
    assert main(["sweep", str(config), "--seeds", "0", "0", "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "given twice" in err
    assert not (tmp_path / "out").exists()  # nothing written before the seeds are checked
