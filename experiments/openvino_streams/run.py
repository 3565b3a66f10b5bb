"""Streams vs one stream, fp32, side by side in one process: the model alone and the folder scan.

``OpenVinoBackend`` runs a batch image by image over OpenVINO's throughput streams (2 on a 2-core CPU), and
``OnnxBackend`` image by image from one thread per core on a one-thread session; ``streams=1`` is the previous
behaviour of each (OpenVINO: image by image on one latency-compiled stream; ONNX Runtime: the whole batch in one
call on a session using every thread). Passes alternate so that a busy machine slows all alike; compare the
ratios, not the absolute figures, across machines.

    python experiments/openvino_streams/run.py [--folder ../shared/data/faces140k-subset] [--passes 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from dfdetect.runtime.detector import Detector, OnnxBackend, OpenVinoBackend, expand_paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="a shipped name or an .onnx file")
    ap.add_argument("--folder", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    det = Detector.load(args.model, backend="onnx")
    onnx = Path(det.source)
    size = det.data_config["input_size"][-1]
    x = np.random.default_rng(0).standard_normal((64, 3, size, size)).astype(np.float32)
    backends = {
        "OpenVINO, streams (auto)": OpenVinoBackend(onnx),
        "OpenVINO, one stream": OpenVinoBackend(onnx, streams=1),
        "ONNX Runtime, streams (auto)": OnnxBackend(onnx),
        "ONNX Runtime, one session": OnnxBackend(onnx, streams=1),
    }
    ref = OnnxBackend(onnx).logits(x)
    for name, be in backends.items():
        print(
            f"{name}: max |logit - ONNX Runtime fp32| {np.abs(be.logits(x) - ref).max():.2e}, precision {be.precision}"
        )
    files, _ = expand_paths([args.folder]) if args.folder.is_dir() else ([], [])

    model_ips: dict[str, list[float]] = {k: [] for k in backends}
    scan_ips: dict[str, list[float]] = {k: [] for k in backends}
    for _ in range(args.passes):
        for name, be in backends.items():
            t = time.perf_counter()
            for i in range(0, len(x), args.batch_size):
                be.logits(x[i : i + args.batch_size])
            model_ips[name].append(len(x) / (time.perf_counter() - t))
            if files:
                det.backend = be
                t = time.perf_counter()
                det.predict(files, batch_size=args.batch_size)
                scan_ips[name].append(len(files) / (time.perf_counter() - t))

    head_model, head_scan = f"model alone (batch {args.batch_size})", f"folder scan ({len(files)} files)"
    print(f"{f'images/s, {args.passes} alternating passes':<40}{head_model:>28}{head_scan:>28}")
    for name in backends:
        m, s = model_ips[name], scan_ips[name]
        cell = lambda v: f"{min(v):.1f}-{max(v):.1f} (median {statistics.median(v):.1f})" if v else "-"  # noqa: E731
        print(f"{name:<40}{cell(m):>28}{cell(s):>28}")
    names = list(backends)
    for a, b in (names[0:2], names[2:4]):
        line = f"{a} / {b}, medians: model {statistics.median(model_ips[a]) / statistics.median(model_ips[b]):.2f}x"
        if files:
            line += f", scan {statistics.median(scan_ips[a]) / statistics.median(scan_ips[b]):.2f}x"
        print(line)


if __name__ == "__main__":
    main()
