#!/usr/bin/env bash
# CWCD Table 1 on the local BraTS copy (issue 14): CE + Dice (cedl) vs CWCD (cwcd) vs generalised Dice (gdl), 3-D
# U-Net with BatchNorm, identical seed, split and schedule (src/medseg/recipes/cwcd/table1_brats_cpu_compare.yaml),
# on one CPU thread; then evaluation of the last checkpoint on the three test volumes (WT/TC/ET DSC and HD95), the
# per-region paired comparison (medseg compare --arm) and the markdown tables of docs/results.md (OUT/tables.md,
# every number read from the runs' output files).
# Usage: bash scripts/cwcd_brats_cpu.sh [OUT_DIR]      (default runs/cwcd_brats_cpu; run it again to resume)
#        DATA=/path/to/brats2015-deepmedic bash scripts/cwcd_brats_cpu.sh   (default ../shared/data/brats2015-deepmedic)
# Measured (docs/results.md, issue 14): 53 min for the three arms with evaluation on one thread of a loaded 2-core
# machine, 11-23 min per arm (training 8-18 min, evaluation of 3 volumes 1.5-5 min), depending on the load.
# An arm is skipped when its metrics/summary.json exists, resumed (medseg train --resume) when it has
# checkpoints/last.pt with fewer epochs logged than the recipe's, and evaluated when trained but not scored.
set -euo pipefail
OUT=${1:-runs/cwcd_brats_cpu}
RECIPE=src/medseg/recipes/cwcd/table1_brats_cpu_compare.yaml
DATA=${DATA:-../shared/data/brats2015-deepmedic}
MEDSEG=${MEDSEG:-medseg}
PYTHON=${PYTHON:-python}
ARMS="cedl cwcd gdl"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$OUT"
# the split (case ids of ../shared/data/brats2015-deepmedic): DeepMedic's test pair plus pat0003 as test; val is a
# training case scored once after the last epoch (the trainer needs a val split), so no checkpoint is selected
[ -f "$OUT/split.json" ] || cat > "$OUT/split.json" <<'JSON'
{"train": ["brats_2013_pat0004_1", "brats_2013_pat0005_1", "brats_2013_pat0006_1"],
 "val": ["brats_2013_pat0004_1"],
 "test": ["brats_2013_pat0001_1", "brats_2013_pat0002_1", "brats_2013_pat0003_1"]}
JSON
stamp() { echo "$1 $2 $(date -u +%Y-%m-%dT%H:%M:%SZ) $(date +%s)" >> "$OUT/times.txt"; }  # arm stage start|end
trained() {  # 0 when the run logged as many epochs as its config asks for
  $PYTHON - "$1" <<'PY'
import csv, sys, yaml
from pathlib import Path
run = Path(sys.argv[1])
want = yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"]
with (run / "logs" / "epochs.csv").open() as f:
    sys.exit(0 if len(list(csv.DictReader(f))) >= want else 1)
PY
}
for arm in $ARMS; do
  run="$OUT/$arm"
  [ -f "$run/metrics/summary.json" ] && { echo "$arm: evaluated, skipped"; continue; }
  if [ ! -f "$run/checkpoints/last.pt" ]; then
    stamp "$arm" train_start
    $MEDSEG train "$RECIPE" --output "$run" --set name="$arm" --set loss="$arm" --set data.root="$DATA" \
      --set data.split.file="$OUT/split.json" --set train.device=cpu
    stamp "$arm" train_end
  elif ! trained "$run"; then
    stamp "$arm" resume_start
    $MEDSEG train --resume "$run"
    stamp "$arm" resume_end
  fi
  trained "$run" || { echo "$arm: training stopped early; run this script again" >&2; exit 3; }
  stamp "$arm" eval_start
  $MEDSEG evaluate "$run" --checkpoint last
  stamp "$arm" eval_end
done
runs() { for a in "$@"; do echo "--arm $a $OUT/$a"; done; }
for metric in dice hd95; do
  # shellcheck disable=SC2046
  $MEDSEG compare $(runs cedl cwcd gdl) --metric $metric --json "$OUT/compare_$metric.json" \
    | tee "$OUT/compare_$metric.txt"
  # shellcheck disable=SC2046
  $MEDSEG compare $(runs cwcd gdl) --metric $metric --json "$OUT/compare_${metric}_gdl_vs_cwcd.json" \
    | tee "$OUT/compare_${metric}_gdl_vs_cwcd.txt"
done
$PYTHON - "$OUT" > "$OUT/tables.md" <<'PY'
"""Markdown tables of the comparison, read from its output files (per_case.csv, epochs.csv, env.json, times.txt,
split.json, compare_*.json)."""
import csv
import json
import sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
arms = {"cedl": "CE + Dice", "cwcd": "CWCD", "gdl": "GDL"}
regions = ("WT", "TC", "ET")


def rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def fp(p):
    return "n/a" if p is None else (f"{p:.2g}" if p >= 0.001 else f"{p:.1e}")


def mean(xs):
    return sum(xs) / len(xs)


def sd(xs):
    m = mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else float("nan")


split = json.loads((out / "split.json").read_text())
print("Split (split.json; test ids as scored in each run's metrics/per_case.csv):", ", ".join(
    f"{k} {' '.join(v)}" for k, v in split.items()), "\n")
stamps = {}
for line in (out / "times.txt").read_text().split("\n"):
    if line.strip():
        arm, stage, _, secs = line.split()
        stamps.setdefault(arm, {})[stage] = int(secs)
cfg = yaml.safe_load((out / "cedl" / "config.yaml").read_text())
n, t = cfg["data"]["nifti"], cfg["train"]
print(f"Schedule (config.yaml): {t['epochs']} epochs x {len(split['train']) * n['samples_per_volume']} patches of "
      f"{n['patch_size']} (batch {cfg['data']['batch_size']}), lr {cfg['optim']['lr']} halved every "
      f"{cfg['schedule']['step_size']} epochs, seed {t['seed']}, model {cfg['model']}\n")
print("| arm | loss | training (s, sum of epochs.csv) | train wall (min) | evaluation wall (min) "
      "| last-epoch train loss | val Dice after the last epoch (training case) | device (env.json) |")
print("|---|---|---|---|---|---|---|---|")
per_case = {}
for arm, label in arms.items():
    run = out / arm
    ep = rows(run / "logs" / "epochs.csv")
    env = json.loads((run / "env.json").read_text())
    st = stamps.get(arm, {})
    train_wall = sum(st[f"{k}_end"] - st[f"{k}_start"] for k in ("train", "resume") if f"{k}_end" in st) / 60
    eval_wall = (st["eval_end"] - st["eval_start"]) / 60 if "eval_end" in st else float("nan")
    print(f"| {arm} | {label} | {sum(float(r['train_time_s']) for r in ep):.0f} | {train_wall:.1f} | {eval_wall:.1f} | "
          f"{float(ep[-1]['train_loss']):.4f} | {float(ep[-1]['val_dice']):.4f} | {env['device']}, "
          f"{env['cpu_threads']} thread |")
    per_case[arm] = rows(run / "metrics" / "per_case.csv")
print("\nTest volumes: mean (sd) over the volumes of DSC and HD95 (mm) per region (metrics/per_case.csv):\n")
print("| arm | n | DSC WT | DSC TC | DSC ET | HD95 WT | HD95 TC | HD95 ET |")
print("|---|---|---|---|---|---|---|---|")
for arm, pc in per_case.items():
    cells = [f"{mean(v):.3f} ({sd(v):.3f})" for v in ([float(r[f"dice_{g}"]) for r in pc] for g in regions)]
    cells += [f"{mean(v):.1f} ({sd(v):.1f})" for v in ([float(r[f"hd95_{g}"]) for r in pc] for g in regions)]
    print(f"| {arms[arm]} | {len(pc)} | " + " | ".join(cells) + " |")
print("\nPer test volume:\n")
print("| case | arm | DSC WT | DSC TC | DSC ET | HD95 WT | HD95 TC | HD95 ET |")
print("|---|---|---|---|---|---|---|---|")
for case in [r["case"] for r in per_case["cedl"]]:
    for arm, pc in per_case.items():
        r = next(r for r in pc if r["case"] == case)
        print(f"| {case} | {arms[arm]} | " + " | ".join(f"{float(r[f'dice_{g}']):.3f}" for g in regions) + " | "
              + " | ".join(f"{float(r[f'hd95_{g}']):.1f}" for g in regions) + " |")
print("\nPaired tests over the test volumes (medseg compare, compare_*.json): difference of the means (arm minus "
      "baseline), paired t-test p and Wilcoxon signed-rank p; n = number of volumes. One seed per arm: no seed-level "
      "test is possible.\n")
print("| metric | region | comparison | difference | n | paired t p | Wilcoxon p |")
print("|---|---|---|---|---|---|---|")
for metric in ("dice", "hd95"):
    for stem in (f"compare_{metric}", f"compare_{metric}_gdl_vs_cwcd"):
        r = json.loads((out / f"{stem}.json").read_text())
        for block in [r["overall"]] + r["per_class"]:
            region = block["column"].split("_")[-1] if "_" in block["column"] else "mean of WT, TC, ET"
            for other, tst in block["tests"].items():
                i = tst["per_image"]
                print(f"| {'DSC' if metric == 'dice' else 'HD95 (mm)'} | {region} | {arms[other]} − "
                      f"{arms[block['baseline']]} | {i['mean_difference']:+.{3 if metric == 'dice' else 1}f} | "
                      f"{i['n']} | {fp(i['t_p'])} | "
                      f"{fp(i['wilcoxon_p'])} |")
PY
cat "$OUT/tables.md"
