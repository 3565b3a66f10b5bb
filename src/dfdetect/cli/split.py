"""``dfdetect split``: one seeded split manifest over several data folders, near-duplicates kept together."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from dfdetect.cli.common import setup_logging

log = logging.getLogger("dfdetect")


def split_cmd(
    data: list[Path] = typer.Option(..., "--data", "-d", help="Data folders ROOT/{real,fake}, side by side; repeat."),
    out: Path = typer.Option(Path("split.csv"), "--out", "-o", help="Manifest to write (CSV)."),
    val_fraction: float = typer.Option(0.15, help="Share of each folder and label for validation."),
    test_fraction: float = typer.Option(0.15, help="Share of each folder and label for the test split."),
    seed: int = typer.Option(42, help="Seed of the split: same folders and seed, same manifest."),
    max_distance: int = typer.Option(4, help="Perceptual-hash Hamming distance that makes two images one group."),
    keep: Path | None = typer.Option(
        None, help="Earlier manifest whose images keep their split (fine-tune a model trained on it without leaks)."
    ),
    workers: int = typer.Option(4, min=0, help="Threads for hashing."),
) -> None:
    """Split several folders into train/valid/test, stratified by folder and label; near-twins never straddle.

    Writes the manifest (paths relative to the folders' parent, with source and group columns) and
    SPLIT.json beside it (counts, groups, hash). Train with --data PARENT --manifest OUT."""
    setup_logging()
    from dfdetect.data.datasets import DataLayoutError
    from dfdetect.data.split import make_split, write_split_manifest

    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        typer.secho("error: --val-fraction and --test-fraction must be in [0, 1) and sum below 1", err=True, fg="red")
        raise typer.Exit(2)
    try:
        root, rep = make_split(data, val_fraction, test_fraction, seed, max_distance, keep, workers)
    except (DataLayoutError, FileNotFoundError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
    digest = write_split_manifest(rep, out, root)
    summary = {
        "manifest": str(out),
        "sha256": digest,
        "root": str(root),
        "folders": [str(d) for d in data],
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "max_distance": max_distance,
        "kept_from": str(keep) if keep else None,
        "n_images": len(rep.items),
        "n_groups": rep.n_groups,
        "n_near_duplicate_groups": rep.n_multi_groups,
        "n_images_in_near_duplicate_groups": rep.n_grouped_images,
        "n_cross_folder_groups": rep.n_cross_folder_groups,
        "n_pinned": rep.n_pinned,
        "n_undecodable": rep.n_unhashed,
        "counts": rep.counts,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    typer.echo(f"{'folder/class':<28}{'train':>7}{'valid':>7}{'test':>7}")
    for key, c in sorted(rep.counts.items()):
        typer.echo(f"{key:<28}{c['train']:>7}{c['valid']:>7}{c['test']:>7}")
    tot = {s: sum(c[s] for c in rep.counts.values()) for s in ("train", "valid", "test")}
    typer.echo(f"{'all':<28}{tot['train']:>7}{tot['valid']:>7}{tot['test']:>7}")
    typer.echo(
        f"{rep.n_groups} groups; {rep.n_multi_groups} near-duplicate groups holding {rep.n_grouped_images} images "
        f"({rep.n_cross_folder_groups} spanning folders); {rep.n_pinned} images kept from {keep or '-'}; "
        f"wrote {out} (sha256 {digest[:16]})"
    )


def register(app: typer.Typer) -> None:
    app.command("split")(split_cmd)
