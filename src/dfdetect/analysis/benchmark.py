"""Speed measurements that print figures: model latency/throughput (torch eager vs ONNX Runtime side by
side), end-to-end folder scanning with ``Detector.predict``, and the cold start of ``dfdetect predict``.

Never used by tests for timing; these are commands whose output goes into the README.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RUNTIMES = ("torch_eager", "torch_channels_last", "onnxruntime", "openvino")
"""Row lists of a benchmark record, in print order."""


VECTOR_ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
"""CPU features that change which kernels the runtimes pick (and OpenVINO's automatic precision): a speed figure
means little without them."""


def machine_info() -> dict[str, Any]:
    import torch

    cpu, flags = platform.processor() or platform.machine(), None
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]  # the first core's block
    except OSError:
        first = ""
    for line in first.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            cpu = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {
        "cpu": cpu,
        # None where /proc/cpuinfo is not there to ask (macOS, Windows)
        "isa": None if flags is None else [f for f in VECTOR_ISA if f in flags],
        # oneDNN's cap (OpenVINO's CPU kernels honour it): set, the figures are of the capped kernels
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def timeit(fn: Any, warmup: int, iters: int, min_seconds: float) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` calls: at least ``iters`` calls and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 10 * iters:
            break
    return times


def timing_stats(times: list[float], batch: int) -> dict[str, float]:
    """p50/p95 latency (ms) and images/s from per-call seconds at batch size ``batch``."""
    ms = sorted(t * 1000 for t in times)
    return {
        "batch": batch,
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
        "images_per_s": batch / (statistics.median(ms) / 1000),
        "runs": len(ms),
    }


def gflops_per_image(model: Any, size: int) -> float | None:
    """Forward GFLOPs for one image, counted by torch's FLOP counter (a multiply-add = 2 FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(torch.randn(1, 3, size, size))
        return counter.get_total_flops() / 1e9
    except Exception as e:  # noqa: BLE001 - an uncountable op only loses this one figure
        log.debug("FLOP count failed: %s", e)
        return None


def benchmark_model(
    model_ref: str | None,
    img_size: int | None = None,
    batch_sizes: tuple[int, ...] = (1, 8, 32),
    onnx: bool = True,
    threads: int | None = None,
    device: str = "auto",
    warmup: int = 5,
    iters: int = 20,
    min_seconds: float = 2.0,
    precisions: tuple[str, ...] = ("fp32",),
) -> dict[str, Any]:
    """Latency and throughput of one model: a name from the table (random weights) or a checkpoint.

    ``precisions``: OpenVINO rows to time besides fp32 ("bf16": only where the CPU computes it natively)."""
    import torch

    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.models.factory import create_model, data_config_for, model_from_checkpoint
    from dfdetect.models.registry import MODELS

    if threads:
        torch.set_num_threads(threads)
    if model_ref is not None and Path(model_ref).suffix == ".onnx":
        return _benchmark_onnx_file(Path(model_ref), batch_sizes, threads, precisions, (warmup, iters, min_seconds))
    if model_ref is None or Path(model_ref).suffix in (".pt", ".safetensors") or model_ref not in MODELS:
        from dfdetect.runtime.detector import DEFAULT_WEIGHTS

        path = Path(model_ref) if model_ref else DEFAULT_WEIGHTS
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") == "ensemble":
            raise ValueError(
                f"{path} is an ensemble: benchmark times one network. Time each member, or let compare time them in "
                "sequence: dfdetect compare --checkpoint A=a.pt --checkpoint B=b.pt --ensembles mean ..."
            )
        # the checkpoint's own model (head variant, fusion member sizes), loaded strictly
        model = model_from_checkpoint(ckpt)
        arch, size = ckpt["arch"], int(ckpt["data_config"]["input_size"][-1])
        size = img_size or size
    else:
        model = create_model(model_ref)
        arch = model_ref
        size = img_size or int(data_config_for(model)["input_size"][-1])
    from dfdetect.core.device import resolve_device

    model.eval()
    dev = resolve_device(device)
    device = dev.type
    model.to(dev)
    params = sum(p.numel() for p in model.parameters())
    result = _result(arch, size, params / 1e6, params * 4 / 2**20, gflops_per_image(model.cpu(), size), str(dev))
    model.to(dev)
    for b in batch_sizes:
        x = torch.randn(b, 3, size, size, device=dev)

        def run(m=model, x=x):
            with torch.inference_mode():
                m(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        result["torch_eager"].append(timing_stats(timeit(run, warmup, iters, min_seconds), b))
    if dev.type == "cpu":
        # channels-last lets oneDNN pick its fastest depthwise kernels on CPU too.
        cl = model.to(memory_format=torch.channels_last)
        for b in batch_sizes:
            x = torch.randn(b, 3, size, size).contiguous(memory_format=torch.channels_last)

            def run_cl(m=cl, x=x):
                with torch.inference_mode():
                    m(x)

            result["torch_channels_last"].append(timing_stats(timeit(run_cl, warmup, iters, min_seconds), b))
        model = model.to(memory_format=torch.contiguous_format)
    if onnx:
        try:
            import onnxruntime  # noqa: F401  (optional extra)
        except ImportError:
            log.warning("onnxruntime not installed: pip install 'dfdetect[onnx]' to compare it")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                export_for_timing(model, size, Path(tmp) / "m.onnx")
                timing = (warmup, iters, min_seconds)
                _time_onnx_file(result, Path(tmp) / "m.onnx", batch_sizes, threads, precisions, timing)
    if result["gflops"]:
        for key in RUNTIMES:
            for row in result[key]:
                row["gflop_per_s"] = result["gflops"] * row["images_per_s"]
    return result


def _benchmark_onnx_file(
    path: Path, batch_sizes: tuple[int, ...], threads: int | None, precisions: tuple[str, ...], timing: tuple
) -> dict[str, Any]:
    """An exported model as it ships: ONNX Runtime and (when installed) OpenVINO rows; no torch rows."""
    from dfdetect.runtime.detector import Detector

    det = Detector.load(path, backend="onnx")
    size = int(det.data_config["input_size"][-1])
    result = _result(f"{det.arch} ({path.name})", size, None, path.stat().st_size / 2**20, None, "cpu")
    _time_onnx_file(result, path, batch_sizes, threads, precisions, timing)
    return result


def _result(
    model: str, size: int, params_m: float | None, size_mb: float, gflops: float | None, device: str
) -> dict[str, Any]:
    """The benchmark record: model facts, machine facts, and one (empty) row list per runtime."""
    info = {"model": model, "input": size, "params_m": params_m, "size_mb_fp32": size_mb, "gflops": gflops}
    return {**info, "device": device, "machine": machine_info(), **{key: [] for key in RUNTIMES}}


def _time_onnx_file(
    result: dict[str, Any],
    path: Path,
    batch_sizes: tuple[int, ...],
    threads: int | None,
    precisions: tuple[str, ...],
    timing: tuple,
) -> None:
    """Fill ``result``'s ONNX Runtime rows, and OpenVINO's when it is installed (one set per precision in
    ``precisions``), for the model at ``path``; ``timing``: :func:`timeit`'s (warmup, iters, min_seconds)."""
    from dfdetect.runtime.detector import OnnxBackend, OpenVinoBackend, backend_installed

    size = result["input"]
    runtimes = [("onnxruntime", "fp32", lambda: OnnxBackend(path, threads=threads))]
    if backend_installed("openvino"):
        # as Detector runs it: a batch image by image over OpenVINO's streams
        for p in dict.fromkeys(("fp32", *precisions)):
            runtimes.append(("openvino", p, lambda p=p: OpenVinoBackend(path, threads=threads, precision=p)))
    for key, asked, make in runtimes:
        be = make()
        if be.precision != asked:
            # bf16 asked on a CPU without native bf16 compiles fp32: the fp32 rows already say that
            log.info("%s %s runs %s on this CPU: not timed twice", key, asked, be.precision)
            continue
        for b in batch_sizes:
            xb = np.random.randn(b, 3, size, size).astype(np.float32)
            row = timing_stats(timeit(lambda xb=xb, be=be: be.logits(xb), *timing), b)
            result[key].append({**row, "precision": be.precision})


def benchmark_scan(
    folder: str | Path,
    model: str | None = None,
    backend: str = "auto",
    batch_size: int = 32,
    workers: int = 2,
    precision: str = "fp32",
) -> dict[str, Any]:
    """End-to-end ``Detector.predict`` over a folder: decode + preprocess + inference, images/s."""
    from dfdetect.runtime.detector import Detector, expand_paths

    files, _ = expand_paths([folder])
    det = Detector.load(model, backend=backend, precision=precision)
    det.predict(files[: min(len(files), batch_size)], batch_size=batch_size, workers=workers)  # warm-up
    t = time.perf_counter()
    preds = det.predict(files, batch_size=batch_size, workers=workers)
    dt = time.perf_counter() - t
    return {
        "folder": str(folder),
        "images": len(preds),
        "seconds": dt,
        "images_per_s": len(preds) / dt,
        "backend": det.backend.name,
        "precision": det.backend.precision,
        "model": det.model_id,
        "batch_size": batch_size,
        "workers": workers,
    }


def benchmark_cold_start(image: str | Path, model: str | None = None, runs: int = 3) -> dict[str, Any]:
    """Wall time of a fresh ``dfdetect predict IMAGE`` process (interpreter start and model load included)."""
    cmd = [sys.executable, "-m", "dfdetect", "predict", str(image)] + (["--model", str(model)] if model else [])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return {"command": " ".join(cmd[1:]), "runs": runs, "median_s": statistics.median(times), "all_s": times}


def format_isa(m: dict[str, Any]) -> str:
    """``ISA avx2 avx512f ...`` (the vector features of :data:`VECTOR_ISA` this CPU has), plus any oneDNN cap."""
    isa = m.get("isa")
    text = "ISA unknown" if isa is None else "ISA " + (" ".join(isa) if isa else "below avx2")
    if m.get("onednn_max_cpu_isa"):
        # oneDNN's cap binds OpenVINO and torch; ONNX Runtime's MLAS picks its kernels from CPUID regardless
        text += f" (ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa']}: OpenVINO and torch only, not ONNX Runtime)"
    return text


def scan_vs_model(scan: dict[str, Any], model: dict[str, Any]) -> float | None:
    """A folder scan's images/s over the model alone's on the same runtime, precision and batch size (#18 asks
    >= 0.8: decoding overlapped with inference); None when that row was not timed."""
    rows = model.get(scan["backend"], [])
    same = [r for r in rows if r["batch"] == scan["batch_size"] and r.get("precision", "fp32") == scan["precision"]]
    return scan["images_per_s"] / same[0]["images_per_s"] if same and same[0]["images_per_s"] else None


def format_model_result(r: dict[str, Any]) -> str:
    m = r["machine"]
    gf = f"{r['gflops']:.2f}" if r["gflops"] else "n/a"
    params = f"{r['params_m']:.2f} M" if r["params_m"] is not None else "n/a"
    lines = [
        f"model {r['model']} @ {r['input']} px | params {params} | {r['size_mb_fp32']:.1f} MB fp32 | {gf} GFLOPs/image",
        f"device {r['device']} | {m['cpu']} | {format_isa(m)} | {m['cores']} cores | "
        f"torch threads {m['torch_threads']} | torch {m['torch']} | mode torch.inference_mode",
        f"{'runtime':<22}{'precision':>10}{'batch':>6}{'p50 ms':>10}{'p95 ms':>10}{'img/s':>10}{'GFLOP/s':>10}",
    ]
    for key in RUNTIMES:
        for row in r.get(key, []):
            gfs = f"{row['gflop_per_s']:.1f}" if "gflop_per_s" in row else "n/a"
            lines.append(
                f"{key:<22}{row.get('precision', 'fp32'):>10}{row['batch']:>6}{row['p50_ms']:>10.2f}"
                f"{row['p95_ms']:>10.2f}{row['images_per_s']:>10.1f}{gfs:>10}"
            )
    eager = {row["batch"]: row for row in r["torch_eager"]}
    for key in ("onnxruntime", "openvino"):
        for row in r.get(key, []):
            if row["batch"] in eager:
                ratio = row["images_per_s"] / eager[row["batch"]]["images_per_s"]
                lines.append(f"{key} / torch eager at batch {row['batch']}: {ratio:.2f}x throughput")
    return "\n".join(lines)


def export_for_timing(model: Any, size: int, path: Path) -> None:
    """Export ``model`` (dynamic batch, input ``size`` px, input name ``input``) to ``path``."""
    import torch

    torch.onnx.export(
        model.cpu(),
        (torch.randn(1, 3, size, size),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def ort_session_for_timing(model: Any, size: int, path: Path, threads: int | None = None) -> Any:
    """Export ``model`` (dynamic batch, input ``size`` px) to ``path`` and open an ONNX Runtime CPU session on it."""
    import onnxruntime as ort

    export_for_timing(model, size, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _int8_items(checkpoint: Path, data: Path, manifest: str | Path | None, split: str) -> tuple[list, str]:
    """Which images to score: a manifest's split, else the data's given split, else the checkpoint's run split
    (when made from this folder), else every image. Same rules as ``evaluate_checkpoint``."""
    from dfdetect.data.datasets import select_items

    return select_items(data, split, manifest, checkpoint)


def benchmark_int8(
    checkpoint: str | Path,
    data: str | Path,
    manifest: str | Path | None = None,
    split: str = "test",
    threads: int | None = None,
    warmup: int = 5,
    iters: int = 20,
    min_seconds: float = 2.0,
    batch_size: int = 32,
    mode: str = "dynamic",
    calib_images: int = 128,
) -> dict[str, Any]:
    """ONNX Runtime int8 quantization of a checkpoint's exported model: batch-1 latency fp32 vs int8, file
    sizes, and the accuracy change on ``data`` (same preprocessing).

    ``mode="dynamic"``: ``quantize_dynamic`` (int8 weights, activations quantized at run time).
    ``mode="static"``: ``quantize_static`` QDQ, per-channel int8 weights, uint8 activations with ranges
    calibrated on up to ``calib_images`` images of the *train* split (never the scored split). Static int8
    pays off on CPUs with VNNI/AMX; on plain AVX2 it can be slower than fp32 (measure, do not assume)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from dfdetect.core.metrics import compute_metrics
    from dfdetect.data.io import ImageLoadError, open_image
    from dfdetect.data.preprocess import preprocess
    from dfdetect.runtime.export import export_onnx

    checkpoint, data = Path(checkpoint), Path(data)
    items, source = _int8_items(checkpoint, data, manifest, split)
    if not items:
        raise ValueError(f"no images to score in {data} ({source})")
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        meta = export_onnx(checkpoint, fp32)["metadata"]
        dc, thr = meta["data_config"], float(meta["threshold"])
        if mode == "dynamic":
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QUInt8)
            how = "onnxruntime quantize_dynamic, QUInt8 weights"
        elif mode == "static":
            n_cal = _quantize_static(fp32, int8, checkpoint, data, manifest, dc, calib_images)
            how = (
                f"onnxruntime quantize_static QDQ, per-channel QInt8 weights, QUInt8 activations, {n_cal} train images"
            )
        else:
            raise ValueError(f"int8 mode must be dynamic or static, not {mode!r}")
        arrays, labels, skipped = [], [], 0
        for it in items:
            p = Path(it.path) if Path(it.path).is_absolute() else data / it.path
            try:
                arrays.append(preprocess(open_image(p), dc))
            except ImageLoadError as e:
                log.warning("skipping %s", e)
                skipped += 1
                continue
            labels.append(it.label)
        if not arrays:
            raise ValueError(f"no readable images in {data} ({source})")
        x = np.stack(arrays).astype(np.float32)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or os.cpu_count() or 1
        out: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "data": str(data),
            "images": source,
            "n": len(labels),
            "skipped": skipped,
            "threshold": thr,
            "quantization": how,
        }
        scores = {}
        for name, path in (("fp32", fp32), ("int8", int8)):
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            logits = np.concatenate(
                [sess.run(None, {"input": x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
            )
            z = logits - logits.max(1, keepdims=True)
            s = np.exp(z)[:, 1] / np.exp(z).sum(1)
            scores[name] = s
            m = compute_metrics(labels, s, thr)
            x1 = x[:1]
            t = timing_stats(
                timeit(lambda sess=sess, x1=x1: sess.run(None, {"input": x1}), warmup, iters, min_seconds), 1
            )
            out[name] = {
                "accuracy": m["accuracy"],
                "f1": m["f1"],
                "roc_auc": m["roc_auc"],
                "p50_ms": t["p50_ms"],
                "p95_ms": t["p95_ms"],
                "images_per_s": t["images_per_s"],
                "file_mb": path.stat().st_size / 2**20,
            }
    out["accuracy_change"] = out["int8"]["accuracy"] - out["fp32"]["accuracy"]
    out["roc_auc_change"] = out["int8"]["roc_auc"] - out["fp32"]["roc_auc"]
    out["same_verdict"] = float(np.mean((scores["fp32"] >= thr) == (scores["int8"] >= thr)))
    out["max_score_change"] = float(np.abs(scores["fp32"] - scores["int8"]).max())
    out["speedup"] = out["fp32"]["p50_ms"] / out["int8"]["p50_ms"]
    return out


def _quantize_static(
    fp32: Path,
    int8: Path,
    checkpoint: Path,
    data: Path,
    manifest: str | Path | None,
    data_config: dict[str, Any],
    limit: int,
) -> int:
    """Calibrate activation ranges on train-split images and write a QDQ int8 model; returns the image count."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from dfdetect.data.io import ImageLoadError, open_image
    from dfdetect.data.preprocess import preprocess

    items, source = _int8_items(checkpoint, data, manifest, "train")
    if not items or source == "all images":
        raise ValueError(f"static int8 calibrates on a train split; {data} has none ({source}): pass --manifest")
    rng = np.random.default_rng(0)
    arrays = []
    for i in rng.permutation(len(items))[: max(1, limit)]:
        p = Path(items[i].path) if Path(items[i].path).is_absolute() else data / items[i].path
        try:
            arrays.append(preprocess(open_image(p), data_config))
        except ImageLoadError:
            continue
    if not arrays:
        raise ValueError(f"no readable calibration images in {data}")
    calib = np.stack(arrays).astype(np.float32)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(calib):
                return None
            batch = calib[self.start : self.start + 16]
            self.start += 16
            return {"input": batch}

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(int8),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return len(calib)


def format_int8_result(r: dict[str, Any]) -> str:
    lines = [
        f"int8 ({r['quantization']}) on {r['n']} images of {r['data']} ({r['images']}), threshold {r['threshold']:.4f}",
        f"{'':<6}{'accuracy':>10}{'F1':>8}{'AUC':>8}{'p50 ms':>9}{'img/s':>9}{'file MB':>9}",
    ]
    for k in ("fp32", "int8"):
        v = r[k]
        lines.append(
            f"{k:<6}{v['accuracy']:>10.4f}{v['f1']:>8.4f}{v['roc_auc']:>8.4f}{v['p50_ms']:>9.2f}"
            f"{v['images_per_s']:>9.1f}{v['file_mb']:>9.2f}"
        )
    lines.append(
        f"int8 - fp32: accuracy {r['accuracy_change']:+.4f}, AUC {r['roc_auc_change']:+.4f}; "
        f"same verdict {r['same_verdict']:.1%}, max |P(fake) change| {r['max_score_change']:.4f}; "
        f"batch-1 speed-up {r['speedup']:.2f}x"
    )
    return "\n".join(lines)
