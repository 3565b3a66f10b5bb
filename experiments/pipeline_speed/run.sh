#!/usr/bin/env bash
# Before (BEFORE, default a14453b: before the pipeline) vs after (the checkout), same model file, same folder,
# alternating passes.   BEFORE=86b4c91 OUT=runs/bench_static experiments/pipeline_speed/run.sh
set -u
BEFORE=${BEFORE:-a14453b}
OUT=${OUT:-runs/bench}
mkdir -p "$OUT"
OLD=/tmp/dfdetect-before-$BEFORE
git worktree add -f "$OLD" "$BEFORE" >/dev/null 2>&1 || true
M=$PWD/src/dfdetect/weights/default.onnx
D=../shared/data/faces140k-subset
for pass in 1 2 3; do
  for side in after before; do
    if [ $side = before ]; then PP=$OLD/src; else PP=$PWD/src; fi
    echo "== pass $pass $side"
    PYTHONPATH=$PP .venv/bin/python -m dfdetect benchmark "$M" --batch-sizes 1,32 --scan $D \
       --scan-backends openvino,onnx --json > "$OUT/$side.$pass.json" 2> "$OUT/$side.$pass.err"
    echo rc=$?
  done
done
