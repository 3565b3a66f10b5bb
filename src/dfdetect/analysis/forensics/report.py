"""Self-contained HTML reports: one page per image (every picture an embedded PNG data URI, no external
CSS/JS/fonts, so it opens offline in any browser), plus ``index.html`` for a batch.

All text that comes from a file (names, metadata, flag messages quoting metadata) goes through
``html.escape``: metadata is attacker-controlled.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dfdetect.analysis.forensics.analysis import ForensicAnalysis
from dfdetect.analysis.forensics.render import data_uri
from dfdetect.core.labels import verdict

log = logging.getLogger(__name__)

DISCLAIMER = (
    "Every finding on this page is an indicator, not proof. The model's score is a statistical estimate with "
    "known error rates; metadata can be stripped or forged; ELA, noise and spectrum react to ordinary "
    "processing (resizing, re-saving, filters) as well as to manipulation. Conclusions need several agreeing "
    "indicators and human judgement."
)
EXPLAIN = {
    "ela": "Error level analysis: the image re-saved as JPEG at quality {q}, absolute difference amplified. "
    "Regions with a different compression history than their surroundings can look brighter or darker; "
    "edges and fine texture are always bright.",
    "noise": "Noise residual (image minus 3x3 median, left) and its local variance per 16x16 block (right). "
    "Camera noise is roughly even; a region with clearly different noise can come from elsewhere.",
    "spectrum": "Centred log-magnitude spectrum. Isolated bright dots away from the centre and axes are "
    "periodic patterns (generator up-sampling, resizing, JPEG 8x8 grid); natural photos fade smoothly.",
    "cam": "Where the model looked (class activation map for the 'fake' class): not a map of manipulated pixels.",
    "cam_face": "Where the model looked in the deciding face's crop (class activation map for the 'fake' class): "
    "not a map of manipulated pixels.",
    "faces": "Face mode: every detected face, cropped and aligned like the training data and scored on its own. "
    "Box colour: red = P(fake) at or above the threshold, green = below; the thick box is the face that decided.",
}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d1d1f;
max-width:1150px}
h1{font-size:1.4em;word-break:break-all}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top;word-break:break-word}th{background:#f4f4f6}
.verdict{font-size:1.3em;font-weight:600;padding:8px 12px;border-radius:6px;display:inline-block}
.fake{background:#fde2e1;color:#8a1c14}.real{background:#e1f5e4;color:#17622b}.none{background:#eee;color:#444}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;font-size:.92em}
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}
figcaption{font-size:.85em;color:#444;max-width:640px}
.notable{color:#8a1c14;font-weight:600}.weak{color:#8a5a00}.info{color:#555}
footer{margin-top:2em;font-size:.8em;color:#666}
"""


@dataclass
class ModelResult:
    """What the detector said about one image (all None with --no-model)."""

    model_id: str | None = None
    arch: str | None = None
    score: float | None = None
    threshold: float | None = None
    label: str | None = None
    cam_png: str | None = None
    """data URI of the CAM panel, when available."""
    cam_note: str | None = None
    mode: str = "image"
    """'image' (the whole image was scored) or 'faces' (face mode: the most suspicious face decides)."""
    faces: list[dict[str, Any]] = field(default_factory=list)
    """Face mode: one row per face (``FaceScore.to_dict``: box, crop, score, aligned, roll, warnings)."""
    decided: int | None = None
    """Face mode: index of the deciding face in ``faces``."""
    decided_by: str | None = None
    warnings: list[str] = field(default_factory=list)
    overview_png: str | None = None
    """Face mode: data URI of the photo with the face boxes drawn."""


def e(x: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape("" if x is None else str(x), quote=True)


def report_name(a: ForensicAnalysis) -> str:
    """A safe file name, one per file: sanitized stem + first 10 hex digits of the content's SHA-256 + 6 of the
    full path's (a/x.jpg and b/x.jpg with the same bytes get two pages)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(a.path).stem)[:60] or "image"
    where = hashlib.sha256(str(Path(a.path).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:6]
    return f"{stem}-{(a.sha256 or 'nohash')[:10]}-{where}.html"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def render_report(a: ForensicAnalysis, m: ModelResult, version: str, when: str | None = None) -> str:
    """The HTML text of one image's report."""
    when = when or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    name = Path(a.path).name
    parts = [
        f"<h1>Forensic report: {e(name)}</h1>",
        f"<p class='note'><b>Indicators, not proof.</b> {e(DISCLAIMER)}</p>",
    ]
    if m.score is not None:
        cls = "fake" if m.label == "fake" else "real"
        parts.append(
            f"<p><span class='verdict {cls}'>Model verdict: {e(m.label)} &mdash; P(fake) = {m.score:.4f}</span> "
            f"(threshold {m.threshold:.4f})</p>"
        )
        if m.mode == "faces":
            parts.append(f"<p><b>Face mode.</b> Decided by: {e(m.decided_by)} (the most suspicious face decides).</p>")
    else:
        parts.append("<p><span class='verdict none'>No model verdict (run without a model)</span></p>")
    parts.append("<h2>File</h2>")
    parts.append(
        _kv_table(
            [
                ("File name", name),
                ("Path", a.path),
                ("Size", f"{a.size_bytes:,} bytes" if a.size_bytes is not None else "?"),
                ("SHA-256", a.sha256),
                ("Dimensions", f"{a.width} x {a.height}"),
                ("Format", a.metadata.format if a.metadata else None),
                ("Analysed", when),
                ("Model", f"{m.model_id} ({m.arch})" if m.model_id else "none"),
                ("dfdetect version", version),
            ]
        )
    )
    if a.error:
        parts.append(f"<h2>Error</h2><p>{e(a.error)}</p>")
        return _page(f"dfdetect report: {name}", "\n".join(parts))
    if m.mode == "faces":
        parts.append(_faces_section(m))
    parts.append("<h2>Findings</h2>")
    if a.flags:
        parts.append(
            "<ul>"
            + "".join(
                f"<li class='{e(f.severity)}'>[{e(f.severity)}] {e(f.code)}: {e(f.message)}</li>" for f in a.flags
            )
            + "</ul>"
        )
    else:
        parts.append("<p>No flags raised (which does not mean the image is authentic).</p>")
    parts.append("<h2>Images</h2>")
    if a.image is not None:
        parts.append(_figure(data_uri(a.image), "The image as decoded (EXIF orientation applied)."))
    if m.cam_png:
        parts.append(_figure(m.cam_png, EXPLAIN["cam_face" if m.mode == "faces" and m.faces else "cam"]))
    elif m.cam_note:
        parts.append(f"<p class='note'>{e(m.cam_note)}</p>")
    if a.ela:
        parts.append(_figure(data_uri(a.ela.image()), EXPLAIN["ela"].format(q=a.ela.quality)))
    if a.noise:
        parts.append(_figure(data_uri(a.noise.image(), 1000), EXPLAIN["noise"]))
    if a.spectrum:
        parts.append(_figure(data_uri(a.spectrum.image()), EXPLAIN["spectrum"]))
    parts.append("<h2>Measurements</h2>")
    summ = a.summary()
    skip = {"path", "sha256", "size_bytes", "flags", "metadata", "width", "height", "format"}
    parts.append(_kv_table([(k, v) for k, v in summ.items() if k not in skip]))
    parts.append("<h2>Metadata</h2>")
    fields = a.metadata.fields if a.metadata else {}
    parts.append(_kv_table(sorted(fields.items())) if fields else "<p>No EXIF, XMP, ICC or text metadata.</p>")
    parts.append(f"<footer>dfdetect {e(version)} &middot; generated {e(when)} &middot; {e(DISCLAIMER)}</footer>")
    return _page(f"dfdetect report: {name}", "\n".join(parts))


def _faces_section(m: ModelResult) -> str:
    """Overview picture, one table row per face (box, size, P(fake), verdict, alignment, warnings), the rule."""
    out = ["<h2>Faces</h2>"]
    if m.overview_png:
        out.append(_figure(m.overview_png, EXPLAIN["faces"]))
    if m.warnings:
        out.append("<ul>" + "".join(f"<li class='weak'>{e(w)}</li>" for w in m.warnings) + "</ul>")
    if not m.faces:
        out.append("<p>No face found: the verdict above is the whole image's score.</p>")
        return "\n".join(out)
    thr = m.threshold if m.threshold is not None else 0.5
    rows = [
        "<table class='faces'><tr><th>#</th><th>Box (x, y, w, h)</th><th>Size (px)</th><th>P(fake)</th>"
        "<th>Verdict</th><th>Aligned</th><th>Warnings</th><th>Decides</th></tr>"
    ]
    for i, f in enumerate(m.faces):
        label = verdict(f["score"], thr)
        x, y, w, h = f["box"]
        roll = f.get("roll")
        aligned = ("yes" + (f" (tilt {roll:+.1f}&deg;)" if roll is not None else "")) if f.get("aligned") else "no"
        rows.append(
            f"<tr><td>{i + 1}</td><td>{e(f'{x}, {y}, {w}, {h}')}</td><td>{min(int(w), int(h))}</td>"
            f"<td>{float(f['score']):.4f}</td><td><span class='{label}'>{label}</span></td><td>{aligned}</td>"
            f"<td>{e('; '.join(f.get('warnings') or [])) or '&ndash;'}</td>"
            f"<td>{'<b>yes</b> (most suspicious)' if i == m.decided else ''}</td></tr>"
        )
    rows.append("</table>")
    out.append("".join(rows))
    out.append(
        f"<p>Image verdict rule: the most suspicious face decides (max of {len(m.faces)} face score(s)). "
        "Classic forensic analyses below are computed on the whole image.</p>"
    )
    return "\n".join(out)


def _figure(uri: str, caption: str) -> str:
    return f"<figure><img src='{e(uri)}' alt=''><figcaption>{e(caption)}</figcaption></figure>"


def render_index(rows: list[tuple[ForensicAnalysis, ModelResult, str | None]], version: str, when: str) -> str:
    """``rows``: (analysis, model result, report file name or None for unreadable files)."""
    body = [
        "<h1>dfdetect forensic reports</h1>",
        f"<p class='note'><b>Indicators, not proof.</b> {e(DISCLAIMER)}</p>",
        f"<p>{len(rows)} file(s), generated {e(when)} with dfdetect {e(version)}.</p>",
        "<table><tr><th>File</th><th>Verdict</th><th>P(fake)</th><th>Threshold</th><th>Faces</th><th>Flags</th>"
        "<th>SHA-256</th></tr>",
    ]
    seen = Counter(Path(a.path).name for a, _, _ in rows)
    for a, m, page in rows:
        name = Path(a.path).name
        if seen[name] > 1:  # the same name from several folders: show which folder
            name = f"{Path(a.path).parent.name}/{name}"
        link = f"<a href='{e(quote(page))}'>{e(name)}</a>" if page else e(name)
        if a.error:
            body.append(f"<tr><td>{link}</td><td colspan='6'>error: {e(a.error)}</td></tr>")
            continue
        verdict = f"<span class='{e(m.label)}'>{e(m.label)}</span>" if m.label else "&ndash;"
        score = f"{m.score:.4f}" if m.score is not None else "&ndash;"
        thr = f"{m.threshold:.4f}" if m.threshold is not None else "&ndash;"
        notable = [f.code for f in a.flags if f.severity != "info"]
        nfaces = str(len(m.faces)) + (" (max decides)" if m.faces else "") if m.mode == "faces" else "&ndash;"
        body.append(
            f"<tr><td>{link}</td><td>{verdict}</td><td>{score}</td><td>{thr}</td><td>{nfaces}</td>"
            f"<td>{e(', '.join(notable)) or '&ndash;'}</td><td><code>{e((a.sha256 or '')[:16])}</code></td></tr>"
        )
    body.append("</table>")
    return _page("dfdetect forensic reports", "\n".join(body))


def model_result(
    detector: Any, a: ForensicAnalysis, cam: bool = True, faces: bool | None = False, align: bool = True
) -> ModelResult:
    """Score the decoded image and, for torch detectors with ``dfdetect.analysis.explain`` installed, add the CAM panel.

    ``faces``: True = face mode (each face scored, the most suspicious decides, overview and per-face rows;
    the CAM is the deciding face's), None = the automatic rule of ``predict``, False = the whole image.
    """
    if detector is None or a.image is None:
        return ModelResult()
    thr = detector.threshold
    target = a.image
    m: ModelResult
    from dfdetect.runtime.pipeline import Options, predict_faces, predict_image, use_face_mode

    quality = a.jpeg.quality if a.jpeg is not None else None
    if use_face_mode(faces, a.image.size, detector.data_config):
        from dfdetect.faces import draw_faces

        r = predict_faces(detector, a.image, quality=quality, align=align)
        m = ModelResult(detector.model_id, detector.arch, round(r.score, 6), thr, r.label)
        m.mode, m.decided, m.decided_by, m.warnings = "faces", r.decided, r.decided_by, list(r.warnings)
        m.faces = [f.to_dict() for f in r.faces]
        m.overview_png = data_uri(draw_faces(a.image, r), 1000)
        if r.faces and r.decided is not None:
            target = r.crops[r.decided]
    else:
        p = predict_image(detector, a.image, str(a.path), Options(faces=False), quality=quality)
        m = ModelResult(detector.model_id, detector.arch, p.score, thr, p.label)
        m.warnings = list(p.warnings)
    if not cam:
        m.cam_note = "Class activation map skipped (--no-cam)."
        return m
    if (runtime := getattr(detector.backend, "name", "")) != "torch":
        m.cam_note = f"No class activation map: the model runs on {runtime} (load a .pt/.safetensors for CAMs)."
        return m
    try:
        from dfdetect.analysis.explain import explain_image
    except ImportError:
        m.cam_note = "No class activation map: dfdetect.analysis.explain is not available in this installation."
        return m
    try:
        m.cam_png = data_uri(explain_image(detector, target).panel(target), 1000)
    except (RuntimeError, ValueError) as err:
        log.warning("%s: CAM failed (%s)", a.path, err)
        m.cam_note = f"Class activation map failed: {err}"
    return m


def write_reports(
    paths: list[str | Path],
    out_dir: str | Path,
    detector: Any = None,
    ela_quality: int = 90,
    cam: bool = True,
    faces: bool | None = False,
    align: bool = True,
) -> tuple[Path, list[tuple[ForensicAnalysis, ModelResult, str | None]]]:
    """Analyse ``paths`` (files), write one report per file and ``index.html`` into ``out_dir``.

    ``faces``: face mode per image (True), the automatic rule (None) or whole images only (False)."""
    from dfdetect.analysis.forensics.analysis import analyze_file
    from dfdetect.core.version import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[ForensicAnalysis, ModelResult, str | None]] = []
    for p in paths:
        a = analyze_file(p, ela_quality)
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if a.error:
            log.warning("skipping %s", a.error)
            rows.append((a, ModelResult(), None))
            continue
        m = model_result(detector, a, cam, faces, align)
        page = report_name(a)
        (out / page).write_text(render_report(a, m, __version__, when), encoding="utf-8")
        a.image = None  # free pixels as we go; a batch can be large
        a.ela = a.noise = a.spectrum = None
        rows.append((a, m, page))
    index = out / "index.html"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    index.write_text(render_index(rows, __version__, when), encoding="utf-8")
    return index, rows
