#!/usr/bin/env python
"""Load benchmark for ``dfdetect serve``: N requests from C concurrent clients against 127.0.0.1 only.

Starts the server in a subprocess on a random free port (its own temporary scan database), sends
``--requests`` POST /predict requests (one 256x256 JPEG each) from ``--concurrency`` clients, and reports
errors, p50/p95/p99 latency, requests/s, and the server's resident memory after the first 100 requests
and after the run (the issue asks for the latter within 10% of the former). Memory is also read every
``--rss-every`` requests: the growth over the second half of the run tells a leak (which keeps growing) from
the allocator's warm-up (which levels off), and is printed beside the check.

    python scripts/bench_serve.py --model runs/x/best.pt            # or an .onnx; default: the shipped model
    python scripts/bench_serve.py --model m.onnx --requests 1000 --concurrency 32 --json bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

log = logging.getLogger("bench_serve")
DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces140k-subset"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg_payloads(folder: Path, n: int, size: int) -> list[tuple[str, bytes]]:
    """Up to n JPEGs of size x size from the folder (recursive), else synthetic ones."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if folder else []
    out = []
    for p in files[:n]:
        img = Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append((p.stem + ".jpg", buf.getvalue()))
    rng = np.random.default_rng(0)
    while len(out) < n:
        arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        out.append((f"synthetic_{len(out):03d}.jpg", buf.getvalue()))
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (psutil when installed, else /proc)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except ImportError:
        pass
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.is_file():
        pids += [int(c) for c in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def start_server(args: argparse.Namespace, port: int, db: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dfdetect", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(db)]
    cmd += ["--log-level", "warning", "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if args.model:
        cmd += ["--model", str(args.model)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.precision:
        cmd += ["--precision", args.precision]
    env = dict(os.environ)
    env.pop("DFDETECT_API_KEY", None)
    log.info("starting: %s", " ".join(cmd))
    return subprocess.Popen(cmd, env=env)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            r = httpx.get(f"{base}/health", timeout=2.0)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server did not become ready")


async def run_load(
    base: str,
    payloads: list[tuple[str, bytes]],
    start: int,
    stop: int,
    concurrency: int,
    on_answer: Callable[[], None] | None = None,
) -> tuple[list[float], list[str], float]:
    """Requests start..stop-1 (payload i % len) from `concurrency` clients; (latencies s, errors, wall s).
    ``on_answer`` is called after each answered request (the memory sampler)."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(start, stop))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120.0) as client:

        async def worker() -> None:
            for i in counter:
                name, data = payloads[i % len(payloads)]
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", files={"files": (name, data, "image/jpeg")})
                    ok = r.status_code == 200 and r.json()["predictions"][0]["error"] is None
                    if not ok:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                except (httpx.HTTPError, ValueError, KeyError) as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                latencies.append(time.perf_counter() - t0)
                if on_answer is not None:
                    on_answer()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


class RssSampler:
    """The server's RSS every ``every`` answered requests: (requests answered, bytes)."""

    def __init__(self, pid: int, every: int, answered: int = 0) -> None:
        self.pid, self.every, self.answered = pid, every, answered
        self.samples: list[tuple[int, int]] = []

    def __call__(self) -> None:
        self.answered += 1
        if self.every > 0 and self.answered % self.every == 0:
            self.samples.append((self.answered, rss_bytes(self.pid)))

    def growth(self, since: int) -> float | None:
        """Fractional growth from the first sample at or after ``since`` requests to the last one."""
        later = [rss for n, rss in self.samples if n >= since]
        return (later[-1] - later[0]) / later[0] if len(later) >= 2 and later[0] else None


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="Checkpoint or .onnx (default: the shipped model).")
    ap.add_argument("--backend", default=None, help="auto | torch | onnx | openvino")
    ap.add_argument("--precision", default=None, help="fp32 (default) | bf16 (OpenVINO, where the CPU has it)")
    ap.add_argument("--requests", "-n", type=int, default=1000)
    ap.add_argument("--concurrency", "-c", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100, help="Requests before the first memory reading.")
    ap.add_argument("--rss-every", type=int, default=100, help="Read the server's memory every N requests (0: off).")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Folder of images to send.")
    ap.add_argument("--distinct", type=int, default=64, help="Distinct images to cycle through.")
    ap.add_argument("--size", type=int, default=256, help="Images are resized to size x size JPEGs.")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=0, help="Server inference threads (0 = backend default).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    payloads = jpeg_payloads(args.images if args.images.is_dir() else None, args.distinct, args.size)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="dfdetect-bench-") as tmp:
        db = Path(tmp) / "scans.db"
        proc = start_server(args, port, db)
        try:
            health = wait_ready(base, proc)
            log.info("server up: %s", health["model"])
            warm = min(args.warmup, args.requests)
            sampler = RssSampler(proc.pid, args.rss_every)
            lat1, err1, wall1 = asyncio.run(run_load(base, payloads, 0, warm, args.concurrency, sampler))
            rss_warm = rss_bytes(proc.pid)
            lat2, err2, wall2 = asyncio.run(run_load(base, payloads, warm, args.requests, args.concurrency, sampler))
            rss_end = rss_bytes(proc.pid)
            recorded = httpx.get(f"{base}/scans", params={"limit": 1}).json()["total"]
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    lat, errors, wall = lat1 + lat2, err1 + err2, wall1 + wall2
    growth = (rss_end - rss_warm) / rss_warm if rss_warm else float("nan")
    late = sampler.growth(args.requests // 2)
    res = {
        "model": health["model"],
        "server_threads": args.threads or "default",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "image": f"{args.size}x{args.size} JPEG",
        "errors": len(errors),
        "latency_ms": {
            "p50": round(1000 * pct(lat, 50), 1),
            "p95": round(1000 * pct(lat, 95), 1),
            "p99": round(1000 * pct(lat, 99), 1),
            "mean": round(1000 * statistics.fmean(lat), 1) if lat else None,
        },
        "requests_per_s": round(args.requests / wall, 1) if wall else None,
        "requests_per_s_after_warmup": round((args.requests - warm) / wall2, 1) if wall2 else None,
        "rss_mb_after_warmup": round(rss_warm / 2**20, 1),
        "rss_mb_after_run": round(rss_end / 2**20, 1),
        "rss_growth_pct": round(100 * growth, 1),
        "rss_growth_second_half_pct": None if late is None else round(100 * late, 1),
        "rss_mb_samples": [[n, round(rss / 2**20, 1)] for n, rss in sampler.samples],
        "scans_recorded": recorded,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}",
    }
    ok = not errors and growth <= 0.10 and recorded == args.requests
    res["pass"] = ok
    print(json.dumps(res, indent=2))
    for e in errors[:5]:
        log.error("error: %s", e)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    log.info(
        "%s: %s %s, %d requests, %d errors, p50 %.1f ms, p95 %.1f ms, %.1f req/s, RSS %.0f -> %.0f MB (%+.1f%%; "
        "second half %s)",
        "PASS" if ok else "FAIL",
        health["model"]["backend"],
        health["model"].get("precision", "fp32"),
        args.requests,
        len(errors),
        res["latency_ms"]["p50"],
        res["latency_ms"]["p95"],
        res["requests_per_s"] or 0,
        res["rss_mb_after_warmup"],
        res["rss_mb_after_run"],
        res["rss_growth_pct"],
        "n/a" if late is None else f"{100 * late:+.1f}%",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
