#!/usr/bin/env bash
# The shipped `default` (v2, and v3 = v2 + steps 9-10) and `large` v2: the split, the training runs, shipping, and
# every figure of the model card. From scratch, the shipped pair: DISTILL=1 DISTILL_MORE=1 LARGE=1 experiments/default_v2/run.sh
# CPU-sized (2 cores, AVX-512 BF16: channels-last + bf16 autocast, ~12-25 min per epoch); EXTRA='--device cuda'
# on a GPU. Each step is skipped when its output exists, so the script resumes (train itself with --resume).
#   experiments/default_v2/run.sh            # from the repository root, ../shared/data beside it
#   BASE=0 DISTILL=1 experiments/default_v2/run.sh   # only an optional step (7 CONTINUE, 8 LARGE, 9 DISTILL,
#                                                    # 10 DISTILL_MORE, 11 DISTILL_LONGER)
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/v2}
EPOCHS=${EPOCHS:-6}
EXTRA=${EXTRA:-}
PY=${PY:-python}
W=src/dfdetect/weights
mkdir -p "$OUT"

# 1. One manifest over the three folders; the v1 split's images keep their side (v1 models never saw a test image).
[ -f "$W/split.csv" ] || $PY -m dfdetect split -d "$DATA/faces140k-subset" -d "$DATA/faces140k-more" \
    -d "$DATA/lfw-faceswap" --keep "$W/split-v1.csv" -o "$W/split.csv"

# Steps 2-6 make and publish `default` v2; BASE=0 skips them (to run only an optional step 7-10, which start from
# the shipped weights: e.g. `BASE=0 DISTILL=1 experiments/default_v2/run.sh`).
if [ "${BASE:-1}" = 1 ]; then
# 2. Fine-tune the v1 default (256 px EfficientNet-Lite0, trained on v1's train split only) on the new train split.
#    v1's weights come from the commit that shipped them (today's default.safetensors is v2).
V1=$OUT/default-v1.safetensors
[ -f "$V1" ] || git show a14453b:src/dfdetect/weights/default.safetensors > "$V1"
if [ ! -f "$OUT/ft15k/summary.json" ]; then
  if [ -f "$OUT/ft15k/last.pt" ]; then
    $PY -m dfdetect train --resume "$OUT/ft15k"
  else
    # shellcheck disable=SC2086
    $PY -m dfdetect train --data "$DATA" --manifest "$W/split.csv" --model efficientnet_lite0 \
      --weights "$V1" --img-size 256 --resize 256 --warmup-epochs 0 --epochs "$EPOCHS" \
      --lr 2e-4 --scheduler cosine --label-smoothing 0.1 --batch-size 32 --jpeg-prob 0.2 --blur-prob 0.1 \
      --ema 0.998 --early-stopping 0 --threshold eer --bootstrap 200 --workers 1 --cache --seed 0 \
      --out "$OUT" --name ft15k $EXTRA
  fi
fi

# 3. Ship the best epoch (by validation AUC) as `default` v2: threshold = EER point on validation, ONNX export.
#    (The session that made v2 stopped the 6-epoch run after epoch 3 for time; its best.pt is what ships.)
python scripts/ship_default.py "$OUT/ft15k/best.pt" --manifest "$W/split.csv" --data "$DATA" \
    --threshold eer --name default --version v2

# 4. The model card's figures: test split, every folder and the 140k part, 95% bootstrap CIs (1000 resamples).
$PY -m dfdetect evaluate "$W/default.onnx" --data "$DATA" --manifest "$W/split.csv" --split test \
    --part faces140k=faces140k-subset+faces140k-more --out "$OUT/eval_default" --backend onnx
$PY -m dfdetect evaluate "$W/large.onnx" --data "$DATA" --manifest "$W/split.csv" --split test \
    --part faces140k=faces140k-subset+faces140k-more --out "$OUT/eval_large" --backend onnx

# 5. Robustness sweep on a stratified 600-image sample of the test split (every folder and class in proportion).
$PY - "$W/split.csv" "$OUT/robustness600.csv" "$DATA" <<'PY'
import sys
from dfdetect.data.datasets import read_manifest, write_manifest
from dfdetect.data.split import subsample
write_manifest(subsample(read_manifest(sys.argv[1]), 600, "test", seed=0), sys.argv[2], sys.argv[3])
PY
$PY -m dfdetect robustness "$W/default.onnx" --data "$DATA" --manifest "$OUT/robustness600.csv" --split test \
    --backend onnx --out "$OUT/robustness_default"

# 6. The learning curve (cheaper recipe: 128 px, ImageNet init, ~8k images seen per size).
$PY experiments/learning_curve/run.py --manifest "$W/split.csv" --data "$DATA" --out runs/learning_curve
fi  # BASE

# 7. (optional, CONTINUE=1) The second half of the stopped 6-epoch schedule, continued from the shipped v2 weights
#    (the stopped run's optimizer state was lost with its machine): 3 epochs, cosine from lr 1e-4, fp32
#    channels-last (--no-amp: on a Sapphire Rapids CPU bf16 autocast trained slower than fp32, README).
if [ "${CONTINUE:-0}" = 1 ] && [ ! -f "$OUT/ft15k-cont/summary.json" ]; then
  cp "$W/default.safetensors" "$OUT/default-v2.safetensors"
  # shellcheck disable=SC2086
  $PY -m dfdetect train --data "$DATA" --manifest "$W/split.csv" --model efficientnet_lite0 \
    --weights "$OUT/default-v2.safetensors" --img-size 256 --resize 256 --warmup-epochs 0 --epochs "${CONTINUE_EPOCHS:-3}" \
    --lr 1e-4 --scheduler cosine --label-smoothing 0.1 --batch-size 32 --jpeg-prob 0.2 --blur-prob 0.1 \
    --ema 0.998 --early-stopping 0 --threshold eer --bootstrap 200 --workers 1 --cache --seed 1 \
    --out "$OUT" --name ft15k-cont --no-amp $EXTRA
fi

# 8. (optional, LARGE=1) `large` v2: the shipped v2 weights fine-tuned at 320 px (the 256 px crops upscaled, as
#    `large` v1 was) on the same train split, 2 epochs (LARGE_EPOCHS), cosine from lr 1e-4, fp32 channels-last. Shipped as `large`
#    only if its validation AUC beats v2's; the speed bar does not apply to `large`. (Step 4's `large` line then
#    evaluates v2 too; v1's figures are in the model card.)
if [ "${LARGE:-0}" = 1 ]; then
  cp -n "$W/default.safetensors" "$OUT/default-v2.safetensors" 2>/dev/null || true
  if [ ! -f "$OUT/large320/summary.json" ]; then
    if [ -f "$OUT/large320/last.pt" ]; then
      $PY -m dfdetect train --resume "$OUT/large320"
    else
      # shellcheck disable=SC2086
      $PY -m dfdetect train --data "$DATA" --manifest "$W/split.csv" --model efficientnet_lite0 \
        --weights "$OUT/default-v2.safetensors" --img-size 320 --resize 320 --warmup-epochs 0 --epochs "${LARGE_EPOCHS:-2}" \
        --lr 1e-4 --scheduler cosine --label-smoothing 0.1 --batch-size 32 --jpeg-prob 0.2 --blur-prob 0.1 \
        --ema 0.998 --early-stopping 0 --threshold eer --bootstrap 200 --workers 1 --cache --seed 2 \
        --out "$OUT" --name large320 --no-amp $EXTRA
    fi
  fi
  python scripts/ship_default.py "$OUT/large320/best.pt" --manifest "$W/split.csv" --data "$DATA" \
      --threshold eer --name large --version v2
  $PY -m dfdetect evaluate "$W/large.onnx" --data "$DATA" --manifest "$W/split.csv" --split test \
      --part faces140k=faces140k-subset+faces140k-more --out "$OUT/eval_large_v2" --backend onnx
fi

# Steps 9-10: the 256 px network trained with a 0.7 x KL term to `large` v2's softmax on the same augmented batch
# (re-rendered at 320 px). distill NAME INIT EPOCHS LR SEED resumes NAME when its last.pt exists.
distill() {
  cp -n "$W/large.safetensors" "$OUT/large-v2.safetensors" 2>/dev/null || true
  [ -f "$OUT/$1/summary.json" ] && return 0
  if [ -f "$OUT/$1/last.pt" ]; then
    $PY -m dfdetect train --resume "$OUT/$1"
    return
  fi
  # shellcheck disable=SC2086
  $PY -m dfdetect train --data "$DATA" --manifest "$W/split.csv" --model efficientnet_lite0 \
    --weights "$2" --teacher "$OUT/large-v2.safetensors" --distill-alpha 0.7 \
    --distill-temperature 1 --img-size 256 --resize 256 --warmup-epochs 0 --epochs "$3" \
    --lr "$4" --scheduler cosine --label-smoothing 0.1 --batch-size 32 --jpeg-prob 0.2 --blur-prob 0.1 \
    --ema 0.998 --early-stopping 0 --threshold eer --bootstrap 200 --workers 1 --cache --seed "$5" \
    --out "$OUT" --name "$1" --no-amp $EXTRA
}

# 9. (optional, DISTILL=1) A 256 px `default` distilled from `large` v2: the shipped v2 weights trained 2 epochs at
#    256 px (the speed of `default` unchanged: same network, same input) on the same train split, loss =
#    0.3 x label cross-entropy + 0.7 x KL to `large` v2's softmax, cosine from lr 1e-4, fp32 student (--no-amp),
#    the teacher's forward passes in bf16 where native (--teacher-amp, the default). Ship rule, fixed before the
#    run: shipped as `default` v3 only if its validation AUC reaches 0.9953 (v2's 0.9933 + 0.002, the AUC's 95% CI
#    half-width on this validation split; the plain 3-epoch continuation of step 7 reached 0.9941 and did not
#    ship). The test split is scored once, after.
if [ "${DISTILL:-0}" = 1 ]; then
  cp -n "$W/default.safetensors" "$OUT/default-v2.safetensors" 2>/dev/null || true
  distill distill256 "$OUT/default-v2.safetensors" "${DISTILL_EPOCHS:-2}" 1e-4 3
fi

# 10. (optional, DISTILL_MORE=1) Step 9's objective for longer: step 9's best weights (its epoch 2) trained 3 more
#     epochs (DISTILL_MORE_EPOCHS) with the same loss, teacher, input and augmentation, cosine from lr 5e-5 (half of
#     step 9's start: restarting at 1e-4 cost the plain continuation of step 7 its first epoch, 0.9933 -> 0.9915),
#     seed 4. Ship rule, fixed before the run: step 9's (validation AUC >= 0.9953). The test split is scored once, after.
if [ "${DISTILL_MORE:-0}" = 1 ]; then
  [ -f "$OUT/distill256/best.pt" ] || { echo "step 10 starts from step 9: run with DISTILL=1 DISTILL_MORE=1" >&2; exit 2; }
  distill distill256-more "$OUT/distill256/best.pt" "${DISTILL_MORE_EPOCHS:-3}" 5e-5 4
  # It reached 0.9959 at its epoch 3 (2026-12-03) and shipped as `default` v3; the rule is checked here.
  if $PY -c "import csv, sys; sys.exit(max(float(r['valid_auc']) for r in csv.DictReader(open(sys.argv[1]))) < 0.9953)" \
      "$OUT/distill256-more/history.csv"; then
    $PY scripts/ship_default.py "$OUT/distill256-more/best.pt" --manifest "$W/split.csv" --data "$DATA" \
        --threshold eer --name default --version v3
    $PY -m dfdetect evaluate "$W/default.onnx" --data "$DATA" --manifest "$W/split.csv" --split test \
        --part faces140k=faces140k-subset+faces140k-more --out "$OUT/eval_default_v3" --backend onnx
  else
    echo "step 10: validation AUC below 0.9953, not shipped" >&2
  fi
fi

# 11. (optional, DISTILL_LONGER=1; an experiment for the "more distillation epochs" proposal, not shipped by this
#     script) Step 10's recipe once more: step 10's best weights (`default` v3) trained 3 more epochs
#     (DISTILL_LONGER_EPOCHS), same loss, teacher, input and augmentation, cosine from lr 5e-5, seed 5. Step 10's
#     validation loss still fell each epoch (0.1289, 0.1259, 0.1228). Rule, fixed before the run, for proposing it
#     as `default` v4: validation AUC >= 0.9962 (v3's 0.9959 + 0.0003) and validation loss below 0.1228.
if [ "${DISTILL_LONGER:-0}" = 1 ]; then
  [ -f "$OUT/distill256-more/best.pt" ] || { echo "step 11 starts from step 10: run with DISTILL_MORE=1 first" >&2; exit 2; }
  distill distill256-longer "$OUT/distill256-more/best.pt" "${DISTILL_LONGER_EPOCHS:-3}" 5e-5 5
  $PY -c "import csv, sys; r = list(csv.DictReader(open(sys.argv[1]))); b = max(r, key=lambda x: float(x['valid_auc']))
ok = float(b['valid_auc']) >= 0.9962 and min(float(x['valid_loss']) for x in r) < 0.1228
print(f\"step 11: best validation AUC {float(b['valid_auc']):.4f} (epoch {b['epoch']}):\", 'meets' if ok else 'misses', 'the v4 rule')" \
      "$OUT/distill256-longer/history.csv"
fi
