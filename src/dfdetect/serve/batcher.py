"""Micro-batching: one thread owns the detector and scores whatever arrays are waiting as one batch.

The event loop never runs model code. Requests hand their preprocessed arrays to ``MicroBatcher.score``; the
inference thread takes up to ``max_batch`` of them, after waiting at most ``max_wait_ms`` for company, and scores
them in one forward pass (one per input shape). Under load many concurrent requests share one forward pass; when
idle a lone request waits only ``max_wait_ms``. One thread owning the model also means no lock contention and no
thread-safety assumptions about the backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


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
