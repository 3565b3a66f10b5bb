#!/usr/bin/env bash
# Each of the paper's six backbones, from random init (no offline weights exist for them), trained
# briefly on CPU on a per-class-limited slice of the shared subset: proves the pipeline end to end and
# records epoch time and test accuracy per backbone. Not a benchmark of what the backbones can reach.
set -u
DATA=${DATA:-../shared/data/faces140k-subset}
OUT=${OUT:-runs/paper}
LIMIT=${LIMIT:-40}
mkdir -p "$OUT"
for m in mobilenetv3_small mobilenetv3_large efficientnetv2_b0 efficientnetv2_b1 efficientnetv2_b2 inception_resnet_v2; do
  dfdetect train --data "$DATA" --model "$m" --weights none --epochs 1 --warmup-epochs 1 \
    --limit-per-class "$LIMIT" --batch-size 16 --workers 1 --device cpu --out "$OUT" --name "$m" \
    > "$OUT/$m.log" 2>&1
  echo "$m rc=$? $(grep -h '^test:' "$OUT/$m.log")"
done
