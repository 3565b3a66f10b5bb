"""OpenVINO with the exported dynamic batch vs the batch fixed at 1, fp32, alternating passes in one process.

Both of ``OpenVinoBackend``'s compiled forms run image by image (the latency model for a single image, the
throughput streams for a batch), so the batch dimension can be fixed at 1 (``detector.one_image_batches``),
which spares OpenVINO its per-call shape work. This times both shapes on both forms and checks the scores agree.

    python experiments/openvino_streams/static_batch.py [--passes 15]
    ONEDNN_MAX_CPU_ISA=AVX2 python experiments/openvino_streams/static_batch.py   # OpenVINO's AVX2 kernels
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import openvino as ov

from dfdetect.runtime.detector import Detector, one_image_batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="a shipped name or an .onnx file")
    ap.add_argument("--passes", type=int, default=15)
    args = ap.parse_args()

    path = str(Detector.load(args.model, backend="onnx").source)
    core = ov.Core()
    fp32 = {"INFERENCE_PRECISION_HINT": "f32"}
    forms: dict[str, tuple[object, object]] = {}
    for shape in ("dynamic batch", "batch fixed at 1"):
        model = core.read_model(path)
        if shape != "dynamic batch":
            one_image_batches(model)
        streams = core.compile_model(model, "CPU", {**fp32, "PERFORMANCE_HINT": "THROUGHPUT"})
        latency = core.compile_model(model, "CPU", {**fp32, "PERFORMANCE_HINT": "LATENCY"})
        queue = ov.AsyncInferQueue(streams, int(streams.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        forms[shape] = (queue, latency.create_infer_request())
        print(f"{shape}: input {model.inputs[0].get_partial_shape()}, {streams.get_property('NUM_STREAMS')} streams")
    size = int(str(core.read_model(path).inputs[0].get_partial_shape()[-1]))
    x = np.random.default_rng(0).standard_normal((64, 3, size, size)).astype(np.float32)
    ref, new = (np.concatenate([r.infer({0: x[i : i + 1]})[0] for i in range(8)]) for _, r in forms.values())
    print(f"max |logit difference| between the two shapes: {np.abs(ref - new).max():.2e}")

    ips: dict[str, list[float]] = {k: [] for k in forms}
    ms: dict[str, list[float]] = {k: [] for k in forms}
    for _ in range(args.passes):
        for k, (queue, request) in forms.items():
            t = time.perf_counter()
            for i in range(len(x)):
                queue.start_async({0: x[i : i + 1]})
            queue.wait_all()
            ips[k].append(len(x) / (time.perf_counter() - t))
            t = time.perf_counter()
            for i in range(20):
                request.infer({0: x[i : i + 1]})
            ms[k].append((time.perf_counter() - t) / 20 * 1000)
    for k in forms:
        print(
            f"{k:<18} streams {min(ips[k]):.1f}-{max(ips[k]):.1f} images/s (median {statistics.median(ips[k]):.1f})"
            f" | batch-1 latency median {statistics.median(ms[k]):.2f} ms"
        )
    a, b = list(forms)
    print(
        f"fixed / dynamic, medians: streams {statistics.median(ips[b]) / statistics.median(ips[a]):.2f}x, "
        f"latency {statistics.median(ms[b]) / statistics.median(ms[a]):.2f}x"
    )


if __name__ == "__main__":
    main()
