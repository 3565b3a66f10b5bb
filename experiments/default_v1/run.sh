#!/usr/bin/env bash
# The v1 default (`plain`; replaced by experiments/default_v2): the shipped 320 px EfficientNet-Lite0 (`large`)
# fine-tuned at the data's native 256 px (0.64x the FLOPs, no upscaling), or distilled from the 320/384 px pair
# (the best validation ensemble), same (v1) split. Ship it with: python scripts/ship_default.py
# runs/res256/ft256/best.pt --manifest runs/res256/ft256/split.csv --data ../shared/data/faces140k-subset
# --threshold eer --name default
#   VARIANT=plain|distill OUTDIR=runs/res256 experiments/default_v1/run.sh
# CPU-sized: about 5-9 min per epoch on a 2-core machine (plain / distilled); EXTRA='--device cuda' on a GPU.
# The second teacher is mnv2_384_reg from `SET=2 experiments/recipe_search/run.sh` (TEACHER2 points to its best.pt).
set -eu
DATA=${DATA:-../shared/data/faces140k-subset}
OUTDIR=${OUTDIR:-runs/res256}
VARIANT=${VARIANT:-plain}
EPOCHS=${EPOCHS:-8}
# `large` v1 (the 320 px model these experiments used; `large` is v2 since) from the commit that shipped it.
LARGE_V1=${LARGE_V1:-runs/large-v1.safetensors}
[ -f "$LARGE_V1" ] || { mkdir -p "$(dirname "$LARGE_V1")"; git show 57aac1a:src/dfdetect/weights/large.safetensors > "$LARGE_V1"; }
TEACHER1=${TEACHER1:-$LARGE_V1}
TEACHER2=${TEACHER2:-runs/recipes2/mnv2_384_reg/best.pt}
PY=${PY:-python}
EXTRA=${EXTRA:-}
common="--data $DATA --manifest src/dfdetect/weights/split-v1.csv --model efficientnet_lite0
        --weights $LARGE_V1 --img-size 256 --resize 256
        --warmup-epochs 0 --epochs $EPOCHS --lr 1e-4 --scheduler cosine --label-smoothing 0.1 --batch-size 32
        --mixup 0.2 --cutmix 1.0 --ema 0.99 --early-stopping 0 --threshold eer --bootstrap 200 --workers 1
        --cache --seed 0 --out $OUTDIR $EXTRA"
case "$VARIANT" in
  plain) extra_args="--name ft256" ;;
  distill) extra_args="--teacher $TEACHER1 --teacher $TEACHER2 --distill-alpha 0.7 --name kd256" ;;
  *) echo "VARIANT must be plain or distill" >&2; exit 2 ;;
esac
mkdir -p "$OUTDIR"
# shellcheck disable=SC2086
$PY -m dfdetect train $common $extra_args
