"""Classic forensics: each analysis on images with known properties, the analyze/report CLI, HTML safety."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dfdetect.analysis.forensics import analyze_file, error_level, jpeg_facts, noise_residual, read_metadata, spectrum
from dfdetect.analysis.forensics.metadata import thumbnail_difference
from dfdetect.cli import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHROMIUM = Path("/usr/bin/chromium")


def _faces(n: int = 3) -> list[Image.Image]:
    """Natural-looking test pictures: the repository's example faces (real photos) resized off their JPEG grid,
    so the tests see the same pictures with or without ../shared beside the clone; synthetic scenes past them."""
    src = sorted((EXAMPLES / "real").glob("*.jpg"))[:n]
    if len(src) == n:
        return [Image.open(p).convert("RGB").resize((240, 240), Image.Resampling.LANCZOS) for p in src]
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        yy, xx = np.mgrid[:240, :240] / 240.0
        base = 120 + 60 * np.sin(6 * xx + rng.uniform(0, 3)) * np.cos(4 * yy) + rng.normal(0, 4, (240, 240))
        rgb = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=2)
        out.append(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)))
    return out


def _jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _exif(**tags) -> Image.Exif:
    exif = Image.Exif()
    names = {"make": 0x010F, "model": 0x0110, "software": 0x0131, "datetime": 0x0132, "description": 0x010E}
    for k, v in tags.items():
        if k in names:
            exif[names[k]] = v
    if "original" in tags:
        exif.get_ifd(0x8769)[0x9003] = tags["original"]
    return exif


# ---- metadata ------------------------------------------------------------------------------------
def test_metadata_flags_editing_software_and_timestamps(tmp_path):
    p = tmp_path / "edited.jpg"
    exif = _exif(
        make="Canon", model="EOS 5D", software="Adobe Photoshop 25.0 (Windows)",
        datetime="2024:03:01 10:00:00", original="2020:05:05 12:00:00",
    )  # fmt: skip
    _faces(1)[0].save(p, quality=90, exif=exif)
    md = read_metadata(p)
    assert md.fields["Make"] == "Canon" and md.fields["Model"] == "EOS 5D"
    assert md.fields["DateTimeOriginal"] == "2020:05:05 12:00:00"
    codes = {f.code for f in md.flags}
    assert {"editing_software", "timestamp_mismatch"} <= codes
    assert "missing_camera_data" not in codes and "no_exif" not in codes


def test_metadata_missing_camera_and_no_exif(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.png"
    img = _faces(1)[0]
    img.save(a, quality=90, exif=_exif(software="MyTool 1.0"))
    img.save(b)
    codes_a = {f.code for f in read_metadata(a).flags}
    assert "missing_camera_data" in codes_a and "software_tag" in codes_a and "editing_software" not in codes_a
    assert "no_exif" in {f.code for f in read_metadata(b).flags}


def test_generator_png_text_is_flagged(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a photo of a face, Steps: 30, Sampler: Euler a")
    p = tmp_path / "gen.png"
    _faces(1)[0].save(p, pnginfo=info)
    assert "generator_metadata" in {f.code for f in read_metadata(p).flags}


def test_thumbnail_difference():
    img = _faces(2)
    same = img[0].resize((160, 160))
    assert thumbnail_difference(img[0], same) < 0.03
    assert thumbnail_difference(img[0], Image.eval(same, lambda v: 255 - v)) > 0.12


# ---- JPEG facts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [50, 75, 90])
def test_jpeg_quality_estimate(tmp_path, q):
    p = tmp_path / f"q{q}.jpg"
    _faces(1)[0].save(p, quality=q)
    f = jpeg_facts(p)
    assert f.is_jpeg and abs(f.quality - q) <= 5 and f.standard_tables


def test_jpeg_double_compression_hint(tmp_path):
    img = _faces(1)[0]
    single, double = tmp_path / "single.jpg", tmp_path / "double.jpg"
    img.save(single, quality=90)
    _jpeg(img, 60).save(double, quality=90)
    s, d = jpeg_facts(single), jpeg_facts(double)
    assert d.double_compression_score > s.double_compression_score + 0.15
    assert d.double_compression_hint and not s.double_compression_hint
    assert jpeg_facts(tmp_path / "single.jpg").quality == 90
    img.save(tmp_path / "x.png")
    assert not jpeg_facts(tmp_path / "x.png").is_jpeg


# ---- pixels --------------------------------------------------------------------------------------
def test_ela_splice_raises_inconsistency():
    faces = _faces(3)
    for k in range(2):
        base = _jpeg(faces[k], 90)  # untouched: one JPEG at q90
        donor = _jpeg(faces[k + 1].rotate(5), 60)  # a region from a differently compressed JPEG
        spliced = base.copy()
        spliced.paste(donor.crop((60, 60, 156, 156)), (83, 77))  # off the 8x8 grid; stored losslessly
        e0, e1 = error_level(base), error_level(spliced)
        assert e1.block_inconsistency > e0.block_inconsistency + 0.5
        assert e1.diff.shape == (240, 240) and e1.image().size == (240, 240)


def test_noise_uniformity():
    rng = np.random.default_rng(0)
    flat = np.full((256, 256), 128.0)
    even = flat + rng.normal(0, 6, flat.shape)
    patchy = even.copy()
    patchy[64:160, 64:160] += rng.normal(0, 25, (96, 96))  # a region with very different noise
    to_img = lambda a: Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")  # noqa: E731
    n0, n1 = noise_residual(to_img(even)), noise_residual(to_img(patchy))
    assert n1.block_var_cv > 2 * n0.block_var_cv
    assert n0.var_map.shape == (16, 16) and n1.image().size[1] == 256


def test_spectrum_periodic_peak():
    img = _jpeg(_faces(1)[0], 90)
    a = np.asarray(img, dtype=np.float64)
    yy, xx = np.mgrid[: a.shape[0], : a.shape[1]]
    pattern = 6 * np.sin(2 * np.pi * xx / 4) * np.sin(2 * np.pi * yy / 4)  # up-sampling-like checkerboard
    per = Image.fromarray(np.clip(a + pattern[..., None], 0, 255).astype(np.uint8))
    s0, s1 = spectrum(img), spectrum(per)
    assert s1.peak_ratio > 5 * s0.peak_ratio and s1.peak_ratio > 300
    assert abs(abs(s1.peak_position[0]) - 0.25) < 0.01 and abs(abs(s1.peak_position[1]) - 0.25) < 0.01
    assert s1.log_mag.shape == (240, 240)


def test_analyze_file_bad_and_good(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    r = analyze_file(bad)
    assert r.error and r.sha256
    good = tmp_path / "good.jpg"
    _faces(1)[0].save(good, quality=80)
    s = analyze_file(good).summary()
    assert s["jpeg_quality"] == 80 and "ela_block_inconsistency" in s and "spectrum_peak_ratio" in s
    json.dumps(s)


# ---- CLI and report ------------------------------------------------------------------------------
def test_analyze_cli_json_and_bad_files(tiny_data):
    r = runner.invoke(app, ["analyze", str(tiny_data), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert len(rows) == 27
    assert sum("error" in x for x in rows) == 3
    r = runner.invoke(app, ["analyze", str(tiny_data / "real")])
    assert r.exit_code == 0 and "ERROR" in r.output and "indicators, not proof" in r.output


@pytest.fixture()
def malicious(tmp_path) -> Path:
    p = tmp_path / "in" / "evil.jpg"
    p.parent.mkdir()
    exif = _exif(make="<script>alert(1)</script>", software='"><img src=x onerror=alert(2)>', model="X")
    _faces(1)[0].save(p, quality=85, exif=exif)
    return p


def test_report_cli_with_model(tiny_data, tiny_run, malicious, tmp_path):
    out = tmp_path / "reports"
    inputs = [str(malicious), str(tiny_data / "fake" / "fake_000.jpg"), str(tiny_data / "fake" / "empty.jpg")]
    r = runner.invoke(app, ["report", *inputs, "--out", str(out), "--model", str(tiny_run / "best.pt")])
    assert r.exit_code == 0, r.output
    pages = sorted(p for p in out.glob("*.html") if p.name != "index.html")
    assert len(pages) == 2
    index = (out / "index.html").read_text()
    for pg in pages:
        assert pg.name in index
        html = pg.read_text()
        assert "indicators, not proof" in html.lower() or "Indicators, not proof" in html
        assert "P(fake)" in html and "SHA-256" in html and "threshold" in html
        assert html.count("data:image/png;base64,") >= 4  # image, ELA, noise, spectrum (+ CAM when available)
        assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", html)
        assert "<link" not in html and "<script" not in html
    evil = next(p for p in pages if p.name.startswith("evil")).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in evil and "onerror=alert(2)>" not in evil
    assert "empty.jpg" in index and "error" in index


def test_report_cli_no_model(tiny_data, tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["report", str(tiny_data / "real"), "--out", str(out), "--no-model"])
    assert r.exit_code == 0, r.output
    assert "No model verdict" in next(out.glob("real_000-*.html")).read_text()
    r = runner.invoke(app, ["report", str(tiny_data / "real" / "notes.png"), "--out", str(out), "--no-model"])
    assert r.exit_code == 1


def test_report_same_name_in_two_folders_gets_two_pages(tmp_path):
    """a/x.jpg and b/x.jpg (even with the same bytes) get one page each, and index.html links both."""
    for folder, img in zip(("a", "b"), _faces(2)):
        (tmp_path / folder).mkdir()
        img.save(tmp_path / folder / "x.jpg", quality=90)
    (tmp_path / "c").mkdir()
    shutil.copy(tmp_path / "a" / "x.jpg", tmp_path / "c" / "x.jpg")  # same content as a/x.jpg
    out = tmp_path / "r"
    r = runner.invoke(app, ["report", *(str(tmp_path / f) for f in "abc"), "--out", str(out), "--no-model"])
    assert r.exit_code == 0, r.output
    pages = sorted(p.name for p in out.glob("x-*.html"))
    index = (out / "index.html").read_text()
    assert len(pages) == 3 and all(f"href='{p}'" in index for p in pages), (pages, r.output)
    assert all(f">{f}/x.jpg<" in index for f in "abc")  # the folder tells the rows apart
    for f in "abc":
        assert f"{tmp_path / f / 'x.jpg'}: no model" in r.output


@pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None, reason="no /usr/bin/chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    img_path = tmp_path / "face.jpg"
    _faces(1)[0].save(img_path, quality=90)
    out = tmp_path / "r"
    r = runner.invoke(app, ["report", str(img_path), "--out", str(out), "--no-model"])
    assert r.exit_code == 0, r.output
    page = next(p for p in out.glob("*.html") if p.name != "index.html")
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,2000", page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000
    a = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert a.shape == (2000, 1200) and a.std() > 20  # text and pictures, not a blank page


def test_report_face_mode_table(tiny_run, tmp_path):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("OpenCV without Haar cascades")
    examples = Path(__file__).resolve().parents[1] / "examples"
    img = Image.fromarray(np.random.default_rng(1).normal(128, 20, (640, 1280, 3)).clip(0, 255).astype(np.uint8))
    for name, at in (("fake/0H9IEK046U.jpg", (120, 150)), ("real/00712.jpg", (800, 200))):
        img.paste(Image.open(examples / name).convert("RGB").resize((280, 280), Image.Resampling.LANCZOS), at)
    img.save(tmp_path / "group.jpg", quality=92)
    out = tmp_path / "r"
    args = [str(tmp_path / "group.jpg"), "--out", str(out), "--model", str(tiny_run / "best.pt"), "--no-cam"]
    r = runner.invoke(app, ["report", *args])  # auto: not square
    assert r.exit_code == 0, r.output
    assert "face mode: max of 2 face(s)" in r.output
    html = next(p for p in out.glob("group-*.html")).read_text()
    assert "<h2>Faces</h2>" in html and "<table class='faces'>" in html
    table = html.split("<table class='faces'>")[1].split("</table>")[0]
    assert table.count("<tr>") == 3  # header + one row per face
    assert table.count("most suspicious") == 1 and "Decided by: max of 2 face(s)" in html
    assert html.count("data:image/png;base64,") >= 5  # image, face overview, ELA, noise, spectrum
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", html) and "<script" not in html
    assert "2 (max decides)" in (out / "index.html").read_text()
    r = runner.invoke(app, ["report", *args, "--no-faces"])
    assert r.exit_code == 0 and "<h2>Faces</h2>" not in next(out.glob("group-*.html")).read_text()


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None and importlib.util.find_spec("openvino") is None,
    reason="no ONNX runtime installed: the shipped model runs on torch",
)
def test_report_without_cam_scores_like_predict_and_never_imports_torch(tmp_path):
    """Without the CAM the report needs no torch model: the automatic backend gives predict's score, torch-free."""
    img = tmp_path / "face.jpg"
    _faces(1)[0].save(img, quality=90)
    code = (
        "import sys\nfrom dfdetect.cli import main\n"
        f"sys.argv = ['dfdetect', 'report', {str(img)!r}, '--out', {str(tmp_path / 'r')!r}, '--no-cam']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "TORCH False" in res.stdout, res.stdout
    reported = float(re.search(rf"{re.escape(str(img))}: (?:fake|real) ([0-9.]+)", res.stdout).group(1))
    r = runner.invoke(app, ["predict", str(img), "--json"])
    assert r.exit_code == 0, r.output
    assert abs(json.loads(r.output.strip().splitlines()[-1])["score"] - reported) < 1e-4
