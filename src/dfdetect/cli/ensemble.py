"""``dfdetect ensemble``: combine trained checkpoints into one ensemble checkpoint (mean | weighted | stacking).

Attention heads and multi-scale fusion need no command of their own: ``dfdetect train --head attention``.
Only typer and pathlib are imported at top level.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dfdetect.cli.common import device_option, fail, setup_logging


def ensemble_cmd(
    checkpoints: list[Path] = typer.Argument(..., help="Two or more checkpoints (best.pt) to combine."),
    data: Path = typer.Option(..., "--data", "-d", help="Data folder the manifest's paths are relative to."),
    out: Path = typer.Option(..., "--out", "-o", help="Ensemble checkpoint to write (e.g. ensemble.pt)."),
    method: str = typer.Option("mean", "--method", help="mean | weighted | stacking."),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Split manifest whose valid split fits weights (default: first member's split.csv)."
    ),
    threshold: str = typer.Option("0.5", help="Stored threshold: number | eer | f1 | fpr1 (on validation)."),
    device: str = device_option(),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    workers: int = typer.Option(2, min=0, help="DataLoader workers."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Ensemble trained checkpoints; weights/stacker fitted on validation scores; usable by evaluate and predict."""

    setup_logging(verbose)
    from dfdetect.engine.ensemble import build_ensemble
    from dfdetect.models.checkpoint import CheckpointError

    try:
        res = build_ensemble(checkpoints, data, out, method, manifest, threshold, device, batch_size, workers)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(f"{res['path']}  method={res['method']}  weights={[round(w, 4) for w in res['weights']]}")
    if res["method"] == "stacking":
        typer.echo(f"intercept={res['intercept']:.4f}")
    typer.echo(
        f"valid: ensemble acc {res['ensemble']['accuracy']:.4f} AUC {res['ensemble']['roc_auc']:.4f}; members AUC "
        + ", ".join(f"{m['roc_auc']:.4f}" for m in res["members"])
    )


def register(app: typer.Typer) -> None:
    app.command("ensemble")(ensemble_cmd)
