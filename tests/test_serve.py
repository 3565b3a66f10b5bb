"""dfdetect serve: REST API (TestClient against a tiny model), limits and errors, API key, scan history, page.

The browser test drives the system Chromium with Selenium and skips (with the reason) when either is absent.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import shutil
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from fastapi.testclient import TestClient as _TestClient  # noqa: E402

from dfdetect.serve.api import MicroBatcher, create_app  # noqa: E402


def TestClient(app, **kw):  # noqa: N802 - the server answers loopback Host names only (DNS-rebinding guard)
    return _TestClient(app, base_url=kw.pop("base_url", "http://127.0.0.1"), **kw)


from dfdetect.serve.db import SCHEMA_VERSION, ScanDB, _v1, export_records  # noqa: E402

KEY = "s3cret-key"


def _images(tiny_data: Path, n: int) -> list[Path]:
    files = sorted((tiny_data / "real").glob("real_*.jpg"))[: n // 2] + sorted((tiny_data / "fake").glob("fake_*.jpg"))
    return files[:n]


def _upload(paths: list[Path], field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


@pytest.fixture(scope="module")
def model_path(tiny_run: Path) -> str:
    return str(tiny_run / "best.pt")


@pytest.fixture(scope="module")
def client(model_path, tmp_path_factory):
    app = create_app(model=model_path, db=tmp_path_factory.mktemp("serve") / "scans.db", max_upload_mb=1)
    with TestClient(app) as c:
        yield c


# ---- service --------------------------------------------------------------------------------------
def test_health_and_models(client):
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["version"]
    assert h["model"]["id"].startswith("tiny_efficientnet-")
    assert h["model"]["backend"] == "torch" and h["model"]["device"] == "cpu" and h["model"]["precision"] == "fp32"
    m = client.get("/models").json()["models"]
    assert m[0]["id"] == h["model"]["id"] and m[0]["input_size"][0] == 3


def test_openapi_and_static_page(client):
    spec = client.get("/openapi.json").json()
    for path in ("/health", "/models", "/predict", "/explain", "/scans", "/scans/{scan_id}"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "PredictResponse" in spec["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "dfdetect" in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything is local
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# ---- predict --------------------------------------------------------------------------------------
def test_predict_matches_detector(client, model_path, tiny_data):
    from dfdetect import Detector

    files = _images(tiny_data, 6)
    expected = {Path(p.path).name: p for p in Detector.load(model_path).predict(files, workers=0)}

    one = client.post("/predict", files=_upload(files[:1]))
    assert one.status_code == 200
    body = one.json()
    assert len(body["predictions"]) == 1 and body["scan_ids"][0] is not None
    many = client.post("/predict", files=_upload(files), data={"case_id": "case-42"})
    assert many.status_code == 200
    body = many.json()
    assert body["case_id"] == "case-42"
    preds = body["predictions"]
    assert [p["path"] for p in preds] == [f.name for f in files]
    for p in preds + one.json()["predictions"]:
        e = expected[p["path"]]
        assert set(p) == set(e.to_dict())  # the same shape as `predict --json`
        assert p["score"] == pytest.approx(e.score, abs=1e-6)
        assert p["sha256"] == e.sha256 and p["label"] == e.label and p["model"] == e.model
        assert p["threshold"] == e.threshold and p["error"] is None


def test_predict_threshold_override_and_mixed_batch(client, tiny_data):
    files = _images(tiny_data, 2)
    r = client.post("/predict", files=_upload(files), data={"threshold": "0"})
    assert r.status_code == 200
    assert all(p["label"] == "fake" and p["threshold"] == 0.0 for p in r.json()["predictions"])
    assert client.post("/predict", files=_upload(files), data={"threshold": "1.5"}).status_code == 422
    assert client.post("/predict", files=_upload(files), data={"threshold": "abc"}).status_code == 422

    mixed = _upload(files[:1]) + [("files", ("notes.txt", b"just text", "text/plain"))]
    r = client.post("/predict", files=mixed)
    assert r.status_code == 200
    good, bad = r.json()["predictions"]
    assert good["error"] is None and good["score"] is not None
    assert bad["score"] is None and bad["label"] is None and "notes.txt" in bad["error"]
    assert r.json()["scan_ids"][1] is None


def test_oversize_upload_is_413(model_path, tmp_path):
    app = create_app(model=model_path, db=tmp_path / "scans.db", max_upload_mb=0.01)
    big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    assert len(buf.getvalue()) > 0.01 * 1024 * 1024
    with TestClient(app) as c:
        r = c.post("/predict", files=[("files", ("big.png", buf.getvalue(), "image/png"))])
        assert r.status_code == 413
        assert "limit" in r.json()["detail"]
        assert c.get("/scans").json()["total"] == 0


def test_bad_inputs(client, tiny_data):
    r = client.post("/predict", files=[("files", ("notes.txt", b"hello, not an image", "text/plain"))])
    assert r.status_code in (415, 422) and "not an image" in r.json()["detail"]
    r = client.post("/predict", files=[("files", ("empty.jpg", b"", "image/jpeg"))])
    assert r.status_code in (415, 422) and "empty" in r.json()["detail"]
    r = client.post("/predict", files=[("files", ("corrupt.jpg", (tiny_data / "real" / "corrupt.jpg").read_bytes()))])
    assert r.status_code in (415, 422)
    # no file part, wrong field name, not multipart at all
    assert client.post("/predict", files=[("case_id", (None, "x"))]).status_code == 422
    assert client.post("/predict", data={"case_id": "x"}).status_code == 415  # urlencoded, not multipart
    assert client.post("/predict", files=_upload(_images(tiny_data, 1), field="image")).status_code == 422
    assert client.post("/predict", content=b"\xff\xd8", headers={"content-type": "image/jpeg"}).status_code == 415
    r = client.post("/predict", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= r.status_code < 500
    assert client.get("/health").status_code == 200  # still alive


def test_decompression_bomb_refused(client, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(bomb)
    assert bomb.stat().st_size < 1024 * 1024  # small on disk, 100 Mpx decoded
    r = client.post("/predict", files=[("files", ("bomb.png", bomb.read_bytes(), "image/png"))])
    assert r.status_code in (413, 415, 422)
    assert "bomb" in r.json()["detail"]


def test_too_many_files(model_path, tmp_path, tiny_data):
    app = create_app(model=model_path, db=tmp_path / "scans.db", max_files=2)
    with TestClient(app) as c:
        assert c.post("/predict", files=_upload(_images(tiny_data, 3))).status_code == 413


# ---- API key --------------------------------------------------------------------------------------
@pytest.mark.parametrize("via_env", [False, True])
def test_api_key(model_path, tmp_path, tiny_data, monkeypatch, via_env):
    if via_env:
        monkeypatch.setenv("DFDETECT_API_KEY", KEY)
    else:
        monkeypatch.delenv("DFDETECT_API_KEY", raising=False)
    app = create_app(model=model_path, db=tmp_path / "scans.db", api_key=None if via_env else KEY)
    files = _upload(_images(tiny_data, 1))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200
        for method, path, kw in (
            ("get", "/models", {}),
            ("get", "/scans", {}),
            ("get", "/scans/1", {}),
            ("post", "/predict", {"files": files}),
            ("post", "/explain", {"files": files}),
        ):
            assert getattr(c, method)(path, **kw).status_code == 401, path
            assert getattr(c, method)(path, headers={"X-API-Key": "wrong"}, **kw).status_code == 403, path
        r = c.post("/predict", files=files, headers={"X-API-Key": KEY})
        assert r.status_code == 200
        assert c.get("/scans", headers={"X-API-Key": KEY}).json()["total"] == 1
    assert "X-API-Key" in str(app.openapi()["components"]["securitySchemes"])


# ---- scan history ---------------------------------------------------------------------------------
def test_scans_recorded_filtered_and_persistent(model_path, tmp_path, tiny_data):
    db = tmp_path / "scans.db"
    files = _images(tiny_data, 4)
    with TestClient(create_app(model=model_path, db=db)) as c:
        a = c.post("/predict", files=_upload(files[:3]), data={"case_id": "A"}).json()
        c.post("/predict", files=_upload(files[3:]), data={"case_id": "B"})
        page = c.get("/scans").json()
        assert page["total"] == 4 and [s["id"] for s in page["items"]] == sorted(a["scan_ids"] + [4], reverse=True)
        only_a = c.get("/scans", params={"case_id": "A"}).json()
        assert only_a["total"] == 3 and {s["case_id"] for s in only_a["items"]} == {"A"}
        paged = c.get("/scans", params={"limit": 2, "offset": 2}).json()
        assert paged["total"] == 4 and len(paged["items"]) == 2
        sha = a["predictions"][0]["sha256"]
        by_sha = c.get("/scans", params={"sha256": sha}).json()["items"]
        assert by_sha and all(s["sha256"] == sha for s in by_sha)
        assert c.get("/scans", params={"sha256": "nothex"}).status_code == 422
        s = c.get(f"/scans/{a['scan_ids'][0]}").json()
        p = a["predictions"][0]
        assert s["file_name"] == files[0].name and s["sha256"] == p["sha256"] and s["score"] == p["score"]
        assert s["size_bytes"] == files[0].stat().st_size and (s["width"], s["height"]) == Image.open(files[0]).size
        assert s["label"] == p["label"] and s["threshold"] == p["threshold"] and s["model_id"] == p["model"]
        assert s["dfdetect_version"] and s["created_at"].endswith("+00:00") and s["case_id"] == "A"
        assert not s["has_image"]
        assert c.get("/scans/9999").status_code == 404
        assert c.delete(f"/scans/{a['scan_ids'][2]}").status_code == 204
        assert c.get(f"/scans/{a['scan_ids'][2]}").status_code == 404
    # a restarted server sees the same history
    with TestClient(create_app(model=model_path, db=db)) as c:
        assert c.get("/scans").json()["total"] == 3
        assert c.get("/scans", params={"case_id": "B"}).json()["total"] == 1


def test_store_images(model_path, tmp_path, tiny_data):
    files = _images(tiny_data, 1)
    store = tmp_path / "images"
    with TestClient(create_app(model=model_path, db=tmp_path / "scans.db", store_images=store)) as c:
        sid = c.post("/predict", files=_upload(files)).json()["scan_ids"][0]
        assert c.get(f"/scans/{sid}").json()["has_image"]
        img = c.get(f"/scans/{sid}/image")
        assert img.status_code == 200 and img.content == files[0].read_bytes()
        assert img.headers["content-type"] == "image/jpeg"
        assert len(list(store.rglob("*.jpg"))) == 1
        c.delete(f"/scans/{sid}")
        assert not list(store.rglob("*.jpg"))
    # privacy by default: nothing stored
    with TestClient(create_app(model=model_path, db=tmp_path / "other.db")) as c:
        sid = c.post("/predict", files=_upload(files)).json()["scan_ids"][0]
        assert c.get(f"/scans/{sid}/image").status_code == 404


def test_db_migration_and_export(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    _v1(conn)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO scans (created_at, sha256, file_name, size_bytes, width, height, model_id, dfdetect_version, "
        "score, label, threshold, case_id) VALUES ('2024-01-01T00:00:00+00:00', ?, 'a.jpg', 10, 4, 4, 'm', '0.0', "
        "0.9, 'fake', 0.5, 'old')",
        ("a" * 64,),
    )
    conn.commit()
    conn.close()
    with ScanDB(path) as db:
        assert db.version == SCHEMA_VERSION
        (rec,), total = db.query(case_id="old")
        assert total == 1 and rec.file_name == "a.jpg" and rec.source == "predict"
        assert "a.jpg" in export_records([rec], "csv") and '"case_id": "old"' in export_records([rec], "json")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_writers(tmp_path):
    from dfdetect.serve.db import ScanRecord

    dbs = [ScanDB(tmp_path / "c.db") for _ in range(2)]  # two "processes" sharing one file

    def write(db: ScanDB, k: int) -> None:
        for i in range(25):
            db.add(ScanRecord("t", f"{k}{i}", "f", 1, 1, 1, "m", "v", 0.5, "fake", 0.5))

    threads = [threading.Thread(target=write, args=(dbs[k % 2], k)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dbs[0].count() == 100
    for db in dbs:
        db.close()


def test_killed_writer_loses_no_committed_scan(tmp_path):
    import subprocess

    db = tmp_path / "k.db"
    code = (
        "import os, signal, sys\n"
        "from dfdetect.serve.db import ScanDB, ScanRecord\n"
        "db = ScanDB(sys.argv[1])\n"
        "for i in range(5):\n"
        "    db.add(ScanRecord('t', str(i), 'f', 1, 1, 1, 'm', 'v', 0.5, 'fake', 0.5))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(db)], timeout=60)
    assert proc.returncode == -9
    with ScanDB(db) as scans:
        assert scans.count() == 5


# ---- throughput -----------------------------------------------------------------------------------
def test_micro_batcher_batches_and_matches(model_path, tiny_data):
    import asyncio

    from dfdetect import Detector
    from dfdetect.data.io import open_image

    det = Detector.load(model_path)
    arrays = [det.preprocess(open_image(p)) for p in _images(tiny_data, 8)]
    single = [det.score_image(open_image(p)) for p in _images(tiny_data, 8)]
    batcher = MicroBatcher(det, max_batch=8, max_wait_ms=50)
    batcher.start()
    try:
        scores = asyncio.run(batcher.score(arrays))
    finally:
        batcher.stop()
    assert scores == pytest.approx(single, abs=1e-6)
    assert batcher.images == 8 and batcher.batches < 8  # shared forward passes


def test_concurrent_requests(client, tiny_data):
    files = _upload(_images(tiny_data, 1))
    results: list[int] = []

    def hit() -> None:
        results.append(client.post("/predict", files=files).status_code)

    threads = [threading.Thread(target=hit) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 12


# ---- explain --------------------------------------------------------------------------------------
def test_explain_unavailable_is_501(model_path, tmp_path, tiny_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "dfdetect.analysis.explain", None)  # makes `import dfdetect.analysis.explain` fail
    with TestClient(create_app(model=model_path, db=tmp_path / "scans.db")) as c:
        r = c.post("/explain", files=_upload(_images(tiny_data, 1), field="file"))
        assert r.status_code == 501 and "explain" in r.json()["detail"]
        assert c.get("/models").json()["models"][0]["explain"] is False


@pytest.mark.skipif(
    importlib.util.find_spec("dfdetect.analysis.explain") is None, reason="dfdetect.analysis.explain not installed"
)
def test_explain_gradcam(client, tiny_data):
    f = _images(tiny_data, 1)
    r = client.post("/explain", files=_upload(f, field="file"), data={"case_id": "cam"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.0 <= body["score"] <= 1.0 and body["label"] in ("fake", "real") and body["method"] == "gradcam"
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == Image.open(f[0]).size
    assert Image.open(io.BytesIO(base64.b64decode(body["panel_png"]))).format == "PNG"
    scan = client.get(f"/scans/{body['scan_id']}").json()
    assert scan["source"] == "explain" and scan["case_id"] == "cam"
    r = client.post("/explain", files=_upload(f, field="file"), data={"record": "false"})
    assert r.status_code == 200 and r.json()["scan_id"] is None
    bad = client.post("/explain", files=[("file", ("x.txt", b"text", "text/plain"))])
    assert bad.status_code in (415, 422)


@pytest.mark.skipif(
    importlib.util.find_spec("dfdetect.analysis.forensics") is None, reason="dfdetect.analysis.forensics not installed"
)
def test_forensics(client, tiny_data):
    f = _images(tiny_data, 1)
    r = client.post("/forensics", files=_upload(f, field="file"), data={"record": "0"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["path"] == f[0].name and body["scan_id"] is None and body["label"] in ("fake", "real")
    assert "<html" in body["report_html"].lower() and "http://" not in body["report_html"]
    assert Image.open(io.BytesIO(base64.b64decode(body["ela_png"]))).format == "PNG"
    assert isinstance(body["summary"].get("flags", []), list)
    assert client.post("/forensics", files=[("file", ("x.txt", b"text", "text/plain"))]).status_code == 415


def test_forensics_unavailable_is_501(client, tiny_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "dfdetect.analysis.forensics", None)
    r = client.post("/forensics", files=_upload(_images(tiny_data, 1), field="file"))
    assert r.status_code == 501


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_serve_help_and_history(model_path, tmp_path, tiny_data):
    from typer.testing import CliRunner

    from dfdetect.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--api-key" in r.output and "127.0.0.1" in r.output
    db = tmp_path / "scans.db"
    with TestClient(create_app(model=model_path, db=db)) as c:
        c.post("/predict", files=_upload(_images(tiny_data, 2)), data={"case_id": "cli"})
    r = runner.invoke(app, ["history", "--db", str(db)])
    assert r.exit_code == 0 and "2 of 2 scans" in r.output
    out = tmp_path / "h.csv"
    r = runner.invoke(app, ["history", "--db", str(db), "--format", "csv", "--case-id", "cli", "--out", str(out)])
    assert r.exit_code == 0 and out.read_text().count("\n") == 3
    r = runner.invoke(app, ["history", "--db", str(tmp_path / "missing.db")])
    assert r.exit_code == 2


# ---- the page in a real browser ---------------------------------------------------------------------
def _chromium() -> tuple[str | None, str]:
    browser = next((b for b in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(b).is_file()), None)
    if browser is None:
        return None, "Chromium is not installed (/usr/bin/chromium)"
    if importlib.util.find_spec("selenium") is None:
        return None, "the selenium package is not installed"
    if shutil.which("chromedriver") is None and not Path("/usr/bin/chromedriver").is_file():
        return None, "chromedriver is not installed (Debian package chromium-driver)"
    return browser, ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_browser_upload_shows_verdict(model_path, tmp_path, tiny_data):
    browser, why = _chromium()
    if browser is None:
        pytest.skip(why)
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    app = create_app(model=model_path, db=tmp_path / "scans.db")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    driver = None
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1200,900",
        ):
            opts.add_argument(arg)
        driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 30)
        wait.until(ec.text_to_be_present_in_element((By.ID, "model-info"), "tiny_efficientnet"))
        assert "torch fp32 on cpu" in driver.find_element(By.ID, "model-info").text  # backend and its precision
        image = _images(tiny_data, 1)[0]
        driver.find_element(By.ID, "file-input").send_keys(str(image))
        card = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".verdict.fake, .verdict.real")))
        text = card.text
        assert image.name in text and "P(fake)" in text and ("FAKE" in text or "REAL" in text)
        card.find_element(By.CSS_SELECTOR, "button.explain").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".cam").is_displayed() or "unavailable" in card.text)
        driver.find_element(By.ID, "tab-history").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#history tbody"), image.name))
        driver.find_element(By.ID, "tab-scan").click()
        if importlib.util.find_spec("cv2") is not None:  # face mode: boxes drawn on the upload, in the box colours
            import httpx

            data, _ = _group_jpeg()
            (tmp_path / "group.jpg").write_bytes(data)
            api = httpx.post(f"http://127.0.0.1:{port}/predict", files=[("files", ("group.jpg", data, "image/jpeg"))])
            faces = api.json()["predictions"][0]["faces"]
            driver.find_element(By.ID, "file-input").send_keys(str(tmp_path / "group.jpg"))
            canvas = wait.until(
                lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, ".faces-view") if c.is_displayed()), False)
            )
            card = canvas.find_element(By.XPATH, "./ancestor::article")
            assert "decided by max of 2 face(s)" in card.text
            js = (
                "const c = arguments[0], k = c.width / arguments[1], ctx = c.getContext('2d');"
                "return arguments[2].map(b => Array.from(ctx.getImageData("
                "Math.floor((b[0] + b[2] / 2) * k), Math.floor(b[1] * k), 1, 1).data.slice(0, 3)));"
            )
            pixels = driver.execute_script(js, canvas, 1280, [f["box"] for f in faces])
            for f, px in zip(faces, pixels):  # the top edge of each box in its verdict colour
                want = (198, 40, 40) if f["label"] == "fake" else (46, 125, 50)
                assert max(abs(a - b) for a, b in zip(px, want)) < 40, (f, px)
        assert driver.save_screenshot(str(tmp_path / "serve-page.png"))
        assert (tmp_path / "serve-page.png").stat().st_size > 1000
    finally:
        if driver is not None:
            driver.quit()
        server.should_exit = True
        thread.join(10)


# ---- face mode ------------------------------------------------------------------------------------
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _group_jpeg() -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """Two training crops pasted at 280 px into a 1280x640 noise canvas; (JPEG bytes, pasted squares l, t, r, b)."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.normal(128, 20, (640, 1280, 3)).clip(0, 255).astype(np.uint8))
    places = []
    for name, at in (("fake/0H9IEK046U.jpg", (120, 150)), ("real/00712.jpg", (800, 200))):
        img.paste(Image.open(EXAMPLES / name).convert("RGB").resize((280, 280), Image.Resampling.LANCZOS), at)
        places.append((at[0], at[1], at[0] + 280, at[1] + 280))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue(), places


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_predict_face_mode_rows_boxes_and_history(client):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("OpenCV without Haar cascades")
    data, places = _group_jpeg()
    r = client.post("/predict", files=[("files", ("group.jpg", data, "image/jpeg"))], data={"case_id": "faces"})
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]  # auto: 1280x640 is not square
    assert p["mode"] == "faces" and p["decision_rule"] == "max" and "max of 2" in p["decided_by"]
    assert len(p["faces"]) == 2
    for place in places:
        assert max(_iou(f["crop"], place) for f in p["faces"]) > 0.5, (place, p["faces"])
    assert p["score"] == max(f["score"] for f in p["faces"])
    assert p["label"] == ("fake" if p["score"] >= p["threshold"] else "real")
    for f in p["faces"]:
        assert set(f) == {"box", "crop", "score", "label", "aligned", "roll", "warnings"}
    scan = client.get(f"/scans/{r.json()['scan_ids'][0]}").json()
    assert scan["mode"] == "faces" and scan["score"] == p["score"]
    assert [f["box"] for f in scan["faces"]] == [f["box"] for f in p["faces"]]
    off = client.post("/predict", files=[("files", ("group.jpg", data, "image/jpeg"))], data={"faces": "off"})
    row = off.json()["predictions"][0]
    assert off.status_code == 200 and row["mode"] == "image" and row["faces"] == []
    assert any("far from square" in w for w in row["warnings"])  # whole-image score out of the model's domain
    bad = client.post("/predict", files=[("files", ("group.jpg", data, "image/jpeg"))], data={"faces": "maybe"})
    assert bad.status_code == 422
    spec = client.get("/openapi.json").json()
    assert "FaceOut" in spec["components"]["schemas"]
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["faces"]["enum"] == ["auto", "on", "off"]


def test_explain_face_mode(client):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("OpenCV without Haar cascades")
    data, _ = _group_jpeg()
    form = {"faces": "on", "threshold": "0", "record": "false"}
    r = client.post("/explain", files=[("file", ("group.jpg", data, "image/jpeg"))], data=form)
    if r.status_code == 501:
        pytest.skip(r.json()["detail"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "faces" and len(body["faces"]) == 2 and body["scan_id"] is None
    assert body["score"] == max(f["score"] for f in body["faces"])
    assert body["threshold"] == 0.0 and all(f["label"] == "fake" for f in body["faces"])  # the override applies
    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "faces" in schema["properties"]
    for key in ("overlay_png", "panel_png", "overview_png"):
        assert Image.open(io.BytesIO(base64.b64decode(body[key]))).size[0] > 0


def test_old_database_opens_with_face_columns(tmp_path):
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    from dfdetect.serve.db import _v2

    _v1(conn)
    _v2(conn)
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.execute(
        "INSERT INTO scans (created_at, sha256, file_name, size_bytes, model_id, dfdetect_version, score, label, "
        "threshold) VALUES ('2024-01-01T00:00:00+00:00', ?, 'b.jpg', 10, 'm', '0.0', 0.1, 'real', 0.5)",
        ("b" * 64,),
    )
    conn.commit()
    conn.close()
    with ScanDB(path) as db:
        assert db.version == SCHEMA_VERSION >= 3
        (rec,), _ = db.query()
        assert rec.file_name == "b.jpg" and rec.mode is None and rec.faces_json is None


def test_serve_caps_malloc_arenas_unless_the_user_chose(monkeypatch):
    """`dfdetect serve` caps glibc malloc arenas (RSS growth under concurrent load); a user's setting wins."""
    import os
    import sys

    from dfdetect.cli.serve import _limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    _limit_malloc_arenas(2)
    assert os.environ.get("MALLOC_ARENA_MAX") == ("2" if sys.platform.startswith("linux") else None)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    _limit_malloc_arenas(2)
    assert os.environ["MALLOC_ARENA_MAX"] == "8"


def test_foreign_host_and_cross_origin_writes_are_refused(model_path, tmp_path, tiny_data):
    """DNS rebinding (a foreign Host) gets 400 on reads; a page on another origin cannot record or delete scans
    (403), even on a server without a key; same-origin writes and --cors origins still work."""
    files = _images(tiny_data, 1)
    app = create_app(model=model_path, db=tmp_path / "scans.db", cors_origins=["https://lab.example"])
    with TestClient(app) as c:
        assert c.get("/scans", headers={"Host": "evil.example"}).status_code == 400
        assert c.get("/scans", headers={"Host": "localhost:8000"}).status_code == 200
        evil = c.post("/predict", files=_upload(files), headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and "cross-origin" in evil.json()["detail"]
        assert c.get("/scans").json()["total"] == 0  # nothing was recorded
        own = c.post("/predict", files=_upload(files), headers={"Origin": "http://127.0.0.1"})
        assert own.status_code == 200
        sid = own.json()["scan_ids"][0]
        assert c.delete(f"/scans/{sid}", headers={"Origin": "http://evil.example"}).status_code == 403
        assert c.get(f"/scans/{sid}").status_code == 200
        lab = c.post("/predict", files=_upload(files), headers={"Origin": "https://lab.example"})
        assert lab.status_code == 200
    opened = create_app(model=model_path, db=tmp_path / "o.db", allowed_hosts=["detector.lab"])
    with TestClient(opened) as c:
        assert c.get("/health", headers={"Host": "detector.lab:8000"}).status_code == 200
        assert c.get("/health", headers={"Host": "evil.example"}).status_code == 400


def test_serve_refuses_an_open_bind_without_a_key(monkeypatch):
    from typer.testing import CliRunner

    from dfdetect.cli import app

    monkeypatch.delenv("DFDETECT_API_KEY", raising=False)
    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "without an API key" in r.output and "--insecure-no-key" in r.output


def test_hostile_uploads_beside_a_good_face_fail_alone(model_path, tmp_path, tiny_data):
    """Long-thin PNGs of a few bytes in one request with a good image: 200, the good one scored and recorded,
    each hostile one with its own error."""
    from tests.test_cli import _png_header_only

    for name, (w, h) in {"thin.png": (1, 2600), "wide.png": (70000, 100), "needle.png": (2, 200000)}.items():
        _png_header_only(tmp_path / name, w, h)
    good = _images(tiny_data, 1)
    files = _upload(good) + [
        ("files", (n, (tmp_path / n).read_bytes(), "image/png")) for n in ("thin.png", "wide.png", "needle.png")
    ]
    with TestClient(create_app(model=model_path, db=tmp_path / "scans.db")) as c:
        r = c.post("/predict", files=files)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert preds[0]["error"] is None and preds[0]["score"] is not None
        assert all("aspect-ratio limit" in p["error"] for p in preds[1:])
        assert r.json()["scan_ids"][0] is not None and r.json()["scan_ids"][1:] == [None, None, None]
        assert c.get("/scans").json()["total"] == 1


def test_openapi_schema_is_unchanged(tmp_path):
    # The REST contract: paths, parameters, response models. A deliberate change updates the snapshot with
    #   DFDETECT_UPDATE_OPENAPI=1 python -m pytest tests/test_serve.py -k openapi
    import json
    import os

    snapshot = Path(__file__).parent / "data" / "openapi.json"
    spec = create_app(db=tmp_path / "s.db").openapi()
    spec["info"]["version"] = "<version>"
    if os.environ.get("DFDETECT_UPDATE_OPENAPI"):
        snapshot.write_text(json.dumps(spec, indent=1, sort_keys=True))
    assert json.loads(json.dumps(spec)) == json.loads(snapshot.read_text())


# ---- hostile inputs (#19) -------------------------------------------------------------------------
def test_long_boundary_and_huge_ids_are_4xx(client):
    """A boundary longer than python-multipart accepts, and ids beyond SQLite's 64-bit integers: 4xx, not 500."""
    b = "b" * 300
    body = (
        f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\nxx\r\n--{b}--\r\n'
    ).encode()
    for path in ("/predict", "/explain", "/forensics"):
        r = client.post(path, content=body, headers={"content-type": f"multipart/form-data; boundary={b}"})
        assert r.status_code in (400, 501), (path, r.status_code, r.text)  # 501: forensics not installed
        if r.status_code == 400:
            assert "multipart" in r.json()["detail"]
    for big in ("99999999999999999999", "-99999999999999999999", str(2**63), "0"):
        assert client.get(f"/scans/{big}").status_code == 404, big
        assert client.get(f"/scans/{big}/image").status_code == 404, big
        assert client.delete(f"/scans/{big}").status_code == 404, big
    r = client.get("/scans", params={"offset": "99999999999999999999"})
    assert r.status_code == 200 and r.json()["items"] == []
    assert client.get("/health").status_code == 200


def test_explain_errors_name_no_server_path(model_path, tmp_path, tiny_data):
    """The PyTorch weights missing or broken when /explain first needs them: 501 saying what is wrong, with the
    file's name but not where it lives on the server."""
    import shutil as sh

    from dfdetect.serve.errors import without_paths

    assert without_paths("model file /srv/models/x/best.pt not found") == "model file best.pt not found"
    assert without_paths("P(fake) 1/2 at http://host/x") == "P(fake) 1/2 at http://host/x"
    files = _upload(_images(tiny_data, 1), field="file")
    for broken in (False, True):
        weights = tmp_path / f"models-{broken}" / "deep" / "best.pt"
        weights.parent.mkdir(parents=True)
        sh.copy(model_path, weights)
        with TestClient(create_app(model=str(weights), db=weights.parent / "scans.db")) as c:
            if broken:
                weights.write_bytes(b"not a checkpoint at all")
            else:
                weights.unlink()
            r = c.post("/explain", files=files)
            assert r.status_code == 501, r.text
            detail = r.json()["detail"]
            assert "best.pt" in detail and ("missing" in detail or "cannot load" in detail), detail
            assert str(tmp_path) not in detail and "/deep/" not in detail, detail
            assert c.post("/predict", files=_upload(_images(tiny_data, 1))).status_code == 200  # still serving


def test_request_pixel_budget_refuses_the_files_past_it(model_path, tmp_path, tiny_data):
    """64x64 images (4096 px) under a 10,000-px budget: the first two are scored, the third gets its own 413 error;
    one file over the whole budget is a 413 answer. The env variables of `dfdetect serve` carry the same settings."""
    from dfdetect.serve.settings import settings_from_env

    files = _images(tiny_data, 3)
    assert all(Image.open(f).size == (64, 64) for f in files)
    with TestClient(create_app(model=model_path, db=tmp_path / "scans.db", max_request_mpx=0.01)) as c:
        r = c.post("/predict", files=_upload(files))
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["error"] is None for p in preds] == [True, True, False]
        assert "decode budget" in preds[2]["error"] and preds[2]["path"] == files[2].name
        assert r.json()["scan_ids"][2] is None and c.get("/scans").json()["total"] == 2
        bad = [("files", ("x.txt", b"text", "text/plain"))]  # a file that is no image spends no budget
        assert c.post("/predict", files=bad + _upload(files[:2])).json()["predictions"][2]["error"] is None
    with TestClient(create_app(model=model_path, db=tmp_path / "s2.db", max_request_mpx=0.001)) as c:
        r = c.post("/predict", files=_upload(files[:1]))
        assert r.status_code == 413 and "decode budget" in r.json()["detail"]
    env = {"DFDETECT_SERVE_MAX_REQUEST_MPX": "12.5", "DFDETECT_SERVE_MAX_CONCURRENT_DECODES": "3"}
    kw = settings_from_env(env)
    assert kw["max_request_mpx"] == 12.5 and kw["max_concurrent_decodes"] == 3
    assert settings_from_env({})["max_concurrent_decodes"] is None  # one per core


@pytest.mark.parametrize("slots", [1, 4])
def test_concurrent_decodes_are_bounded(model_path, tmp_path, tiny_data, monkeypatch, slots):
    """At most `max_concurrent_decodes` images are decoded at once, across requests (4 slots: they do overlap)."""
    from dfdetect.runtime import pipeline

    real = pipeline.decode_bytes
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def slow_decode(data, name):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        try:
            return real(data, name)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(pipeline, "decode_bytes", slow_decode)
    app = create_app(model=model_path, db=tmp_path / "scans.db", max_concurrent_decodes=slots)
    files = _upload(_images(tiny_data, 4))
    with TestClient(app) as c:
        codes: list[int] = []
        threads = [threading.Thread(target=lambda: codes.append(c.post("/predict", files=files).status_code))]
        threads.append(threading.Thread(target=lambda: codes.append(c.post("/predict", files=files).status_code)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert codes == [200, 200]
    assert state["most"] == 1 if slots == 1 else 1 < state["most"] <= slots


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (recv returns b"" or the connection resets) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_that_send_no_request_head_are_closed(monkeypatch):
    """With the protocol `dfdetect serve` runs: a silent connection, and one that trickles a request head byte by
    byte, are closed after timeout_keep_alive; a slow body after a complete head is not cut; the CLI passes it."""
    import uvicorn

    from dfdetect.serve.protocol import MAX_HEAD_BYTES, uvicorn_options

    async def app(scope, receive, send):  # echoes the body length; reads the body however slowly it comes
        if scope["type"] != "http":
            return
        n, more = 0, True
        while more:
            msg = await receive()
            n, more = n + len(msg.get("body", b"")), msg.get("more_body", False)
        body = str(n).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options(0.5))
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        silent = socket.create_connection(("127.0.0.1", port))
        assert _closed_within(silent, 5)
        trickle = socket.create_connection(("127.0.0.1", port))
        t0 = time.monotonic()
        try:
            for ch in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n":
                trickle.send(bytes([ch]))
                time.sleep(0.1)
        except OSError:
            pass  # closed while trickling
        assert _closed_within(trickle, 5) and time.monotonic() - t0 < 5
        with socket.create_connection(("127.0.0.1", port)) as ok:  # head at once, body late: answered
            ok.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n")
            time.sleep(1.0)
            ok.sendall(b"hello")
            ok.settimeout(5)
            answer = b""
            while not answer.endswith(b"\r\n\r\n5") and (more := ok.recv(65536)):
                answer += more
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n5"), answer
            assert _closed_within(ok, 5)  # then idle keep-alive: closed too
    finally:
        server.should_exit = True
        thread.join(10)

    from typer.testing import CliRunner

    from dfdetect.cli import app as cli
    from dfdetect.serve.settings import ENV_PREFIX, ENV_SETTINGS

    for suffix, _, _ in ENV_SETTINGS.values():  # restored after the test: `serve` sets them for its workers
        monkeypatch.setenv(ENV_PREFIX + suffix, "")
    monkeypatch.setenv("DFDETECT_API_KEY", "")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: seen.update(kw, target=target))
    flags = ["--timeout-keep-alive", "7", "--max-request-mpx", "100", "--max-concurrent-decodes", "3"]
    flags += ["--max-files", "4", "--timeout-body", "12.5"]
    r = CliRunner().invoke(cli, ["serve", *flags])
    assert r.exit_code == 0, r.output
    assert seen["target"] == "dfdetect.serve.api:app_from_env" and seen["timeout_keep_alive"] == 7
    assert seen["http"] == "dfdetect.serve.protocol:HeadTimeoutProtocol"
    assert seen["h11_max_incomplete_event_size"] == MAX_HEAD_BYTES
    from dfdetect.serve.settings import settings_from_env

    kw = settings_from_env()
    assert kw["max_request_mpx"] == 100 and kw["max_concurrent_decodes"] == 3
    assert kw["max_files"] == 4 and kw["body_timeout_s"] == 12.5


def test_stalled_body_is_408(monkeypatch):
    import asyncio

    from fastapi import HTTPException
    from starlette.requests import Request

    from dfdetect.serve import uploads

    sent = []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b"--x\r\n", "more_body": True}
        await asyncio.sleep(30)  # the client sends nothing more

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"multipart/form-data; boundary=x")]}

    async def read():
        with pytest.raises(HTTPException) as e:
            await uploads.read_multipart(Request(scope, receive), 1024, 1, stall_s=0.2)
        return e.value.status_code

    assert asyncio.run(asyncio.wait_for(read(), 10)) == 408


def test_an_upload_is_held_once():
    """A max-size file streamed in 64 KB chunks: parsing allocates about one copy of it (not the old bytearray plus
    a bytes copy), and hashing and decoding read that same object."""
    import asyncio
    import os
    import tracemalloc

    from starlette.requests import Request

    from dfdetect.serve import decoding, uploads

    size = 8 * 1024 * 1024
    payload = b"\x00\x01" + os.urandom(size - 2)  # no image: the decoder gives up on the header
    body = (
        b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n\r\n' + payload + b"\r\n--x--\r\n"
    )
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    del body
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    ctype = b"multipart/form-data; boundary=x"
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", ctype)]}

    async def receive():
        return messages.pop(0)

    async def parse():  # the peak measured inside the loop (asyncio.run's own teardown allocates)
        tracemalloc.start()
        (up,), _ = await uploads.read_multipart(Request(scope, receive), size, 1)
        return up, tracemalloc.get_traced_memory()[1]

    up, peak = asyncio.run(parse())
    assert up.data == payload and type(up.data) is bytes
    assert peak < 1.5 * size, f"parsing peaked at {peak / size:.2f}x the file"
    tracemalloc.reset_peak()
    held = tracemalloc.get_traced_memory()[0]  # the upload itself, allocated while tracing
    received, decoded = decoding.decode_upload(up)
    peak = tracemalloc.get_traced_memory()[1] - held
    tracemalloc.stop()
    assert received.data is up.data and received.size == size and received.status == 415
    assert peak < 0.5 * size, f"decoding copied the upload ({peak / size:.2f}x)"


def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path):
    """ScanDB and `dfdetect history` on another program's SQLite file (or a file that is no database): a clear
    error, and the file keeps its tables and its journal mode; an empty file becomes a history as before."""
    from typer.testing import CliRunner

    from dfdetect.cli import app
    from dfdetect.serve.db import NotAScanDatabase

    foreign = tmp_path / "inventory.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO parts (name) VALUES ('bolt')")
    conn.commit()
    conn.close()

    def state(path: Path) -> tuple[list[str], str]:
        c = sqlite3.connect(path)
        try:
            names = [r[0] for r in c.execute("SELECT name FROM sqlite_master ORDER BY name")]
            return names, c.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            c.close()

    before = state(foreign)
    assert before == (["parts"], "delete")
    with pytest.raises(NotAScanDatabase, match="something else .*parts.*not a dfdetect scan history"):
        ScanDB(foreign)
    r = CliRunner().invoke(app, ["history", "--db", str(foreign)])
    assert r.exit_code == 2 and "not a dfdetect scan history" in r.output  # one error line, no traceback
    assert state(foreign) == before and not (tmp_path / "inventory.sqlite-wal").exists()
    text = tmp_path / "notes.db"
    text.write_text("not a database at all, just some text that is long enough to have a header " * 4)
    with pytest.raises(NotAScanDatabase, match="not an SQLite database"):
        ScanDB(text)
    assert text.read_text().startswith("not a database")
    empty = tmp_path / "empty.db"
    empty.touch()
    with ScanDB(empty) as db:
        assert db.version == SCHEMA_VERSION
    with ScanDB(empty) as db:  # and reopens as ours
        assert db.count() == 0


def test_a_uvicorn_without_the_protocol_internals_still_serves(monkeypatch, caplog):
    """HeadTimeoutProtocol builds on uvicorn's internal H11Protocol: on a uvicorn that changed it, `dfdetect serve`
    falls back to uvicorn's own h11 protocol and says what is missing, instead of failing to start."""
    from dfdetect.serve import protocol

    assert protocol.head_timeout_supported()  # the locked uvicorn has everything it uses
    monkeypatch.setattr(protocol, "H11Protocol", type("H11Protocol", (), {"connection_made": lambda self, t: None}))
    with caplog.at_level("WARNING", logger="dfdetect.serve.protocol"):
        opts = protocol.uvicorn_options(5)
    assert opts["http"] == "h11" and opts["timeout_keep_alive"] == 5
    assert "timeout_keep_alive_handler" in caplog.text and "connection_made" not in caplog.text.split("lacks")[1]


def test_every_serve_setting_survives_the_trip_through_the_environment():
    """`dfdetect serve` hands its options to each worker process as DFDETECT_SERVE_* variables: each create_app
    setting written by settings_env is read back unchanged by settings_from_env, and unset ones get the defaults."""
    from dfdetect.serve.settings import ENV_SETTINGS, settings_env, settings_from_env

    given = {
        "model": "/m/x.onnx",
        "db": "/tmp/s.db",
        "max_upload_mb": 7.5,
        "max_files": 3,
        "cors_origins": ["http://a.example", "http://b.example"],
        "store_images": "/tmp/imgs",
        "device": "cpu",
        "backend": "onnx",
        "precision": "bf16",
        "max_batch": 4,
        "max_wait_ms": 1.5,
        "threads": 2,
        "allowed_hosts": ["box.lan"],
        "max_request_mpx": 64.0,
        "max_concurrent_decodes": 2,
        "body_timeout_s": 12.5,
    }
    assert set(given) == set(ENV_SETTINGS)
    assert settings_from_env(settings_env(given)) == given
    unset = settings_from_env(settings_env({k: None for k in given}))
    assert unset == {k: default for k, (_, _, default) in ENV_SETTINGS.items()}


def test_serve_runs_the_precision_asked_for_and_says_which(tiny_run, tiny_data, tmp_path):
    """`serve --precision bf16` serves OpenVINO in bf16 where the CPU computes it natively (else fp32), and /health
    names the precision the backend runs in; bad values are refused before the server starts."""
    pytest.importorskip("openvino")
    from typer.testing import CliRunner

    from dfdetect.cli import app as cli
    from dfdetect.runtime.detector import Detector
    from dfdetect.runtime.export import export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(tiny_run / "best.pt", onnx_path)
    expected = Detector.load(onnx_path, precision="bf16").backend.precision
    with TestClient(create_app(model=str(onnx_path), db=tmp_path / "s.db", precision="bf16")) as c:
        assert c.get("/health").json()["model"]["precision"] == expected
        r = c.post("/predict", files=_upload(_images(tiny_data, 2)))
        assert r.status_code == 200 and all(p["score"] is not None for p in r.json()["predictions"])
    with TestClient(create_app(model=str(onnx_path), db=tmp_path / "s.db")) as c:
        assert c.get("/health").json()["model"]["precision"] == "fp32"
    for args, why in (
        (["--precision", "fp8"], "--precision must be one of"),
        (["--backend", "onnx", "--precision", "bf16"], "runs on the openvino backend only"),
    ):
        r = CliRunner().invoke(cli, ["serve", "--model", str(onnx_path), "--db", str(tmp_path / "x.db"), *args])
        assert r.exit_code == 2 and why in r.output, r.output
