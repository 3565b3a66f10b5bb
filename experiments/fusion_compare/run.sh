#!/usr/bin/env bash
# Attention heads, multi-scale fusion, two-backbone fusion and ensembles vs the single backbones, on CPU.
#
# Design (CPU-feasible): the two single models are GPU-trained checkpoints (EfficientNet-Lite0 at 320 px and
# MobileNetV2 at 384 px, both trained on the shipped split); every variant is built ON them with frozen
# backbones, so training is forward-only through the backbone:
#   - attention / attnpool / multiscale heads on the frozen Lite0 backbone (head trained, 20 epochs on cached features);
#   - two-backbone fusion of the frozen Lite0 + MobileNetV2 (fusion head trained, 20 epochs on cached features
#     of 150 training images per class: the CPU budget; the other rows' heads saw all 1237);
#   - mean / weighted / stacking ensembles of the two (weights fitted on the validation split).
# All rows are scored on the same 265 test images of the v1 split (src/dfdetect/weights/split-v1.csv).
#
# Usage: experiments/fusion_compare/run.sh [train|compare|all]   (default all; logs in runs/fusion_compare/*.log)
# Needs .dev/gpu_results2/{lite0_320_reg,mnv2_384_reg}.safetensors (override with LITE0=... MNV2=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:-all}
DATA=${DATA:-../shared/data/faces140k-subset}
SPLIT=${SPLIT:-src/dfdetect/weights/split-v1.csv}
LITE0=${LITE0:-.dev/gpu_results2/lite0_320_reg.safetensors}
MNV2=${MNV2:-.dev/gpu_results2/mnv2_384_reg.safetensors}
OUT=${OUT:-runs/fusion_compare}
NICE="nice -n 10"
mkdir -p "$OUT/heads"

if [[ $STAGE == train || $STAGE == all ]]; then
  # Frozen backbones: one backbone pass per image (train + valid) into a feature cache, then 20 head epochs on it
  # (dfdetect.engine.headfit; `dfdetect train --freeze-backbone` does the same with augmentation, but runs the
  # backbone every epoch, which is ~10x the CPU time here).
  if [[ ! -f $OUT/heads/multiscale.pt ]]; then
    /usr/bin/time -f "%e s wall" $NICE python -m dfdetect.engine.headfit --model efficientnet_lite0 \
      --head attention,attnpool,multiscale --weights "$LITE0" --img-size 320 --data "$DATA" --manifest "$SPLIT" \
      --out "$OUT/heads" --epochs 20 --lr 1e-3 --batch-size 32 --workers 1 --threshold 0.5 \
      2>&1 | tee "$OUT/train_heads.log"
  fi
  if [[ ! -f $OUT/heads/fusion.pt ]]; then
    /usr/bin/time -f "%e s wall" $NICE python -m dfdetect.engine.headfit --model fusion:efficientnet_lite0+mobilenetv2 \
      --weights "$LITE0,$MNV2" --data "$DATA" --manifest "$SPLIT" --train-per-class 150 \
      --out "$OUT/heads" --epochs 20 --lr 1e-3 --batch-size 32 --workers 1 --threshold 0.5 \
      2>&1 | tee "$OUT/train_fusion.log"
  fi
fi

if [[ $STAGE == compare || $STAGE == all ]]; then
  # Three comparisons on the same split (run side by side to use the wall-clock budget; rows are independent):
  #   cmp:          the two GPU-trained single models and three ensembles of them;
  #   cmp_variants: the attention head and the fusion model;  cmp_heads: the attnpool and multiscale heads.
  # One `dfdetect compare` with all the --checkpoint rows gives the same rows in one table, one after the other.
  # Latency: batch 1, ONNX Runtime (ensembles: their members' ONNX graphs run one after the other) and torch.
  # Ensembles: weights fitted on the members' stored validation scores; test scores combined from the members'.
  /usr/bin/time -f "%e s wall" $NICE dfdetect compare --out "$OUT/cmp" --data "$DATA" --manifest "$SPLIT" \
    --checkpoint "lite0=$LITE0" --checkpoint "mnv2=$MNV2" \
    --ensembles mean,weighted,stacking --ensemble-of lite0,mnv2 \
    --device cpu --workers 1 --bench-batch 1 --bench-seconds 2 --metric roc_auc \
    2>&1 | tee "$OUT/compare_part1.log" &
  /usr/bin/time -f "%e s wall" $NICE dfdetect compare --out "$OUT/cmp_variants" --data "$DATA" --manifest "$SPLIT" \
    --checkpoint "lite0-attention=$OUT/heads/attention.pt" --checkpoint "fusion-lite0+mnv2=$OUT/heads/fusion.pt" \
    --device cpu --workers 1 --bench-batch 1 --bench-seconds 2 --metric roc_auc \
    2>&1 | tee "$OUT/compare_part2.log" &
  /usr/bin/time -f "%e s wall" $NICE dfdetect compare --out "$OUT/cmp_heads" --data "$DATA" --manifest "$SPLIT" \
    --checkpoint "lite0-attnpool=$OUT/heads/attnpool.pt" --checkpoint "lite0-multiscale=$OUT/heads/multiscale.pt" \
    --device cpu --workers 1 --bench-batch 1 --bench-seconds 2 --metric roc_auc \
    2>&1 | tee "$OUT/compare_part3.log"
  wait
fi

if [[ $STAGE == latency || $STAGE == all ]]; then
  # ONNX Runtime batch-1 latency of every row, measured round-robin in one process (5 rounds x 1 s per row), so
  # all rows see the same machine load (the per-table figures above were measured at different times).
  $NICE python - "$OUT" <<'PY' 2>&1 | tee "$OUT/latency.log"
import json, statistics, sys, tempfile, time
from pathlib import Path
from dfdetect.analysis.compare import _ort_runner, _timing_parts
from dfdetect.models.checkpoint import load_checkpoint
from dfdetect.models.factory import model_from_checkpoint
out = Path(sys.argv[1])
rows = {}
for d in ("cmp", "cmp_variants", "cmp_heads"):
    p = out / d / "compare_state.json"
    if p.is_file():
        rows.update({n: e["checkpoint"] for n, e in json.loads(p.read_text())["models"].items() if e.get("status") == "done"})
tmp = Path(tempfile.mkdtemp())
runners = {}
for i, (n, c) in enumerate(rows.items()):
    ck = load_checkpoint(c)
    (tmp / str(i)).mkdir()
    runners[n] = _ort_runner(_timing_parts(ck, model_from_checkpoint(ck).eval()), tmp / str(i), 1, 1)
    runners[n]()  # warm-up
times = {n: [] for n in runners}
for _ in range(5):
    for n, fn in runners.items():
        t_end = time.perf_counter() + 1.0
        while time.perf_counter() < t_end:
            t0 = time.perf_counter(); fn(); times[n].append((time.perf_counter() - t0) * 1000)
res = {n: statistics.median(t) for n, t in times.items()}
print(json.dumps(res, indent=1))
(out / "latency_roundrobin.json").write_text(json.dumps(res, indent=1))
PY
fi
