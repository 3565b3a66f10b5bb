#!/usr/bin/env bash
# Before (a14453b, before the pipeline) vs after (HEAD), same model file, same folder, alternating passes.
set -u
mkdir -p "${OUT:-runs/bench}"
git worktree add -f /tmp/old a14453b >/dev/null 2>&1 || true
M=$PWD/src/dfdetect/weights/default.onnx
D=../shared/data/faces140k-subset
for pass in 1 2 3; do
  for side in after before; do
    if [ $side = before ]; then PP=/tmp/old/src; else PP=$PWD/src; fi
    echo "== pass $pass $side"
    PYTHONPATH=$PP .venv/bin/python -m dfdetect benchmark "$M" --batch-sizes 1,32 --scan $D \
       --scan-backends openvino,onnx --json > ${OUT:-runs/bench}/$side.$pass.json 2> ${OUT:-runs/bench}/$side.$pass.err
    echo rc=$?
  done
done
