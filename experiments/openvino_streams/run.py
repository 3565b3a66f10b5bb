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
from typing import Any

import numpy as np

from dfdetect.runtime.detector import Detector, OnnxBackend, OpenVinoBackend, expand_paths


def load_inputs(model: str, folder: Path) -> tuple[Detector, Path, np.ndarray, list[Path]]:
    """The detector (ONNX Runtime), its .onnx file, 64 random model inputs, and the folder's images (or none)."""
    det = Detector.load(model, backend="onnx")
    size = det.data_config["input_size"][-1]
    x = np.random.default_rng(0).standard_normal((64, 3, size, size)).astype(np.float32)
    files, _ = expand_paths([folder]) if folder.is_dir() else ([], [])
    return det, Path(det.source), x, files


def measure(
    det: Detector, backends: dict[str, Any], x: np.ndarray, files: list[Path], passes: int, batch_size: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Images/s of each backend alone (``x`` in batches) and scanning ``files`` through ``det``, alternating."""
    model_ips: dict[str, list[float]] = {k: [] for k in backends}
    scan_ips: dict[str, list[float]] = {k: [] for k in backends}
    for _ in range(passes):
        for name, be in backends.items():
            t = time.perf_counter()
            for i in range(0, len(x), batch_size):
                be.logits(x[i : i + batch_size])
            model_ips[name].append(len(x) / (time.perf_counter() - t))
            if files:
                det.backend = be
                t = time.perf_counter()
                det.predict(files, batch_size=batch_size)
                scan_ips[name].append(len(files) / (time.perf_counter() - t))
    return model_ips, scan_ips


def print_table(model_ips: dict[str, list[float]], scan_ips: dict[str, list[float]], passes: int, head: str) -> None:
    cell = lambda v: f"{min(v):.1f}-{max(v):.1f} (median {statistics.median(v):.1f})" if v else "-"  # noqa: E731
    print(f"{f'images/s, {passes} alternating passes':<40}{head:>28}{'folder scan':>28}")
    for name in model_ips:
        print(f"{name:<40}{cell(model_ips[name]):>28}{cell(scan_ips[name]):>28}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="a shipped name or an .onnx file")
    ap.add_argument("--folder", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    det, onnx, x, files = load_inputs(args.model, args.folder)
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
    model_ips, scan_ips = measure(det, backends, x, files, args.passes, args.batch_size)
    print_table(model_ips, scan_ips, args.passes, f"model alone (batch {args.batch_size})")
    names = list(backends)
    for a, b in (names[0:2], names[2:4]):
        line = f"{a} / {b}, medians: model {statistics.median(model_ips[a]) / statistics.median(model_ips[b]):.2f}x"
        if files:
            line += f", scan {statistics.median(scan_ips[a]) / statistics.median(scan_ips[b]):.2f}x"
        print(line)


if __name__ == "__main__":
    main()
