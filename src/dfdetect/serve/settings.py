"""What one server is configured with: ``ServeSettings`` (from ``create_app``'s arguments or, for ``dfdetect serve``
and its worker processes, from ``DFDETECT_SERVE_*`` environment variables) and the limits' defaults."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_KEY_ENV = "DFDETECT_API_KEY"
BODY_TIMEOUT_S = 30.0
"""Default seconds a request body may send nothing before it is answered 408 (the request head has its own
deadline: ``serve.protocol``)."""
API_KEY_HEADER = "X-API-Key"
ENV_PREFIX = "DFDETECT_SERVE_"

MAX_REQUEST_MPX = 256.0
"""Default decode budget of one request in megapixels: the sum of the sizes the headers of the images it decodes
declare. A request holds its decoded images until it is scored (3 bytes a pixel: 256 Mpx is ~770 MB), so the
budget bounds one request's decoding work: 32 photos of 8 Mpx or 21 of 12 Mpx fit, while the per-file limit alone
(``dfdetect.data.io.MAX_PIXELS``, ~89 Mpx) would let 32 small PNGs of a few kB declare 2.9 Gpx (tens of seconds of
CPU). Memory is bounded by the decode slots: a decoded image is dropped once its model-input arrays are made.
Files past the budget get a per-file error (413), the others are scored."""


def default_decodes() -> int:
    """Images decoded at once across all requests by default: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class ServeSettings:
    model: str | None = None
    db: str | Path = "dfdetect-scans.db"
    api_key: str | None = None
    max_upload_mb: float = 20.0
    max_files: int = 32
    """Files per request; more get 413."""
    cors_origins: list[str] | None = None
    store_images: bool | str | Path = False
    device: str = "auto"
    backend: str = "auto"
    precision: str = "fp32"
    """fp32 (default) or bf16 (OpenVINO; faster on CPUs with native bf16, scores move: see the README)."""
    max_batch: int = 16
    max_wait_ms: float = 2.0
    threads: int | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    """Host names besides the loopback ones the server answers to ("*" = any); DNS rebinding gets 400."""
    max_request_mpx: float = MAX_REQUEST_MPX
    """Decode budget of one request (megapixels, declared sizes summed in upload order); files past it get 413."""
    max_concurrent_decodes: int | None = None
    """Images decoded (and prepared) at once across all requests; None: one per CPU core."""
    body_timeout_s: float = BODY_TIMEOUT_S
    """Seconds a request body may send nothing; then 408."""

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_request_pixels(self) -> int:
        return int(self.max_request_mpx * 1_000_000)

    @property
    def decode_slots(self) -> int:
        return max(1, self.max_concurrent_decodes or default_decodes())

    def image_dir(self) -> Path | None:
        if self.store_images is False or self.store_images is None or self.store_images == "":
            return None
        if self.store_images is True:
            db = Path(self.db)
            return db.with_name(db.stem + "-images")
        return Path(self.store_images)


def _split(raw: str) -> list[str]:
    return [x for x in raw.split(",") if x]


# create_app keyword -> (DFDETECT_SERVE_* suffix, parser, default when unset or empty)
ENV_SETTINGS: dict[str, tuple[str, Callable[[str], Any], Any]] = {
    "model": ("MODEL", str, None),
    "db": ("DB", str, "dfdetect-scans.db"),
    "max_upload_mb": ("MAX_UPLOAD_MB", float, 20.0),
    "max_files": ("MAX_FILES", int, 32),
    "cors_origins": ("CORS", _split, None),
    "store_images": ("STORE_IMAGES", str, False),
    "device": ("DEVICE", str, "auto"),
    "backend": ("BACKEND", str, "auto"),
    "precision": ("PRECISION", str, "fp32"),
    "max_batch": ("MAX_BATCH", int, 16),
    "max_wait_ms": ("MAX_WAIT_MS", float, 2.0),
    "threads": ("THREADS", lambda v: int(v) or None, None),
    "allowed_hosts": ("ALLOWED_HOSTS", _split, None),
    "max_request_mpx": ("MAX_REQUEST_MPX", float, MAX_REQUEST_MPX),
    "max_concurrent_decodes": ("MAX_CONCURRENT_DECODES", lambda v: int(v) or None, None),
    "body_timeout_s": ("BODY_TIMEOUT", float, BODY_TIMEOUT_S),
}
"""How ``dfdetect serve`` hands its options to every worker process (``app_from_env``)."""


def settings_from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """``create_app`` keyword arguments from ``DFDETECT_SERVE_*`` variables (the API key is read by ``create_app``)."""
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    for kw, (suffix, parse, default) in ENV_SETTINGS.items():
        raw = env.get(ENV_PREFIX + suffix, "")
        out[kw] = parse(raw) if raw != "" else default
    return out


def settings_env(values: dict[str, Any]) -> dict[str, str]:
    """The ``DFDETECT_SERVE_*`` variables from which ``settings_from_env`` reads ``values`` back (``create_app``
    keywords; None/False/empty: the default)."""
    out: dict[str, str] = {}
    for kw, v in values.items():
        suffix = ENV_SETTINGS[kw][0]
        out[ENV_PREFIX + suffix] = "" if v is None or v is False else ",".join(v) if isinstance(v, list) else str(v)
    return out
