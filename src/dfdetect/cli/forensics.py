"""CLI verbs for classic forensics: ``dfdetect analyze`` (numbers and flags) and ``dfdetect report`` (HTML).

Only typer and pathlib at import time: numpy, Pillow and the analyses load inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dfdetect.cli.common import EXPECTED_ERRORS, device_option, fail, setup_logging


def _files(paths: list[str]) -> list[Path]:
    from dfdetect.runtime.detector import expand_paths

    files, missing = expand_paths(paths)
    for m in missing:
        typer.secho(f"{m}: no such file, folder or glob match", fg=typer.colors.YELLOW, err=True)
    if not files:
        fail("no input files")
    return files


def analyze(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines, one per image (scalars, flags, metadata)."),
    ela_quality: int = typer.Option(90, "--ela-quality", min=1, max=100, help="JPEG quality for ELA."),
) -> None:
    """Classic forensics per image: JPEG quality, ELA, noise, spectrum and metadata flags (indicators, not proof)."""
    import json
    import logging

    from dfdetect.analysis.forensics import analyze_file

    setup_logging(level=logging.WARNING)
    files = _files(paths)
    n_ok = 0
    if not as_json:
        typer.echo(f"{'path':<40} {'q':>4} {'ELA':>6} {'noiseCV':>8} {'peak':>8} {'2xJPG':>6}  flags")
    for p in files:
        a = analyze_file(p, ela_quality)
        if as_json:
            typer.echo(json.dumps(a.summary(), default=str))
        elif a.error:
            typer.echo(f"{str(p):<40} ERROR {a.error}")
        else:
            s = a.summary()
            q = s.get("jpeg_quality")
            dbl = s.get("jpeg_double_compression_hint")
            codes = ",".join(f.code for f in a.flags if f.severity != "info") or "-"
            typer.echo(
                f"{str(p):<40} {q if q is not None else '-':>4} {s['ela_block_inconsistency']:>6.2f} "
                f"{s['noise_block_var_cv']:>8.2f} {s['spectrum_peak_ratio']:>8.1f} "
                f"{'yes' if dbl else ('-' if dbl is None else 'no'):>6}  {codes}"
            )
        n_ok += a.error is None
    if not as_json:
        typer.echo(f"{n_ok} analysed, {len(files) - n_ok} unreadable. Findings are indicators, not proof.")
    if n_ok == 0:
        raise typer.Exit(1)


def report(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the HTML reports and index.html."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint, or a shipped model: default | large."),
    no_model: bool = typer.Option(False, "--no-model", help="Forensics only: no verdict, no CAM."),
    no_cam: bool = typer.Option(False, "--no-cam", help="Skip the class activation map (faster)."),
    device: str = device_option(),
    ela_quality: int = typer.Option(90, "--ela-quality", min=1, max=100),
    faces: bool | None = typer.Option(
        None,
        "--faces/--no-faces",
        help="Face mode: score each face (the most suspicious decides), overview with boxes, per-face table. "
        "Default: automatic, as in `predict` (shorter side > 2x the model input, or not square).",
    ),
    align: bool = typer.Option(True, "--align/--no-align", help="Face mode: level the eyes before cropping."),
) -> None:
    """Self-contained HTML report per image (verdict, CAM, ELA, noise, spectrum, metadata) plus index.html.

    In face mode the verdict is the most suspicious face's; the forensic analyses stay whole-image."""
    import logging

    from dfdetect.analysis.forensics.report import write_reports

    setup_logging(level=logging.WARNING)
    files = _files(paths)
    det = None
    if not no_model:
        from dfdetect.runtime.detector import Detector

        # The CAM needs the torch model; without it the automatic backend scores the same (fp32) without
        # importing torch, which alone is ~0.5-0.7 GB of RSS.
        onnx_file = model is not None and model.suffix == ".onnx"
        backend = "onnx" if onnx_file else ("auto" if no_cam else "torch")
        try:
            det = Detector.load(model, device=device, backend=backend)
        except FileNotFoundError as e:
            hint = " (pass --model CKPT, or --no-model for forensics only)" if model is None else ""
            fail(f"{e}{hint}")
        except EXPECTED_ERRORS as e:
            fail(str(e))
    if faces and det is not None:
        from dfdetect.faces import faces_available

        if (why := faces_available()) is not None:
            fail(why)
    index, rows = write_reports(files, out, det, ela_quality, cam=not no_cam, faces=faces, align=align)
    for a, m, page in rows:
        if a.error:
            typer.echo(f"{a.path}: ERROR {a.error}")
        else:
            verdict = f"{m.label} {m.score:.4f}" if m.score is not None else "no model"
            if m.mode == "faces":
                verdict += f" (face mode: {m.decided_by})"
            typer.echo(f"{a.path}: {verdict} -> {Path(out) / page}")
    n_ok = sum(a.error is None for a, _, _ in rows)
    typer.echo(f"{n_ok} report(s), {len(rows) - n_ok} unreadable; index: {index}")
    if n_ok == 0:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
    app.command("report")(report)
