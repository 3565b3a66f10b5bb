"""The command line: help, typos, train/evaluate/predict/export on a tiny model, output formats, exit codes."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfdetect.cli import app

runner = CliRunner()


def test_help_is_fast_and_lists_verbs():
    out = subprocess.run([sys.executable, "-m", "dfdetect", "--help"], capture_output=True, text=True, check=True)
    for verb in (
        "train",
        "evaluate",
        "predict",
        "export",
        "models",
        "explain",
        "analyze",
        "report",
        "serve",
        "benchmark",
    ):
        assert verb in out.stdout


def test_typo_suggests_closest_command():
    r = runner.invoke(app, ["predcit", "x.jpg"])
    assert r.exit_code == 2 and "Did you mean 'predict'" in r.output


def test_unknown_model_suggests_closest(tiny_data, tmp_path):
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--model", "mobilenetv3_smal", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "mobilenetv3_small" in r.output


def test_train_cli_small_run(tiny_data, tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tiny_data),
            "--model",
            "tiny_mobilenetv3",
            "--img-size",
            "32",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--name",
            "cli",
            "--jpeg-prob",
            "0.5",
            "--blur-prob",
            "0.5",
            "--threshold",
            "eer",
            "--bootstrap",
            "50",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cli" / "eval_test" / "metrics.json").is_file()
    assert "jpeg_prob: 0.5" in (tmp_path / "cli" / "config.yaml").read_text()


def test_evaluate_uses_the_runs_test_split(tiny_run, tiny_data, tmp_path):
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--bootstrap",
            "50",
            str(tiny_run / "best.pt"),
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "ev"),
            "--workers",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    ref = json.loads((tiny_run / "eval_test" / "metrics.json").read_text())
    assert "model's manifest" in m["images"]
    assert m["n"] == ref["n"] and m["roc_auc"] == pytest.approx(ref["roc_auc"], abs=1e-6)
    assert "precision" in r.output and "macro avg" in r.output


def test_evaluate_several_folders(tiny_run, tiny_data, tmp_path, clean_copy):
    other = clean_copy(tiny_data)
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--bootstrap",
            "50",
            str(tiny_run / "best.pt"),
            "--data",
            str(tiny_data),
            "--data",
            str(other),
            "--out",
            str(tmp_path / "multi"),
            "--json",
            "--workers",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{") :])
    assert len(res) == 2
    # The copy is not the run's data folder, so all of its 24 readable images are scored.
    assert res[str(other)]["n"] == 24


def test_evaluate_default_folder_names_what_was_scored_and_never_the_package(
    tiny_run, tiny_data, tmp_path, clean_copy, monkeypatch
):
    """Without --out: beside a run's checkpoint, named "all" when every image was scored (not "_test"); for a
    shipped model's file inside the package, the current folder, so nothing is written into the installation."""
    from dfdetect.runtime.detector import WEIGHTS_DIR

    other = clean_copy(tiny_data)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in WEIGHTS_DIR.iterdir())
    for model, expected in (
        (tiny_run / "best.pt", tiny_run / f"eval_{other.name}_all"),
        (WEIGHTS_DIR / "default.onnx", tmp_path / f"eval_default_{other.name}_all"),
    ):
        r = runner.invoke(app, ["evaluate", str(model), "--data", str(other), "--bootstrap", "0", "--workers", "0"])
        assert r.exit_code == 0, r.output
        assert (expected / "metrics.json").is_file() and f"-> {expected}" in r.output
    assert sorted(p.name for p in WEIGHTS_DIR.iterdir()) == before


def test_predict_folder_with_broken_files_json_and_csv(tiny_run, tiny_data, tmp_path):
    csv_path = tmp_path / "out.csv"
    r = runner.invoke(
        app,
        [
            "predict",
            str(tiny_data),
            "--model",
            str(tiny_run / "best.pt"),
            "--json",
            "--csv",
            str(csv_path),
            "--workers",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 27
    bad = [x for x in lines if x["error"]]
    assert sorted(x["path"].rsplit("/", 1)[-1] for x in bad) == ["corrupt.jpg", "empty.jpg", "notes.png"]
    good = [x for x in lines if not x["error"]]
    assert all(
        0 <= x["score"] <= 1 and x["label"] == ("fake" if x["score"] >= x["threshold"] else "real") for x in good
    )
    assert all(len(x["sha256"]) == 64 for x in lines)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 27 and set(rows[0]) >= {"path", "sha256", "label", "score", "threshold", "model", "error"}


def test_predict_table_and_threshold(tiny_run, tiny_data):
    img = next((tiny_data / "real").glob("real_*.jpg"))
    r0 = runner.invoke(app, ["predict", str(img), "--model", str(tiny_run / "best.pt"), "--threshold", "0"])
    r1 = runner.invoke(app, ["predict", str(img), "--model", str(tiny_run / "best.pt"), "--threshold", "1"])
    assert r0.exit_code == r1.exit_code == 0
    assert " fake " in r0.output and " real " in r1.output and "1 scored" in r0.output


def test_predict_exit_codes(tiny_run, tiny_data, tmp_path):
    model = str(tiny_run / "best.pt")
    r = runner.invoke(app, ["predict", str(tmp_path / "missing.jpg"), "--model", model])
    assert r.exit_code == 2 and "missing.jpg" in r.output
    r = runner.invoke(app, ["predict", str(tiny_data / "fake" / "empty.jpg"), "--model", model])
    assert r.exit_code == 1 and "ERROR" in r.output
    r = runner.invoke(app, ["predict", str(tiny_data / "real" / "*.jpg"), "--model", model, "--json"])
    assert r.exit_code == 0 and r.stdout.count('"path"') == 13


def test_export_takes_a_shipped_name_and_writes_into_the_current_folder(tmp_path, monkeypatch):
    """`export default` exports the shipped weights to ./default.onnx (the package's own default.onnx is left
    as it is) and prints its result once."""
    pytest.importorskip("onnx")
    from dfdetect.runtime.detector import WEIGHTS_DIR

    monkeypatch.chdir(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()}
    r = runner.invoke(app, ["export", "default"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "default.onnx").stat().st_size > 1_000_000
    assert r.output.count("max |logit diff|") == 1, r.output
    assert {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()} == before


def test_export_and_onnx_predict_match_torch(tiny_run, tiny_data, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(tiny_run / "best.pt"), "--out", str(onnx_path)])
    assert r.exit_code == 0, r.output
    from dfdetect import Detector

    t = Detector.load(tiny_run / "best.pt", device="cpu")
    o = Detector.load(onnx_path, backend="onnx")
    assert o.backend.name == "onnxruntime" and o.model_id == t.model_id and o.threshold == t.threshold
    pt = t.predict(tiny_data / "fake", workers=0)
    po = o.predict(tiny_data / "fake", workers=2)
    assert [p.path for p in pt] == [p.path for p in po]
    for a, b in zip(pt, po):
        assert (a.score is None and b.score is None) or abs(a.score - b.score) < 1e-4


def test_openvino_backend_matches_torch(tiny_run, tiny_data, tmp_path):
    """In the suite's own process, beside torch: loading OpenVINO there once crashed later tests (see _ov_core)."""
    import json

    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    onnx_path = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(tiny_run / "best.pt"), "--out", str(onnx_path)])
    assert r.exit_code == 0, r.output
    from dfdetect import Detector

    t = Detector.load(tiny_run / "best.pt", device="cpu")
    pt = t.predict(tiny_data / "real", batch_size=5, workers=0)
    # odd batch size: the last chunk is smaller than the rest
    cmd = ["predict", str(tiny_data / "real"), "--model", str(onnx_path), "--json", "--batch-size", "5"]
    out = runner.invoke(app, [*cmd, "--backend", "openvino"])
    assert out.exit_code == 0, out.output
    pv = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [p.path for p in pt] == [p["path"] for p in pv] and len(pv) > 5
    assert {p["model"] for p in pv} == {t.model_id}
    for a, b in zip(pt, pv):
        assert (a.score is None and b["score"] is None) or abs(a.score - b["score"]) < 1e-4
    with pytest.raises(ValueError, match="export it first"):
        Detector.load(tiny_run / "best.pt", backend="openvino")


def test_old_shipped_name_still_loads(caplog):
    """`fast` was the 256 px model's name before it became `default`: old scripts keep working, with a warning."""
    from dfdetect import Detector

    with caplog.at_level("WARNING", logger="dfdetect.runtime.detector"):
        det = Detector.load("fast", backend="onnx")
    assert det.model_id == Detector.load("default", backend="onnx").model_id
    assert "now called 'default'" in caplog.text


def test_shipped_names_resolve_for_every_command(tmp_path):
    """One resolver for shipped names; `serve` accepts them too and names them when a model is missing."""
    from dfdetect.runtime.detector import shipped_name

    assert [shipped_name(r) for r in (None, "default", "large", "fast", "nosuch")] == [
        "default",
        "default",
        "large",
        "default",
        None,
    ]
    (tmp_path / "large").write_bytes(b"")  # a real file wins over a shipped name
    assert shipped_name(tmp_path / "large") is None
    r = runner.invoke(app, ["serve", "--model", str(tmp_path / "nosuch.onnx")])
    assert r.exit_code == 2 and "default | large" in r.output


@pytest.mark.parametrize("name,size", [("default", 256), ("large", 320)])
def test_shipped_models_get_the_examples_right(name, size):
    """The packaged detectors, by name, on the README's examples (test-split images neither trained on)."""
    from pathlib import Path

    from dfdetect import Detector

    examples = Path(__file__).resolve().parents[1] / "examples"
    det = Detector.load(name)
    assert det.data_config["input_size"] == [3, size, size] and det.model_id.startswith(f"dfdetect-{name}-")
    # `large` (v1) never saw a face swap: it is held to the 140k examples only, `default` (v2) to all eight
    inputs = [examples] if name == "default" else [examples / "fake", examples / "real"]
    preds = det.predict(inputs)
    scored = [p for p in preds if p.mode != "skipped"]
    skipped = [p.path for p in preds if p.mode == "skipped"]
    assert skipped == ([str(examples / "README.md")] if name == "default" else [])
    assert len(scored) == (8 if name == "default" else 6), preds
    assert all(p.label == Path(p.path).parent.name for p in scored), preds
    r = runner.invoke(app, ["predict", *map(str, inputs), "--model", name, "--json"])
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.exit_code == 0 and [x["score"] for x in rows] == [p.score for p in preds]  # the API and the CLI agree


def test_openvino_runs_fp32_unless_asked(tiny_run, tmp_path):
    """OpenVINO picks bf16 by itself on AVX-512 BF16 / AMX CPUs: the backend pins fp32, and bf16 only on request.

    fp32 vs fp32 (ONNX Runtime) differ by rounding order only: ~1e-6 on these logits; bf16 keeps 8 mantissa bits
    (relative error ~4e-3), which this tolerance would catch on any CPU that really runs it."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    import numpy as np

    from dfdetect import Detector
    from dfdetect.core.device import cpu_has_native_bf16

    onnx_path = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(tiny_run / "best.pt"), "--out", str(onnx_path)]).exit_code == 0
    ov = Detector.load(onnx_path, backend="openvino")
    ort = Detector.load(onnx_path, backend="onnx")
    assert ov.backend.precision == "fp32" and ort.backend.precision == "fp32"
    x = np.random.default_rng(0).normal(size=(4, *ov.data_config["input_size"])).astype(np.float32)
    a, b = ov.backend.logits(x), ort.backend.logits(x)
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(b).max()))
    bf = Detector.load(onnx_path, precision="bf16")
    assert bf.backend.name == "openvino"
    if cpu_has_native_bf16():
        assert bf.backend.precision == "bf16"
    with pytest.raises(ValueError, match="openvino backend only"):
        Detector.load(onnx_path, backend="onnx", precision="bf16")


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_batches_over_streams_keep_each_image_its_own_score(tiny_run, tmp_path, runtime):
    """A batch runs image by image over streams (OpenVINO's async requests, or ONNX Runtime calls from a thread
    pool, finishing in any order): every image gets its own logits back, in order, the same as alone and as on one
    stream, also with threads scoring at once (the REST API's batcher and explain share a backend)."""
    pytest.importorskip(runtime)
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from dfdetect import Detector
    from dfdetect.runtime.detector import OnnxBackend, OpenVinoBackend

    onnx_path = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(tiny_run / "best.pt"), "--out", str(onnx_path)]).exit_code == 0
    size = int(Detector.load(onnx_path, backend="onnx").data_config["input_size"][-1])
    x = np.random.default_rng(1).normal(size=(7, 3, size, size)).astype(np.float32)
    make = OpenVinoBackend if runtime == "openvino" else OnnxBackend
    multi, one = make(onnx_path, threads=2, streams=2), make(onnx_path, streams=1)
    if runtime == "openvino":  # image by image on both forms, so the exported dynamic batch is fixed at 1
        assert str(one.ov_model.inputs[0].get_partial_shape()) == f"[1,3,{size},{size}]"
    alone = np.concatenate([one.logits(x[i : i + 1]) for i in range(len(x))])
    tol = 1e-5 * max(1.0, float(np.abs(alone).max()))
    assert np.abs(one.logits(x) - alone).max() <= tol
    assert np.abs(multi.logits(x) - alone).max() <= tol
    assert len({tuple(np.round(r, 3)) for r in alone}) > 1  # distinct rows, so a reordering would show
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda k: multi.logits(np.roll(x, k, axis=0)), range(8)))
    for k, out in enumerate(outs):
        assert np.abs(out - np.roll(alone, k, axis=0)).max() <= tol
    if runtime == "openvino":  # 7 images on a ring of 2 requests per stream (wrapped); a strided view is copied
        assert len(multi._requests) == 4
        strided = np.repeat(x, 2, axis=0)[::2]  # the same images, not contiguous
        assert not strided.flags.c_contiguous and np.abs(multi.logits(strided) - alone).max() <= tol
        assert np.abs(multi.logits(x[:3]) - alone[:3]).max() <= tol  # fewer images than requests
    with pytest.raises(ValueError, match="streams"):
        make(onnx_path, streams=0)

    with pytest.raises(ValueError, match="precision must be"):
        Detector.load(onnx_path, precision="fp8")


def test_hostile_folder_is_answered_file_by_file(tiny_run, tmp_path):
    """A GIF, a 1x1 image, a noise image, a directory named x.jpg and a dangling link: one record each, with the
    warning or the reason; the good face is scored; the Python API and the CLI give the same records."""
    import numpy as np
    from PIL import Image

    from dfdetect import Detector

    d = tmp_path / "mixed"
    d.mkdir()
    face = sorted((Path(__file__).resolve().parents[1] / "examples" / "real").glob("*.jpg"))[0]
    (d / "face.jpg").write_bytes(face.read_bytes())
    Image.open(face).convert("P").save(d / "anim.gif")
    Image.new("RGB", (1, 1), (120, 90, 80)).save(d / "one.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(d / "noise.png")
    (d / "x.jpg").mkdir()
    (d / "gone.jpg").symlink_to(d / "nowhere.jpg")
    (d / "notes.txt").write_text("not an image")
    det = Detector.load(tiny_run / "best.pt", device="cpu")
    preds = {Path(p.path).name: p for p in det.predict(d, workers=0)}
    assert set(preds) == {"face.jpg", "anim.gif", "one.png", "noise.png", "x.jpg", "gone.jpg", "notes.txt"}
    assert preds["face.jpg"].error is None and preds["anim.gif"].error is None  # GIFs are scanned like any image
    assert any("far smaller than the model input" in w for w in preds["one.png"].warnings)
    assert any("looks like noise" in w for w in preds["noise.png"].warnings)
    assert not any("noise" in w for w in preds["face.jpg"].warnings)
    assert preds["x.jpg"].mode == "skipped" and "directory" in preds["x.jpg"].error
    assert preds["gone.jpg"].mode == "skipped" and "broken link" in preds["gone.jpg"].error
    assert preds["notes.txt"].mode == "skipped" and "not an image file" in preds["notes.txt"].error
    r = runner.invoke(app, ["predict", str(d), "--model", str(tiny_run / "best.pt"), "--json", "--workers", "0"])
    assert r.exit_code == 0, r.output
    rows = {Path(x["path"]).name: x for x in map(json.loads, (ln for ln in r.stdout.splitlines() if ln[:1] == "{"))}
    assert rows == {k: p.to_dict() for k, p in preds.items()}
    table = runner.invoke(app, ["predict", str(d), "--model", str(tiny_run / "best.pt"), "--workers", "0"])
    assert "3 skipped (1 a directory named like an image, 1 broken link, 1 not an image file)" in table.stdout
    assert "warning: looks like noise" in table.stdout


def test_evaluate_takes_an_exported_onnx_model(tiny_run, tiny_data, tmp_path):
    """evaluate scores an .onnx file as it ships (same preprocessing, threshold and split rules as the .pt)."""
    pytest.importorskip("onnxruntime")
    onnx_path = tiny_run / "best.onnx"
    if not onnx_path.exists():
        assert runner.invoke(app, ["export", str(tiny_run / "best.pt"), "--out", str(onnx_path)]).exit_code == 0
    out = {}
    for name, model in (("pt", tiny_run / "best.pt"), ("onnx", onnx_path)):
        r = runner.invoke(
            app,
            [
                "evaluate",
                str(model),
                "--data",
                str(tiny_data),
                "--json",
                "--bootstrap",
                "10",
                "--device",
                "cpu",
                "--backend",
                "onnx" if name == "onnx" else "torch",
                "--out",
                str(tmp_path / name),
            ],
        )
        assert r.exit_code == 0, r.output
        out[name] = next(iter(json.loads(r.stdout[r.stdout.index("{") :]).values()))
    assert out["pt"]["n"] == out["onnx"]["n"] > 0  # the run's own test split, found beside the model
    for k in ("accuracy", "roc_auc", "threshold"):
        assert out["pt"][k] == pytest.approx(out["onnx"][k], abs=1e-6), k


def test_evaluate_passes_backend_and_precision_on(tiny_run, tiny_data, tmp_path):
    """evaluate runs the model on the backend and precision asked for, as predict does (it once ignored both)."""
    args = ["evaluate", str(tiny_run / "best.pt"), "--data", str(tiny_data), "--workers", "0", "-o", str(tmp_path)]
    r = runner.invoke(app, [*args, "--backend", "onnx", "--precision", "bf16"])
    assert r.exit_code == 2 and "runs on the openvino backend only" in r.output, r.output
    r = runner.invoke(app, [*args, "--precision", "fp8"])
    assert r.exit_code == 2 and "precision must be one of" in r.output, r.output


def test_bf16_where_openvino_cannot_compile_it_runs_fp32_and_says_so(tiny_run, tmp_path):
    """`--precision bf16` with oneDNN capped to AVX2 kernels (no bf16 ones) once died in compile_model with
    "object is not initialized"; now it scores in fp32, as on a CPU without native bf16, and warns."""
    pytest.importorskip("openvino")
    import os

    from PIL import Image

    onnx_path = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(tiny_run / "best.pt"), "--out", str(onnx_path)]).exit_code == 0
    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (90, 120, 150)).save(img)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    cmd = [sys.executable, "-m", "dfdetect", "predict", str(img), "--model", str(onnx_path), "--precision", "bf16"]
    r = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OpenVINO runs fp32 here, not the bf16 asked for" in r.stderr, r.stderr[-2000:]
    fp32 = subprocess.run([*cmd[:-1], "fp32", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(r.stdout)["score"] == json.loads(fp32.stdout)["score"]


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "nan"])
def test_threshold_must_be_a_probability(bad):
    r = runner.invoke(app, ["predict", "x.jpg", "--threshold", bad])
    assert r.exit_code == 2 and "not a probability" in r.output


def test_csv_output_is_safe_and_its_folder_made_first(tiny_run, tmp_path):
    """--csv into a missing folder creates it (results are not lost); cells that start like formulas stay text;
    file names with terminal escapes are shown escaped."""
    import csv

    from PIL import Image

    d = tmp_path / "in"
    d.mkdir()
    name = "=cmd\x1b[31mred.png"
    Image.new("RGB", (64, 64), (100, 120, 140)).save(d / name)
    out = tmp_path / "new" / "deeper" / "r.csv"
    r = runner.invoke(app, ["predict", str(d), "--model", str(tiny_run / "best.pt"), "--csv", str(out)])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "\\x1b[31mred.png" in r.stdout
    (row,) = list(csv.DictReader(out.open()))
    assert row["path"].startswith(str(d)) and "=cmd" in row["path"]
    from dfdetect.core.text import csv_safe

    assert csv_safe("=1+1") == "'=1+1" and csv_safe("@x") == "'@x" and csv_safe(0.5) == 0.5


def _png_header_only(path, w: int, h: int) -> None:
    """A tiny PNG that declares w x h pixels (all zero rows compress to almost nothing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * ((w * 3 + 1) * h), 9)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _predict_peak_mb(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """`dfdetect predict ARGS` in a fresh process that reports its own peak RSS in MB: VmHWM of its own address
    space (getrusage's ru_maxrss survives exec on Linux, so a child of this big test process would report the
    parent's size)."""
    wrapper = (
        "import sys\n"
        "from dfdetect.cli import main\n"
        "sys.argv = ['dfdetect'] + sys.argv[1:]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
        "print('PEAK_KB', hwm, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", wrapper, "predict", *args], capture_output=True, text=True, timeout=300)
    return r, int(r.stderr.rsplit("PEAK_KB", 1)[1].split()[0]) / 1024


def test_long_thin_images_cost_little_and_fail_alone(tmp_path):
    """Long-thin PNGs of a few bytes (1x20000, 70000x100, 2x40,000,000) once cost gigabytes (resizing 1xN to
    256 x 256N, rotating before shrinking): now each gets one clear error, the good face is scored, and the
    whole scan (a fresh `dfdetect predict` process, shipped model) peaks far below 1 GB."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak RSS is read from /proc (Linux)")
    d = tmp_path / "hostile"
    d.mkdir()
    face = sorted((Path(__file__).resolve().parents[1] / "examples" / "fake").glob("*.jpg"))[0]
    (d / "face.jpg").write_bytes(face.read_bytes())
    _png_header_only(d / "thin.png", 1, 20000)
    _png_header_only(d / "wide.png", 70000, 100)
    _png_header_only(d / "needle.png", 2, 2_000_000)  # same shape class as 2 x 40M, quicker to write
    r, peak_mb = _predict_peak_mb([str(d), "--json", "--backend", "onnx"])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {Path(x["path"]).name: x for x in map(json.loads, (ln for ln in r.stdout.splitlines() if ln[:1] == "{"))}
    assert rows["face.jpg"]["error"] is None and rows["face.jpg"]["label"] == "fake"
    for name in ("thin.png", "wide.png", "needle.png"):
        assert "aspect-ratio limit" in rows[name]["error"], rows[name]
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"


def test_a_scan_does_not_hold_the_decoded_photos_of_the_chunks_loaded_ahead(tmp_path):
    """A folder scan loads two chunks ahead of the forward pass; each prepared file keeps only its model-input
    arrays, not its decoded photo. 24 black 4000x3000 PNGs (35 kB each, 36 MB decoded) in chunks of 8 once held
    all 24 decodes (peak 1.3 GB); now about the two being prepared (0.64 GB, the ONNX Runtime arena included)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak RSS is read from /proc (Linux)")
    d = tmp_path / "photos"
    d.mkdir()
    _png_header_only(d / "00.png", 4000, 3000)
    for i in range(1, 24):
        (d / f"{i:02d}.png").write_bytes((d / "00.png").read_bytes())
    r, peak_mb = _predict_peak_mb([str(d), "--json", "--backend", "onnx", "--no-faces", "--batch-size", "8"])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln[:1] == "{"]
    assert len(rows) == 24 and all(x["error"] is None and x["label"] in ("fake", "real") for x in rows)
    assert peak_mb < 950, f"peak RSS {peak_mb:.0f} MB"


def test_every_verb_answers_help_and_the_readme_names_only_real_verbs():
    import re

    import typer.main

    group = typer.main.get_command(app)
    verbs = sorted(group.commands)
    for verb in verbs:
        res = CliRunner().invoke(app, [verb, "--help"])
        assert res.exit_code == 0, (verb, res.output)
        assert "Usage:" in res.output and verb in res.output
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    named = set(re.findall(r"`dfdetect ([a-z][a-z-]+)", readme)) | set(
        re.findall(r"^dfdetect ([a-z][a-z-]+)", readme, flags=re.M)
    )
    assert named, "the README names no verbs"
    assert not named - set(verbs), f"README names verbs that do not exist: {sorted(named - set(verbs))}"
    # and every README flag of a verb exists on it
    for verb, flags in re.findall(r"^dfdetect ([a-z-]+) ([^\n`]*)", readme, flags=re.M):
        if verb not in verbs:
            continue
        opts = {
            o for p in group.commands[verb].params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])
        }
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", flags):
            assert flag in opts, f"README: dfdetect {verb} {flag}: no such option"


def test_every_device_option_defaults_to_auto_and_rejects_typos():
    import typer.main

    group = typer.main.get_command(app)
    with_device = {v: c for v, c in group.commands.items() if any(p.name == "device" for p in c.params)}
    assert {"predict", "evaluate", "explain", "serve", "benchmark", "robustness"} <= set(with_device)
    for verb, cmd in with_device.items():
        (param,) = [p for p in cmd.params if p.name == "device"]
        assert param.default in ("auto", None), verb  # None: train/compare take it from the config (auto)
    r = CliRunner().invoke(app, ["predict", "--device", "cuda0", "x.jpg"])
    assert r.exit_code == 2 and "not a device" in r.output


def test_train_and_compare_flags_are_config_fields():
    import typer.main

    from dfdetect.cli.app import TRAIN_ONLY_FLAGS
    from dfdetect.cli.compare import COMPARE_ONLY_FLAGS
    from dfdetect.core.config import FLAG_ALIASES, _field_index

    known = set(FLAG_ALIASES) | set(_field_index()) | {"weights"}
    group = typer.main.get_command(app)
    for verb, own in (("train", TRAIN_ONLY_FLAGS), ("compare", COMPARE_ONLY_FLAGS)):
        names = {p.name for p in group.commands[verb].params} - set(own)
        assert names <= known, f"{verb} options that set no config field: {sorted(names - known)}"


def test_train_rejects_a_mistyped_closed_choice(tmp_path):
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--scheduler", "cosin"])
    assert r.exit_code == 2 and "scheduler must be one of plateau, cosine, not 'cosin'" in r.output
    (tmp_path / "c.yaml").write_text("model:\n  head: attn\n")
    r = CliRunner().invoke(
        app, ["compare", "-m", "tiny_efficientnet", "-o", str(tmp_path / "o"), "-c", str(tmp_path / "c.yaml")]
    )
    assert r.exit_code != 0 and "head must be one of" in (r.output + repr(r.exception))


def test_expected_failures_are_one_line_and_bugs_keep_their_traceback(tiny_data, tmp_path, monkeypatch):
    """A bad checkpoint, device or model is one `error:` line (exit 2); any other exception is a bug and is not
    dressed up as a user error."""
    import dfdetect.engine.train
    from dfdetect.core.device import DeviceUnavailableError
    from dfdetect.models.checkpoint import CheckpointError

    args = ["train", "--data", str(tiny_data), "--model", "tiny_efficientnet", "--out", str(tmp_path)]
    for expected in (CheckpointError("x.pt is truncated"), DeviceUnavailableError("no CUDA here")):

        def fit(cfg, resume=None, exc=expected):
            raise exc

        monkeypatch.setattr(dfdetect.engine.train, "fit", fit)
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and f"error: {expected}" in r.output, r.output

    def buggy_fit(cfg, resume=None):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(dfdetect.engine.train, "fit", buggy_fit)
    r = runner.invoke(app, args)
    assert isinstance(r.exception, RuntimeError) and "error:" not in r.output


@pytest.mark.parametrize("name", ["default.safetensors", "default.onnx"])
@pytest.mark.parametrize("size", [0, 100])
def test_truncated_or_empty_model_file_is_one_error_line(name, size, tiny_data, tmp_path):
    """The first bytes of a real model file (or none) end in one `error:` line naming the file, exit code 2."""
    from dfdetect.runtime.detector import WEIGHTS_DIR

    if name.endswith(".onnx") and size and not any(importlib.util.find_spec(m) for m in ("openvino", "onnxruntime")):
        pytest.skip("parsing an ONNX file needs OpenVINO or ONNX Runtime")
    bad = tmp_path / name
    with open(WEIGHTS_DIR / name, "rb") as f:
        bad.write_bytes(f.read(size))
    img = sorted((tiny_data / "real").glob("real_*.jpg"))[0]
    verbs = [["predict", str(img), "--model", str(bad)]]
    if name.endswith(".safetensors"):  # the verbs that take a checkpoint
        verbs += [
            ["evaluate", str(bad), "--data", str(tiny_data), "--out", str(tmp_path / "ev"), "--workers", "0"],
            ["export", str(bad), "--out", str(tmp_path / "x.onnx")],
        ]
        if importlib.util.find_spec("pytorch_grad_cam"):
            verbs.append(["explain", str(img), "--model", str(bad), "--out", str(tmp_path / "xp")])
    for args in verbs:
        r = runner.invoke(app, args)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert r.exit_code == 2 and "Traceback" not in r.output, (args[0], r.output)
        assert len(errors) == 1 and str(bad) in errors[0] and ("truncated" in errors[0] or "empty" in errors[0])


def test_a_mistyped_or_folder_model_is_answered_with_what_to_pass(tmp_path):
    img = Path(__file__).resolve().parents[1] / "examples" / "real" / "00362.jpg"
    r = runner.invoke(app, ["predict", str(img), "--model", "larg"])
    assert r.exit_code != 0 and "did you mean the shipped 'large'" in r.output
    r = runner.invoke(app, ["predict", str(img), "--model", str(tmp_path)])
    assert r.exit_code != 0 and "is a folder, not a model file" in r.output


def test_nonsense_batch_size_and_workers_are_refused_by_the_option_parser():
    img = Path(__file__).resolve().parents[1] / "examples" / "real" / "00362.jpg"
    for opt in (["--batch-size", "0"], ["--workers", "-1"]):
        r = runner.invoke(app, ["predict", str(img), *opt])
        assert r.exit_code == 2 and "greater than or equal" in r.output, r.output


def test_an_empty_folder_says_nothing_was_found(tmp_path):
    r = runner.invoke(app, ["predict", str(tmp_path), "--json"])
    assert r.exit_code == 1 and "no files found in" in r.output
