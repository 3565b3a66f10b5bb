"""OpenVINO batches: a ring of infer requests read in order, no callbacks (now) vs a callback queue of OpenVINO's
optimal number of requests (before), fp32 and (where the CPU computes it natively) bf16, alternating passes in one
process.

With ``AsyncInferQueue`` (2 requests on a 2-core CPU), a stream that finished an image waited for Python to run
the callback and to submit the next image, and Python's GIL is shared with the folder scan's decode threads; the
ring (2 requests per stream) starts image i as soon as image i - k has been read. Scores must be identical.

    python experiments/openvino_streams/requests.py [--passes 3] [--folder ../shared/data/faces140k-subset]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from run import load_inputs, measure, print_table  # the sibling script (this folder is on sys.path)

from dfdetect.runtime.detector import OpenVinoBackend, _ov_core


class CallbackQueue(OpenVinoBackend):
    """The batch path as it was: ``AsyncInferQueue`` over OpenVINO's optimal requests, outputs copied in a callback."""

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import openvino as ov

        if len(batch) == 1:
            return super().logits(batch)
        if self._throughput is None:
            self._throughput = _ov_core().compile_model(
                self.ov_model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", **self._config}
            )
            jobs = int(self._throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = ov.AsyncInferQueue(self._throughput, jobs)
            self._queue.set_callback(self._collect)
        self._outs: dict[int, np.ndarray] = {}
        for i in range(len(batch)):
            self._queue.start_async({0: batch[i : i + 1]}, i)
        self._queue.wait_all()
        return np.concatenate([self._outs[i] for i in range(len(batch))])

    def _collect(self, request: Any, index: int) -> None:
        self._outs[index] = np.array(request.get_output_tensor(0).data, copy=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="a shipped name or an .onnx file")
    ap.add_argument("--folder", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()

    det, onnx, x, files = load_inputs(args.model, args.folder)
    backends: dict[str, OpenVinoBackend] = {}
    for precision in ("fp32", "bf16"):
        now = OpenVinoBackend(onnx, precision=precision)
        if now.precision != precision:
            print(f"{precision}: this CPU has no native {precision}, not timed")
            continue
        backends[f"{precision}, ring, no callback (now)"] = now
        backends[f"{precision}, callback queue (before)"] = CallbackQueue(onnx, precision=precision)
    pairs = list(zip(list(backends)[::2], list(backends)[1::2]))
    for a, b in pairs:
        print(f"{a} vs {b}: max |logit difference| {np.abs(backends[a].logits(x) - backends[b].logits(x)).max():.2e}")
    model_ips, scan_ips = measure(det, backends, x, files, args.passes, 32)
    print_table(model_ips, scan_ips, args.passes, "model alone (batch 32)")
    med = {k: statistics.median(v) for k, v in model_ips.items()}
    for a, b in pairs:
        line = f"{a} / before, medians: model {med[a] / med[b]:.2f}x"
        if files:
            line += f", scan {statistics.median(scan_ips[a]) / statistics.median(scan_ips[b]):.2f}x"
            line += f"; scan / model alone {statistics.median(scan_ips[a]) / med[a]:.2f}"
        print(line)


if __name__ == "__main__":
    main()
