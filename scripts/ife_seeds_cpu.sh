#!/usr/bin/env bash
# IFE seed study on Kvasir-SEG (issue 15): training seeds x {UNet, UNet+C, UNet+E} on one CPU thread, then the
# seed-level comparison (medseg compare --arm), the HTML report (medseg report) and the markdown tables of
# docs/results.md (OUT/tables.md, every number read from the runs' output files).
# Usage: bash scripts/ife_seeds_cpu.sh [OUT_DIR]      (default runs/ife_seeds; run it again to resume)
#        SEEDS="0 1" bash scripts/ife_seeds_cpu.sh     (fewer seeds; default "0 1 2")
# About 4 min per run on an idle core (9 runs: ~40 min), 6-10 min per run on a loaded one.
# Seeds are run round by round (seed 0 of every arm, then seed 1, ...), so a study stopped between rounds has the
# same seeds in every arm; `medseg sweep` skips finished seeds and resumes an interrupted one.
set -euo pipefail
OUT=${1:-runs/ife_seeds}
SEEDS=${SEEDS:-0 1 2}
RECIPE=src/medseg/recipes/cpu/ife_kvasir_seeds.yaml
MEDSEG=${MEDSEG:-medseg}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$OUT"
arm_sets() {  # the --set arguments of one arm (the paper's best ratios, Table 2)
  case $1 in
    unet) echo "--set model.kwargs.ife=null" ;;
    unet_c) echo "--set model.kwargs.ife=curvature" ;;
    unet_e) echo "--set model.kwargs.ife=entropy" ;;
  esac
}
ratio() { case $1 in unet_e) echo "model.kwargs.ife_ratio=[0.5, 0.5]" ;; *) echo "model.kwargs.ife_ratio=[0.75, 0.5]" ;; esac; }
round=""
for seed in $SEEDS; do
  round="$round $seed"
  for arm in unet unet_c unet_e; do
    # shellcheck disable=SC2046,SC2086
    $MEDSEG sweep "$RECIPE" --seeds $round --output "$OUT/$arm" $(arm_sets $arm) --set "$(ratio $arm)"
  done
done
runs() { for s in $SEEDS; do echo "$OUT/$1/seed_$s"; done; }
for metric in dice iou; do
  # shellcheck disable=SC2046
  $MEDSEG compare --arm unet $(runs unet) --arm unet_c $(runs unet_c) --arm unet_e $(runs unet_e) \
    --metric $metric --json "$OUT/compare_$metric.json" | tee "$OUT/compare_$metric.txt"
done
# shellcheck disable=SC2046
$MEDSEG compare --arm unet_c $(runs unet_c) --arm unet_e $(runs unet_e) --metric dice \
  --json "$OUT/compare_dice_e_vs_c.json" | tee "$OUT/compare_dice_e_vs_c.txt"
# shellcheck disable=SC2046
$MEDSEG report $(runs unet) $(runs unet_c) $(runs unet_e) --metric dice --overwrite \
  --title "IFE seed study, Kvasir-SEG (UNet / UNet+C / UNet+E, seeds $SEEDS)" --output "$OUT/report.html"
$PYTHON - "$OUT" $SEEDS > "$OUT/tables.md" <<'PY'
"""Markdown tables of the study, read from its output files (summary.json, logs, compare_*.json)."""
import csv
import json
import sys
from datetime import datetime
from pathlib import Path

out, seeds = Path(sys.argv[1]), sys.argv[2:]
names = {"unet": "UNet", "unet_c": "UNet+C", "unet_e": "UNet+E"}


def f4(x):
    return "n/a" if x is None else f"{x:.4f}"


def fp(p):
    return "n/a" if p is None else (f"{p:.2g}" if p >= 0.001 else f"{p:.1e}")


print("Per run (test set, 100 images, mean over images; best-validation-Dice checkpoint):\n")
print("| arm | seed | test Dice | test IoU | best epoch, 0-based (val Dice) | training (s) | wall incl. evaluation (min) |")
print("|---|---|---|---|---|---|---|")
for arm, label in names.items():
    for seed in seeds:
        run = out / arm / f"seed_{seed}"
        summary = run / "metrics" / "summary.json"
        m = json.loads(summary.read_text())["metrics"]
        tr = json.loads((run / "metrics" / "train_result.json").read_text())
        with (run / "logs" / "epochs.csv").open() as f:
            secs = sum(float(r["train_time_s"]) for r in csv.DictReader(f))
        start = datetime.strptime(json.loads((run / "env.json").read_text())["time"], "%Y-%m-%dT%H:%M:%S%z")
        wall = (summary.stat().st_mtime - start.timestamp()) / 60
        print(f"| {label} | {seed} | {f4(m['dice']['mean'])} | {f4(m['iou']['mean'])} | {tr['best_epoch']} "
              f"({f4(tr['best_metric'])}) | {secs:.0f} | {wall:.1f} |")
for stem in ("compare_dice", "compare_iou", "compare_dice_e_vs_c"):
    r = json.loads((out / f"{stem}.json").read_text())
    ov, metric = r["overall"], r["metric"]
    if stem != "compare_dice_e_vs_c":
        print(f"\nTest {metric} per arm: mean over seeds of each run's mean over images, sd over seeds, 95% Student-t CI:\n")
        print("| arm | seeds | per seed | mean | sd | 95% CI |")
        print("|---|---|---|---|---|---|")
        for name, a in ov["arms"].items():
            per = ", ".join(f"{v:.4f}" for v in a["seeds"].values())
            print(f"| {names[name]} | {a['n']} | {per} | {f4(a['mean'])} | {f4(a['sd'])} | {f4(a['low'])} .. {f4(a['high'])} |")
    print(f"\n| {metric} | seed-level difference | seed-level test | per-image difference (seed-averaged) "
          "| per-image paired t | Wilcoxon | d_z |")
    print("|---|---|---|---|---|---|---|")
    for other, t in ov["tests"].items():
        s, i = t["seed_level"], t["per_image"]
        seed = (f"{s['test']}, t = {s['statistic']:.2f}, df = {s['df']:.0f}, p = {fp(s['p'])}" if s["test"]
                else s["reason"])
        print(f"| {names[other]} − {names[ov['baseline']]} | {s['mean_difference']:+.4f} | {seed} | "
              f"{i['mean_difference']:+.4f} (n = {i['n']}) | t = {i['t']:.2f}, p = {fp(i['t_p'])} | "
              f"p = {fp(i['wilcoxon_p'])} | {i['cohens_dz']:.2f} |")
PY
cat "$OUT/tables.md"
