"""The REST API and web page: ``create_app(...)`` builds a FastAPI app that uvicorn serves.

Request path of ``POST /predict``::

    multipart body --(streamed, per-file size limit while reading)--> bytes per file
      --(thread pool: hash, safe decode, preprocess)--> float32 arrays
      --(micro-batcher: one inference thread)--> P(fake) --> scan history (SQLite) --> JSON

Throughput: the event loop never runs model code. Decoding runs in Starlette's thread pool (PIL and numpy
release the GIL); inference runs in one dedicated thread that owns the model and scores whatever requests
are waiting as one batch (up to ``max_batch``, after waiting at most ``max_wait_ms`` for company). Under
load many concurrent requests share one forward pass; when idle a lone request waits only
``max_wait_ms``. One thread owning the model also means no lock contention and no thread-safety
assumptions about the backend.

Grad-CAM (``POST /explain``) needs gradients, so it runs on a separate PyTorch copy of the model, loaded on
the first request, one explanation at a time, and only when ``dfdetect.analysis.explain`` is installed (501 if not).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import copy
import hashlib
import hmac
import importlib
import io
import logging
import math
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from dfdetect.core.labels import verdict
from dfdetect.core.version import __version__
from dfdetect.runtime import pipeline
from dfdetect.serve.db import ScanDB, ScanRecord, utc_now
from dfdetect.serve.schemas import (
    ErrorResponse,
    ExplainResponse,
    FaceOut,
    ForensicsResponse,
    Health,
    ModelInfo,
    Models,
    PredictionOut,
    PredictResponse,
    Scan,
    ScanPage,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
API_KEY_ENV = "DFDETECT_API_KEY"
API_KEY_HEADER = "X-API-Key"
FILE_FIELDS = ("files", "file")
MAX_FIELD_BYTES = 64 * 1024
MAX_CASE_ID_LEN = 200
MAX_RENDER_SIDE = 1024
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_MAGIC = (
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"GIF8", "gif", "image/gif"),
    (b"BM", "bmp", "image/bmp"),
    (b"II*\x00", "tif", "image/tiff"),
    (b"MM\x00*", "tif", "image/tiff"),
)
_EXT_TYPES = {ext: mime for _, ext, mime in _MAGIC} | {"webp": "image/webp"}


# ---- upload parsing ---------------------------------------------------------------------------------
@dataclass
class Upload:
    name: str
    data: bytearray = field(default_factory=bytearray)


class _TooLarge(Exception):
    pass


class _BadForm(Exception):
    pass


def _safe_name(raw: str) -> str:
    """The last path component of a client file name, without control characters, at most 255 chars."""
    name = PurePosixPath(raw.replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or "upload"


async def read_multipart(request: Request, max_file_bytes: int, max_files: int) -> tuple[list[Upload], dict[str, str]]:
    """Stream a multipart/form-data body: file parts under ``files``/``file`` and small text fields.

    Sizes are checked while reading, so an oversize file costs at most ``max_file_bytes`` of memory
    before the request is answered 413; nothing is spooled to disk.
    """
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise HTTPException(415, "send the images as multipart/form-data (field name 'files')")
    limit_total = max_files * (max_file_bytes + MAX_FIELD_BYTES) + 1024 * 1024
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit_total:
        raise HTTPException(413, f"request body too large ({int(length)} bytes; at most {max_files} files)")

    uploads: list[Upload] = []
    fields: dict[str, str] = {}
    state: dict[str, Any] = {"headers": [], "hname": b"", "hvalue": b"", "part": None, "field": None}

    def on_part_begin() -> None:
        state.update(headers=[], part=None, field=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hname"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hvalue"] += data[start:end]

    def on_header_end() -> None:
        state["headers"].append((state["hname"].lower(), state["hvalue"]))
        state["hname"], state["hvalue"] = b"", b""

    def on_headers_finished() -> None:
        disposition = next((v for k, v in state["headers"] if k == b"content-disposition"), b"")
        _, opts = parse_options_header(disposition)
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in opts:
            if name not in FILE_FIELDS:
                raise _BadForm(f"upload files under the field name 'files', not {name!r}")
            if len(uploads) >= max_files:
                raise _TooLarge(f"too many files in one request (at most {max_files})")
            up = Upload(_safe_name(opts[b"filename"].decode("utf-8", "replace")))
            uploads.append(up)
            state["part"] = up
        else:
            if len(fields) >= 16:
                raise _BadForm("too many form fields")
            state["field"] = (name, bytearray())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part: Upload | None = state["part"]
        if part is not None:
            if len(part.data) + (end - start) > max_file_bytes:
                raise _TooLarge(f"{part.name}: file exceeds the {max_file_bytes / 1e6:g} MB upload limit")
            part.data += data[start:end]
        elif state["field"] is not None:
            buf: bytearray = state["field"][1]
            if len(buf) + (end - start) > MAX_FIELD_BYTES:
                raise _TooLarge(f"form field {state['field'][0]!r} is too large")
            buf += data[start:end]

    def on_part_end() -> None:
        if state["field"] is not None:
            name, buf = state["field"]
            fields[name] = bytes(buf).decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
    }
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit_total:
                raise _TooLarge("request body too large")
            parser.write(chunk)
        parser.finalize()
    except _TooLarge as e:
        raise HTTPException(413, str(e)) from None
    except _BadForm as e:
        raise HTTPException(422, str(e)) from None
    except HTTPException:
        raise
    except Exception as e:  # python-multipart's parse errors, client disconnects
        raise HTTPException(400, f"invalid multipart body ({type(e).__name__})") from None
    return uploads, fields


# ---- decoding -------------------------------------------------------------------------------------
@dataclass
class Decoded:
    name: str
    sha256: str
    size: int
    data: bytes
    image: Image.Image | None = None
    array: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    status: int = 200
    """HTTP status this file alone would get: 200, 415 (not an image), 422 (empty, corrupt, bomb)."""


def decode_upload(up: Upload, detector: Any, keep_image: bool = False, preprocess: bool = True) -> Decoded:
    """Hash, decode safely (``dfdetect.data.io.open_image``) and preprocess one upload. Never raises."""
    from dfdetect.data.io import ImageLoadError, open_image

    data = bytes(up.data)
    d = Decoded(up.name, hashlib.sha256(data).hexdigest(), len(data), data)
    try:
        img = open_image(data)
        d.width, d.height = img.size
        if preprocess:
            d.array = detector.preprocess(img)
        if keep_image:
            d.image = img
    except ImageLoadError as e:
        d.error = str(e).replace("<bytes>", up.name)
        d.status = 415 if isinstance(e.__cause__, UnidentifiedImageError) else 422
    except Exception as e:  # anything Pillow or preprocessing throws on hostile input
        log.warning("could not process %s: %r", up.name, e)
        d.error = f"{up.name}: could not process image ({type(e).__name__})"
        d.status = 422
    return d


def _sniff(data: bytes) -> tuple[str, str]:
    for magic, ext, mime in _MAGIC:
        if data.startswith(magic):
            return ext, mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "image/webp"
    return "bin", "application/octet-stream"


def _all_failed(decoded: Sequence[Decoded]) -> HTTPException:
    status = 415 if all(d.status == 415 for d in decoded) else 422
    if len(decoded) == 1:
        return HTTPException(status, decoded[0].error)
    return HTTPException(status, [{"path": d.name, "error": d.error} for d in decoded])


# ---- inference ------------------------------------------------------------------------------------
class MicroBatcher:
    """One thread owns the detector and scores queued arrays in batches."""

    def __init__(self, detector: Any, max_batch: int = 16, max_wait_ms: float = 2.0):
        self.detector = detector
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self._queue: queue.Queue[tuple[np.ndarray, concurrent.futures.Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dfdetect-inference", daemon=True)
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, array: np.ndarray) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((array, fut))
        return fut

    async def score(self, arrays: Sequence[np.ndarray]) -> list[float]:
        futs = [asyncio.wrap_future(self.submit(a)) for a in arrays]
        return [float(s) for s in await asyncio.gather(*futs)]

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._score(batch)
        self._drain()

    def _score(self, batch: list[tuple[np.ndarray, concurrent.futures.Future]]) -> None:
        live = [(a, f) for a, f in batch if f.set_running_or_notify_cancel()]
        by_shape: dict[tuple[int, ...], list[tuple[np.ndarray, concurrent.futures.Future]]] = {}
        for a, f in live:
            by_shape.setdefault(a.shape, []).append((a, f))
        for group in by_shape.values():
            try:
                scores = self.detector.score_batch(np.stack([a for a, _ in group]))
            except Exception as e:
                log.exception("inference failed on a batch of %d", len(group))
                for _, f in group:
                    f.set_exception(e)
                continue
            self.batches += 1
            self.images += len(group)
            for (_, f), s in zip(group, scores):
                f.set_result(float(s))

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(RuntimeError("server shutting down"))


class ExplainRunner:
    """Grad-CAM on a PyTorch copy of the model: loaded on first use, one explanation at a time."""

    def __init__(self, model: str | None, device: str):
        self.model = model
        self.device = device
        self._lock = threading.Lock()
        self._detector: Any = None
        self._explain: Any = None
        self.unavailable: str | None = None
        self.tried = False

    def torch_checkpoint(self) -> Path | None:
        from dfdetect.runtime.detector import DEFAULT_WEIGHTS

        if self.model is None:
            return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None
        p = Path(self.model)
        if p.suffix != ".onnx":
            return p
        for suffix in (".safetensors", ".pt"):
            if p.with_suffix(suffix).is_file():
                return p.with_suffix(suffix)
        return None

    def _ensure(self) -> None:
        """Load on first use; sets ``unavailable`` (the 501 message) when explanations cannot run."""
        if self.tried:
            return
        self.tried = True
        try:
            self._explain = importlib.import_module("dfdetect.analysis.explain").explain_image
        except ImportError as e:
            self.unavailable = (
                f"Grad-CAM explanations are not available in this installation (dfdetect.analysis.explain: {e})"
            )
            return
        except AttributeError:
            self.unavailable = "Grad-CAM explanations are not available: dfdetect.analysis.explain has no explain_image"
            return
        ckpt = self.torch_checkpoint()
        if ckpt is None:
            self.unavailable = (
                "explanations need the PyTorch weights (.pt or .safetensors) of the served model; "
                "put them beside the .onnx file or serve the checkpoint itself"
            )
            return
        from dfdetect.runtime.detector import Detector

        try:
            self._detector = Detector.load(ckpt, device=self.device, backend="torch")
        except Exception as e:  # a broken or missing checkpoint: say so on every /explain, keep serving /predict
            log.exception("cannot load %s for explanations", ckpt)
            self.unavailable = f"explanations unavailable: cannot load the PyTorch model {ckpt.name} ({e})"
            return
        log.info("loaded %s for explanations (%s)", self._detector.model_id, ckpt)

    def run(self, img: Image.Image) -> tuple[Any, Any]:
        """(explanation, torch detector); raises LookupError(message) when unavailable."""
        with self._lock:
            self._ensure()
            if self.unavailable:
                raise LookupError(self.unavailable)
            return self._explain(self._detector, img), self._detector

    def run_faces(
        self, img: Image.Image, align: bool = True, threshold: float | None = None
    ) -> tuple[Any, Any, Image.Image, Image.Image, Any]:
        """Face mode: (``FaceResult``, explanation of the deciding face's crop (of the whole image when no face
        was found), that crop, the overview with the boxes drawn, torch detector); LookupError when unavailable.
        Only the deciding face is explained: the answer carries one panel."""
        from dfdetect.faces import draw_faces
        from dfdetect.runtime.pipeline import predict_faces

        with self._lock:
            self._ensure()
            if self.unavailable:
                raise LookupError(self.unavailable)
            r = predict_faces(self._detector, img, threshold=threshold, align=align)
            target = r.crops[r.decided] if r.faces and r.decided is not None else img
            return r, self._explain(self._detector, target), target, draw_faces(img, r), self._detector


def set_threads(detector: Any, threads: int) -> None:
    """Intra-op threads for inference: torch's process-wide setting, or a new ONNX Runtime / OpenVINO session."""
    if detector.backend.name == "torch":
        import torch

        torch.set_num_threads(threads)
    elif detector.backend.name == "onnxruntime":
        from dfdetect.runtime.detector import _OnnxBackend

        detector.backend = _OnnxBackend(Path(detector.source), threads=threads)
    elif detector.backend.name == "openvino":
        from dfdetect.runtime.detector import _OpenVinoBackend

        detector.backend = _OpenVinoBackend(Path(detector.source), threads=threads)
    log.info("inference uses %d thread(s)", threads)


def _analyze_bytes(fx: Any, d: Decoded) -> Any:
    """``dfdetect.analysis.forensics.analyze_file`` on the upload (metadata readers want a file), named as uploaded."""
    import tempfile

    suffix = Path(d.name).suffix.lower()
    suffix = suffix if suffix in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif") else ""
    with tempfile.TemporaryDirectory(prefix="dfdetect-serve-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(d.data)
        a = fx.analyze_file(path)
    a.path = d.name
    if a.error:
        a.error = a.error.replace(str(path), d.name)
    return a


def jsonable(x: Any) -> Any:
    """Plain JSON types (numpy scalars, tuples, NaN -> None) for a free-form summary dict."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---- face mode ------------------------------------------------------------------------------------
def faces_available() -> str | None:
    """None when face mode can run here, else why not (the pipeline's one rule)."""
    return pipeline.faces_available()


def _parse_faces(raw: str | None) -> bool | None:
    """The ``faces`` form field: auto (default) -> None, on -> True, off -> False."""
    try:
        return pipeline.parse_faces(raw or "auto")
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def _wants_faces(faces: bool | None, d: Decoded, detector: Any) -> bool:
    if d.width is None or d.height is None:
        return False
    return pipeline.use_face_mode(faces, (d.width, d.height), detector.data_config)


def _prepare_upload(up: Upload, detector: Any, opts: Any) -> tuple[Decoded, Any]:
    """One upload through the pipeline's preparation (thread pool): the server's status bookkeeping plus the
    pipeline's whole-image-or-faces decision, crops and arrays. The decoded pixels are dropped once prepared."""
    d = decode_upload(up, detector, keep_image=True, preprocess=False)
    pd = pipeline.Decoded(d.name, d.sha256, d.image, pipeline.jpeg_quality_of(d.data) if d.image else None, d.error)
    prepared = pipeline.prepare(detector, pd, opts)
    if pd.error and not d.error:  # the face search or preprocessing failed on this file
        d.error, d.status = pd.error, 422
    d.image = None  # the bytes stay for the history's image store (--store-images)
    return d, prepared


def prediction_out(r: Any) -> PredictionOut:
    """A pipeline ``Prediction`` as the API's row: the keys of ``predict --json`` (plus ``decision_rule`` in face
    mode), and each face's own verdict."""
    fields: dict[str, Any] = {
        "warnings": list(r.warnings),
        "mode": r.mode,
        "decided_by": r.decided_by,
        "faces": [FaceOut(**f) for f in pipeline.face_rows(r)],
    }
    if r.mode == "faces":
        fields["decision_rule"] = pipeline.DECISION_RULE
    return PredictionOut(
        path=r.path,
        sha256=r.sha256,
        label=r.label,
        score=r.score,
        threshold=r.threshold,
        model=r.model,
        error=r.error,
        **fields,
    )


def face_rows(result: Any) -> list[FaceOut]:
    """``FaceResult`` -> the API's per-face rows (label at the result's threshold)."""
    return [
        FaceOut(
            box=[int(v) for v in f.box],
            crop=[int(v) for v in f.crop],
            score=round(f.score, 6),
            label=verdict(f.score, result.threshold),
            aligned=f.aligned,
            roll=None if f.roll is None else round(f.roll, 1),
            warnings=list(f.warnings),
        )
        for f in result.faces
    ]


def face_extra(result: Any) -> dict[str, Any]:
    """What the scan history keeps of a face-mode result (the ``faces_json`` column): a ``FaceResult`` or a
    face-mode pipeline ``Prediction``."""
    faces = pipeline.face_rows(result) if hasattr(result, "mode") else [f.model_dump() for f in face_rows(result)]
    return {
        "decision_rule": pipeline.DECISION_RULE,
        "decided_by": result.decided_by,
        "faces": faces,
        "warnings": list(result.warnings),
    }


# ---- the app --------------------------------------------------------------------------------------
@dataclass
class ServeSettings:
    model: str | None = None
    db: str | Path = "dfdetect-scans.db"
    api_key: str | None = None
    max_upload_mb: float = 20.0
    max_files: int = 32
    cors_origins: list[str] | None = None
    store_images: bool | str | Path = False
    device: str = "auto"
    backend: str = "auto"
    max_batch: int = 16
    max_wait_ms: float = 2.0
    threads: int | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    """Host names besides the loopback ones the server answers to ("*" = any); DNS rebinding gets 400."""

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def image_dir(self) -> Path | None:
        if self.store_images is False or self.store_images is None or self.store_images == "":
            return None
        if self.store_images is True:
            db = Path(self.db)
            return db.with_name(db.stem + "-images")
        return Path(self.store_images)


class Service:
    """Everything the endpoints share, created in the lifespan."""

    def __init__(self, settings: ServeSettings, detector: Any, db: ScanDB):
        self.settings = settings
        self.detector = detector
        self.db = db
        self.batcher = MicroBatcher(detector, settings.max_batch, settings.max_wait_ms)
        self.explainer = ExplainRunner(settings.model, settings.device)
        self.image_dir = settings.image_dir()

    def model_info(self) -> ModelInfo:
        det = self.detector
        size = det.data_config.get("input_size")
        return ModelInfo(
            id=det.model_id,
            arch=det.arch,
            backend=det.backend.name,
            device=str(getattr(det.backend, "device", "cpu")),
            threshold=det.threshold,
            input_size=[int(x) for x in size] if size else None,
            explain=None if not self.explainer.tried else self.explainer.unavailable is None,
        )

    def store(self, d: Decoded) -> str | None:
        """Content-addressed copy of the upload under the image folder (only with --store-images)."""
        if self.image_dir is None:
            return None
        ext, _ = _sniff(d.data)
        rel = f"{d.sha256[:2]}/{d.sha256}.{ext}"
        target = self.image_dir / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(d.data)
            os.replace(tmp, target)
        return rel

    def record(
        self,
        items: Sequence[tuple[Decoded, float, str, float]],
        case_id: str | None,
        source: str,
        model_id: str,
        extras: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[int]:
        """Insert one scan per (decoded, score, label, threshold), in one transaction; ``extras``: per item the
        face-mode result (``face_extra``) or None."""
        import json

        now = utc_now()
        records = []
        for k, (d, score, label, thr) in enumerate(items):
            extra = extras[k] if extras is not None else None
            records.append(
                ScanRecord(
                    created_at=now,
                    sha256=d.sha256,
                    file_name=d.name,
                    size_bytes=d.size,
                    width=d.width,
                    height=d.height,
                    model_id=model_id,
                    dfdetect_version=__version__,
                    score=score,
                    label=label,
                    threshold=thr,
                    case_id=case_id,
                    source=source,
                    backend=self.detector.backend.name if source == "predict" else "torch",
                    image_path=self.store(d),
                    mode="faces" if extra is not None else None,
                    faces_json=json.dumps(extra) if extra is not None else None,
                )
            )
        return self.db.add_many(records)

    def scan_out(self, r: ScanRecord) -> Scan:
        import json

        data = r.to_dict()
        data["has_image"] = bool(r.image_path) and self.image_dir is not None
        data.pop("image_path", None)
        extra = json.loads(data.pop("faces_json") or "null") or {}
        data["decided_by"] = extra.get("decided_by")
        data["faces"] = extra.get("faces")
        data["warnings"] = extra.get("warnings")
        return Scan(**data)


def _parse_threshold(raw: str | None) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        t = float(raw)
    except ValueError:
        raise HTTPException(422, f"threshold must be a number in [0, 1], not {raw[:40]!r}") from None
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise HTTPException(422, f"threshold must be in [0, 1], not {t}")
    return t


def _parse_case_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    case = "".join(ch for ch in raw.strip() if ch.isprintable())
    if len(case) > MAX_CASE_ID_LEN:
        raise HTTPException(422, f"case_id is longer than {MAX_CASE_ID_LEN} characters")
    return case or None


def _parse_bool(raw: str | None, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more images (JPEG, PNG, WebP, BMP, TIFF, GIF).",
                        },
                        "case_id": {"type": "string", "description": "Your case / reference id, kept in history."},
                        "threshold": {"type": "number", "description": "Override the model's threshold."},
                        "faces": {
                            "type": "string",
                            "enum": ["auto", "on", "off"],
                            "default": "auto",
                            "description": "Face mode: score each face, the most suspicious decides. auto: when the "
                            "shorter side > 2x the model input or the image is not square.",
                        },
                        "align": {"type": "boolean", "default": True, "description": "Face mode: level the eyes."},
                    },
                }
            }
        },
    }
}
_EXPLAIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "One image."},
                        "case_id": {"type": "string"},
                        "threshold": {"type": "number"},
                        "record": {"type": "boolean", "description": "Record in scan history (default true)."},
                    },
                }
            }
        },
    }
}
_EXPLAIN_FACES_BODY = copy.deepcopy(_EXPLAIN_BODY)
_EXPLAIN_FACES_BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"].update(
    {
        "faces": {
            "type": "string",
            "enum": ["auto", "on", "off"],
            "default": "auto",
            "description": "Face mode (as in /predict): the maps are of the deciding face's crop.",
        },
        "align": {"type": "boolean", "default": True, "description": "Face mode: level the eyes."},
    }
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "API key missing"},
    403: {"model": ErrorResponse, "description": "API key wrong"},
}
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = _ERRORS | {
    413: {"model": ErrorResponse, "description": "A file exceeds the upload limit, or too many files"},
    415: {"model": ErrorResponse, "description": "Not an image, or an unsupported format"},
    422: {"model": ErrorResponse, "description": "Empty, corrupt, or decompression-bomb image; bad form field"},
}


def create_app(
    model: str | None = None,
    db: str | Path = "dfdetect-scans.db",
    api_key: str | None = None,
    max_upload_mb: float = 20,
    cors_origins: list[str] | None = None,
    store_images: bool | str | Path = False,
    *,
    device: str = "auto",
    backend: str = "auto",
    max_files: int = 32,
    max_batch: int = 16,
    max_wait_ms: float = 2.0,
    threads: int | None = None,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """Build the app. The model loads in the lifespan (at server start), not here.

    ``allowed_hosts``: Host names answered besides 127.0.0.1, localhost and ::1 (``*`` = any). Requests with any
    other Host header get 400 (a DNS-rebinding page cannot read or change the history); state-changing requests
    (POST, DELETE) whose ``Origin`` is neither the server's own nor in ``cors_origins`` get 403 (a web page the
    analyst opens cannot write or delete scans, even without a key).

    ``api_key``: when given (or set in ``$DFDETECT_API_KEY``), every endpoint except ``/health`` and the
    web page needs the header ``X-API-Key``. ``store_images``: False (default: images are never kept),
    True (a folder beside the database) or a folder path. ``threads``: intra-op threads for inference
    (default: the backend's own choice, usually one per core; 1 is much faster on a CPU shared with other
    busy processes).
    """
    key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    settings = ServeSettings(
        model=str(model) if model is not None else None,
        db=db,
        api_key=key,
        max_upload_mb=float(max_upload_mb),
        max_files=max_files,
        cors_origins=list(cors_origins) if cors_origins else None,
        store_images=store_images,
        device=device,
        backend=backend,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        threads=threads,
        allowed_hosts=list(allowed_hosts or []),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from dfdetect.runtime.detector import Detector

        detector = await run_in_threadpool(Detector.load, settings.model, settings.device, settings.backend)
        if settings.threads:
            await run_in_threadpool(set_threads, detector, settings.threads)
        scans = await run_in_threadpool(ScanDB, settings.db)
        svc = Service(settings, detector, scans)
        svc.batcher.start()
        app.state.svc = svc
        log.info(
            "serving %s (%s on %s), scan history %s%s",
            detector.model_id,
            detector.backend.name,
            getattr(detector.backend, "device", "cpu"),
            settings.db,
            ", API key required" if settings.api_key else "",
        )
        try:
            yield
        finally:
            svc.batcher.stop()
            scans.close()

    app = FastAPI(
        title="dfdetect",
        version=__version__,
        description="Deepfake-image detection: P(fake) per image, Grad-CAM explanations, scan history.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    guard_host_and_origin(app, settings)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
        )

    header_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Needed when the server has a key")

    async def require_key(supplied: str | None = Depends(header_scheme)) -> None:
        if settings.api_key is None:
            return
        if not supplied:
            raise HTTPException(401, f"missing API key (send it in the {API_KEY_HEADER} header)")
        if not hmac.compare_digest(supplied.encode(), settings.api_key.encode()):
            raise HTTPException(403, "wrong API key")

    def svc_of(request: Request) -> Service:
        return request.app.state.svc

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    # ---- endpoints ------------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["service"])
    async def health(request: Request) -> Health:
        """Liveness and the model being served (no API key needed)."""
        return Health(status="ok", version=__version__, model=svc_of(request).model_info())

    @app.get("/models", response_model=Models, tags=["service"], dependencies=[Depends(require_key)], responses=_ERRORS)
    async def models(request: Request) -> Models:
        """The loaded model(s)."""
        return Models(models=[svc_of(request).model_info()])

    @app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_unset=True,
        tags=["detect"],
        dependencies=[Depends(require_key)],
        openapi_extra=_UPLOAD_BODY,
        responses=_UPLOAD_ERRORS,
    )
    async def predict(request: Request) -> PredictResponse:
        """Score one or many images (multipart field ``files``); the same JSON per image as ``predict --json``.

        Face mode (form field ``faces``: ``auto`` (default), ``on`` or ``off``; ``auto`` = the rule of ``predict``:
        shorter side > 2x the model input, or not square): every face is found, aligned (``align``, default true),
        cropped like the training data and scored; the most suspicious face decides the image (``decision_rule``
        ``max``, ``decided_by`` says which). Rows then add ``mode``, ``faces`` (box, crop, score, label, aligned,
        roll, warnings) and ``warnings``; whole-image rows are unchanged.

        When no file can be scored the answer is 415 (not an image) or 422 (empty, corrupt, bomb); when
        some can, 200 with ``error`` set on the others. Every scored image is recorded in the history.
        """
        svc = svc_of(request)
        uploads, form = await read_multipart(request, settings.max_file_bytes, settings.max_files)
        if not uploads:
            raise HTTPException(422, "no files: upload images under the multipart field name 'files'")
        thr_override = _parse_threshold(form.get("threshold"))
        case_id = _parse_case_id(form.get("case_id"))
        faces = _parse_faces(form.get("faces"))
        align = _parse_bool(form.get("align"), True)
        det = svc.detector
        thr = det.threshold if thr_override is None else thr_override
        if faces is True and (why := faces_available()) is not None:
            raise HTTPException(501, f"face mode is not available on this server: {why}")
        # The one predict path (dfdetect.runtime.pipeline): decode, whole image or faces, preprocess in threads;
        # one micro-batched forward pass for all of it; the same records as `dfdetect predict --json`.
        opts = pipeline.Options(faces=faces, threshold=thr_override, align=align)
        pairs = list(await asyncio.gather(*(run_in_threadpool(_prepare_upload, up, det, opts) for up in uploads)))
        del uploads
        decoded = [d for d, _ in pairs]
        if all(d.error is not None for d in decoded):
            raise _all_failed(decoded)
        arrays = [a for _, p in pairs for a in p.arrays]
        try:
            all_scores = await svc.batcher.score(arrays)  # type: ignore[arg-type]
        except Exception as e:
            log.exception("inference failed")
            raise HTTPException(500, f"inference failed ({type(e).__name__})") from None
        records, pos = [], 0
        for _, p in pairs:
            records.append(pipeline.finish(det, p, all_scores[pos : pos + len(p.arrays)], opts))
            pos += len(p.arrays)
        scored = [(d, r) for d, r in zip(decoded, records) if r.error is None]
        rows = [(d, r.score, r.label, thr) for d, r in scored]
        extras = [face_extra(r) if r.mode == "faces" else None for _, r in scored]
        ids = await run_in_threadpool(svc.record, rows, case_id, "predict", det.model_id, extras)
        id_of = {id(d): i for (d, _), i in zip(scored, ids)}
        preds = [prediction_out(r) for r in records]
        return PredictResponse(predictions=preds, scan_ids=[id_of.get(id(d)) for d in decoded], case_id=case_id)

    @app.post(
        "/explain",
        response_model=ExplainResponse,
        response_model_exclude_unset=True,
        tags=["detect"],
        dependencies=[Depends(require_key)],
        openapi_extra=_EXPLAIN_FACES_BODY,
        responses=_UPLOAD_ERRORS | {501: {"model": ErrorResponse, "description": "Explanations not available"}},
    )
    async def explain(request: Request) -> ExplainResponse:
        """Grad-CAM for one image: P(fake), the CAM overlay and the heat-map panel as base64 PNGs.

        Face mode (``faces``: auto, on, off; as in /predict): the maps are of the deciding (most suspicious) face's
        crop; the answer adds the per-face rows and ``overview_png`` (the image with every face's box and score).
        """
        svc = svc_of(request)
        uploads, form = await read_multipart(request, settings.max_file_bytes, 1)
        if not uploads:
            raise HTTPException(422, "no file: upload one image under the multipart field name 'file'")
        thr_override = _parse_threshold(form.get("threshold"))
        case_id = _parse_case_id(form.get("case_id"))
        record = _parse_bool(form.get("record"), True)
        faces = _parse_faces(form.get("faces"))
        d = await run_in_threadpool(decode_upload, uploads[0], svc.detector, True)
        if d.array is None or d.image is None:
            raise _all_failed([d])
        face_mode = _wants_faces(faces, d, svc.detector)
        if face_mode and (why := faces_available()) is not None:
            if faces:
                raise HTTPException(501, f"face mode is not available on this server: {why}")
            log.warning("automatic face mode is off: %s", why)
            face_mode = False
        fields: dict[str, Any] = {}
        try:
            if face_mode:
                align = _parse_bool(form.get("align"), True)
                r, expl, img, overview, tdet = await run_in_threadpool(
                    svc.explainer.run_faces, d.image, align, thr_override
                )
                if not r.faces:
                    img = img.copy()
                    img.thumbnail((MAX_RENDER_SIDE, MAX_RENDER_SIDE))
            else:
                expl, tdet = await run_in_threadpool(svc.explainer.run, d.image)
        except LookupError as e:
            raise HTTPException(501, str(e)) from None
        thr = tdet.threshold if thr_override is None else thr_override
        if face_mode:
            score = round(float(r.score), 6)
            fields = {
                "mode": "faces",
                "decided_by": r.decided_by,
                "faces": face_rows(r),
                "warnings": list(r.warnings),
                "overview_png": await run_in_threadpool(_png_b64, overview),
            }
        else:
            img = d.image.copy()
            img.thumbnail((MAX_RENDER_SIDE, MAX_RENDER_SIDE))  # the overlay/panel PNGs stay small for huge uploads
            score = round(float(expl.score), 6)
        overlay, panel = await run_in_threadpool(lambda: (expl.overlay("gradcam", img), expl.panel(img)))
        overlay_b64, panel_b64 = await run_in_threadpool(lambda: (_png_b64(overlay), _png_b64(panel)))
        label = verdict(score, thr)
        scan_id = None
        if record:
            rows = [(d, score, label, thr)]
            extras = [face_extra(r)] if face_mode else None
            (scan_id,) = await run_in_threadpool(svc.record, rows, case_id, "explain", tdet.model_id, extras)
        return ExplainResponse(
            path=d.name,
            sha256=d.sha256,
            label=label,
            score=score,
            threshold=thr,
            model=tdet.model_id,
            method="gradcam",
            overlay_png=overlay_b64,
            panel_png=panel_b64,
            scan_id=scan_id,
            **fields,
        )

    @app.post(
        "/forensics",
        response_model=ForensicsResponse,
        tags=["detect"],
        dependencies=[Depends(require_key)],
        openapi_extra=_EXPLAIN_BODY,
        responses=_UPLOAD_ERRORS
        | {501: {"model": ErrorResponse, "description": "dfdetect.analysis.forensics missing"}},
    )
    async def forensics(request: Request) -> ForensicsResponse:
        """Classic forensics for one image (ELA, noise, spectrum, metadata flags) beside the model's verdict,
        with a self-contained HTML report. Indicators, not proof."""
        svc = svc_of(request)
        try:
            fx = importlib.import_module("dfdetect.analysis.forensics")
            report = importlib.import_module("dfdetect.analysis.forensics.report")
        except ImportError as e:
            raise HTTPException(501, f"forensic analyses are not available in this installation ({e})") from None
        uploads, form = await read_multipart(request, settings.max_file_bytes, 1)
        if not uploads:
            raise HTTPException(422, "no file: upload one image under the multipart field name 'file'")
        thr_override = _parse_threshold(form.get("threshold"))
        case_id = _parse_case_id(form.get("case_id"))
        record = _parse_bool(form.get("record"), True)
        det = svc.detector
        d = await run_in_threadpool(decode_upload, uploads[0], det)
        if d.array is None:
            raise _all_failed([d])
        (s,) = await svc.batcher.score([d.array])
        thr = det.threshold if thr_override is None else thr_override
        score, label = round(s, 6), verdict(s, thr)
        a = await run_in_threadpool(_analyze_bytes, fx, d)
        if a.error:
            raise HTTPException(422, a.error)
        model = report.ModelResult(model_id=det.model_id, arch=det.arch, score=score, threshold=thr, label=label)
        html = await run_in_threadpool(report.render_report, a, model, __version__)

        def img_b64(part: Any) -> str | None:
            if part is None:
                return None
            im = part.image()
            im.thumbnail((MAX_RENDER_SIDE, MAX_RENDER_SIDE))
            return _png_b64(im)

        pngs = await run_in_threadpool(lambda: [img_b64(p) for p in (a.ela, a.noise, a.spectrum)])
        scan_id = None
        if record:
            rows = [(d, score, label, thr)]
            (scan_id,) = await run_in_threadpool(svc.record, rows, case_id, "forensics", det.model_id)
        return ForensicsResponse(
            path=d.name,
            sha256=d.sha256,
            label=label,
            score=score,
            threshold=thr,
            model=det.model_id,
            summary=jsonable(a.summary()),
            ela_png=pngs[0],
            noise_png=pngs[1],
            spectrum_png=pngs[2],
            report_html=html,
            scan_id=scan_id,
        )

    @app.get(
        "/scans", response_model=ScanPage, tags=["history"], dependencies=[Depends(require_key)], responses=_ERRORS
    )
    async def list_scans(
        request: Request,
        case_id: str | None = Query(None, max_length=MAX_CASE_ID_LEN, description="Only this case / reference id."),
        sha256: str | None = Query(None, pattern="^[0-9a-fA-F]{64}$", description="Only this image."),
        label: str | None = Query(None, pattern="^(fake|real)$"),
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> ScanPage:
        """Scan history, newest first, paged."""
        svc = svc_of(request)
        records, total = await run_in_threadpool(svc.db.query, case_id, sha256, label, limit, offset)
        return ScanPage(total=total, limit=limit, offset=offset, items=[svc.scan_out(r) for r in records])

    @app.get(
        "/scans/{scan_id}",
        response_model=Scan,
        tags=["history"],
        dependencies=[Depends(require_key)],
        responses=_ERRORS | {404: {"model": ErrorResponse}},
    )
    async def get_scan(request: Request, scan_id: int) -> Scan:
        svc = svc_of(request)
        r = await run_in_threadpool(svc.db.get, scan_id)
        if r is None:
            raise HTTPException(404, f"no scan {scan_id}")
        return svc.scan_out(r)

    @app.get(
        "/scans/{scan_id}/image",
        tags=["history"],
        dependencies=[Depends(require_key)],
        responses=_ERRORS | {404: {"model": ErrorResponse}},
        response_class=Response,
    )
    async def get_scan_image(request: Request, scan_id: int) -> Response:
        """The stored copy of a scanned image (only when the server stores images)."""
        svc = svc_of(request)
        r = await run_in_threadpool(svc.db.get, scan_id)
        if r is None:
            raise HTTPException(404, f"no scan {scan_id}")
        if not r.image_path or svc.image_dir is None or not (svc.image_dir / r.image_path).is_file():
            raise HTTPException(404, f"no stored image for scan {scan_id} (the server does not store images)")
        ext = r.image_path.rsplit(".", 1)[-1]
        return FileResponse(
            svc.image_dir / r.image_path,
            media_type=_EXT_TYPES.get(ext, "application/octet-stream"),
            headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"},
        )

    @app.delete(
        "/scans/{scan_id}",
        status_code=204,
        tags=["history"],
        dependencies=[Depends(require_key)],
        responses=_ERRORS | {404: {"model": ErrorResponse}},
        response_class=Response,
    )
    async def delete_scan(request: Request, scan_id: int) -> Response:
        """Delete one scan (and its stored image, when no other scan refers to it)."""
        svc = svc_of(request)
        r = await run_in_threadpool(svc.db.delete, scan_id)
        if r is None:
            raise HTTPException(404, f"no scan {scan_id}")
        if r.image_path and svc.image_dir is not None:
            in_use = await run_in_threadpool(svc.db.image_in_use, r.image_path)
            if not in_use:
                (svc.image_dir / r.image_path).unlink(missing_ok=True)
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def _host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``::1``, ``localhost:8000`` -> ``localhost``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def guard_host_and_origin(app: FastAPI, settings: ServeSettings) -> None:
    """Answer only our own Host names, and refuse cross-origin writes (see ``create_app``)."""
    from urllib.parse import urlsplit

    allowed = {h.lower() for h in (*LOOPBACK_HOSTS, *settings.allowed_hosts)}
    any_host = "*" in allowed
    cors = {o.rstrip("/").lower() for o in settings.cors_origins or []}

    @app.middleware("http")
    async def host_and_origin(request: Request, call_next: Any) -> Response:
        host = request.headers.get("host", "")
        if not any_host and _host_name(host) not in allowed:
            return JSONResponse({"detail": "this server does not answer to that Host name"}, status_code=400)
        origin = request.headers.get("origin")
        if request.method in STATE_CHANGING and origin is not None:
            o = origin.rstrip("/").lower()
            own = urlsplit(o).netloc == host.lower() and urlsplit(o).scheme in ("http", "https")
            if not own and o not in cors and "*" not in cors:
                return JSONResponse(
                    {"detail": f"cross-origin {request.method} refused (Origin {origin[:80]!r}); allow it with --cors"},
                    status_code=403,
                )
        return await call_next(request)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn dfdetect.serve.api:app_from_env --factory`` (and ``dfdetect serve --workers N``).

    Reads ``DFDETECT_SERVE_*`` variables set by ``dfdetect serve``; the API key from ``DFDETECT_API_KEY``.
    """
    env = os.environ.get
    cors = env("DFDETECT_SERVE_CORS")
    store = env("DFDETECT_SERVE_STORE_IMAGES") or False
    return create_app(
        model=env("DFDETECT_SERVE_MODEL") or None,
        db=env("DFDETECT_SERVE_DB", "dfdetect-scans.db"),
        api_key=None,
        max_upload_mb=float(env("DFDETECT_SERVE_MAX_UPLOAD_MB", "20")),
        cors_origins=[o for o in cors.split(",") if o] if cors else None,
        store_images=store,
        device=env("DFDETECT_SERVE_DEVICE", "auto"),
        backend=env("DFDETECT_SERVE_BACKEND", "auto"),
        max_batch=int(env("DFDETECT_SERVE_MAX_BATCH", "16")),
        max_wait_ms=float(env("DFDETECT_SERVE_MAX_WAIT_MS", "2")),
        threads=int(env("DFDETECT_SERVE_THREADS", "0")) or None,
        allowed_hosts=[h for h in env("DFDETECT_SERVE_ALLOWED_HOSTS", "").split(",") if h],
    )
