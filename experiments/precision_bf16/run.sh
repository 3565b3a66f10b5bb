#!/usr/bin/env bash
# OpenVINO bf16 (asked for with --precision bf16) vs fp32, and OpenVINO fp32 vs ONNX Runtime fp32, on the shipped
# default's whole test split (2,365 images): metrics from `dfdetect evaluate`, then per-image score differences
# and verdict flips. Only meaningful on a CPU with native bf16 (AVX-512 BF16 or AMX); elsewhere bf16 runs fp32
# and says so.   experiments/precision_bf16/run.sh      # from the repository root; OUT=runs/bf16; ~10 min
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/bf16}
PY=${PY:-.venv/bin/python}
W=src/dfdetect/weights
mkdir -p "$OUT"
for run in "fp32 openvino" "bf16 openvino" "ort onnx"; do
  set -- $run
  precision=$1; [ "$1" = ort ] && precision=fp32
  [ -f "$OUT/$1/predictions.csv" ] || $PY -m dfdetect evaluate "$W/default.onnx" --data "$DATA" \
      --manifest "$W/split.csv" --split test --part faces140k=faces140k-subset+faces140k-more --backend "$2" \
      --precision "$precision" --out "$OUT/$1" --workers 1 --bootstrap 200 > "$OUT/$1.log" 2>&1
done
$PY - "$OUT" <<'PY'
import csv
import sys

out = sys.argv[1]
runs = {k: {r["path"]: r for r in csv.DictReader(open(f"{out}/{k}/predictions.csv"))} for k in ("fp32", "bf16", "ort")}
for a, b in (("ort", "fp32"), ("fp32", "bf16")):
    ra, rb = runs[a], runs[b]
    d = [abs(float(ra[p]["score"]) - float(rb[p]["score"])) for p in ra]
    flips = sum(ra[p]["pred"] != rb[p]["pred"] for p in ra)
    acc = [sum(r[p]["correct"] == "1" for p in r) / len(r) for r in (ra, rb)]
    print(f"{a} vs {b}: {len(d)} images, max |score diff| {max(d):.2e}, mean {sum(d) / len(d):.2e}, "
          f"{flips} verdicts flipped, accuracy {acc[0]:.4f} vs {acc[1]:.4f}")
PY
