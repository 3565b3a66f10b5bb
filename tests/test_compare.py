"""``dfdetect compare``: one split for every model, Table 1 + speed columns, Pareto plot, resumability."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from tests.conftest import tiny_config

MODELS = ["tiny_efficientnet", "tiny_mobilenetv3"]
TABLE_COLUMNS = [
    "model",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "roc_auc",
    "eer",
    "params_m",
    "size_mb",
    "gflops",
    "latency_ort_ms",
    "latency_torch_ms",
    "images_per_s_ort",
    "images_per_s_torch",
]


def _base(data, out):
    cfg = tiny_config(data, out, epochs=1, warmup_epochs=0, max_steps_per_epoch=2)
    cfg.data.limit_per_class = 4
    return cfg


def _fast(**kw):
    return dict(bench_batch=2, bench_threads=1, bench_seconds=0.0, bench_warmup=1, bench_iters=2, **kw)


@pytest.fixture(scope="module")
def compared(tiny_data, tmp_path_factory):
    """First only model 1 (an 'interrupted' comparison), then the full list in the same folder."""
    from dfdetect.analysis.compare import run_comparison

    out = tmp_path_factory.mktemp("cmp")
    run_comparison(MODELS[:1], out, _base(tiny_data, out), **_fast())
    first = out / "runs" / MODELS[0] / "best.pt"
    mtime = first.stat().st_mtime_ns
    # The full list through the CLI, with the same recipe as flags.
    from dfdetect.cli import app

    args = ["compare", "--models", ",".join(MODELS), "--data", str(tiny_data), "--out", str(out)]
    args += ["--epochs", "1", "--warmup-epochs", "0", "--img-size", "48", "--limit-per-class", "4", "-b", "8"]
    args += ["--max-steps", "2", "--device", "cpu", "--workers", "0", "--bench-batch", "2", "--bench-seconds", "0"]
    args += ["--threads", "1"]  # one thread: the timing is not asserted, and it keeps a busy shared CPU usable
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| tiny_mobilenetv3 |" in res.output
    state = json.loads((out / "compare_state.json").read_text())
    return out, state, mtime


def test_table_columns_and_rows(compared):
    out, state, _ = compared
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == MODELS
    assert list(rows[0])[: len(TABLE_COLUMNS)] == TABLE_COLUMNS
    for r in rows:
        for k in ("precision", "recall", "f1", "accuracy", "params_m", "size_mb", "latency_ort_ms", "latency_torch_ms"):
            assert r[k] != "", (r["model"], k)
            float(r[k])
        assert 0.0 <= float(r["accuracy"]) <= 1.0
    md = (out / "table.md").read_text().splitlines()
    header = md[0]
    for h in ("precision", "recall", "F1", "accuracy", "ROC-AUC", "EER", "params (M)", "size (MB)", "GFLOPs"):
        assert h in header
    assert "latency ORT (ms, b1)" in header and "images/s ORT" in header
    assert sum(line.startswith(f"| {m} ") for m in MODELS for line in md) == 2
    assert (out / "pareto.png").stat().st_size > 1000


def test_one_split_for_every_model(compared):
    out, state, _ = compared
    hashes = set()
    for m in MODELS:
        metrics = json.loads((out / "runs" / m / "eval_test" / "metrics.json").read_text())
        hashes.add(metrics["split_sha256"])
        assert (out / "runs" / m / "split.csv").read_text() == (out / "split.csv").read_text()
    assert len(hashes) == 1
    assert hashes == {state["split_sha256"]}


def test_resume_does_not_retrain(compared, tiny_data):
    out, state, mtime = compared
    assert (out / "runs" / MODELS[0] / "best.pt").stat().st_mtime_ns == mtime
    assert all(state["models"][m]["status"] == "done" for m in MODELS)
    # A third call has nothing left to do: no run folder is touched.
    from dfdetect.analysis.compare import run_comparison

    before = {m: (out / "runs" / m / "best.pt").stat().st_mtime_ns for m in MODELS}
    run_comparison(MODELS, out, _base(tiny_data, out), **_fast())
    assert {m: (out / "runs" / m / "best.pt").stat().st_mtime_ns for m in MODELS} == before


def test_interrupted_run_resumes_from_last_pt(compared, tmp_path, monkeypatch):
    """A run with last.pt but no summary.json is continued with fit(resume=...), not started again.

    (Simulated cheaply: a finished run's copy without summary.json is a run cut off after its last epoch.)"""
    import shutil

    from dfdetect.analysis import compare
    from dfdetect.engine import train

    out, _, _ = compared
    run_dir = tmp_path / "m"
    shutil.copytree(out / "runs" / MODELS[0], run_dir)
    (run_dir / "summary.json").unlink()
    assert not compare.run_is_finished(run_dir)
    calls = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda c, resume=None: calls.append((c, resume)) or real_fit(c, resume=resume))
    assert compare.train_or_resume(None, run_dir) == run_dir
    assert calls == [(None, run_dir)]
    assert compare.run_is_finished(run_dir)
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 1 + 1  # no epoch trained again


def test_pareto_front():
    from dfdetect.analysis.compare import pareto_front

    pts = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (4.0, 0.95), (0.5, 0.70)]
    assert pareto_front(pts) == [4, 0, 1, 3]


def test_cli_compare_with_runs(compared, tmp_path):
    """The CLI on already-trained runs: no training, same split, table printed; --no-bench skips timing."""
    from dfdetect.cli import app

    out, _, _ = compared
    runs = [str(out / "runs" / m) for m in MODELS]
    before = {m: (out / "runs" / m / "best.pt").stat().st_mtime_ns for m in MODELS}
    res = CliRunner().invoke(
        app, ["compare", "--runs", runs[0], "--runs", runs[1], "--out", str(tmp_path / "c"), "--no-bench"]
    )
    assert res.exit_code == 0, res.output
    assert "| tiny_efficientnet |" in res.output and "| tiny_mobilenetv3 |" in res.output
    with open(tmp_path / "c" / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == MODELS
    assert all(r["latency_ort_ms"] == "" and float(r["params_m"]) > 0 for r in rows)
    assert {m: (out / "runs" / m / "best.pt").stat().st_mtime_ns for m in MODELS} == before
    assert (tmp_path / "c" / "pareto.png").is_file()


def test_cli_compare_rejects_unknown_model(tmp_path, tiny_data):
    from dfdetect.cli import app

    res = CliRunner().invoke(
        app, ["compare", "--models", "tiny_efficientnet,nope", "--data", str(tiny_data), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "unknown model" in res.output


def test_int8_reports_speed_and_accuracy_change(compared, tiny_data):
    from dfdetect.analysis.benchmark import benchmark_int8, format_int8_result

    out, state, _ = compared
    r = benchmark_int8(
        out / "runs" / MODELS[0] / "best.pt", tiny_data, out / "split.csv", threads=1, warmup=1, iters=2, min_seconds=0
    )
    assert r["n"] == state["models"][MODELS[0]]["metrics"]["n"]
    for k in ("fp32", "int8"):
        assert 0.0 <= r[k]["accuracy"] <= 1.0 and r[k]["p50_ms"] > 0
    assert r["accuracy_change"] == r["int8"]["accuracy"] - r["fp32"]["accuracy"]
    assert 0.0 <= r["same_verdict"] <= 1.0
    assert "int8 - fp32" in format_int8_result(r)


def test_variant_rows_checkpoints_and_ensembles(compared, tiny_data, tmp_path):
    """Head variant and fusion rows trained here, a checkpoint row, a run row, and ensembles over two rows."""
    from dfdetect.analysis.compare import run_comparison
    from dfdetect.models.checkpoint import load_checkpoint

    out, _, _ = compared
    cmp = tmp_path / "variants"
    base = _base(tiny_data, cmp)
    rows = ["tiny_efficientnet/attnpool", "fusion:tiny_efficientnet@48+tiny_mobilenetv3@40"]
    variants = dict(
        runs=[out / "runs" / MODELS[0]],
        checkpoints=[("mnv3", out / "runs" / MODELS[1] / "best.pt")],
        ensembles=["mean", "stacking"],
        ensemble_of=[MODELS[0], "mnv3"],
        **_fast(),
    )
    state = run_comparison(rows, cmp, base, **variants)
    with open(cmp / "table.csv", newline="") as f:
        table = {r["model"]: r for r in csv.DictReader(f)}
    want = [MODELS[0], "mnv3", *rows, "ensemble-mean", "ensemble-stacking"]
    assert list(table) == want
    for name, r in table.items():
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and float(r["latency_torch_ms"]) > 0, name
        assert r["latency_ort_ms"] != "", name  # fusion exports; ensembles run their members' graphs
        assert r["test_images"] == table[MODELS[0]]["test_images"], name
    # Each row is what it says: the head variant and the fusion model are rebuilt from their own checkpoints.
    head_ckpt = load_checkpoint(state["models"][rows[0]]["checkpoint"])
    assert head_ckpt["config"]["model"]["head"] == "attnpool"
    fusion_ckpt = load_checkpoint(state["models"][rows[1]]["checkpoint"])
    assert [m["input_size"][-1] for m in fusion_ckpt["data_config"]["members"]] == [48, 40]
    ens = load_checkpoint(cmp / "ensembles" / "stacking.pt")
    assert ens["kind"] == "ensemble" and len(ens["members"]) == 2
    assert ens["fit"]["split_sha256"] == state["split_sha256"]
    # Ensemble params = the members' sum; the torch latency is the ensemble module on packed inputs.
    assert float(table["ensemble-mean"]["params_m"]) == pytest.approx(
        float(table[MODELS[0]]["params_m"]) + float(table["mnv3"]["params_m"]), rel=1e-6
    )
    # The ensemble rows' test scores (combined from the members' test scores) are the ensemble file's own.
    from dfdetect.engine.evaluate import evaluate_checkpoint

    direct = evaluate_checkpoint(
        cmp / "ensembles" / "stacking.pt",
        tiny_data,
        tmp_path / "ev",
        "test",
        cmp / "split.csv",
        device="cpu",
        workers=0,
    )
    assert float(table["ensemble-stacking"]["roc_auc"]) == pytest.approx(direct["roc_auc"], abs=1e-6)
    assert float(table["ensemble-stacking"]["accuracy"]) == pytest.approx(direct["accuracy"], abs=1e-6)
    md = (cmp / "table.md").read_text()
    assert "| ensemble-stacking |" in md and "members' ONNX graphs" in md
    assert (cmp / "pareto.png").stat().st_size > 1000
    # Resume: nothing is retrained or refitted; a changed member list refits the ensembles.
    mtime = (cmp / "ensembles" / "mean.pt").stat().st_mtime_ns
    run_comparison(rows, cmp, base, **variants)
    assert (cmp / "ensembles" / "mean.pt").stat().st_mtime_ns == mtime


def test_cli_compare_variant_flags(compared, tmp_path):
    from dfdetect.cli import app

    out, _, _ = compared
    run = out / "runs" / MODELS[0]
    ckpt = out / "runs" / MODELS[1] / "best.pt"
    args = ["compare", "--runs", str(run), "--checkpoint", f"mnv3={ckpt}", "--ensembles", "weighted"]
    args += ["--out", str(tmp_path / "c"), "--no-bench", "--manifest", str(out / "split.csv"), "--workers", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| mnv3 |" in res.output and "| ensemble-weighted |" in res.output
    bad = CliRunner().invoke(app, ["compare", "--checkpoint", "nopath", "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "NAME=PATH" in bad.output
    bad = CliRunner().invoke(
        app, ["compare", "--models", "tiny_efficientnet/transformer", "--out", str(tmp_path / "e")]
    )
    assert bad.exit_code == 2 and "unknown head" in bad.output
