"""``dfdetect faces`` (one row per face in photos) and ``dfdetect video`` (sampled frames, per-video verdict).

Only typer, json and pathlib at top level; OpenCV and the model load inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from dfdetect.cli.common import EXPECTED_ERRORS, fail, setup_logging, threshold_option


def faces_cmd(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint, or a shipped model: default | large."),
    threshold: float | None = typer.Option(
        None, help="Override the model's stored threshold.", callback=threshold_option
    ),
    min_face: int = typer.Option(40, help="Smallest face box (px) to detect."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines, one per image."),
    backend: str = typer.Option("auto", help="auto | torch | onnx | openvino"),
    align: bool = typer.Option(True, "--align/--no-align", help="Level the eyes before cropping (docs/faces.md)."),
) -> None:
    """Find every face, score each with training-matched framing; the most suspicious face decides per image."""

    setup_logging()
    from dfdetect.runtime.detector import Detector

    try:
        det = Detector.load(model, backend=backend)
        preds = det.predict(paths, threshold=threshold, faces=True, min_face=min_face, align=align)
    except EXPECTED_ERRORS as e:
        fail(str(e))
    for p in preds:
        if as_json:
            typer.echo(json.dumps(p.to_dict()))
        elif p.error:
            typer.echo(f"{p.path}: {'SKIPPED' if p.mode == 'skipped' else 'ERROR'} {p.error}")
        else:
            typer.echo(f"{p.path}: {p.label} {p.score:.4f}  (decided by {p.decided_by})")
            for i, f in enumerate(p.faces, 1):
                tilt = f" (tilt {f['roll']:+.1f} deg)" if f.get("roll") is not None else ""
                aligned = f"aligned{tilt}" if f.get("aligned") else "not aligned"
                typer.echo(f"  face {i}  box {f['box']}  P(fake) {f['score']:.4f}  {aligned}")
                for w in f.get("warnings") or []:
                    typer.echo(f"    face {i}: {w}")
            for w in p.warnings:
                typer.echo(f"  warning: {w}")
    if not any(p.error is None for p in preds):
        raise typer.Exit(1)


def video_cmd(
    files: list[Path] = typer.Argument(..., help="Video files (mp4, avi, webm, mov ... whatever OpenCV decodes)."),
    fps: float = typer.Option(1.0, "--fps", help="Frames to sample per second of video."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for <video>.frames.csv and <video>.scores.png."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint, or a shipped model: default | large."),
    threshold: float | None = typer.Option(
        None, help="Override the model's stored threshold.", callback=threshold_option
    ),
    min_face: int = typer.Option(40, help="Smallest face box (px) to detect."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines, one per video."),
    backend: str = typer.Option("auto", help="auto | torch | onnx | openvino"),
    align: bool = typer.Option(True, "--align/--no-align", help="Level the eyes before cropping (docs/faces.md)."),
) -> None:
    """Score videos: face mode on frames sampled at --fps; per video the mean/max face score and fake-frame share."""

    setup_logging()
    from dfdetect.runtime.detector import Detector
    from dfdetect.runtime.video import analyze_video

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    if fps <= 0:
        fail("--fps must be > 0")
    try:
        det = Detector.load(model, backend=backend)
        results = []
        for f in files:
            r = analyze_video(
                det,
                f,
                sample_fps=fps,
                out_dir=out,
                threshold=threshold,
                min_face=min_face,
                align=align,
                progress=not as_json and sys.stderr.isatty(),
            )
            results.append(r)
            if as_json:
                typer.echo(json.dumps(r.to_dict()))
            elif r.error:
                typer.echo(f"{r.path}: ERROR {r.error}")
            else:
                verdict = r.label or "no face"
                stats = (
                    f"mean {r.mean_score:.4f}  max {r.max_score:.4f}  fake frames {r.fake_fraction:.0%}"
                    if r.mean_score is not None
                    else "no scores"
                )
                typer.echo(
                    f"{r.path}: {verdict}  {stats}  ({r.frames_scored}/{r.frames_sampled} sampled frames with a face, "
                    f"{r.duration_s:.1f} s, threshold {r.threshold:.4f})"
                )
                for w in r.warnings:
                    typer.echo(f"  warning: {w}")
    except EXPECTED_ERRORS as e:
        fail(str(e))
    if not any(r.error is None and r.mean_score is not None for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("faces")(faces_cmd)
    app.command("video")(video_cmd)
