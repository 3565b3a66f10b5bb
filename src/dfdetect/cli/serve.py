"""``dfdetect serve`` (REST API + web page, run by uvicorn) and ``dfdetect history`` (list/export past scans)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from dfdetect.cli.common import device_option, fail, setup_logging

log = logging.getLogger("dfdetect")


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for the server. Each thread that allocates may get its own arena, which keeps
    freed memory: over 1000 requests from 32 clients the server's RSS grew 271 -> 357 MB with the default cap
    and 234 -> 250 MB with 2, at the same throughput (50 requests/s). The environment variable covers uvicorn's
    worker processes; ``mallopt`` this one. A user's own MALLOC_ARENA_MAX wins; a no-op off glibc."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        log.debug("not glibc: malloc arenas left as they are")


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(8000, help="TCP port."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Checkpoint (.pt, .safetensors), .onnx, or a shipped model: default | large."
    ),
    workers: int = typer.Option(1, min=1, help="Server processes (each loads its own copy of the model)."),
    db: Path = typer.Option(Path("dfdetect-scans.db"), help="Scan history database (SQLite file)."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="DFDETECT_API_KEY",
        help="Require this key in the X-API-Key header (all endpoints but /health and the page). "
        "Prefer the DFDETECT_API_KEY environment variable: arguments are visible to other local users.",
        show_default=False,
    ),
    max_upload_mb: float = typer.Option(20.0, help="Per-file upload limit in MB (larger files get 413)."),
    max_request_mpx: float = typer.Option(
        256.0,
        help="Decode budget of one request in megapixels (image sizes summed in upload order); the files past it "
        "get a per-file 413 error, the others are scored.",
    ),
    max_concurrent_decodes: int = typer.Option(
        0, help="Images decoded at once across all requests (0 = one per CPU core)."
    ),
    max_files: int = typer.Option(32, help="Files per request (more get 413)."),
    timeout_body: float = typer.Option(
        30.0, help="Seconds a request body may send nothing before it is answered 408 (slow uploads still pass)."
    ),
    cors: list[str] | None = typer.Option(
        None, "--cors", help="Allow browser calls from this origin (repeatable). Off by default."
    ),
    store_images: Path | None = typer.Option(
        None, "--store-images", help="Keep a copy of every scored image in this folder (off by default: privacy)."
    ),
    device: str = device_option(),
    backend: str = typer.Option("auto", help="auto | torch | onnx | openvino"),
    precision: str = typer.Option(
        "fp32", help="fp32 | bf16 (bf16: OpenVINO only, faster on AVX-512 BF16/AMX CPUs, scores move; see README)."
    ),
    max_batch: int = typer.Option(16, help="Micro-batching: most images scored in one forward pass."),
    max_wait_ms: float = typer.Option(2.0, help="Micro-batching: how long a request waits for company."),
    threads: int = typer.Option(
        0, help="Inference threads (0 = the backend's default, one per core; 1 suits a CPU shared with other work)."
    ),
    allow_host: list[str] | None = typer.Option(
        None,
        "--allow-host",
        help="Host name clients use to reach the server, besides 127.0.0.1/localhost (repeatable; * = any). "
        "Other Host headers get 400 (DNS rebinding).",
    ),
    insecure_no_key: bool = typer.Option(
        False, "--insecure-no-key", help="Allow binding a non-loopback address without an API key."
    ),
    timeout_keep_alive: float = typer.Option(
        5.0,
        help="Seconds a connection may take to send a complete request head, after connecting or after its last "
        "response; then it is closed (idle keep-alive connections and clients that send nothing).",
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the detector: REST API (/predict, /explain, /scans, /health, /docs) and a web page at /."""
    setup_logging()
    try:
        import uvicorn

        import dfdetect.serve.api  # noqa: F401  (fail early, with a hint, when FastAPI is missing)
        from dfdetect.serve.protocol import uvicorn_options
        from dfdetect.serve.settings import settings_env
    except ImportError as e:
        fail(f"serving needs the 'serve' extra: pip install 'dfdetect[serve]' ({e})")
    from dfdetect.runtime.detector import backend_for_precision, shipped_name

    if model is not None and not model.is_file() and shipped_name(model) is None:
        fail(f"model file {model} not found (nor a shipped model name: default | large)")
    for valid, why in (
        (workers >= 1, "--workers must be at least 1"),
        (timeout_keep_alive > 0, "--timeout-keep-alive must be positive"),
        (max_upload_mb > 0, "--max-upload-mb must be positive"),
        (max_request_mpx > 0, "--max-request-mpx must be positive"),
        (max_files >= 1, "--max-files must be at least 1"),
        (timeout_body > 0, "--timeout-body must be positive"),
        (max_concurrent_decodes >= 0, "--max-concurrent-decodes must be 0 (one per CPU core) or more"),
    ):
        if not valid:
            fail(why)
    try:  # before the server starts: the same check Detector.load makes
        backend_for_precision(backend, precision)
    except ValueError as e:
        fail(f"--{e}")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not api_key and not insecure_no_key:
        fail(
            f"binding {host} without an API key would let anyone who reaches this port read and change the scan "
            "history: set DFDETECT_API_KEY (or --api-key), or pass --insecure-no-key to do it anyway"
        )
    hosts = list(allow_host or [])
    if not loopback and host not in ("0.0.0.0", "::"):
        hosts.append(host)
    # The app factory reads its settings from the environment, so that every worker process builds the same app.
    settings = {
        "model": None if model is None else str(model.resolve()) if model.is_file() else str(model),
        "db": str(db.resolve()),
        "max_upload_mb": max_upload_mb,
        "max_files": max_files,
        "cors_origins": cors or [],
        "store_images": str(store_images.resolve()) if store_images else None,
        "device": device,
        "backend": backend,
        "precision": precision,
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "threads": max(0, threads),
        "allowed_hosts": hosts,
        "max_request_mpx": max_request_mpx,
        "max_concurrent_decodes": max_concurrent_decodes,
        "body_timeout_s": timeout_body,
    }
    os.environ.update(settings_env(settings))
    _limit_malloc_arenas()
    if api_key:
        os.environ["DFDETECT_API_KEY"] = api_key
    else:
        os.environ.pop("DFDETECT_API_KEY", None)
    if not loopback and not api_key:
        log.warning("binding %s without an API key (--insecure-no-key): anyone who can reach it can use it", host)
    if host in ("0.0.0.0", "::") and not hosts:
        log.warning("bound to all interfaces: only 127.0.0.1/localhost Host names are answered; add --allow-host")
    log.info("dfdetect serve on http://%s:%d (docs at /docs)", host if ":" not in host else f"[{host}]", port)
    uvicorn.run(
        "dfdetect.serve.api:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        **uvicorn_options(timeout_keep_alive),
    )


def history(
    db: Path = typer.Option(Path("dfdetect-scans.db"), help="Scan history database (SQLite file)."),
    case_id: str | None = typer.Option(None, "--case-id", help="Only scans of this case / reference id."),
    sha256: str | None = typer.Option(None, help="Only scans of this image."),
    label: str | None = typer.Option(None, help="fake | real"),
    limit: int = typer.Option(50, help="Most recent N scans (0 = all)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | jsonl"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """List or export (CSV/JSON) past scans recorded by `dfdetect serve`."""
    from dfdetect.serve.db import NotAScanDatabase, ScanDB, export_records

    if not db.is_file():
        fail(f"no scan database at {db}")
    if fmt not in ("table", "csv", "json", "jsonl"):
        fail(f"--format must be table, csv, json or jsonl, not {fmt!r}")
    if label not in (None, "fake", "real"):
        fail("--label must be fake or real")
    try:
        with ScanDB(db) as scans:
            records, total = scans.query(case_id, sha256, label, limit or None, 0)
    except NotAScanDatabase as e:
        fail(str(e))
    if fmt == "table":
        lines = [f"{'id':>6}  {'time (UTC)':<24}{'verdict':<8}{'P(fake)':>8}  {'case':<14}{'size':>9}  file"]
        for r in records:
            case = (r.case_id or "")[:13]
            lines.append(
                f"{r.id:>6}  {r.created_at[:23]:<24}{r.label:<8}{r.score:>8.4f}  {case:<14}{r.size_bytes:>9}  "
                f"{r.file_name}"
            )
        lines.append(f"{len(records)} of {total} scans shown")
        text = "\n".join(lines) + "\n"
    else:
        text = export_records(records, fmt)
    if out:
        out.write_text(text)
        typer.echo(f"{len(records)} scans -> {out}", err=True)
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("history")(history)
