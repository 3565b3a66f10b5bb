"""``Service``: what every endpoint of one running server shares, created at start-up (the app's lifespan).

The detector and its micro-batcher, the Grad-CAM runner, the scan history, the image store, and the decode slots:
at most ``max_concurrent_decodes`` images are decoded and prepared (face search, preprocessing) at once across all
requests; the others wait on the event loop, holding no thread. Recording a scan (one history row per scored file,
a content-addressed copy with ``--store-images``) and turning a history row back into the API's ``Scan`` live here
too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request

from dfdetect.core.version import __version__
from dfdetect.serve.batcher import MicroBatcher
from dfdetect.serve.db import ScanDB, ScanRecord, utc_now
from dfdetect.serve.decoding import Received, over_budget
from dfdetect.serve.explainer import ExplainRunner
from dfdetect.serve.schemas import ModelInfo, Scan
from dfdetect.serve.settings import ServeSettings
from dfdetect.serve.uploads import Upload, sniff

log = logging.getLogger(__name__)
T = TypeVar("T")


class Service:
    """Everything the endpoints share, created in the lifespan."""

    def __init__(self, settings: ServeSettings, detector: Any, db: ScanDB):
        self.settings = settings
        self.detector = detector
        self.db = db
        self.batcher = MicroBatcher(detector, settings.max_batch, settings.max_wait_ms)
        self.explainer = ExplainRunner(settings.model, settings.device)
        self.image_dir = settings.image_dir()
        self.decode_slots = asyncio.Semaphore(settings.decode_slots)
        # The predict path's own bounded pool (decodes hold at most decode_slots of it, so the budget check and the
        # history insert never wait behind them): anyio's run_in_threadpool pool grows to 40 threads under load,
        # and bench_serve's server peaked at 38 threads and ~25 MB more memory with it.
        self.pool = ThreadPoolExecutor(settings.decode_slots + 2, thread_name_prefix="dfdetect-work")

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the service's thread pool, awaited."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    def close(self) -> None:
        self.batcher.stop()
        self.pool.shutdown(wait=True)

    def model_info(self) -> ModelInfo:
        det = self.detector
        size = det.data_config.get("input_size")
        return ModelInfo(
            id=det.model_id,
            arch=det.arch,
            backend=det.backend.name,
            device=str(getattr(det.backend, "device", "cpu")),
            precision=str(getattr(det.backend, "precision", "fp32")),
            threshold=det.threshold,
            input_size=[int(x) for x in size] if size else None,
            explain=None if not self.explainer.tried else self.explainer.unavailable is None,
        )

    # ---- decoding -------------------------------------------------------------------------------
    async def decode_all(self, uploads: Sequence[Upload], work: Callable[..., Any], *args: Any) -> list[Any]:
        """``work(upload, *args, refused)`` for every upload in the thread pool, at most ``decode_slots`` at once
        across requests, in upload order. ``refused``: the pixel-budget error of a file past the request's budget
        (it is not decoded, so it takes no slot), else None."""
        refused = await self.in_thread(over_budget, uploads, self.settings.max_request_pixels)

        async def one(up: Upload, why: str | None) -> Any:
            if why is not None:
                return await self.in_thread(work, up, *args, why)
            async with self.decode_slots:
                return await self.in_thread(work, up, *args, None)

        return list(await asyncio.gather(*(one(u, w) for u, w in zip(uploads, refused))))

    # ---- the history ----------------------------------------------------------------------------
    def store(self, r: Received) -> str | None:
        """Content-addressed copy of the upload under the image folder (only with --store-images)."""
        if self.image_dir is None or r.sha256 is None:
            return None
        ext, _ = sniff(r.data)
        rel = f"{r.sha256[:2]}/{r.sha256}.{ext}"
        target = self.image_dir / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(r.data)
            os.replace(tmp, target)
        return rel

    def record(
        self,
        items: Sequence[tuple[Received, float, str, float]],
        case_id: str | None,
        source: str,
        model_id: str,
        extras: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[int]:
        """Insert one scan per (received file, score, label, threshold), in one transaction; ``extras``: per item
        the face-mode result (``results.face_extra``) or None."""
        now = utc_now()
        records = []
        for k, (r, score, label, thr) in enumerate(items):
            extra = extras[k] if extras is not None else None
            records.append(
                ScanRecord(
                    created_at=now,
                    sha256=r.sha256 or "",
                    file_name=r.name,
                    size_bytes=r.size,
                    width=r.width,
                    height=r.height,
                    model_id=model_id,
                    dfdetect_version=__version__,
                    score=score,
                    label=label,
                    threshold=thr,
                    case_id=case_id,
                    source=source,
                    backend=self.detector.backend.name if source == "predict" else "torch",
                    image_path=self.store(r),
                    mode="faces" if extra is not None else None,
                    faces_json=json.dumps(extra) if extra is not None else None,
                )
            )
        return self.db.add_many(records)

    def scan_out(self, r: ScanRecord) -> Scan:
        data = r.to_dict()
        data["has_image"] = bool(r.image_path) and self.image_dir is not None
        data.pop("image_path", None)
        extra = json.loads(data.pop("faces_json") or "null") or {}
        data["decided_by"] = extra.get("decided_by")
        data["faces"] = extra.get("faces")
        data["warnings"] = extra.get("warnings")
        return Scan(**data)


def service_of(request: Request) -> Service:
    return request.app.state.svc


def set_threads(detector: Any, threads: int) -> None:
    """Intra-op threads for inference: torch's process-wide setting, or a new ONNX Runtime / OpenVINO session
    (the backend's own class, built again with ``threads``)."""
    if detector.backend.name == "torch":
        import torch

        torch.set_num_threads(threads)
    elif detector.backend.name in ("onnxruntime", "openvino"):
        detector.backend = type(detector.backend)(Path(detector.source), threads=threads)
    log.info("inference uses %d thread(s)", threads)
