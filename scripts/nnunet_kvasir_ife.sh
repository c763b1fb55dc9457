#!/usr/bin/env bash
# nnU-Net 2D vs nnU-Net 2D + IFE (curvature) on Kvasir-SEG, one CPU thread, short fixed budget (issue 17;
# docs/nnunet.md, results in docs/results.md). Resumable: every step is skipped when its output exists.
#
#   scripts/nnunet_kvasir_ife.sh KVASIR_DIR WORK_DIR
#
# KVASIR_DIR holds images/ and masks/ (Kvasir-SEG); WORK_DIR gets nnUNet_raw/preprocessed/results, the test
# predictions, the per-case metrics and times.tsv (wall and CPU seconds of every step).
# Budget knobs (same for both arms): SIZE, SPLIT_SEED (the data split), SEED (training), EPOCHS x ITERS
# iterations of BATCH patches, VAL_ITERS;
# PREDICT_ARGS is passed to medseg nnunet predict (e.g. --no-mirroring). ARMS: trainers, one or both per call
# (two calls side by side train the arms in parallel, one thread each; the last call to finish compares).
set -euo pipefail
KVASIR=${1:?KVASIR_DIR}
WORK=${2:?WORK_DIR}
SIZE=${SIZE:-128} SPLIT_SEED=${SPLIT_SEED:-0} SEED=${SEED:-0} EPOCHS=${EPOCHS:-4} ITERS=${ITERS:-12} BATCH=${BATCH:-12} VAL_ITERS=${VAL_ITERS:-1}
PREDICT_ARGS=${PREDICT_ARGS:-}
ID=${ID:-517} NAME=${NAME:-KvasirSEG${SIZE}}
ARMS=${ARMS:-"nnUNetTrainer nnUNetTrainerIFECurvature"}
MEDSEG=${MEDSEG:-medseg}

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nnUNet_compile=false
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/pre nnUNet_results=$WORK/res
mkdir -p "$WORK"
TIMES=$WORK/times.tsv
[ -f "$TIMES" ] || printf 'step\twall_s\tuser_s\tsys_s\n' > "$TIMES"

timed() {  # timed STEP CMD...: run CMD, append its wall/user/sys seconds to times.tsv
  local step=$1; shift
  /usr/bin/time -f "$step\t%e\t%U\t%S" -a -o "$TIMES" "$@"
}

DS=Dataset$(printf %03d "$ID")_$NAME
if [ ! -f "$nnUNet_raw/$DS/dataset.json" ]; then
  timed convert "$MEDSEG" nnunet convert "$KVASIR" --dataset-id "$ID" --name "$NAME" --split random --seed "$SPLIT_SEED" \
    --size "$SIZE"
fi
if [ ! -d "$nnUNet_preprocessed/$DS/nnUNetPlans_2d" ]; then
  # nnUNet_n_proc_DA=1: the planner hands it to torch.set_num_threads (0 would fail there)
  nnUNet_n_proc_DA=1 timed plan_and_preprocess nnUNetv2_plan_and_preprocess -d "$ID" -c 2d -np 1 -npfp 1 \
    --verify_dataset_integrity > "$WORK/plan.log" 2>&1
fi

for arm in $ARMS; do
  fold=$nnUNet_results/$DS/${arm}__nnUNetPlans__2d/fold_0
  if [ ! -f "$fold/checkpoint_final.pth" ]; then
    # nnUNet_n_proc_DA=0: augmentation in the training process (one thread in all, seeded by --seed)
    nnUNet_n_proc_DA=0 timed "train_$arm" "$MEDSEG" nnunet train "$ID" 2d 0 --trainer "$arm" --device cpu \
      --epochs "$EPOCHS" --iterations "$ITERS" --val-iterations "$VAL_ITERS" --batch-size "$BATCH" --seed "$SEED" \
      --no-val > "$WORK/train_$arm.log" 2>&1
  fi
  pred=$WORK/pred_$arm
  if [ ! -f "$pred/.done" ]; then
    timed "predict_$arm" "$MEDSEG" nnunet predict "$ID" 2d -i "$nnUNet_raw/$DS/imagesTs" -o "$pred" -f 0 \
      --trainer "$arm" --device cpu --processes 0 $PREDICT_ARGS > "$WORK/predict_$arm.log" 2>&1
    touch "$pred/.done"
  fi
  if [ ! -f "$WORK/metrics_$arm.csv" ]; then
    timed "metrics_$arm" "$MEDSEG" metrics --pred "$pred" --gt "$nnUNet_raw/$DS/labelsTs" --metrics dice iou hd95 \
      --workers 1 --output "$WORK/metrics_$arm.csv" > "$WORK/metrics_$arm.txt" 2>&1
  fi
done

BASE=${BASE:-nnUNetTrainer} OTHER=${OTHER:-nnUNetTrainerIFECurvature}
[ -f "$WORK/metrics_$BASE.csv" ] && [ -f "$WORK/metrics_$OTHER.csv" ] || exit 0  # the other arm is still running
"$MEDSEG" compare "$WORK/metrics_$BASE.csv" "$WORK/metrics_$OTHER.csv" --metric dice --json "$WORK/compare_dice.json" \
  > "$WORK/compare_dice.txt" 2>&1
cat "$WORK/compare_dice.txt" "$TIMES"
