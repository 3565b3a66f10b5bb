"""Compare backbones under one recipe and one split: the paper's Table 1 plus speed, and a Pareto plot.

``run_comparison`` trains each model with :func:`dfdetect.engine.train.fit` (or takes finished run folders),
scores every model on the same held-out test split, measures CPU speed with
:func:`dfdetect.analysis.benchmark.benchmark_model`, and writes into the output folder:

- ``split.csv``: the one split manifest every model is trained and tested on (made once, up front);
- ``runs/<model>/``: the training run folders (``fit``'s usual contents);
- ``compare_state.json``: what is done so far, so an interrupted comparison continues where it stopped;
- ``table.md`` / ``table.csv``: precision, recall, F1, accuracy (the paper's Table 1), ROC-AUC, EER,
  parameters, size, GFLOPs, batch-1 latency (ONNX Runtime and torch eager) and throughput;
- ``pareto.png``: accuracy (or another metric) against latency, the Pareto front marked.

Rows can be: backbones trained here (``name``), head variants trained here (``name/attention``,
``name/attnpool``, ``name/multiscale``), two-backbone fusion trained here (``fusion:A+B``), finished run folders
(``runs``), single checkpoint files (``checkpoints``: NAME -> PATH, e.g. GPU-trained models) and ensembles
(``ensembles``: mean | weighted | stacking over other rows, fitted on the shared split's validation rows with
:func:`dfdetect.models.ensemble.build_ensemble`).

No training or evaluation code lives here: it only orchestrates ``fit``, ``evaluate_checkpoint``,
``build_ensemble`` and the timing helpers of :mod:`dfdetect.analysis.benchmark`. Every row is rebuilt from its
checkpoint with ``model_from_checkpoint`` before timing, so head variants, fusion models and ensembles are timed as what
they are. Latency is ONNX Runtime where the model exports (an ensemble: its members' ONNX graphs run one after
the other, as a deployment would) and torch eager for every row.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dfdetect.core.config import TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "compare_state.json"
SPLIT_FILE = "split.csv"

# (csv key, markdown header, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("model", "model", "s"),
    ("precision", "precision", ".4f"),
    ("recall", "recall", ".4f"),
    ("f1", "F1", ".4f"),
    ("accuracy", "accuracy", ".4f"),
    ("roc_auc", "ROC-AUC", ".4f"),
    ("eer", "EER", ".4f"),
    ("params_m", "params (M)", ".2f"),
    ("size_mb", "size (MB)", ".1f"),
    ("gflops", "GFLOPs", ".3f"),
    ("latency_ort_ms", "latency ORT (ms, b1)", ".2f"),
    ("latency_torch_ms", "latency torch (ms, b1)", ".2f"),
    ("images_per_s_ort", "images/s ORT", ".1f"),
    ("images_per_s_torch", "images/s torch", ".1f"),
]
INT8_CSV = ["int8_latency_ms", "int8_accuracy_change", "int8_roc_auc_change", "int8_same_verdict"]
EXTRA_CSV = INT8_CSV + ["bench_batch", "input_px", "test_images", "threshold", "split_sha256", "run"]


# --------------------------------------------------------------------------------------------- state


def load_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {"version": 1, "models": {}}


def save_state(out: Path, state: dict[str, Any]) -> None:
    path = out / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, default=_json_default))
    tmp.replace(path)  # atomic: an interruption never leaves half a state file


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def run_is_finished(run_dir: Path) -> bool:
    """A run folder whose training ended: ``fit`` writes summary.json last."""
    return (run_dir / "summary.json").is_file() and (run_dir / "best.pt").is_file()


# --------------------------------------------------------------------------------------------- split


def make_shared_split(cfg: TrainConfig, out: Path) -> Path:
    """Write ``OUT/split.csv`` once (same rules as ``fit``: given splits, else a stratified seeded split)."""
    from dfdetect.data.datasets import limit_per_class, resolve_items, write_manifest

    path = out / SPLIT_FILE
    if path.is_file():
        return path
    items = resolve_items(
        cfg.data.root, cfg.data.manifest, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed
    )
    items = limit_per_class(items, cfg.data.limit_per_class)
    write_manifest(items, path, cfg.data.root)
    log.info("shared split: %s (%d images)", path, len(items))
    return path


# --------------------------------------------------------------------------------------------- one model


def train_or_resume(cfg: TrainConfig | None, run_dir: Path) -> Path:
    """Finished run: reuse it. Interrupted run (last.pt, no summary.json): resume it. Else train from scratch."""
    from dfdetect.engine.train import fit

    if run_is_finished(run_dir):
        log.info("%s: finished run found, not retraining", run_dir)
        return run_dir
    if (run_dir / "last.pt").is_file():
        log.info("%s: interrupted run found, resuming", run_dir)
        return fit(None, resume=run_dir)
    return fit(cfg)


def test_metrics(run_dir: Path, data: Path, manifest: Path, split_hash: str, device: str, workers: int) -> dict:
    """Test-split metrics of a run's best.pt on the shared split.

    When the run was trained on the shared split, ``fit`` already evaluated it (eval_test/metrics.json); that
    file is reused. Otherwise (a run given with ``--runs`` made on another split) the checkpoint is scored on
    the shared test split with ``evaluate_checkpoint``.
    """
    from dfdetect.engine.evaluate import evaluate_checkpoint

    mpath = run_dir / "eval_test" / "metrics.json"
    if mpath.is_file():
        m = json.loads(mpath.read_text())
        if m.get("split_sha256") == split_hash:
            return m
    log.warning("%s was not tested on the shared split; scoring it on the shared test split", run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    if summary.get("split_sha256") not in (None, split_hash):
        log.warning(
            "%s was trained on another split (sha256 %s): some shared test images may be its training images",
            run_dir,
            str(summary.get("split_sha256"))[:12],
        )
    m = evaluate_checkpoint(
        run_dir / "best.pt", data, run_dir / "eval_compare", "test", manifest, device=device, workers=workers
    )
    m["split_sha256"] = split_hash
    return m


def _timing_parts(ckpt: dict[str, Any], model: Any) -> list[tuple[Any, int]]:
    """(module, input px) of what runs per image: the model itself, or an ensemble's members."""
    if ckpt.get("kind") == "ensemble":
        return [(m, int(dc["input_size"][-1])) for m, dc in zip(model.members, model.data_configs)]
    return [(model, int(ckpt["data_config"]["input_size"][-1]))]


def _ort_runner(parts: list[tuple[Any, int]], tmp: Path, threads: int | None, batch: int) -> Any:
    """Export each part to ONNX and return a function that runs them all once on a random batch."""
    import numpy as np

    from dfdetect.analysis.benchmark import ort_session_for_timing

    sessions = []
    for i, (m, size) in enumerate(parts):
        sess = ort_session_for_timing(m, size, tmp / f"part{i}.onnx", threads)
        sessions.append((sess, np.random.randn(batch, 3, size, size).astype(np.float32)))

    def run() -> None:
        for sess, x in sessions:
            sess.run(None, {"input": x})

    return run


def speed_figures(
    checkpoint: Path,
    bench: bool,
    batch: int,
    threads: int | None,
    min_seconds: float,
    warmup: int = 5,
    iters: int = 20,
) -> dict[str, Any]:
    """Params, size, GFLOPs and (with ``bench``) CPU batch-1 latency and throughput, torch eager and ORT.

    The model is rebuilt with ``model_from_checkpoint`` (heads, fusion and ensembles included). An ensemble's
    GFLOPs are its members' sum, its torch figures time the ensemble module on packed inputs, and its ORT
    figures time its members' ONNX graphs run one after the other.
    """
    import tempfile

    import torch

    from dfdetect.analysis.benchmark import gflops_per_image, machine_info, timeit, timing_stats
    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.models.factory import model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    parts = _timing_parts(ckpt, model)
    params = sum(p.numel() for p in model.parameters())
    flops = [gflops_per_image(m, size) for m, size in parts]
    res: dict[str, Any] = {
        "params_m": params / 1e6,
        "size_mb": params * 4 / 2**20,
        "gflops": None if any(f is None for f in flops) else sum(flops),
        "input_px": int(ckpt["data_config"]["input_size"][-1]),
    }
    if not bench:
        return res
    sizes = (1,) if batch <= 1 else (1, batch)
    ensemble = ckpt.get("kind") == "ensemble"
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        eager = {}
        for b in sizes:
            if ensemble:
                x = torch.randn(b, sum(3 * s * s for _, s in parts))
            else:
                x = torch.randn(b, 3, parts[0][1], parts[0][1])

            def run(x=x) -> None:
                with torch.inference_mode():
                    model(x)

            eager[b] = timing_stats(timeit(run, warmup, iters, min_seconds), b)
        ort_stats: dict[int, dict[str, float]] = {}
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.warning("onnxruntime not installed: no ORT latency (pip install 'dfdetect[onnx]')")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                for b in sizes:
                    try:
                        fn = _ort_runner(parts, Path(tmp), threads, b)
                    except Exception as e:  # noqa: BLE001 - a model that does not export keeps its torch figures
                        log.warning(
                            "%s does not export to ONNX (%s: %s): torch latency only", checkpoint, type(e).__name__, e
                        )
                        ort_stats = {}
                        break
                    ort_stats[b] = timing_stats(timeit(fn, warmup, iters, min_seconds), b)
    finally:
        torch.set_num_threads(before)  # training after timing keeps its own thread count
    big = max(sizes)
    res.update(
        {
            "latency_ort_ms": ort_stats[1]["p50_ms"] if 1 in ort_stats else None,
            "latency_torch_ms": eager[1]["p50_ms"],
            "images_per_s_ort": ort_stats[big]["images_per_s"] if big in ort_stats else None,
            "images_per_s_torch": eager[big]["images_per_s"],
            "bench_batch": big,
            "ort_note": "members run one after the other" if ensemble and ort_stats else None,
            "machine": machine_info(),
        }
    )
    return res


# --------------------------------------------------------------------------------------------- driver


def parse_row(entry: str) -> tuple[str, str | None]:
    """``--models`` entry -> (model name, head or None): ``name``, ``name/HEAD`` or ``fusion:A+B``."""
    from dfdetect.models.heads import HEADS
    from dfdetect.models.registry import get_spec

    name, _, head = entry.partition("/")
    get_spec(name)  # unknown names fail here, with the closest valid one
    if head and head not in HEADS:
        raise ValueError(f"unknown head {head!r} in {entry!r}; heads: {', '.join(HEADS)}")
    return name, head or None


def _folder_name(entry: str) -> str:
    return entry.replace("/", "-").replace(":", "_")


def checkpoint_test_metrics(
    path: Path, name: str, data: Path, manifest: Path, split_hash: str, out: Path, device: str, workers: int
) -> dict:
    """A checkpoint file scored on the shared test split (a warning when it was trained on another split)."""
    from dfdetect.engine.evaluate import evaluate_checkpoint
    from dfdetect.models.checkpoint import load_checkpoint

    trained_on = load_checkpoint(path).get("split_sha256")
    if trained_on not in (None, split_hash):
        log.warning(
            "%s (%s) was trained on another split (sha256 %s): some shared test images may be its training images",
            name,
            path,
            str(trained_on)[:12],
        )
    m = evaluate_checkpoint(path, data, out, "test", manifest, device=device, workers=workers)
    m["split_sha256"] = split_hash
    return m


def ensemble_test_metrics(checkpoint: Path, member_predictions: Sequence[str | Path], out: Path) -> dict:
    """An ensemble's test metrics from its members' test predictions (``predictions.csv``), combined exactly as
    ``EnsembleModel`` combines them (method, weights, intercept, threshold from the ensemble checkpoint)."""
    import numpy as np

    from dfdetect.engine.evaluate import write_eval_artifacts
    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.models.ensemble import combine

    ckpt = load_checkpoint(checkpoint)
    tables = []
    for p in member_predictions:
        with open(p, newline="") as f:
            tables.append({r["path"]: (int(r["label"]), float(r["score"])) for r in csv.DictReader(f)})
    paths = [p for p in tables[0] if all(p in t for t in tables[1:])]
    if not paths:
        raise ValueError(f"the members of {checkpoint} share no scored test images")
    labels = np.array([tables[0][p][0] for p in paths])
    scores = combine(
        np.array([[t[p][1] for t in tables] for p in paths]), ckpt["method"], ckpt["weights"], ckpt["intercept"]
    )
    m = write_eval_artifacts(
        labels,
        scores,
        paths,
        float(ckpt["threshold"]),
        out,
        extra={"checkpoint": str(checkpoint), "arch": ckpt["arch"], "split": "test", "from": "members' test scores"},
    )
    m["out_dir"] = str(out)
    return m


Row = tuple[str, str, Path, TrainConfig | None]
"""(name, kind: run | checkpoint | train | ensemble, run folder or checkpoint path, config for rows trained here)"""


def run_comparison(
    models: Sequence[str],
    out: str | Path,
    base: TrainConfig,
    runs: Sequence[str | Path] = (),
    bench: bool = True,
    bench_batch: int = 8,
    bench_threads: int | None = None,
    bench_seconds: float = 2.0,
    bench_warmup: int = 5,
    bench_iters: int = 20,
    pareto_metric: str = "accuracy",
    int8: bool = False,
    checkpoints: Sequence[tuple[str, str | Path]] = (),
    ensembles: Sequence[str] = (),
    ensemble_of: Sequence[str] | None = None,
    manifest: str | Path | None = None,
) -> dict[str, Any]:
    """Train/evaluate/benchmark each row (resumably) and write the table and plot; returns the state.

    Rows, in this order: ``runs`` (finished run folders), ``checkpoints`` ((name, path) pairs), ``models``
    (trained here; ``name``, ``name/HEAD`` or ``fusion:A+B``), then one ensemble per method in ``ensembles``
    over the rows named in ``ensemble_of`` (default: every other row). ``manifest`` fixes the shared split.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out)
    run_dirs = [Path(r) for r in runs]
    ckpt_rows = [(str(n), Path(p)) for n, p in checkpoints]
    _check_inputs(run_dirs, ckpt_rows, ensembles)
    # Data root: --data, else the first given run's.
    if not base.data.root and run_dirs:
        base.data.root = TrainConfig.load_yaml(run_dirs[0] / "config.yaml").data.root
    if not base.data.root:
        raise ValueError("no data folder: pass --data (or --runs whose config names one)")
    data = Path(base.data.root)
    split_path, split_hash = _shared_split(base, out, manifest, run_dirs, state)
    entries, members = _plan_rows(base, out, split_path, run_dirs, ckpt_rows, models, ensembles, ensemble_of)
    state["order"] = list(dict.fromkeys(state.get("order", []) + [n for n, _, _, _ in entries]))

    for i, (name, kind, where, cfg) in enumerate(entries, 1):
        entry = state["models"].setdefault(name, {})
        if _row_done(entry, kind, where, members):
            log.info("[%d/%d] %s: done already", i, len(entries), name)
            continue
        log.info("[%d/%d] %s", i, len(entries), name)
        t0 = time.perf_counter()
        m, ckpt_path = _score_row(state, out, (name, kind, where, cfg), members, base, data, split_path, split_hash)
        _record_row(
            entry,
            m,
            ckpt_path,
            kind,
            bench,
            (bench_batch, bench_threads, bench_seconds, bench_warmup, bench_iters),
            int8,
            data,
            split_path,
        )
        entry["seconds"] = time.perf_counter() - t0
        entry["status"] = "done"
        save_state(out, state)
        write_outputs(out, state, pareto_metric)
    write_outputs(out, state, pareto_metric)
    return state


def _check_inputs(run_dirs: list[Path], ckpt_rows: list[tuple[str, Path]], ensembles: Sequence[str]) -> None:
    from dfdetect.models.ensemble import METHODS

    for r in run_dirs:
        if not run_is_finished(r):
            raise FileNotFoundError(f"{r} is not a finished run folder (needs best.pt and summary.json)")
    for n, p in ckpt_rows:
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {p} (row {n!r}) not found")
    for m in ensembles:
        if m not in METHODS:
            raise ValueError(f"ensemble method must be one of {', '.join(METHODS)}, not {m!r}")


def _shared_split(
    base: TrainConfig, out: Path, manifest: str | Path | None, run_dirs: list[Path], state: dict[str, Any]
) -> tuple[Path, str]:
    """One split for everyone: the existing OUT/split.csv, else --manifest, else the first given run's, else new."""
    from dfdetect.data.datasets import manifest_hash

    split_path = out / SPLIT_FILE
    if not split_path.is_file() and manifest:
        split_path.write_text(Path(manifest).read_text())
    if not split_path.is_file() and run_dirs and (run_dirs[0] / "split.csv").is_file():
        split_path.write_text((run_dirs[0] / "split.csv").read_text())
    split_path = make_shared_split(base, out)
    split_hash = manifest_hash(split_path)
    if state.get("split_sha256") not in (None, split_hash):
        raise ValueError(f"{split_path} changed since this comparison started; use a new --out")
    if manifest and manifest_hash(manifest) != split_hash:
        raise ValueError(f"--manifest {manifest} differs from this comparison's split {split_path}; use a new --out")
    state["split_sha256"] = split_hash
    state["split"] = str(split_path)
    recipe = base.to_dict()
    recipe.pop("name", None)
    if state.get("recipe") not in (None, recipe):
        log.warning("the training recipe differs from the one this comparison started with; done models keep theirs")
    state.setdefault("recipe", recipe)
    save_state(out, state)
    return split_path, split_hash


def _plan_rows(
    base: TrainConfig,
    out: Path,
    split_path: Path,
    run_dirs: list[Path],
    ckpt_rows: list[tuple[str, Path]],
    models: Sequence[str],
    ensembles: Sequence[str],
    ensemble_of: Sequence[str] | None,
) -> tuple[list[Row], list[str]]:
    """Every row in table order, and the rows the ensembles combine."""
    entries: list[Row] = [(r.name, "run", r, None) for r in run_dirs]
    entries += [(n, "checkpoint", p, None) for n, p in ckpt_rows]
    for entry in models:
        name, head = parse_row(entry)
        cfg = copy.deepcopy(base)
        cfg.model.name = name
        if head:
            cfg.model.head = head
        if name.startswith("fusion:"):
            # A fusion row takes its member sizes from its name or its members, not from --img-size.
            cfg.model.img_size = cfg.model.resize_to = None
            cfg.model.head = "linear"
        cfg.data.manifest = str(split_path)
        cfg.out = str(out / "runs")
        cfg.name = _folder_name(entry)
        entries.append((entry, "train", out / "runs" / cfg.name, cfg))
    singles = [n for n, _, _, _ in entries]
    members = list(ensemble_of) if ensemble_of else list(singles)
    unknown = [m for m in members if m not in singles]
    if ensembles and unknown:
        raise ValueError(f"--ensemble-of names rows that are not in this comparison: {unknown} (rows: {singles})")
    if ensembles and len(members) < 2:
        raise ValueError("an ensemble needs at least two member rows")
    for method in ensembles:
        entries.append((f"ensemble-{method}", "ensemble", out / "ensembles" / f"{method}.pt", None))
    names = [n for n, _, _, _ in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique: {names}")
    return entries, members


def _score_row(
    state: dict[str, Any],
    out: Path,
    row: Row,
    members: list[str],
    base: TrainConfig,
    data: Path,
    split_path: Path,
    split_hash: str,
) -> tuple[dict[str, Any], Path]:
    """Train (rows trained here), fit (ensembles) and score one row on the test split: (metrics, checkpoint)."""
    name, kind, where, cfg = row
    entry = state["models"][name]
    if kind in ("run", "train"):
        run_dir = where
        if cfg is not None:
            entry.update({"status": "training", "run": str(run_dir), "kind": kind})
            save_state(out, state)
            run_dir = train_or_resume(cfg, run_dir)
        entry.update({"status": "trained", "run": str(run_dir), "kind": kind})
        save_state(out, state)
        return test_metrics(
            run_dir, data, split_path, split_hash, base.device, base.data.num_workers
        ), run_dir / "best.pt"
    if kind == "ensemble":
        from dfdetect.engine.ensemble import build_ensemble

        rows = [state["models"][n] for n in members]
        paths = [r.get("checkpoint") or Path(r["run"]) / "best.pt" for r in rows]
        build_ensemble(
            paths,
            data,
            where,
            name.removeprefix("ensemble-"),
            split_path,
            base.threshold,
            base.device,
            base.batch_size,
            base.data.num_workers,
            stored_valid_scores=True,
        )
        entry["members"] = list(members)
        # Test scores: the ensemble's combination of its members' test scores (no second inference pass).
        preds = [r.get("predictions") or Path(r["run"]) / "eval_test" / "predictions.csv" for r in rows]
        m = ensemble_test_metrics(where, preds, out / "eval" / _folder_name(name))
        m["split_sha256"] = split_hash
    else:
        m = checkpoint_test_metrics(
            where,
            name,
            data,
            split_path,
            split_hash,
            out / "eval" / _folder_name(name),
            base.device,
            base.data.num_workers,
        )
    entry.update({"status": "scored", "run": str(where), "kind": kind})
    return m, where


def _record_row(
    entry: dict[str, Any],
    m: dict[str, Any],
    ckpt_path: Path,
    kind: str,
    bench: bool,
    timing: tuple[int, int | None, float, int, int],
    int8: bool,
    data: Path,
    split_path: Path,
) -> None:
    """A scored row's table entry: metrics, where its predictions are, speed (and int8 figures when asked)."""
    batch, threads, seconds, warmup, iters = timing
    entry["checkpoint"] = str(ckpt_path)
    entry["predictions"] = str(
        Path(m["out_dir"]) / "predictions.csv" if m.get("out_dir") else Path(entry["run"]) / "eval_test/predictions.csv"
    )
    entry["metrics"] = {
        k: m.get(k) for k in ("precision", "recall", "f1", "accuracy", "roc_auc", "eer", "threshold", "n")
    }
    entry["metrics"]["split_sha256"] = m.get("split_sha256")
    entry["speed"] = speed_figures(ckpt_path, bench, batch, threads, seconds, warmup, iters)
    if int8 and kind != "ensemble":
        from dfdetect.analysis.benchmark import benchmark_int8

        q = benchmark_int8(ckpt_path, data, split_path, "test", threads, warmup, iters, seconds)
        entry["int8"] = {
            "int8_latency_ms": q["int8"]["p50_ms"],
            "int8_accuracy_change": q["accuracy_change"],
            "int8_roc_auc_change": q["roc_auc_change"],
            "int8_same_verdict": q["same_verdict"],
        }


def _row_done(entry: dict[str, Any], kind: str, where: Path, members: list[str]) -> bool:
    """A row finished earlier (and, for an ensemble, over the same member rows)."""
    if entry.get("status") != "done":
        return False
    if kind in ("run", "train"):
        return run_is_finished(Path(entry["run"]))
    if kind == "ensemble" and entry.get("members") != members:
        return False
    return Path(entry.get("checkpoint", where)).is_file()


# --------------------------------------------------------------------------------------------- outputs


def table_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in state.get("order", list(state["models"])):
        e = state["models"].get(name)
        if not e or e.get("status") != "done":
            continue
        m, s = e["metrics"], e["speed"]
        row: dict[str, Any] = {"model": name}
        row.update({k: m.get(k) for k in ("precision", "recall", "f1", "accuracy", "roc_auc", "eer")})
        row.update({k: s.get(k) for k in ("params_m", "size_mb", "gflops")})
        for k in ("latency_ort_ms", "latency_torch_ms", "images_per_s_ort", "images_per_s_torch", "bench_batch"):
            row[k] = s.get(k)
        row.update(
            input_px=s.get("input_px"),
            test_images=m.get("n"),
            threshold=m.get("threshold"),
            split_sha256=m.get("split_sha256"),
            run=e["run"],
        )
        row.update(e.get("int8", {}))
        rows.append(row)
    return rows


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, spec) if spec != "s" else str(v)


def format_markdown(rows: list[dict[str, Any]], state: dict[str, Any]) -> str:
    head = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" if k == "model" else "---:" for k, _, _ in COLUMNS) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), f) for k, _, f in COLUMNS) + " |")
    notes = [
        "",
        f"Test split: `{state.get('split')}` (sha256 {str(state.get('split_sha256'))[:12]}), "
        f"{rows[0]['test_images'] if rows else 0} images; threshold = each model's stored one.",
    ]
    batches = sorted({r["bench_batch"] for r in rows if r.get("bench_batch")})
    if batches:
        machine = next((e["speed"].get("machine") for e in state["models"].values() if e.get("speed")), None) or {}
        notes.append(
            f"Latency: median of batch-1 runs on CPU ({machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"torch {machine.get('torch', '?')}); images/s at batch {', '.join(map(str, batches))}."
        )
    ens = [(n, e) for n, e in state["models"].items() if e.get("kind") == "ensemble" and e.get("status") == "done"]
    for n, e in ens:
        notes.append(
            f"{n}: over {', '.join(e.get('members', []))} (weights fitted on the validation split); "
            "its ORT latency runs the members' ONNX graphs one after the other."
        )
    for r in rows:
        if r.get("int8_latency_ms") is not None:
            notes.append(
                f"int8 (ORT dynamic) {r['model']}: {r['int8_latency_ms']:.2f} ms batch 1, accuracy "
                f"{r['int8_accuracy_change']:+.4f}, AUC {r['int8_roc_auc_change']:+.4f}, "
                f"same verdict {r['int8_same_verdict']:.1%}."
            )
    return "\n".join(lines + notes) + "\n"


def write_outputs(out: Path, state: dict[str, Any], pareto_metric: str = "accuracy") -> list[dict[str, Any]]:
    rows = table_rows(state)
    (out / "table.md").write_text(format_markdown(rows, state))
    keys = [k for k, _, _ in COLUMNS] + EXTRA_CSV
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    if rows:
        pareto_plot(rows, out / "pareto.png", pareto_metric)
    return rows


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], -math.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def pareto_plot(rows: list[dict[str, Any]], path: Path, metric: str = "accuracy") -> Path | None:
    """Metric vs batch-1 latency (ORT, else torch eager, else GFLOPs), Pareto front marked and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey, xlabel = "latency_ort_ms", "latency, ONNX Runtime, batch 1 (ms)"
    if not any(r.get(xkey) for r in rows):
        xkey, xlabel = "latency_torch_ms", "latency, torch eager, batch 1 (ms)"
    if not any(r.get(xkey) for r in rows):
        xkey, xlabel = "gflops", "GFLOPs per image"
    pts = [(r, r.get(xkey), r.get(metric)) for r in rows]
    pts = [(r, x, y) for r, x, y in pts if x is not None and y is not None and not math.isnan(y)]
    if not pts:
        log.warning("nothing to plot in %s (no %s or %s figures)", path, xkey, metric)
        return None
    xy = [(x, y) for _, x, y in pts]
    front = pareto_front(xy)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter([p[0] for p in xy], [p[1] for p in xy], c="tab:blue", s=40, label="models", zorder=2)
    fx = [xy[i][0] for i in front]
    fy = [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", c="tab:red", lw=1.5, zorder=1)
    ax.scatter(fx, fy, c="tab:red", s=110, marker="*", label="Pareto front", zorder=3)
    for i, (r, x, y) in enumerate(pts):
        ax.annotate(
            r["model"] + (" (front)" if i in front else ""),
            (x, y),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
            color="tab:red" if i in front else "black",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    if xkey != "gflops" and max(p[0] for p in xy) / max(min(p[0] for p in xy), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_title(f"{metric} vs speed (up and left is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
