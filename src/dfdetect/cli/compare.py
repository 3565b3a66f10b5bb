"""``dfdetect compare``: train (or take) several models under one recipe and one split; Table 1 + speed + plot.

Rows: backbones, head variants (NAME/HEAD) and fusion models trained here, finished runs (--runs), checkpoint
files (--checkpoint NAME=PATH) and ensembles of other rows (--ensembles mean,weighted,stacking).

Writes OUT/table.md, OUT/table.csv, OUT/pareto.png, OUT/split.csv, OUT/runs/<model>/ and OUT/compare_state.json;
rerunning the same command continues an interrupted comparison. Only typer and pathlib are imported at top level.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dfdetect.cli.common import EXPECTED_ERRORS, fail, given_settings, setup_logging

COMPARE_ONLY_FLAGS = (
    "models", "out", "config", "runs", "checkpoint", "ensembles", "ensemble_of", "manifest",
    "bench", "bench_batch", "bench_seconds", "threads", "int8", "metric", "verbose",
)  # fmt: skip
"""compare options that are not training settings; every other option sets the shared recipe's field."""


def compare_cmd(
    ctx: typer.Context,
    models: str = typer.Option(
        "",
        "--models",
        "-m",
        help="Comma-separated rows to train: NAME (see `models`), NAME/HEAD (attention | attnpool | multiscale) "
        "or fusion:A+B.",
    ),
    data: Path | None = typer.Option(None, "--data", "-d", help="Data folder (default: the first --runs' data)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; rerun with the same one to resume."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML training recipe shared by all models."),
    runs: list[Path] | None = typer.Option(None, "--runs", help="Finished run folder(s) to include as they are."),
    checkpoint: list[str] | None = typer.Option(
        None, "--checkpoint", help="NAME=PATH: a trained checkpoint as a row (scored on the shared test split)."
    ),
    ensembles: str = typer.Option(
        "", "--ensembles", help="Comma-separated ensemble rows over other rows: mean | weighted | stacking."
    ),
    ensemble_of: str = typer.Option(
        "", "--ensemble-of", help="Comma-separated row names the ensembles combine (default: every other row)."
    ),
    manifest: Path | None = typer.Option(None, "--manifest", help="Split manifest (CSV) every row uses."),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Initial weights: none | offline | hub."),
    head: str | None = typer.Option(None, "--head", help="Head for every trained row without /HEAD (default linear)."),
    freeze_backbone: bool = typer.Option(
        False, "--freeze-backbone", "--freeze-members", help="Train rows' heads only (backbones/members stay frozen)."
    ),
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
    """Compare backbones and variants (heads, fusion, ensembles): Table 1 + AUC, EER, size, GFLOPs, latency; plot."""

    setup_logging(verbose)
    from dfdetect.analysis.compare import parse_row, run_comparison
    from dfdetect.core.config import TrainConfig
    from dfdetect.models.registry import UnknownModelError

    names = [m.strip() for m in models.split(",") if m.strip()]
    rows: list[tuple[str, Path]] = []
    for spec in checkpoint or []:
        row, sep, path = spec.partition("=")
        if not sep or not row or not path:
            fail(f"--checkpoint takes NAME=PATH, not {spec!r}")
        rows.append((row.strip(), Path(path.strip())))
    methods = [m.strip() for m in ensembles.split(",") if m.strip()]
    members = [m.strip() for m in ensemble_of.split(",") if m.strip()] or None
    if not names and not runs and not rows:
        fail("give --models a,b,c and/or --runs RUN_DIR and/or --checkpoint NAME=PATH")
    if metric not in ("accuracy", "roc_auc", "f1", "precision", "recall"):
        fail(f"--metric must be accuracy, roc_auc, f1, precision or recall, not {metric!r}")
    try:
        for n in names:
            parse_row(n)
    except (UnknownModelError, ValueError) as e:
        fail(str(e))
    cfg = TrainConfig.load_yaml(config) if config else TrainConfig()
    try:
        cfg.apply_overrides(given_settings(ctx, COMPARE_ONLY_FLAGS))
    except ValueError as e:
        fail(str(e))
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
            checkpoints=rows,
            ensembles=methods,
            ensemble_of=members,
            manifest=manifest,
        )
    except EXPECTED_ERRORS as e:
        fail(str(e))
    typer.echo((out / "table.md").read_text())
    plot = out / "pareto.png"
    typer.echo(f"wrote {out / 'table.md'}, {out / 'table.csv'}" + (f", {plot}" if plot.is_file() else ""))


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
