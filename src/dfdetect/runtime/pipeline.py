"""The one predict path: inputs -> files (expanded once) -> each file read once -> whole image or faces (one rule)
-> preprocessing from the model's stored config -> one batched forward pass per chunk -> one ``Prediction``.

``Detector.predict`` / ``predict_image`` / ``predict_bytes``, the CLI's ``predict`` and ``faces``, ``explain``,
``report``, ``video`` and the REST API all come through here, so the same input gives the same record (same
keys, same score) whichever door it came in by. The scorer is anything with ``data_config``, ``threshold``,
``model_id``, ``preprocess(img)`` and ``score_batch(batch)`` (a ``Detector``, an ensemble detector, the server's
micro-batcher); this module imports neither torch nor any backend.

Nothing comes back as a bare verdict on something the model knows nothing about: every ``Prediction`` carries
``warnings`` (face mode found no face, image far smaller than the model input, far from square, heavy JPEG
re-compression, looks like noise rather than a photo, ...), and folder scans return a record for every entry
they skipped (not an image, a directory named like one, a broken link) instead of passing over it in silence.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from dfdetect.core.labels import verdict
from dfdetect.data.io import ImageLoadError, is_image_file, read_image, to_rgb
from dfdetect.faces.predict import (
    HEAVY_JPEG,
    MIN_FACE,
    SMALL_FACE,
    FaceCrop,
    FaceResult,
    FaceScore,
    auto_face_mode,
    face_crops,
    jpeg_quality,
)

log = logging.getLogger(__name__)

SMALL_IMAGE = 0.5
"""Whole-image scores of images whose shorter side is under this fraction of the model input get a warning."""
FAR_FROM_SQUARE = 1.25
"""Whole-image scores of images with a longer/shorter side ratio above this get a warning (training crops are
square; face mode turns on by itself past the same ratio, so this is seen with ``faces=False``)."""
NOISE_CORRELATION = 0.5
"""A photo's neighbouring pixels are strongly correlated (> 0.8 on the training faces); under this the image looks
like noise or a synthetic pattern, not a face photo."""
DECISION_RULE = "max"
"""How face scores become the image's score: the most suspicious face decides."""


class Scorer(Protocol):
    """What the pipeline needs of a model: its preprocessing, threshold, id and a batched P(fake)."""

    data_config: dict[str, Any]
    threshold: float
    model_id: str

    def preprocess(self, img: Image.Image) -> np.ndarray: ...

    def score_batch(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class Prediction:
    """One record per input, the same shape from the CLI (table, ``--json``, ``--csv``), Python and REST."""

    path: str
    sha256: str | None
    label: str | None
    """'fake' or 'real' (None when the file could not be scored)."""
    score: float | None
    """P(fake) in [0, 1]."""
    threshold: float
    model: str
    error: str | None = None
    """Why the file was not scored (unreadable, not an image, skipped by a folder scan)."""
    warnings: list[str] = field(default_factory=list)
    """What makes this score less trustworthy (empty when there is nothing to say)."""
    mode: str = "image"
    """image (the whole image was scored), faces (face mode), or skipped (a folder entry that is no image)."""
    decided_by: str = ""
    """Face mode: which face decided (the most suspicious one), or why the whole image was scored."""
    faces: list[dict[str, Any]] = field(default_factory=list)
    """Face mode: one row per face (box, crop, score, aligned, roll, warnings)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FacePrediction = Prediction
"""Face-mode records are ``Prediction`` rows with ``mode == "faces"`` (the separate class is gone)."""


# ---- inputs --------------------------------------------------------------------------------------------------
@dataclass
class InputScan:
    files: list[Path]
    """Files to score, in order (folders expanded recursively, globs sorted)."""
    missing: list[str]
    """Inputs that matched nothing (the caller decides: the CLI exits 2)."""
    skipped: list[tuple[str, str]]
    """(path, reason) of folder entries that are not scored: not an image file, directory named like an image,
    broken link."""


def scan_inputs(inputs: Iterable[str | Path]) -> InputScan:
    """Files, folders (recursive; image extensions) and globs -> files to score, missing inputs, skipped entries."""
    import glob

    files: list[Path] = []
    missing: list[str] = []
    skipped: list[tuple[str, str]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_symlink() and not q.exists():
                    skipped.append((str(q), "broken link"))
                elif q.is_dir():
                    if is_image_file(q):
                        skipped.append((str(q), "a directory named like an image"))
                elif is_image_file(q):
                    files.append(q)
                else:
                    skipped.append((str(q), f"not an image file ({q.suffix.lower() or 'no extension'})"))
        elif p.exists():
            files.append(p)
        elif p.is_symlink():
            missing.append(f"{raw} (broken link)")
        elif any(ch in str(raw) for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(str(raw), recursive=True) if Path(h).is_file())
            if hits:
                files.extend(hits)
            else:
                missing.append(str(raw))
        else:
            missing.append(str(raw))
    return InputScan(files, missing, skipped)


def expand_paths(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """(files to score, inputs that matched nothing): :func:`scan_inputs` without the skipped entries."""
    s = scan_inputs(inputs)
    return s.files, s.missing


# ---- one file ------------------------------------------------------------------------------------------------
@dataclass
class Decoded:
    """One input read once: its bytes' hash, the RGB image, its JPEG quality estimate, or the error."""

    name: str
    sha256: str | None
    image: Image.Image | None = None
    quality: int | None = None
    error: str | None = None


def decode_bytes(data: bytes, name: str) -> Decoded:
    """Hash and decode the same bytes; the JPEG quality comes from the same bytes' quantisation tables."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        img, tables = read_image(data)
    except ImageLoadError as e:
        return Decoded(name, sha, error=str(e).replace("<bytes>", name))
    return Decoded(name, sha, img, jpeg_quality(tables))


def read_file(path: Path) -> Decoded:
    try:
        data = path.read_bytes()
    except OSError as e:
        return Decoded(str(path), None, error=f"{path}: cannot read ({e.strerror})")
    return decode_bytes(data, str(path))


# ---- the face-mode rule (one place) ---------------------------------------------------------------------------
def parse_faces(faces: bool | str | None) -> bool | None:
    """``faces``: True/"on" forces face mode, False/"off" disables it, None/"auto" = the automatic rule."""
    if isinstance(faces, str):
        key = faces.strip().lower()
        table = {"auto": None, "on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
        if key not in table:
            raise ValueError(f"faces must be auto, on or off, not {faces[:40]!r}")
        return table[key]
    return faces


def use_face_mode(faces: bool | str | None, size: tuple[int, int], data_config: dict[str, Any]) -> bool:
    """Whether one image goes to face mode: forced on/off, or the automatic rule (much larger than the model
    input, or clearly not square). Automatic face mode also needs the face detector (:func:`faces_available`)."""
    f = parse_faces(faces)
    if f is not None:
        return f
    return auto_face_mode(size, data_config) and faces_available() is None


def faces_available() -> str | None:
    """None when face mode can run here, else why not (OpenCV 4.x with its Haar cascades is missing)."""
    from dfdetect.faces.detect import faces_available as available

    return available()


# ---- warnings ------------------------------------------------------------------------------------------------
def image_warnings(img: Image.Image, quality: int | None, data_config: dict[str, Any]) -> list[str]:
    """Why a whole-image score is less trustworthy: tiny, far from square, heavily re-compressed, noise-like."""
    out: list[str] = []
    w, h = img.size
    side = int(data_config["input_size"][-1])
    if min(w, h) < SMALL_IMAGE * side:
        out.append(
            f"image is {w}x{h} px, far smaller than the model input ({side} px): upsampled, the score is unreliable"
        )
    if max(w, h) > FAR_FROM_SQUARE * min(w, h):
        out.append(
            f"far from square ({max(w, h) / min(w, h):.2f}:1): the model was trained on square face crops "
            "(face mode finds and scores the faces)"
        )
    out += quality_warnings(quality)
    corr = neighbour_correlation(img)
    if corr is not None and corr < NOISE_CORRELATION:
        out.append(
            f"looks like noise or a pattern, not a photo (neighbouring-pixel correlation {corr:.2f}): "
            "outside what the model was trained on"
        )
    return out


def quality_warnings(quality: int | None) -> list[str]:
    if quality is not None and quality < HEAVY_JPEG:
        return [f"heavy JPEG compression (quality ~{quality} < {HEAVY_JPEG}): scores are less reliable"]
    return []


def neighbour_correlation(img: Image.Image, side: int = 64) -> float | None:
    """Correlation of horizontally adjacent pixels of a small grey copy (photos ~0.9+, white noise ~0)."""
    # Nearest-neighbour picking commutes with the per-pixel grey conversion, so shrinking first gives the same
    # array for a fraction of the work (a folder scan pays this for every image).
    g = np.asarray(img.resize((side, side), Image.Resampling.NEAREST).convert("L"), dtype=np.float64)
    a, b = g[:, :-1].ravel(), g[:, 1:].ravel()
    a, b = a - a.mean(), b - b.mean()
    saa, sbb = float(a @ a), float(b @ b)
    if saa < 1e-6 * a.size or sbb < 1e-6 * b.size:
        return None  # a flat image: no texture to judge
    return float(a @ b) / float(np.sqrt(saa * sbb))


# ---- face results --------------------------------------------------------------------------------------------
def face_result(
    crops: Sequence[FaceCrop],
    scores: Any,
    threshold: float,
    whole_score: float | None = None,
    quality: int | None = None,
    min_face: int = MIN_FACE,
    small_face: int = SMALL_FACE,
    align: bool = True,
) -> FaceResult:
    """Per-face rows, warnings and the image verdict (the most suspicious face decides) from scored crops.

    ``whole_score``: the whole image's score, used (with a warning) when ``crops`` is empty.
    """
    thr = float(threshold)
    warnings = quality_warnings(quality)
    if not crops:
        if whole_score is None:
            raise ValueError("no face found and no whole-image score given")
        warnings.append(f"no face found (frontal faces >= {min_face} px): scored the whole image instead")
        s = float(whole_score)
        return FaceResult([], s, verdict(s, thr), thr, "whole image (no face found)", warnings)
    faces = []
    for c, sc in zip(crops, scores):
        fw: list[str] = []
        side = min(c.box[2:])
        if side < small_face:
            fw.append(f"face smaller than {small_face} px ({side} px): upsampled, less reliable")
        if c.padded:
            fw.append("at the image border: crop padded by mirroring")
        if align and not c.aligned:
            fw.append("not aligned: no plausible eye pair found, cropped as detected")
        if c.rotated_search:
            fw.append("tilted face: found only by the rotated search, levelled before cropping")
        faces.append(FaceScore(c.box, c.crop, float(sc), c.neighbors, c.aligned, c.roll, fw))
    small = [f for f in faces if min(f.box[2:]) < small_face]
    if small:
        sizes = ", ".join(str(min(f.box[2:])) for f in small)
        warnings.append(f"{len(small)} face(s) smaller than {small_face} px ({sizes} px): upsampled, less reliable")
    padded = sum(c.padded for c in crops)
    if padded:
        warnings.append(f"{padded} face(s) at the image border: crop padded by mirroring")
    top = max(range(len(faces)), key=lambda i: faces[i].score)
    decided = f"max of {len(faces)} face(s): face {top + 1} at {list(faces[top].box)}"
    s = faces[top].score
    return FaceResult(faces, s, verdict(s, thr), thr, decided, warnings, top, [c.image for c in crops])


def predict_faces(
    scorer: Scorer,
    img: Image.Image,
    threshold: float | None = None,
    min_face: int = MIN_FACE,
    small_face: int = SMALL_FACE,
    quality: int | None = None,
    align: bool = True,
) -> FaceResult:
    """Score every face of one image (face mode forced), with the per-face rows ``explain`` and ``report`` draw."""
    thr = scorer.threshold if threshold is None else float(threshold)
    img = to_rgb(img)
    crops = face_crops(img, min_face, align)
    arrays = [scorer.preprocess(c.image) for c in crops] or [scorer.preprocess(img)]
    scores = scorer.score_batch(np.stack(arrays))
    if not crops:
        return face_result([], [], thr, float(scores[0]), quality, min_face, small_face, align)
    return face_result(crops, scores, thr, None, quality, min_face, small_face, align)


# ---- the pipeline --------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    """A decoded input made ready for the forward pass (in a worker thread): its arrays and how to read them.
    The decoded full-resolution image is not kept (``prepare`` drops it)."""

    decoded: Decoded
    face_mode: bool = False
    arrays: list[np.ndarray] = field(default_factory=list)
    """Whole-image mode: one array; face mode: one per face, then the whole image (used when no face is found)."""
    crops: list[FaceCrop] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Options:
    """How the pipeline treats each image (the CLI flags, the API's form fields, ``Detector.predict``'s kwargs)."""

    faces: bool | str | None = None
    """True/on: face mode; False/off: whole image; None/auto: face mode for large or non-square images."""
    threshold: float | None = None
    """Decision threshold (default: the model's stored one)."""
    min_face: int = MIN_FACE
    """Face mode: smallest face box (px) to detect."""
    align: bool = True
    """Face mode: level each face by its eyes (and search rotated copies when upright finds none)."""


def prepare(scorer: Scorer, d: Decoded, opts: Options) -> _Prepared:
    """Decide whole image or faces, crop the faces, preprocess: everything before the forward pass.

    Never raises for one file's sake: whatever a hostile or odd image makes the face search or preprocessing
    throw becomes that file's ``error``, and the rest of the batch is scored."""
    try:
        p = _prepare(scorer, d, opts)
        # What is scored from here on is p.arrays (model-input sized) and the face crops: dropping the decoded
        # image bounds a scan's memory by the images being prepared at once (one per worker), not by the
        # chunks loaded ahead of the forward pass (a 32-file chunk of 12 Mpx photos held ~1.2 GB).
        d.image = None
        return p
    except Exception as e:  # noqa: BLE001 - one bad file must not sink the batch; the record says what failed
        log.warning("could not process %s: %s: %s", d.name, type(e).__name__, e)
        d.error = f"{d.name}: could not process image ({type(e).__name__}: {e})"[:500]
        d.image = None
        return _Prepared(d)


def _prepare(scorer: Scorer, d: Decoded, opts: Options) -> _Prepared:
    p = _Prepared(d)
    if d.image is None:
        return p
    img = d.image
    f = parse_faces(opts.faces)
    p.face_mode = use_face_mode(opts.faces, img.size, scorer.data_config)
    if f is None and not p.face_mode and auto_face_mode(img.size, scorer.data_config):
        p.warnings.append(f"face mode would apply to this image but is not available ({faces_available()})")
    if p.face_mode:
        p.crops = face_crops(img, opts.min_face, opts.align)
        p.arrays = [scorer.preprocess(c.image) for c in p.crops]
        if not p.crops:
            p.arrays.append(scorer.preprocess(img))
            p.warnings += [w for w in image_warnings(img, None, scorer.data_config) if "far from square" not in w]
    else:
        p.arrays = [scorer.preprocess(img)]
        p.warnings += image_warnings(img, d.quality, scorer.data_config)
    return p


def finish(scorer: Scorer, p: _Prepared, scores: Sequence[float], opts: Options) -> Prediction:
    """Turn a prepared input and its scores into the one ``Prediction`` record."""
    d = p.decoded
    thr = scorer.threshold if opts.threshold is None else float(opts.threshold)
    if d.error or not p.arrays:
        return Prediction(d.name, d.sha256, None, None, thr, scorer.model_id, d.error, mode="image")
    if not p.face_mode:
        s = float(scores[0])
        return Prediction(d.name, d.sha256, verdict(s, thr), round(s, 6), thr, scorer.model_id, warnings=p.warnings)
    whole = float(scores[-1]) if not p.crops else None
    r = face_result(p.crops, scores, thr, whole, d.quality, opts.min_face, SMALL_FACE, opts.align)
    warnings = r.warnings + [w for w in p.warnings if w not in r.warnings]
    return Prediction(
        d.name,
        d.sha256,
        r.label,
        round(r.score, 6),
        thr,
        scorer.model_id,
        warnings=warnings,
        mode="faces",
        decided_by=r.decided_by,
        faces=[f.to_dict() for f in r.faces],
    )


def face_rows(pred: Prediction) -> list[dict[str, Any]]:
    """A face-mode record's per-face rows with each face's own verdict at the record's threshold."""
    return [{**f, "label": verdict(f["score"], pred.threshold)} for f in pred.faces]


def score_prepared(scorer: Scorer, prepared: Sequence[_Prepared], opts: Options) -> list[Prediction]:
    """One forward pass over every array of ``prepared`` (whole images and face crops together)."""
    arrays = [a for p in prepared for a in p.arrays]
    scores = scorer.score_batch(np.stack(arrays)) if arrays else np.zeros(0)
    out, pos = [], 0
    for p in prepared:
        out.append(finish(scorer, p, scores[pos : pos + len(p.arrays)], opts))
        pos += len(p.arrays)
    return out


def predict_image(
    scorer: Scorer,
    img: Image.Image,
    name: str = "<image>",
    opts: Options | None = None,
    sha256: str | None = None,
    quality: int | None = None,
) -> Prediction:
    """One decoded image through the pipeline (``Detector.predict_image``, video frames, reports)."""
    opts = opts or Options()
    return score_prepared(scorer, [prepare(scorer, Decoded(name, sha256, to_rgb(img), quality), opts)], opts)[0]


def predict_bytes(scorer: Scorer, data: bytes, name: str = "<upload>", opts: Options | None = None) -> Prediction:
    """One encoded image held in memory through the pipeline."""
    opts = opts or Options()
    return score_prepared(scorer, [prepare(scorer, decode_bytes(data, name), opts)], opts)[0]


def skipped_prediction(scorer: Scorer, path: str, reason: str, threshold: float | None = None) -> Prediction:
    thr = scorer.threshold if threshold is None else float(threshold)
    return Prediction(path, None, None, None, thr, scorer.model_id, f"skipped: {reason}", mode="skipped")


def run(
    scorer: Scorer,
    inputs: str | Path | Iterable[str | Path],
    opts: Options | None = None,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = False,
) -> list[Prediction]:
    """Score files, folders or globs: one record per file, then one per skipped folder entry.

    Missing inputs raise ``FileNotFoundError``; unreadable files come back with ``error`` set. Decoding, the
    face search and preprocessing run in ``workers`` threads one chunk ahead of the forward pass (PIL, OpenCV
    and numpy release the GIL), so inference is not left waiting on JPEG decoding.
    """
    from tqdm.auto import tqdm

    opts = opts or Options()
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    scan = scan_inputs(inputs)
    if scan.missing:
        raise FileNotFoundError(f"no such file, folder or glob match: {', '.join(scan.missing)}")
    if parse_faces(opts.faces) is True and (why := faces_available()) is not None:
        from dfdetect.faces.detect import FacesUnavailable

        raise FacesUnavailable(f"face mode: {why}")
    out: list[Prediction] = []

    def load(path: Path) -> _Prepared:
        return prepare(scorer, read_file(path), opts)

    with tqdm(total=len(scan.files), desc="predict", unit="img", disable=not progress) as bar:
        for chunk in _ahead(scan.files, load, batch_size, workers):
            for p in chunk:
                if p.decoded.error:  # its Prediction carries the error (the CLI's table row, --json record)
                    log.debug("unreadable: %s", p.decoded.error)
            out += score_prepared(scorer, chunk, opts)
            bar.update(len(chunk))
    out += [skipped_prediction(scorer, path, why, opts.threshold) for path, why in scan.skipped]
    return out


def _ahead(files: Sequence[Path], load: Any, batch_size: int, workers: int) -> Iterator[list[_Prepared]]:
    """Chunks of loaded inputs, two chunks loading ahead in a thread pool (``workers`` <= 0: in this thread)."""
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    if workers <= 0:
        for c in chunks:
            yield [load(p) for p in c]
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = [pool.map(load, c) for c in chunks[:2]]
        for k in range(len(chunks)):
            ready = list(pending[k])
            if k + 2 < len(chunks):
                pending.append(pool.map(load, chunks[k + 2]))
            yield ready


def summarize(preds: Sequence[Prediction]) -> dict[str, Any]:
    """Counts for the end of a scan: scored, fake/real, unreadable, skipped by reason, with warnings."""
    from collections import Counter

    scored = [p for p in preds if p.error is None]
    reasons = [p.error.removeprefix("skipped: ").split(" (")[0] for p in preds if p.mode == "skipped" and p.error]
    skipped = Counter(reasons)
    return {
        "scored": len(scored),
        "fake": sum(p.label == "fake" for p in scored),
        "real": sum(p.label == "real" for p in scored),
        "unreadable": sum(p.error is not None and p.mode != "skipped" for p in preds),
        "skipped": dict(sorted(skipped.items())),
        "with_warnings": sum(bool(p.warnings) for p in scored),
    }
