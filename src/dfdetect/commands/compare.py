"""``dfdetect compare``: train (or take) several backbones under one recipe and one split; Table 1 + speed + plot.

Writes OUT/table.md, OUT/table.csv, OUT/pareto.png, OUT/split.csv, OUT/runs/<model>/ and OUT/compare_state.json;
rerunning the same command continues an interrupted comparison. Only typer and pathlib are imported at top level.
"""

from __future__ import annotations

from pathlib import Path

import typer


def compare_cmd(
    models: str = typer.Option("", "--models", "-m", help="Comma-separated backbone names to train (see `models`)."),
    data: Path | None = typer.Option(None, "--data", "-d", help="Data folder (default: the first --runs' data)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; rerun with the same one to resume."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML training recipe shared by all models."),
    runs: list[Path] | None = typer.Option(None, "--runs", help="Finished run folder(s) to include as they are."),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Initial weights: none | offline | hub."),
    epochs: int | None = typer.Option(None, help="Fine-tuning epochs (after warm-up)."),
    warmup_epochs: int | None = typer.Option(None, help="Head-only epochs with the backbone frozen."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b"),
    lr: float | None = typer.Option(None, help="Fine-tuning learning rate."),
    img_size: int | None = typer.Option(None, help="Input size for every model (default: each backbone's own)."),
    limit_per_class: int | None = typer.Option(None, help="At most N images per class and split."),
    max_steps: int | None = typer.Option(None, help="Cap steps per epoch (smoke runs)."),
    threshold: str | None = typer.Option(None, help="Stored threshold: number | eer | f1 | fpr1."),
    seed: int | None = typer.Option(None),
    split_seed: int | None = typer.Option(None),
    device: str | None = typer.Option(None, help="Training/evaluation device: auto | cpu | cuda."),
    workers: int | None = typer.Option(None, help="DataLoader workers."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Time CPU latency/throughput (torch and ORT)."),
    bench_batch: int = typer.Option(8, help="Batch size for the throughput column (latency is always batch 1)."),
    bench_seconds: float = typer.Option(2.0, help="Time each speed setting at least this long."),
    threads: int | None = typer.Option(None, help="Intra-op threads for the speed figures (default: all cores)."),
    int8: bool = typer.Option(False, "--int8", help="Also ORT dynamic int8: latency and accuracy change on test."),
    metric: str = typer.Option("accuracy", help="Y axis of pareto.png: accuracy | roc_auc | f1."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Compare backbones: the paper's Table 1 (+ AUC, EER, size, GFLOPs, CPU latency) and an accuracy/latency plot."""
    from dfdetect.cli import _fail, _setup_logging

    _setup_logging(verbose)
    from dfdetect.compare import run_comparison
    from dfdetect.config import TrainConfig
    from dfdetect.models.registry import UnknownModelError, get_spec

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names and not runs:
        _fail("give --models a,b,c and/or --runs RUN_DIR")
    if metric not in ("accuracy", "roc_auc", "f1", "precision", "recall"):
        _fail(f"--metric must be accuracy, roc_auc, f1, precision or recall, not {metric!r}")
    try:
        for n in names:
            get_spec(n)
    except UnknownModelError as e:
        _fail(str(e))
    cfg = TrainConfig.load_yaml(config) if config else TrainConfig()
    overrides = {
        ("data", "root"): str(data) if data else None,
        ("data", "limit_per_class"): limit_per_class,
        ("data", "num_workers"): workers,
        ("data", "split_seed"): split_seed,
        ("model", "weights"): weights,
        ("model", "img_size"): img_size,
        (None, "epochs"): epochs,
        (None, "warmup_epochs"): warmup_epochs,
        (None, "batch_size"): batch_size,
        (None, "lr"): lr,
        (None, "threshold"): threshold,
        (None, "max_steps_per_epoch"): max_steps,
        (None, "seed"): seed,
        (None, "device"): device,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(cfg, section) if section else cfg, key, value)
    try:
        run_comparison(
            names,
            out,
            cfg,
            runs=runs or [],
            bench=bench,
            bench_batch=bench_batch,
            bench_threads=threads,
            bench_seconds=bench_seconds,
            pareto_metric=metric,
            int8=int8,
        )
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        _fail(str(e))
    typer.echo((out / "table.md").read_text())
    plot = out / "pareto.png"
    typer.echo(f"wrote {out / 'table.md'}, {out / 'table.csv'}" + (f", {plot}" if plot.is_file() else ""))


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
