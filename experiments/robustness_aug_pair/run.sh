#!/usr/bin/env bash
# With/without JPEG+blur augmentation, everything else equal: two short fine-tunes of the shipped detector
# (same weights, split, seed, steps and learning rate; only the augmentation config differs), then the
# robustness sweep on the test split for both and one side-by-side table (finished sweeps are reused on a
# rerun). CPU-sized: about 2 h on a shared 2-core machine (~0.3-0.4 training images/s at 320 px under load);
# minutes on a GPU (EXTRA='--device cuda', raise STEPS/EPOCHS).
#   DATA=../shared/data/faces140k-subset OUTDIR=runs/aug_pair experiments/robustness_aug_pair/run.sh
set -eu
DATA=${DATA:-../shared/data/faces140k-subset}
OUTDIR=${OUTDIR:-runs/aug_pair}
EPOCHS=${EPOCHS:-2}
STEPS=${STEPS:-40}
PY=${PY:-python}
EXTRA=${EXTRA:-}
CONFIGS=experiments/robustness_aug_pair/configs
mkdir -p "$OUTDIR"
# `large` v1 (the 320 px model these experiments used; `large` is v2 since) from the commit that shipped it.
LARGE_V1=${LARGE_V1:-runs/large-v1.safetensors}
[ -f "$LARGE_V1" ] || { mkdir -p "$(dirname "$LARGE_V1")"; git show 57aac1a:src/dfdetect/weights/large.safetensors > "$LARGE_V1"; }
common="--data $DATA --manifest src/dfdetect/weights/split-v1.csv --model efficientnet_lite0
        --weights $LARGE_V1 --img-size 320 --resize 320
        --warmup-epochs 0 --epochs $EPOCHS --max-steps $STEPS --lr 1e-4 --scheduler cosine
        --label-smoothing 0.1 --batch-size 16 --early-stopping 0 --threshold eer --bootstrap 200
        --workers 1 --cache --seed 0 --out $OUTDIR $EXTRA"
for variant in none jpeg_blur; do
  if [ ! -f "$OUTDIR/$variant/best.pt" ]; then
    echo "dfdetect train $common -c $CONFIGS/augment_$variant.yaml --name $variant" | tr -s ' \n' ' ' \
      > "$OUTDIR/$variant.cmd"
    $PY -m dfdetect train $common -c "$CONFIGS/augment_$variant.yaml" --name "$variant" \
      > "$OUTDIR/$variant.log" 2>&1
  fi
done
$PY -m dfdetect robustness "$OUTDIR/none/best.pt" "$OUTDIR/jpeg_blur/best.pt" --data "$DATA" \
  --manifest src/dfdetect/weights/split-v1.csv --split test --out "$OUTDIR/robustness" \
  2>&1 | tee "$OUTDIR/robustness.log"
