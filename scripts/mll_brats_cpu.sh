#!/usr/bin/env bash
# MLL vs Dice-only, coarse-to-fine, on the six BraTS volumes of ../shared/data/brats2015-deepmedic (issue 13).
#
# Trains src/medseg/recipes/mll/brats_tc_cpu.yaml (MLL) and brats_tc_cpu_dice.yaml (Dice only) on folds 0, 1, 2
# (3 folds per volume over the sorted case ids: fold k holds out cases k and k+3), interleaved (fold 0 MLL,
# fold 0 Dice, fold 1 MLL, ...) so that an interrupted run leaves both arms with the same folds; scores each
# fold's two held-out volumes with Algorithm 1 (`medseg c2f evaluate`: DSC, HD95 in mm, rounds) and writes
# the per-volume table and the paired tests from the files the runs wrote.
#
# Resumable: a fold whose run exists is resumed (`--resume`; a finished one returns at once), a fold already
# scored (eval_cases.csv) is not scored again; rerun the script after an interruption.
#
#   OMP_NUM_THREADS=1 nohup scripts/mll_brats_cpu.sh > /tmp/mll_brats.log 2>&1 &
#
# Output (OUT, default runs/mll_brats): <name>_fold<k>/axial/ (checkpoints, logs), <name>_fold<k>/eval_cases.csv,
# recipes/ (the per-fold recipes), timing.csv (wall seconds per step), table.md (per-volume table + tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1
PY="${PY:-.venv/bin/python}"
OUT="${OUT:-runs/mll_brats}"
FOLDS="${FOLDS:-0 1 2}"
ARMS="brats_tc_cpu brats_tc_cpu_dice"
mkdir -p "$OUT/recipes"
[ -f "$OUT/timing.csv" ] || echo "arm,fold,what,seconds" > "$OUT/timing.csv"

fold_recipe() {  # fold_recipe ARM FOLD -> path of the per-fold recipe (name <name>_fold<k>, data.split.fold k)
    local src="src/medseg/recipes/mll/$1.yaml" dst="$OUT/recipes/$1_fold$2.yaml"
    "$PY" - "$src" "$dst" "$2" <<'EOF'
import sys, yaml
src, dst, fold = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = yaml.safe_load(open(src))
raw["name"] = f"{raw['name']}_fold{fold}"
raw["data"]["split"]["fold"] = fold
text = yaml.safe_dump(raw, sort_keys=False)
try:
    old = open(dst).read()
except OSError:
    old = None
if old != text:
    if old is not None:
        sys.exit(f"{dst} differs from {src} at fold {fold}; delete {dst} and its run to start that fold again")
    open(dst, "w").write(text)
print(raw["name"], raw["train"]["epochs"])
EOF
}

timed() {  # timed ARM FOLD WHAT CMD...
    local arm=$1 fold=$2 what=$3 t0 t1
    shift 3
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    echo "$arm,$fold,$what,$(echo "$t1 - $t0" | bc)" >> "$OUT/timing.csv"
}

for fold in $FOLDS; do
    for arm in $ARMS; do
        read -r name epochs < <(fold_recipe "$arm" "$fold")
        recipe="$OUT/recipes/${arm}_fold$fold.yaml"
        run="$OUT/$name"
        echo "== $(date -u +%H:%M:%S) $arm fold $fold -> $run"
        done_epochs=0
        if [ -f "$run/axial/logs/epochs.csv" ]; then
            done_epochs=$(( $(wc -l < "$run/axial/logs/epochs.csv") - 1 ))
        fi
        if [ "$done_epochs" -ge "$epochs" ]; then
            echo "   trained ($done_epochs epochs)"
        elif [ -f "$run/axial/checkpoints/last.pt" ]; then
            timed "$arm" "$fold" train "$PY" -m medseg c2f train "$recipe" --output "$OUT" --resume
        else
            timed "$arm" "$fold" train "$PY" -m medseg c2f train "$recipe" --output "$OUT"
        fi
        if [ ! -f "$run/eval_cases.csv" ]; then
            timed "$arm" "$fold" evaluate "$PY" -m medseg c2f evaluate --run "$run"
        fi
    done
done

echo "== $(date -u +%H:%M:%S) tables"
"$PY" - "$OUT" <<'EOF'
"""Per-volume table and paired tests from the eval_cases.csv / epochs.csv / timing.csv files the runs wrote."""
import csv, glob, os, sys
import numpy as np
from scipy import stats

out = sys.argv[1]
arms = {"MLL": "mll_brats_tc_cpu", "Dice-only": "dice_brats_tc_cpu"}
rows = {}
for arm, prefix in arms.items():
    for path in sorted(glob.glob(f"{out}/{prefix}_fold*/eval_cases.csv")):
        fold = path.split("_fold")[1].split("/")[0]
        for r in csv.DictReader(open(path)):
            rows.setdefault(r["case"], {"fold": fold})[arm] = r
cases = [c for c in sorted(rows) if all(a in rows[c] for a in arms)]
lines = ["| case | fold | GT voxels | MLL DSC | MLL HD95 mm | MLL rounds | Dice-only DSC | Dice-only HD95 mm | "
         "Dice-only rounds |", "|---|---|---|---|---|---|---|---|---|"]
for c in cases:
    m, d = rows[c]["MLL"], rows[c]["Dice-only"]
    lines.append(f"| {c} | {rows[c]['fold']} | {m['gt_voxels']} | {float(m['dice']):.3f} | {float(m['hd95_mm']):.1f} | "
                 f"{m['rounds']} | {float(d['dice']):.3f} | {float(d['hd95_mm']):.1f} | {d['rounds']} |")
if cases:
    def col(arm, key):
        return np.array([float(rows[c][arm][key]) for c in cases])
    stats_line = "| **mean ± sd (%d)** | | |" % len(cases)
    for arm in arms:
        dsc, hd, rnd = col(arm, "dice"), col(arm, "hd95_mm"), col(arm, "rounds")
        stats_line += f" **{dsc.mean():.3f} ± {dsc.std(ddof=1) if len(dsc) > 1 else 0:.3f}** | {hd.mean():.1f} " \
                      f"(median {np.median(hd):.1f}) | {rnd.mean():.2f} |"
    lines.append(stats_line)
    lines.append("")
    for key, label in (("dice", "DSC"), ("hd95_mm", "HD95 mm")):
        a, b = col("MLL", key), col("Dice-only", key)
        diff = a - b
        text = f"{label}: mean difference MLL - Dice-only {diff.mean():+.4f} (MLL higher on {int((diff > 0).sum())}, " \
               f"lower on {int((diff < 0).sum())}, equal on {int((diff == 0).sum())} of {len(diff)})"
        if len(diff) >= 2 and np.any(diff != 0):
            w = stats.wilcoxon(a, b)
            t = stats.ttest_rel(a, b)
            text += f"; Wilcoxon signed-rank p = {w.pvalue:.3f}, paired t-test p = {t.pvalue:.3f}"
        lines.append(text)
        lines.append("")
lines.append("| arm | fold | epochs | steps/epoch | train time s (sum of epochs.csv train_time_s) | final train loss |")
lines.append("|---|---|---|---|---|---|")
for arm, prefix in arms.items():
    for path in sorted(glob.glob(f"{out}/{prefix}_fold*/axial/logs/epochs.csv")):
        ep = list(csv.DictReader(open(path)))
        fold = path.split("_fold")[1].split("/")[0]
        steps = sum(1 for _ in open(os.path.join(os.path.dirname(path), "steps.jsonl"))) // max(len(ep), 1)
        lines.append(f"| {arm} | {fold} | {len(ep)} | {steps} | {sum(float(e['train_time_s']) for e in ep):.0f} | "
                     f"{float(ep[-1]['train_loss']):.4f} |")
lines.append("")
lines.append("| arm | fold | what | wall s |")
lines.append("|---|---|---|---|")
for r in csv.DictReader(open(f"{out}/timing.csv")):
    lines.append(f"| {r['arm']} | {r['fold']} | {r['what']} | {float(r['seconds']):.0f} |")
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "== $(date -u +%H:%M:%S) done: $OUT/table.md"
