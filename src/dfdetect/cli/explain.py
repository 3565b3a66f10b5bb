"""``dfdetect explain PATH... --out DIR``: heat maps that show where the detector's evidence for 'fake' lies.

Per image: ``<stem>_gradcam.png``, ``<stem>_gradcampp.png``, ``<stem>_saliency.png``, ``<stem>_activations.png``
(overlays at the original resolution), ``<stem>_maps.npz`` (the raw maps) and ``<stem>_panel.png`` (side by side,
verdict in the title). Face mode (``--faces`` / automatic): a ``<stem>_faces.png`` overview plus those files per
face as ``<stem>_face<i>_*`` (1-based). Only typer and pathlib are imported at top level so ``dfdetect --help``
stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dfdetect.cli.common import EXPECTED_ERRORS, device_option, fail, setup_logging


def explain_cmd(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created if needed)."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint or shipped model (default | large)."),
    methods: list[str] | None = typer.Option(
        None,
        "--methods",
        help="Maps to compute, comma-separated or repeated: gradcam, gradcam++, saliency, activations [default: all].",
    ),
    smoothgrad: int = typer.Option(0, "--smoothgrad", help="SmoothGrad samples for the saliency map (0 = vanilla)."),
    top_k: int = typer.Option(9, "--top-k", help="How many last-stage activation channels to show."),
    sanity: bool = typer.Option(False, "--sanity", help="Also compare with random weights (Adebayo et al.)."),
    no_panel: bool = typer.Option(False, "--no-panel", help="Skip the side-by-side panel PNG."),
    device: str = device_option(),
    faces: bool | None = typer.Option(
        None,
        "--faces/--no-faces",
        help="Face mode: explain each detected face crop and draw an overview. Default: automatic, as in "
        "`predict` (shorter side > 2x the model input, or not square).",
    ),
    min_face: int = typer.Option(40, help="Face mode: smallest face box (px) to detect."),
    align: bool = typer.Option(True, "--align/--no-align", help="Face mode: level the eyes before cropping."),
) -> None:
    """Explain verdicts: Grad-CAM, Grad-CAM++, saliency and activation maps as overlays, raw maps and a panel.

    The maps show where the network's evidence for 'fake' is concentrated; they do not prove manipulation.
    Face mode (``--faces``, or automatic for large / non-square photos): ``<stem>_faces.png`` shows every face's
    box and P(fake) with the deciding (most suspicious) face marked, and each face crop gets its own files,
    ``<stem>_face1_panel.png``, ``<stem>_face2_panel.png``, ... Exit code 1 when no image could be explained,
    2 when a path does not exist or the model cannot be loaded.
    """
    import logging
    import sys

    setup_logging()
    from tqdm.auto import tqdm

    from dfdetect.data.io import ImageLoadError

    try:
        from dfdetect.analysis.explain import (
            explain_faces,
            explain_image,
            explain_refusal,
            format_sanity,
            normalize_methods,
            randomization_check,
            randomized_model,
        )
    except ModuleNotFoundError as e:
        if e.name != "pytorch_grad_cam":
            raise
        fail(str(e))
    from dfdetect.runtime.detector import Detector
    from dfdetect.runtime.pipeline import image_warnings, read_file, scan_inputs

    log = logging.getLogger("dfdetect")
    try:
        wanted = normalize_methods(methods)
    except ValueError as e:
        fail(str(e))
    if smoothgrad < 0 or top_k < 1:
        fail("--smoothgrad must be >= 0 and --top-k >= 1")
    scanned = scan_inputs(paths)
    files, missing = scanned.files, scanned.missing
    for where, why in scanned.skipped:  # as predict lists them: nothing in a folder is left out unsaid
        typer.echo(f"skipped: {where}: {why}", err=True)
    if missing:
        fail(f"no such file, folder or glob match: {', '.join(missing)}")
    if not files:
        fail("no image files found", code=1)
    try:
        det = Detector.load(model, device=device, backend="torch")
    except FileNotFoundError as e:
        hint = "" if model else " (pass --model CKPT, a .pt from `dfdetect train` or a .safetensors)"
        fail(f"{e}{hint}")
    except EXPECTED_ERRORS as e:
        fail(str(e))
    if (why := explain_refusal(det)) is not None:
        fail(why)
    out.mkdir(parents=True, exist_ok=True)

    from dfdetect.faces import faces_available
    from dfdetect.runtime.pipeline import use_face_mode

    if faces and (why := faces_available()) is not None:
        fail(why)
    rand = randomized_model(det) if sanity else None
    used: set[str] = set()
    n_ok = 0
    with tqdm(total=len(files), desc="explain", unit="img", disable=len(files) < 2, file=sys.stderr) as bar:
        for path in files:
            bar.set_postfix_str(path.name, refresh=False)
            try:
                d = read_file(path)  # the predict pipeline's one read: image, JPEG quality, or the error
                if d.image is None:
                    raise ImageLoadError(d.error)
                img = d.image
                stem = _unique_stem(path, used)
                if use_face_mode(faces, img.size, det.data_config):
                    fx = explain_faces(
                        det, img, wanted, smoothgrad_samples=smoothgrad, top_k=top_k, min_face=min_face, align=align
                    )
                    written = fx.save(out, stem, panel=not no_panel)
                    lines = [f"{path}  {fx.summary()}", "  -> " + ", ".join(p.name for p in written)]
                else:
                    exp = explain_image(det, img, wanted, smoothgrad_samples=smoothgrad, top_k=top_k)
                    written = exp.save(out, stem, img, panel=not no_panel)
                    lines = [f"{path}  {exp.label}  P(fake)={exp.score:.4f}  -> {', '.join(p.name for p in written)}"]
                    lines += [f"  warning: {w}" for w in image_warnings(img, d.quality, det.data_config)]
                if sanity:
                    lines.append("  " + format_sanity(randomization_check(det, img, random_model=rand)))
            except ImageLoadError as e:
                tqdm.write(f"error: {e}", file=sys.stderr)
            except (RuntimeError, ValueError, OSError) as e:
                log.debug("explain failed", exc_info=True)
                tqdm.write(f"error: {path}: {type(e).__name__}: {e}", file=sys.stderr)
            else:
                n_ok += 1
                tqdm.write("\n".join(lines), file=sys.stdout)
            bar.update(1)
    tqdm.write(
        f"{n_ok} explained, {len(files) - n_ok} failed, {len(scanned.skipped)} skipped; model {det.model_id}, "
        f"threshold {det.threshold:.4f}; files in {out}",
        file=sys.stdout,
    )
    if n_ok == 0:
        raise typer.Exit(1)


def _unique_stem(path: Path, used: set[str]) -> str:
    """The file's stem; on a clash (same name in two folders) prefixed by its folder, then numbered."""
    stem = path.stem
    if stem in used:
        stem = f"{path.parent.name}_{path.stem}"
    base, i = stem, 2
    while stem in used:
        stem = f"{base}_{i}"
        i += 1
    used.add(stem)
    return stem


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_cmd)
