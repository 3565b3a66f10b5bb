"""``dfdetect robustness``, ``dfdetect audit`` and ``dfdetect calibrate``: what one accuracy number hides."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from dfdetect.cli.common import device_option, fail, setup_logging, threshold_option

log = logging.getLogger("dfdetect")


def robustness_cmd(
    models: list[Path] = typer.Argument(
        ..., help="Checkpoint(s) (.pt), shipped .safetensors or exported .onnx; several are compared side by side."
    ),
    data: Path = typer.Option(..., "--data", "-d", help="Data folder: ROOT/{real,fake} or the 140k layout."),
    split: str = typer.Option("test", help="Which split to perturb when the data, manifest or run has splits."),
    manifest: Path | None = typer.Option(None, help="Split manifest (CSV) to take the split from."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: beside the model)."),
    conditions: list[str] | None = typer.Option(
        None, "--conditions", "-c", help="Conditions or families to run (comma-separated or repeated; default: all)."
    ),
    limit_per_class: int | None = typer.Option(None, help="At most N images per class (quick runs)."),
    threshold: float | None = typer.Option(
        None, help="Override the model's stored threshold.", callback=threshold_option
    ),
    device: str = device_option(),
    backend: str = typer.Option("auto", help="auto | torch | onnx | openvino"),
    batch_size: int = typer.Option(32, min=1),
    workers: int = typer.Option(2, min=0, help="Threads for decoding and perturbing."),
    seed: int = typer.Option(0, help="Base seed for the noise conditions."),
) -> None:
    """Perturbation sweep: JPEG, resizing, blur, noise, crop and a format control; metrics per condition.

    With several models, each gets its own sub-folder and compare.md/csv/png put them side by side."""
    setup_logging()
    from dfdetect.analysis.robustness.perturb import select_conditions
    from dfdetect.analysis.robustness.sweep import (
        format_compare_table,
        format_table,
        model_labels,
        run_sweep,
        write_compare,
    )
    from dfdetect.data.datasets import DataLayoutError
    from dfdetect.models.checkpoint import CheckpointError

    target = out or models[0].parent / f"robustness_{data.name}_{split}"
    labels = model_labels(models)
    results, metas = {}, {}
    try:
        conds = select_conditions(conditions)
        for model, label in zip(models, labels):
            folder = target if len(models) == 1 else target / label
            settings = {
                "data": str(data),
                "split": split,
                "seed": seed,
                "limit_per_class": limit_per_class,
                "threshold_override": threshold,
            }
            done = _finished_sweep(folder, model, [c.name for c in conds], settings)
            if done is not None and len(models) > 1:
                log.info("%s: reusing the finished sweep in %s", model, folder)
                results[label], metas[label] = done["rows"], done["meta"]
                continue
            res = run_sweep(
                model,
                data,
                folder,
                split=split,
                manifest=manifest,
                conditions=conds,
                limit_per_class=limit_per_class,
                threshold=threshold,
                device=device,
                backend=backend,
                batch_size=batch_size,
                workers=workers,
                seed=seed,
                progress=sys.stderr.isatty(),
            )
            results[label], metas[label] = res["rows"], res["meta"]
    except (CheckpointError, DataLayoutError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    if len(models) == 1:
        typer.echo(format_table(results[labels[0]]))
    else:
        write_compare(results, target, metas)
        typer.echo(format_compare_table(results))
    typer.echo(f"-> {target}")


def _finished_sweep(folder: Path, model: Path, conditions: list[str], settings: dict) -> dict | None:
    """A sweep already written to ``folder`` for the same model file (unchanged since), data, split, seed and
    conditions, so a multi-model comparison can be resumed or extended without re-scoring."""
    import json

    f = folder / "robustness.json"
    if not f.is_file() or f.stat().st_mtime < model.stat().st_mtime:
        return None
    try:
        done = json.loads(f.read_text())
        meta, rows = done["meta"], done["rows"]
    except (OSError, ValueError, KeyError):
        return None
    same = (
        meta.get("model") == str(model)
        and all(meta.get(k, "missing") == v for k, v in settings.items())
        and [r["condition"] for r in rows] == conditions
    )
    return done if same else None


def audit_cmd(
    data: Path = typer.Argument(..., help="Data folder: ROOT/{real,fake} or the 140k layout."),
    manifest: Path | None = typer.Option(None, help="Split manifest (CSV), e.g. a run's split.csv."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: ./audit_<folder name>)."),
    max_distance: int = typer.Option(4, "--max-distance", "-k", help="Near-duplicate: phash Hamming distance <= k."),
    warn_at: float = typer.Option(0.9, help="Warn when one statistic separates the classes at this AUC or more."),
    limit_per_class: int | None = typer.Option(None, help="At most N images per class and split."),
    workers: int = typer.Option(4, min=0, help="Threads for decoding and hashing."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 when there is any warning."),
) -> None:
    """Leakage audit: near-duplicates across splits and per-class format statistics (JPEG quality, size, ...)."""
    setup_logging()
    from dfdetect.analysis.robustness.audit import run_audit
    from dfdetect.data.datasets import DataLayoutError

    target = out or Path(f"audit_{data.resolve().name}")
    try:
        r = run_audit(data, target, manifest, max_distance, warn_at, workers, limit_per_class, sys.stderr.isatty())
    except (DataLayoutError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    nd = r["near_duplicates"]
    typer.echo(
        f"{r['n_decoded']} images audited ({r['splits']}); {nd['n_pairs']} near-duplicate pair(s), "
        f"{nd['n_across_splits']} across splits"
    )
    for w in r["warnings"]:
        typer.echo(f"WARNING: {w}")
    typer.echo(f"-> {target}/audit.md")
    if strict and r["warnings"]:
        raise typer.Exit(1)


def calibrate_cmd(
    checkpoint: Path = typer.Argument(
        ..., help="Checkpoint from `dfdetect train` (best.pt), .safetensors, or a shipped name (default | large)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="New checkpoint (default: <name>_calibrated.<ext> beside it; ./ for a shipped one)."
    ),
    target: str = typer.Option("fpr1", help="Threshold rule on validation: fpr1 | eer | f1 | NUMBER."),
    data: Path | None = typer.Option(None, "--data", "-d", help="Data folder (default: the manifest's root)."),
    manifest: Path | None = typer.Option(None, help="Split manifest (default: split.csv beside the checkpoint)."),
    rescore: bool = typer.Option(False, "--rescore", help="Score the validation split even if scores are stored."),
    device: str = device_option(),
) -> None:
    """Temperature scaling and a calibrated threshold, fitted on validation and stored in a new checkpoint."""
    setup_logging()
    from dfdetect.engine.calibration import calibrate_checkpoint
    from dfdetect.models.checkpoint import CheckpointError
    from dfdetect.runtime.detector import model_file, shipped_name

    name = shipped_name(checkpoint)
    if name:  # never write into the installed package; its split.csv beside the weights names the validation rows
        checkpoint, out = model_file(name), out or Path(f"{name}_calibrated.safetensors")
    if target not in ("fpr1", "eer", "f1"):
        try:
            float(target)
        except ValueError:
            fail(f"--target must be fpr1, eer, f1 or a number, not {target!r}")
    try:
        r = calibrate_checkpoint(checkpoint, out, target, data, manifest, rescore, device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(
        f"temperature {r['temperature']:.4f}, threshold {r['threshold']:.4f} ({target}) on {r['n']} validation images "
        f"({r['source']})\n"
        f"NLL {r['nll_before']:.4f} -> {r['nll_after']:.4f}; ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f}\n"
        f"-> {r['checkpoint']} (reliability diagram: {r['reliability_png']})"
    )
    for w in r["warnings"]:
        typer.echo(f"WARNING: {w}")


def register(app: typer.Typer) -> None:
    app.command("robustness")(robustness_cmd)
    app.command("audit")(audit_cmd)
    app.command("calibrate")(calibrate_cmd)
