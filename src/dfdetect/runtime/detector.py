"""The Python API for scoring images: ``Detector.load().predict(paths)`` -> list of ``Prediction``.

Three backends behind one class: PyTorch (any checkpoint from ``dfdetect train`` or shipped safetensors;
needed for CAMs), and for ``.onnx`` files from ``dfdetect export`` OpenVINO or ONNX Runtime: the fast paths on
CPUs, which never import torch, so a cold ``dfdetect predict one.jpg`` stays quick. OpenVINO is preferred when
installed (1.2-1.4x ONNX Runtime's folder-scan speed on the 2-core reference CPU: ``dfdetect benchmark`` times
both; the scores agree to 1e-5).
Preprocessing always comes from the model's stored data config (``dfdetect.data.preprocess``), never from
ImageNet defaults. The same ``Prediction`` shape serves the CLI (table, JSON lines, CSV) and the REST API.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfdetect.core.errors import UnsupportedError
from dfdetect.core.scores import softmax_fake
from dfdetect.data.io import to_rgb
from dfdetect.data.preprocess import preprocess
from dfdetect.faces.predict import MIN_FACE
from dfdetect.models.checkpoint import CheckpointError, first_line
from dfdetect.runtime import pipeline
from dfdetect.runtime.pipeline import Options, Prediction, expand_paths, scan_inputs

__all__ = ["Detector", "Prediction", "expand_paths", "model_file", "scan_inputs", "shipped_name"]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.safetensors"
SHIPPED = ("default", "large")
"""Models inside the package, by name: ``default`` (EfficientNet-Lite0 at the data's native 256 px: the most
accurate on validation among the models that meet the 60 images/s folder-scan target on a 2-core CPU) and
``large`` (the same network at 320 px, from which ``default`` was fine-tuned: higher validation AUC, 0.64x the
speed). Model card: weights/MODEL_CARD.md."""
_RENAMED = {"fast": "default"}
"""Earlier shipped names (``fast`` became ``default`` when the 256 px model was made the default)."""


def shipped_name(ref: str | Path | None) -> str | None:
    """The shipped model ``ref`` names (``ref=None``: ``default``; an earlier name maps to today's, with a
    warning), or None when ``ref`` is an existing file or not a shipped name."""
    name = "default" if ref is None else str(ref)
    if Path(name).exists():
        return None
    if name in _RENAMED:
        log.warning("shipped model %r is now called %r", name, _RENAMED[name])
        name = _RENAMED[name]
    return name if name in SHIPPED else None


def model_file(ref: str | Path) -> Path:
    """The file ``ref`` names: a shipped model's weights inside the package, else ``ref`` itself."""
    name = shipped_name(ref)
    return WEIGHTS_DIR / f"{name}.safetensors" if name else Path(ref)


class TorchBackend:
    name = "torch"
    precision = "fp32"

    def __init__(self, model: Any, device: Any):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


class OnnxBackend:
    """ONNX Runtime on CPU. A single image runs on a session using every thread; a batch runs image by image from
    ``streams`` Python threads on a one-thread session (ONNX Runtime's ``run`` is thread-safe and releases the
    GIL): on a 2-core AMX Xeon, fp32, 64 images, 77-82 images/s vs 63-67 as 32-image calls on a 2-thread session
    (`experiments/openvino_streams/`). ``streams=1`` keeps the one-session behaviour."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, path: Path, threads: int | None = None, streams: int | None = None) -> None:
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        if streams is not None and streams < 1:
            raise ValueError(f"streams must be >= 1 or None (one per thread), not {streams}")
        self.path = path
        n = threads or os.cpu_count() or 1
        unreadable = (state.InvalidProtobuf, state.InvalidArgument, state.InvalidGraph, state.NoModel, state.Fail)
        try:
            self.session = self._session(n)
        except unreadable as e:
            raise CheckpointError(f"{path}: truncated or not an ONNX model ({first_line(e)})") from e
        self.input = self.session.get_inputs()[0].name
        self.device = "cpu"
        self.streams = n if streams is None else streams
        self._parallel: tuple[Any, ThreadPoolExecutor] | None = None  # made on the first batch that wants it
        self._lock = threading.Lock()

    def _session(self, threads: int) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])

    def logits(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 1 or self.streams <= 1:
            return self.session.run(None, {self.input: batch})[0]
        with self._lock:
            if self._parallel is None:
                self._parallel = (self._session(1), ThreadPoolExecutor(self.streams, thread_name_prefix="ort"))
        session, pool = self._parallel
        outs = pool.map(lambda i: session.run(None, {self.input: batch[i : i + 1]})[0], range(len(batch)))
        return np.concatenate(list(outs))


_OV_CORE: Any = None
_OV_CORE_LOCK = threading.Lock()


def _ov_core() -> Any:
    """The process's one OpenVINO ``Core``, created on first use and never released.

    Releasing a Core unloads its CPU plugin, and in a long-lived process that also runs torch (our test suite:
    training, DataLoader workers) that corrupted memory: segfaults in the Python interpreter and aborts on
    multiprocessing semaphores, tests later. Reproduced by loading two OpenVINO detectors in turn (the first one
    released) before a training test; with one shared Core the same sequence and the whole suite pass.
    OpenVINO's own guidance is one Core per application."""
    global _OV_CORE
    with _OV_CORE_LOCK:
        if _OV_CORE is None:
            import openvino as ov

            _OV_CORE = ov.Core()
        return _OV_CORE


PRECISIONS = ("fp32", "bf16")
"""Numeric precision a backend may run in: fp32 (the default everywhere) or bf16 (OpenVINO only, when asked)."""
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
IN_FLIGHT_PER_STREAM = 2
"""OpenVINO batches: images in flight per throughput stream (each request holds one input-sized buffer; with 2,
a stream has its next image queued while Python reads the last one's output)."""


class OpenVinoBackend:
    """OpenVINO on CPU, on the process-wide Core, in two compiled forms. A single image runs on a latency-compiled
    model (one stream, every thread on it); a batch runs image by image on a throughput-compiled model, on a ring of
    infer requests (2 per stream) over OpenVINO's streams (it picks them: 2 on a 2-core CPU). On a 2-core
    AMX Xeon, fp32, 64 images: 92 images/s with streams vs 79 image by image on one stream and 84 as one 32-image
    call (`experiments/openvino_streams/`); the earlier one-stream choice (image by image, 38 vs 36 images/s as
    whole batches on the reference AVX2 CPU) is what ``streams=1`` keeps.

    Precision is pinned: left alone, OpenVINO runs in bf16 on CPUs with AVX-512 BF16 or AMX, which moved the
    shipped model's scores by up to 0.096 on 433 faces (6 verdicts flipped). fp32 unless ``precision="bf16"``.

    ``streams``: None = OpenVINO's throughput choice for batches, 1 = one stream for everything (the batch image
    by image on the latency model)."""

    name = "openvino"

    def __init__(
        self, path: Path, threads: int | None = None, precision: str = "fp32", streams: int | None = None
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if streams is not None and streams < 1:
            raise ValueError(f"streams must be >= 1 or None (OpenVINO's choice), not {streams}")
        core = _ov_core()
        try:
            self.ov_model = core.read_model(str(path))
        except RuntimeError as e:
            raise CheckpointError(f"{path}: truncated or not an ONNX model ({_ov_reason(e)[:300]})") from e
        one_image_batches(self.ov_model)
        self._config = {
            "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        }

        def latency_model() -> Any:
            return core.compile_model(self.ov_model, "CPU", {"PERFORMANCE_HINT": "LATENCY", **self._config})

        try:
            self.compiled = latency_model()
        except RuntimeError as e:
            if precision == "fp32":
                raise
            # e.g. bf16 with oneDNN capped below its bf16 kernels (ONEDNN_MAX_CPU_ISA=AVX2): "object is not initialized"
            reason = _ov_reason(e)[:200]
            self._config["INFERENCE_PRECISION_HINT"] = _OV_PRECISION["fp32"]
            self.compiled = latency_model()
        else:
            reason = f"this CPU has no native {precision}"
        self.precision = _ov_precision_name(self.compiled)
        if self.precision != precision:
            log.warning("OpenVINO runs %s here, not the %s asked for (%s)", self.precision, precision, reason)
        self.streams = streams
        self.device = "cpu"
        # Requests are not thread-safe and the REST API scores from threads: one batch at a time, behind a lock.
        self._lock = threading.Lock()
        self._request = self.compiled.create_infer_request()
        self._throughput: Any = None  # the throughput-compiled model, made on the first batch that wants it
        self._requests: list[Any] = []  # its infer requests, used as a ring

    def metadata(self) -> str | None:
        if not self.ov_model.has_rt_info(["framework", "dfdetect"]):
            return None
        return str(self.ov_model.get_rt_info(["framework", "dfdetect"]).astype(str))

    def _batch_requests(self) -> list[Any] | None:
        """The infer requests (``IN_FLIGHT_PER_STREAM`` per stream) of the throughput-compiled model, or None when
        it would have one stream."""
        if self.streams == 1:
            return None
        if self._throughput is None:
            config = {"PERFORMANCE_HINT": "THROUGHPUT", **self._config}
            if self.streams is not None:
                config["NUM_STREAMS"] = self.streams
            compiled = _ov_core().compile_model(self.ov_model, "CPU", config)
            streams = int(compiled.get_property("NUM_STREAMS"))
            if streams < 2:
                self.streams = 1  # one core: the latency model is the same work without the queue
                return None
            self._throughput = compiled
            self._requests = [compiled.create_infer_request() for _ in range(IN_FLIGHT_PER_STREAM * streams)]
        return self._requests

    def logits(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            requests = self._batch_requests() if len(batch) > 1 else None
            if requests is None:  # copy: the request reuses its output buffer on the next call
                return np.concatenate(
                    [np.array(self._request.infer({0: batch[i : i + 1]})[0], copy=True) for i in range(len(batch))]
                )
            # A ring over the requests, image i on request i % k; image i - k's request is free (and read) before
            # image i starts on it. No callbacks: with OpenVINO's AsyncInferQueue, its streams idled until Python
            # (whose GIL the decode threads share) ran each callback; without them, on a 2-core Zen 5 EPYC, the
            # model alone 1.10x and the folder scan 1.08x in fp32 (bf16 1.06x / 1.09x), identical scores
            # (`experiments/openvino_streams/requests.py`).
            k, n, outs = len(requests), len(batch), []
            try:
                for i in range(n):
                    if i >= k:  # image i - k ran on the same request: read it first
                        outs.append(_read(requests[i % k]))
                    # copied in: sharing the batch's memory was no faster and kept each last batch alive (+20 MB)
                    requests[i % k].start_async({0: batch[i : i + 1]})
                outs += [_read(requests[i % k]) for i in range(max(0, n - k), n)]
            except BaseException:
                for r in requests[: min(n, k)]:  # none left running: the next batch starts on idle requests
                    r.wait()
                raise
            return np.concatenate(outs)


def _read(request: Any) -> np.ndarray:
    """Wait for an OpenVINO request and copy its output (the request is reused)."""
    request.wait()
    return np.array(request.get_output_tensor(0).data, copy=True)


def one_image_batches(model: Any) -> None:
    """Fix the batch dimension at 1: both compiled forms run image by image, and a static shape spares OpenVINO
    its per-call shape work. Identical scores; on a 2-core AMX Xeon, fp32, 15 alternating passes: throughput
    streams 1.10x (AVX2 kernels, ``ONEDNN_MAX_CPU_ISA=AVX2``: 1.03x), batch-1 latency 0.87x (0.88x)
    (`experiments/openvino_streams/static_batch.py`). A graph whose batch cannot be fixed keeps its own shape."""
    inp = model.inputs[0]
    shape = inp.get_partial_shape()
    if shape.rank.is_dynamic or len(shape) == 0 or not shape[0].is_dynamic:
        return
    shape[0] = 1
    try:
        model.reshape({inp: shape})
    except RuntimeError as e:  # a batch wired into the graph's reshapes: run it as exported
        log.debug("OpenVINO: batch left dynamic (%s)", str(e).strip().splitlines()[-1:])


def _ov_reason(e: RuntimeError) -> str:
    """OpenVINO's errors are plain RuntimeErrors with a C++ trace; the reason is on the last line."""
    return (str(e).strip().splitlines() or [type(e).__name__])[-1]


def _ov_precision_name(compiled: Any) -> str:
    """The precision OpenVINO actually compiled for (read back, not assumed): fp32 or bf16 (or its own name)."""
    try:
        got = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    except RuntimeError:
        return "unknown"
    # openvino prints an element Type ("<Type: 'float32'>"); older releases print "f32"
    for key, name in (
        ("bf16", "bf16"),
        ("bfloat16", "bf16"),
        ("f32", "fp32"),
        ("float32", "fp32"),
        ("f16", "fp16"),
        ("float16", "fp16"),
    ):
        if key in got:
            return name
    return got


ONNX_BACKENDS = ("openvino", "onnx")


class Detector:
    """A loaded detector: a backend + its preprocessing (data config) + its decision threshold."""

    def __init__(
        self,
        backend: Any,
        data_config: dict[str, Any],
        threshold: float = 0.5,
        model_id: str = "unknown",
        arch: str = "unknown",
        meta: dict[str, Any] | None = None,
        source: str = "",
    ):
        self.backend = backend
        self.data_config = data_config
        self.threshold = float(threshold)
        self.model_id = model_id
        self.arch = arch
        self.meta = meta or {}
        self.source = source
        self.temperature = float(self.meta.get("temperature", 1.0))
        """Calibration temperature (``dfdetect calibrate``): P(fake) = softmax(logits / T)[1]."""

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path | None = None, device: str = "auto", backend: str = "auto", precision: str = "fp32"
    ) -> Detector:
        """Load a model. ``path``: a .pt checkpoint, .safetensors, or .onnx, or the name of a shipped model
        (``default``, ``large``); None = ``default``.

        ``backend``: auto (for .onnx files, and for the shipped models on CPU: OpenVINO when installed, else ONNX
        Runtime when installed; PyTorch otherwise), torch, onnx (ONNX Runtime) or openvino (an .onnx file or a
        shipped model).

        ``precision``: fp32 (default, on every backend and CPU) or bf16 (OpenVINO only: faster on CPUs with
        AVX-512 BF16 or AMX, scores move by up to about 0.1; the README gives its measured accuracy change).
        """
        if backend not in ("auto", "torch", *ONNX_BACKENDS):
            raise ValueError(f"backend must be auto, torch, onnx or openvino, not {backend!r}")
        backend = backend_for_precision(backend, precision)
        name = shipped_name(path)
        if name is not None:
            weights, onnx = WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.onnx"
            if not weights.is_file():
                raise FileNotFoundError(f"the shipped {name!r} detector {weights} is missing from this installation")
            want_onnx = backend in ONNX_BACKENDS or (
                backend == "auto"
                and device in ("auto", "cpu")
                and onnx.is_file()
                and (backend_installed("openvino") or backend_installed("onnxruntime"))
                and not _cuda_wanted(device)
            )
            path = onnx if want_onnx else weights
        path = Path(path)
        if path.is_dir():
            raise FileNotFoundError(f"{path} is a folder, not a model file (a .pt, .safetensors or .onnx)")
        if not path.is_file():
            near = difflib.get_close_matches(str(path).lower(), SHIPPED, n=1, cutoff=0.6)
            hint = near[0] if near else None
            shipped = " | ".join(SHIPPED)
            also = f" (did you mean the shipped {hint!r}?)" if hint else f" (nor a shipped model: {shipped})"
            raise FileNotFoundError(f"model file {path} not found{also}")
        if path.suffix == ".onnx":
            if backend == "torch":
                raise ValueError("an .onnx file runs on onnx or openvino; pass a .pt/.safetensors for torch")
            if backend == "auto":
                backend = "openvino" if backend_installed("openvino") else "onnx"
            return cls._load_onnx(path, backend, precision)
        if backend in ONNX_BACKENDS:
            raise ValueError(f"{path} is a PyTorch checkpoint; export it first: dfdetect export {path}")
        return cls._load_torch(path, device)

    @classmethod
    def _load_onnx(cls, path: Path, backend: str = "onnx", precision: str = "fp32") -> Detector:
        be: OnnxBackend | OpenVinoBackend
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path} is empty (0 bytes): truncated or not an ONNX model")
        if backend == "openvino":
            be = OpenVinoBackend(path, precision=precision)
            raw = be.metadata()
        else:
            be = OnnxBackend(path)
            raw = be.session.get_modelmeta().custom_metadata_map.get("dfdetect")
        if raw is None:
            raise CheckpointError(f"{path} has no dfdetect metadata (not exported by `dfdetect export`)")
        try:
            meta = json.loads(raw)
            args = (meta["data_config"], meta.get("threshold", 0.5), meta["model_id"], meta["arch"])
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{path}: its dfdetect metadata is unreadable or incomplete ({e!r})") from e
        return cls(be, *args, meta, source=str(path))

    @classmethod
    def _load_torch(cls, path: Path, device: str) -> Detector:
        from dfdetect.core.device import resolve_device
        from dfdetect.models.checkpoint import load_checkpoint, model_id_for
        from dfdetect.models.factory import model_from_checkpoint

        ckpt = load_checkpoint(path)
        try:
            model = model_from_checkpoint(ckpt)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        if ckpt.get("kind") == "ensemble":
            keys = ("method", "weights", "intercept", "threshold_rule", "valid", "fit")
            cls = EnsembleDetector
        else:
            keys = ("epoch", "split_sha256", "threshold_rule", "valid", "temperature")
        meta = {k: ckpt[k] for k in keys if k in ckpt}
        return cls(
            TorchBackend(model, resolve_device(device)),
            ckpt["data_config"],
            ckpt.get("threshold", 0.5),
            model_id_for(ckpt, path),
            ckpt["arch"],
            meta,
            source=str(path),
        )

    # ---- scoring -------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The torch module (torch backend only): for CAMs and feature maps."""
        if not isinstance(self.backend, TorchBackend):
            raise UnsupportedError(
                f"this detector runs on {self.backend.name}, which has no torch model (CAMs and feature maps need "
                "one): load it with backend='torch' (a .pt or .safetensors; the shipped models have one)"
            )
        return self.backend.model

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return preprocess(to_rgb(img), self.data_config)

    def score_batch(self, batch: np.ndarray) -> np.ndarray:
        """P(fake) for a preprocessed float32 batch (N, 3, H, W)."""
        logits = self.backend.logits(np.ascontiguousarray(batch, dtype=np.float32))
        return softmax_fake(logits, self.temperature)

    def score_image(self, img: Image.Image) -> float:
        """P(fake) for one decoded image (any mode)."""
        return float(self.score_batch(self.preprocess(img)[None])[0])

    def predict_image(
        self,
        img: Image.Image,
        name: str = "<image>",
        threshold: float | None = None,
        faces: bool | str | None = None,
        min_face: int = MIN_FACE,
        align: bool = True,
    ) -> Prediction:
        """One decoded image through the predict pipeline: same rule, record and warnings as ``predict``."""
        return pipeline.predict_image(self, img, name, Options(faces, threshold, min_face, align))

    def predict_bytes(
        self,
        data: bytes,
        name: str = "<upload>",
        threshold: float | None = None,
        faces: bool | str | None = None,
        min_face: int = MIN_FACE,
        align: bool = True,
    ) -> Prediction:
        """One encoded image held in memory through the predict pipeline."""
        return pipeline.predict_bytes(self, data, name, Options(faces, threshold, min_face, align))

    def predict(
        self,
        inputs: str | Path | Iterable[str | Path],
        batch_size: int = 32,
        workers: int = 2,
        threshold: float | None = None,
        progress: bool = False,
        faces: bool | str | None = None,
        min_face: int = MIN_FACE,
        align: bool = True,
    ) -> list[Prediction]:
        """Score files, folders or globs through the predict pipeline (``dfdetect.runtime.pipeline``).

        One record per file (unreadable ones with ``error`` set), then one per folder entry a scan skipped
        (``mode == "skipped"``: not an image file, a directory named like an image, a broken link); missing
        inputs raise ``FileNotFoundError``. ``faces``: None/"auto" = face mode for images much larger than the
        model input or far from square (as ``dfdetect predict``), True forces it, False scores whole images.
        """
        opts = Options(faces, threshold, min_face, align)
        return pipeline.run(self, inputs, opts, batch_size=batch_size, workers=workers, progress=progress)


class EnsembleDetector(Detector):
    """An ensemble checkpoint's detector: its preprocessing packs every member's own input into one vector
    (``models.ensemble.EnsembleModel.pack``), so batching and scoring stay those of any ``Detector``."""

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return self.backend.model.pack(img)


def backend_for_precision(backend: str, precision: str) -> str:
    """The backend that runs ``precision`` when ``backend`` is asked for (bf16 is OpenVINO's); ValueError saying
    why when it cannot run there."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return backend
    if backend not in ("auto", "openvino"):
        raise ValueError(f"precision {precision} runs on the openvino backend only, not {backend}")
    if not backend_installed("openvino"):
        raise ValueError(f"precision {precision} needs OpenVINO: pip install 'dfdetect[openvino]'")
    return "openvino"


def backend_installed(module: str) -> bool:
    """Whether an optional runtime (onnxruntime, openvino) is importable here, without importing it."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cuda_wanted(device: str) -> bool:
    if device != "auto":
        return device.startswith("cuda")
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    # Avoid importing torch just to ask: a visible NVIDIA device node is a good enough hint.
    return Path("/dev/nvidia0").exists()
