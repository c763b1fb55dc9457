#!/usr/bin/env bash
# UNet vs UNet+C vs UNet+E on Kvasir-SEG (IFE paper's comparison, CPU-sized): train, test, paired t-test.
# Usage: bash scripts/ife_kvasir_cpu.sh [OUT_DIR]   (about an hour on 2 CPU cores)
set -euo pipefail
OUT=${1:-runs/ife_kvasir}
RECIPE=src/medseg/recipes/cpu/ife_kvasir_unet.yaml
MEDSEG=${MEDSEG:-medseg}
run() {  # name, extra --set arguments
  local name=$1; shift
  if [ ! -f "$OUT/$name/metrics/summary.json" ]; then
    if [ -f "$OUT/$name/checkpoints/last.pt" ]; then
      $MEDSEG train --resume "$OUT/$name" || true
    else
      $MEDSEG train "$RECIPE" --output "$OUT/$name" "$@"
    fi
    $MEDSEG evaluate "$OUT/$name" --split test
  fi
}
run unet
run unet_c --set model.kwargs.ife=curvature --set 'model.kwargs.ife_ratio=[0.75, 0.5]'
run unet_e --set model.kwargs.ife=entropy --set 'model.kwargs.ife_ratio=[0.5, 0.5]'
for v in unet_c unet_e; do
  $MEDSEG compare "$OUT/unet/metrics/per_case.csv" "$OUT/$v/metrics/per_case.csv" --metric dice
done
