#!/usr/bin/env bash
# Recipe search for the shipped detector: several `dfdetect train` runs, three at a time, then a
# ranking by VALIDATION AUC (the test split is never used to choose). Meant for a GPU machine;
# it also runs on a CPU, slowly. Every run is a plain `dfdetect train` command, logged in full.
#   SET=1|2 DATA=../shared/data/faces140k-subset OUTDIR=runs/recipes experiments/recipe_search/run.sh
set -u
DATA=${DATA:-../shared/data/faces140k-subset}
OUTDIR=${OUTDIR:-runs/recipes}
EPOCHS=${EPOCHS:-30}
EXTRA=${EXTRA:-}
PY=${PY:-python3}
mkdir -p "$OUTDIR"
common="--data $DATA --weights offline --warmup-epochs 2 --epochs $EPOCHS --scheduler cosine --early-stopping 10
        --label-smoothing 0.1 --batch-size 32 --workers 4 --cache --out $OUTDIR $EXTRA"
run() {
  local name=$1; shift
  echo "dfdetect train $common --name $name $*" | tr -s ' \n' ' ' > "$OUTDIR/$name.cmd"
  $PY -m dfdetect train $common --name "$name" "$@" > "$OUTDIR/$name.log" 2>&1
  echo "$name rc=$?"
}
if [ "${SET:-1}" = 2 ]; then
  # Second round: the same backbones with weight EMA and MixUp/CutMix against the overfitting seen in round 1.
  reg="--ema 0.998 --mixup 0.2 --cutmix 1.0"
  ( run lite0_384_reg --model efficientnet_lite0 --img-size 384 --resize 384 $reg ) &
  ( run lite0_320_reg --model efficientnet_lite0 --img-size 320 --resize 320 $reg ) &
  ( run mnv2_384_reg --model mobilenetv2 --img-size 384 --resize 384 $reg ) &
  ( run lite0_256_reg --model efficientnet_lite0 --img-size 256 $reg ) &
  wait
  $PY experiments/recipe_search/rank_runs.py "$OUTDIR"
  exit 0
fi
( run lite0_256 --model efficientnet_lite0 --img-size 256
  run lite0_384 --model efficientnet_lite0 --img-size 384 --resize 384
  run lite0_256_jpegblur --model efficientnet_lite0 --img-size 256 --jpeg-prob 0.3 --blur-prob 0.2 ) &
( run mnv2_256 --model mobilenetv2 --img-size 256
  run mnv2_384 --model mobilenetv2 --img-size 384 --resize 384
  run lite0_320 --model efficientnet_lite0 --img-size 320 --resize 320 ) &
( run lite0_512 --model efficientnet_lite0 --img-size 512 --resize 512
  run lite0_256_lr1e3 --model efficientnet_lite0 --img-size 256 --lr 1e-3
  run mnv2_256_lr1e3 --model mobilenetv2 --img-size 256 --lr 1e-3 ) &
wait
$PY experiments/recipe_search/rank_runs.py "$OUTDIR"
