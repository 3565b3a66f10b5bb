"""#19's "done when", end to end: a folder of good faces mixed with the hostile shapes the issue measured, scanned
by `dfdetect predict`, `report` and `analyze` in fresh processes (peak RSS, seconds, one error line per bad file),
then POSTed to a real `dfdetect serve` beside a good face, plus the Host/Origin checks.

    python experiments/hostile_inputs/run.py            # from the repository root; prints a table, exits 1 on a miss
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEAK = (
    "import sys\nfrom dfdetect.cli import main\nsys.argv = ['dfdetect'] + sys.argv[1:]\n"
    "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
    "hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
    "print('PEAK_KB', hwm, 'RC', code, file=sys.stderr)\n"
)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w: int, h: int) -> bytes:
    """A PNG declaring w x h black pixels (compresses to almost nothing)."""
    raw = zlib.compress(b"\x00" * ((w * 3 + 1) * h), 9)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def gif_header(w: int, h: int) -> bytes:
    """A GIF whose screen and one frame declare w x h, with a few bytes of LZW data (then truncated)."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", w, h, 0x80, 0, 0)
        + b"\x00" * 6
        + b","
        + struct.pack("<HHHHB", 0, 0, w, h, 0)
        + b"\x02\x02\x4c\x01\x00;"
    )


def jpeg_header(w: int, h: int) -> bytes:
    """A baseline JPEG header declaring w x h (SOI, SOF0), then nothing."""
    sof = struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8\xff\xc0" + sof + b"\xff\xd9"


def hostile(folder: Path) -> dict[str, str]:
    """The issue's shapes; returns name -> what the issue saw it cost."""
    shapes = {
        "wide_70000x100.png": (png(70000, 100), "6.9 kB: serve 6.4 GB RSS and 36 s, CLI 6.5 GB"),
        "thin_1x20000.png": (png(1, 20000), "118 B: 5.3 GB"),
        "thin_1x8000.png": (png(1, 8000), "93 B: 2.1 GB"),
        "thin_1x2600.png": (png(1, 2600), "85 B: OpenCV resize error sank the batch (500, traceback)"),
        "needle_2x40000000.png": (png(2, 40_000_000), "OverflowError; train tried to allocate 553 GB"),
        "gif_81mpx.gif": (gif_header(9000, 9000), "a few bytes: 1.1-1.6 GB"),
        "jpeg_81mpx.jpg": (jpeg_header(9000, 9000), "a few bytes: 1.1-1.6 GB"),
        "empty.jpg": (b"", "-"),
        "text.png": (b"not an image at all\n", "-"),
    }
    for name, (data, _) in shapes.items():
        (folder / name).write_bytes(data)
    return {k: v for k, (_, v) in shapes.items()}


def cli(args: list[str]) -> tuple[int, float, float, str, str]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True, timeout=600)
    secs = time.perf_counter() - t
    tail = r.stderr.rsplit("PEAK_KB", 1)[1].split()
    return int(tail[2]), int(tail[0]) / 1024, secs, r.stdout, r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, files: list[tuple[str, bytes]], headers: dict[str, str] | None = None) -> tuple[int, object]:
    boundary = "dfdetect-hostile"
    body = b""
    for name, data in files:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    req = urllib.request.Request(url, body, {**ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:200]


def get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main() -> int:
    faces = sorted((REPO / "examples").glob("*/*.jpg"))[:4]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "mixed"
        d.mkdir()
        for f in faces:
            (d / f.name).write_bytes(f.read_bytes())
        issue = hostile(d)
        print(f"folder: {len(faces)} good faces + {len(issue)} hostile files")
        rc, mb, secs, out, err = cli(["predict", str(d), "--json"])
        rows = {Path(x["path"]).name: x for x in map(json.loads, (ln for ln in out.splitlines() if ln[:1] == "{"))}
        print(f"\npredict FOLDER --json: rc {rc}, peak RSS {mb:.0f} MB, {secs:.1f} s")
        print("| file | the issue saw | now |\n|---|---|---|")
        for name, before in issue.items():
            now = rows.get(name, {}).get("error") or "NO ERROR"
            print(f"| {name} | {before} | {now.split(': ', 1)[-1][:90]} |")
            ok &= bool(rows.get(name, {}).get("error"))
        good = [rows[f.name] for f in faces if f.name in rows]
        ok &= rc == 0 and mb < 1024 and len(good) == len(faces) and all(g["error"] is None for g in good)
        print("good faces:", ", ".join(f"{Path(g['path']).name} {g['label']} {g['score']:.3f}" for g in good))
        # report and analyze: the good faces alone, then the mixed folder (what the hostile files add)
        g = Path(tmp) / "good"
        g.mkdir()
        for f in faces:
            (g / f.name).write_bytes(f.read_bytes())
        for verb in ("report", "analyze"):
            seen = {}
            for label, folder in (("good faces only", g), ("mixed", d)):
                extra = ["--out", str(Path(tmp) / f"{verb}-{folder.name}")] if verb == "report" else []
                rc, mb, secs, out, err = cli([verb, str(folder), *extra])
                errors = sum(1 for ln in (out + err).splitlines() if "ERROR" in ln or "error" in ln.lower())
                seen[label] = mb
                print(f"\n{verb} ({label}): rc {rc}, peak RSS {mb:.0f} MB, {secs:.1f} s, {errors} error lines")
                ok &= rc == 0 and "Traceback" not in err
            ok &= seen["mixed"] < seen["good faces only"] + 150  # the hostile files add (almost) nothing
        ok &= (Path(tmp) / "report-mixed" / "index.html").is_file()

        port = free_port()
        db = Path(tmp) / "scans.db"
        srv = subprocess.Popen(
            [sys.executable, "-m", "dfdetect", "serve", "--port", str(port), "--db", str(db), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    if get(base + "/health") == 200:
                        break
                except OSError:
                    time.sleep(0.5)
            files = [(faces[0].name, faces[0].read_bytes())] + [(n, (d / n).read_bytes()) for n in issue]
            t = time.perf_counter()
            status, body = post(base + "/predict", files)
            secs = time.perf_counter() - t
            rss = int([ln.split()[1] for ln in open(f"/proc/{srv.pid}/status") if ln.startswith("VmHWM")][0]) / 1024
            results = body.get("predictions", []) if isinstance(body, dict) else []
            scored = [r for r in results if r.get("error") is None]
            print(f"\nPOST /predict (1 face + {len(issue)} hostile): {status}, {secs:.1f} s, server peak {rss:.0f} MB")
            print("  scored:", [(r["path"], r["label"]) for r in scored])
            print("  errors:", sum(1 for r in results if r.get("error")), "of", len(issue))
            with urllib.request.urlopen(base + "/scans", timeout=30) as r:
                recorded = json.loads(r.read())
            n = recorded["total"]
            print("  /scans rows:", n)
            ok &= status == 200 and len(scored) == 1 and rss < 1024 and n >= 1
            for ep in ("/forensics", "/explain"):
                codes = [post(base + ep, [(n, (d / n).read_bytes())])[0] for n in issue]
                print(f"  POST {ep}, each hostile file alone: {sorted(set(codes))}")
                ok &= all(400 <= c < 500 for c in codes)
            foreign = get(base + "/scans", {"Host": "evil.example"})
            cross, _ = post(base + "/predict", files[:1], {"Origin": "http://evil.example"})
            print(f"\nGET /scans, Host: evil.example -> {foreign}; POST, Origin: http://evil.example -> {cross}")
            ok &= 400 <= foreign < 500 and 400 <= cross < 500
        finally:
            srv.terminate()
            srv.wait(30)
    print("\nall as #19 asks" if ok else "\nMISSED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
