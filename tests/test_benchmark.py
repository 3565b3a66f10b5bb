"""Static int8 quantization in `dfdetect benchmark --int8-mode static` (tiny model; speed is not asserted)."""

from __future__ import annotations

import pytest


def test_static_int8_calibrates_on_train_and_tracks_fp32(tiny_run, tiny_data):
    from dfdetect.analysis.benchmark import benchmark_int8, format_int8_result

    r = benchmark_int8(tiny_run / "best.pt", tiny_data, mode="static", iters=2, min_seconds=0.05, warmup=1)
    assert "quantize_static" in r["quantization"] and "train images" in r["quantization"]
    assert r["int8"]["file_mb"] < r["fp32"]["file_mb"]
    # quantization error, not a different model: P(fake) moves by little on the scored (test) images
    assert r["max_score_change"] < 0.15, r["max_score_change"]
    assert "int8 - fp32" in format_int8_result(r)


def test_static_int8_needs_a_train_split(tiny_run, tiny_data, tmp_path):
    from dfdetect.analysis.benchmark import benchmark_int8

    loose = tmp_path / "best.pt"  # a checkpoint away from its run folder: no split.csv beside it
    loose.write_bytes((tiny_run / "best.pt").read_bytes())
    with pytest.raises(ValueError, match="train split"):
        benchmark_int8(loose, tiny_data, mode="static", iters=1, min_seconds=0.01)
    with pytest.raises(ValueError, match="dynamic or static"):
        benchmark_int8(tiny_run / "best.pt", tiny_data, mode="fp8", iters=1, min_seconds=0.01)


def test_benchmark_times_the_checkpoints_own_head(tiny_data, tmp_path):
    """A head variant is timed with its head (more parameters than the plain backbone), loaded strictly."""
    from dfdetect.analysis.benchmark import benchmark_model
    from dfdetect.engine.train import fit

    from .conftest import tiny_config

    cfg = tiny_config(tiny_data, tmp_path, epochs=1, warmup_epochs=0, evaluate_test=False)
    cfg.model.head = "attention"
    run = fit(cfg)
    plain = benchmark_model("tiny_efficientnet", 48, (1,), False, 1, "cpu", warmup=1, iters=2, min_seconds=0.01)
    head = benchmark_model(str(run / "best.pt"), None, (1,), False, 1, "cpu", warmup=1, iters=2, min_seconds=0.01)
    assert head["params_m"] > plain["params_m"]
    assert head["input"] == 48 and head["torch_eager"][0]["images_per_s"] > 0


def _benchmark_json(*args: str):
    """`dfdetect benchmark ... --json`, in the suite's process (OpenVINO beside torch: see inference._ov_core)."""
    import json

    from typer.testing import CliRunner

    from dfdetect.cli import app

    r = CliRunner().invoke(app, ["benchmark", *args, "--json"])
    return r, (json.loads(r.stdout[r.stdout.index("{") :]) if r.exit_code == 0 else None)


def test_benchmark_cli_times_each_backend_and_scan(tiny_run, tiny_data, tmp_path):
    """`dfdetect benchmark` rows for every installed runtime, and one folder scan per requested backend."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from typer.testing import CliRunner

    from dfdetect.cli import app

    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes((tiny_run / "best.pt").read_bytes())
    args = [str(ckpt), "--batch-sizes", "1,3", "--min-seconds", "0.01"]
    scan = ["--scan", str(tiny_data / "real"), "--scan-backends", "openvino,onnx"]
    r, _ = _benchmark_json(*args, *scan)
    assert r.exit_code == 2 and "dfdetect export" in r.output  # the fast backends need the exported model
    assert CliRunner().invoke(app, ["export", str(ckpt)]).exit_code == 0  # writes best.onnx beside it
    r, out = _benchmark_json(*args, *scan)
    assert r.exit_code == 0, r.output[-2000:]
    for key in ("torch_eager", "onnxruntime", "openvino"):
        assert [row["batch"] for row in out["model"][key]] == [1, 3], key
    n_files = len(list((tiny_data / "real").iterdir()))  # unreadable files are reported too
    assert [(s["backend"], s["images"]) for s in out["scan"]] == [("openvino", n_files), ("onnxruntime", n_files)]
    assert all(s["vs_model_alone"] is None for s in out["scan"])  # the scan's batch (32) was not timed alone


def test_benchmark_an_exported_model(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from dfdetect.runtime.export import export_onnx

    export_onnx(tiny_run / "best.pt", tmp_path / "m.onnx")
    r, out = _benchmark_json(str(tmp_path / "m.onnx"), "--batch-sizes", "1,2", "--min-seconds", "0.01")
    assert r.exit_code == 0, r.output[-2000:]
    m = out["model"]
    assert m["input"] == 48 and not m["torch_eager"] and [row["batch"] for row in m["onnxruntime"]] == [1, 2]


def test_benchmark_text_names_the_cpu_features_and_the_scan_to_model_ratio(tiny_run, tiny_data, tmp_path):
    """#18's speed bars need the CPU's vector features and the scan / model-alone ratio: both in the text output."""
    pytest.importorskip("onnxruntime")
    import re

    from typer.testing import CliRunner

    from dfdetect.analysis.benchmark import VECTOR_ISA, machine_info
    from dfdetect.cli import app
    from dfdetect.runtime.export import export_onnx

    isa = machine_info()["isa"]
    assert isa is None or set(isa) <= set(VECTOR_ISA)
    export_onnx(tiny_run / "best.pt", tmp_path / "m.onnx")
    args = [str(tmp_path / "m.onnx"), "--batch-sizes", "1,32", "--min-seconds", "0.01"]
    r = CliRunner().invoke(app, ["benchmark", *args, "--scan", str(tiny_data / "real"), "--scan-backends", "onnx"])
    assert r.exit_code == 0, r.output[-2000:]
    cap = r"( \(ONEDNN_MAX_CPU_ISA=[A-Za-z0-9_]+: OpenVINO and torch only, not ONNX Runtime\))?"  # the stand-in
    assert re.search(rf"\| ISA (unknown|below avx2|avx2[a-z0-9_ ]*){cap} \|", r.stdout), r.stdout[:400]
    ratio = re.search(r"images/s \(onnxruntime fp32.*; ([0-9.]+) of the model alone at batch 32", r.stdout)
    assert ratio and float(ratio.group(1)) > 0, r.stdout[-600:]


def test_scan_ratio_is_taken_against_the_same_runtime_precision_and_batch():
    from dfdetect.analysis.benchmark import scan_vs_model

    model = {"openvino": [{"batch": 1, "images_per_s": 50.0}, {"batch": 32, "images_per_s": 80.0, "precision": "fp32"}]}
    scan = {"backend": "openvino", "precision": "fp32", "batch_size": 32, "images_per_s": 72.0}
    assert scan_vs_model(scan, model) == pytest.approx(0.9)
    assert scan_vs_model({**scan, "precision": "bf16"}, model) is None  # no bf16 model row to compare with
    assert scan_vs_model({**scan, "batch_size": 8}, model) is None
    assert scan_vs_model({**scan, "backend": "onnxruntime"}, model) is None


def test_a_bf16_scan_gets_model_alone_rows_in_bf16_where_the_cpu_has_it(tiny_run, tiny_data, tmp_path):
    """`--scan-backends openvino-bf16` times OpenVINO bf16 alone too (so its scan has a ratio), only where the CPU
    computes bf16 natively; elsewhere bf16 compiles to fp32 and is not timed twice."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from dfdetect.core.device import cpu_has_native_bf16
    from dfdetect.runtime.export import export_onnx

    export_onnx(tiny_run / "best.pt", tmp_path / "m.onnx")
    args = [str(tmp_path / "m.onnx"), "--batch-sizes", "1,32", "--min-seconds", "0.01"]
    args += ["--scan", str(tiny_data / "real")]
    r, out = _benchmark_json(*args, "--scan-backends", "openvino-bf16,openvino")
    assert r.exit_code == 0, r.output[-2000:]
    rows = [(row["precision"], row["batch"]) for row in out["model"]["openvino"]]
    native = cpu_has_native_bf16()  # the CPU's bf16 hardware, unless oneDNN is capped below it
    assert rows == [("fp32", 1), ("fp32", 32)] + ([("bf16", 1), ("bf16", 32)] if native else [])
    assert [s["precision"] for s in out["scan"]] == (["bf16"] if native else ["fp32"]) + ["fp32"]
    assert all(s["vs_model_alone"] is not None and s["vs_model_alone"] > 0 for s in out["scan"])
