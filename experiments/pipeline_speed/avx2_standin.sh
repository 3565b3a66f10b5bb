#!/usr/bin/env bash
# Before/after on a CPU with AVX-512, standing in for one without: OpenVINO's kernels capped to AVX2
# (ONEDNN_MAX_CPU_ISA=AVX2), OpenVINO scan only (ONNX Runtime ignores the cap). The "before" code (a14453b) asked
# OpenVINO for its default precision, which here is bf16 and cannot compile under the cap; on a real AVX2 CPU that
# default is f32, so the before side gets exactly that one hint (INFERENCE_PRECISION_HINT=f32) and nothing else.
# numpy's and torch's own kernels are capped to AVX2 as well (preprocessing runs in them); JPEG decoding
# (libjpeg-turbo in Pillow) has no AVX-512 path anyway.
#   experiments/pipeline_speed/avx2_standin.sh          # OUT=runs/bench_avx2; ~3 min on 2 cores
set -eu
BEFORE=${BEFORE:-a14453b}
OUT=${OUT:-runs/bench_avx2}
PASSES=${PASSES:-3}
mkdir -p "$OUT"
OLD=/tmp/dfdetect-f32-$BEFORE
[ -d "$OLD" ] || git worktree add -f --detach "$OLD" "$BEFORE" >/dev/null
F=$OLD/src/dfdetect/inference.py
grep -q INFERENCE_PRECISION_HINT "$F" ||
  sed -i 's/config = {"PERFORMANCE_HINT": "LATENCY", /&"INFERENCE_PRECISION_HINT": "f32", /' "$F"
grep -q '"INFERENCE_PRECISION_HINT": "f32"' "$F" || { echo "could not pin f32 in $F" >&2; exit 1; }
export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
M=$PWD/src/dfdetect/weights/default.onnx
D=${D:-../shared/data/faces140k-subset}
for pass in $(seq "$PASSES"); do
  for side in after before; do
    if [ $side = before ]; then PP=$OLD/src; else PP=$PWD/src; fi
    PYTHONPATH=$PP .venv/bin/python -m dfdetect benchmark "$M" --batch-sizes 1,32 --scan "$D" \
       --scan-backends openvino --json > "$OUT/$side.$pass.json" 2> "$OUT/$side.$pass.err"
  done
done
.venv/bin/python - "$OUT" "$PASSES" <<'PY'
import json, statistics, sys
out, passes = sys.argv[1], int(sys.argv[2])
med = {}
for side in ("before", "after"):
    rows = []
    for k in range(1, passes + 1):
        d = json.load(open(f"{out}/{side}.{k}.json"))
        b32 = [r["images_per_s"] for r in d["model"]["openvino"] if r["batch"] == 32][0]
        scan = [s["images_per_s"] for s in d["scan"] if s["backend"] == "openvino"][0]
        rows.append((scan, b32))
    med[side] = statistics.median(r[0] for r in rows)
    print(f"{side:6s} OpenVINO fp32 scan " + " / ".join(f"{s:.1f}" for s, _ in rows)
          + f" images/s (median {med[side]:.1f}); model alone b32 " + " / ".join(f"{b:.1f}" for _, b in rows)
          + "; scan/model " + " / ".join(f"{s / b:.2f}" for s, b in rows))
print(f"after / before (medians): {med['after'] / med['before']:.3f}  [ONEDNN_MAX_CPU_ISA=AVX2 stand-in]")
PY
