"""Video files: sample frames at a chosen rate with OpenCV, run face mode on each, aggregate per video.

Per video: mean and max of the per-frame scores (each frame's score = its most suspicious face), and the
fraction of frames whose score >= the threshold. Frames without a face are kept in the CSV (``n_faces`` 0,
empty score) but left out of the aggregates; a video with no face at all gets no verdict.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfdetect.core.labels import verdict
from dfdetect.faces.detect import opencv
from dfdetect.faces.predict import MIN_FACE
from dfdetect.runtime.pipeline import predict_faces

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class VideoResult:
    path: str
    frames_read: int
    frames_scored: int
    """Sampled frames with at least one face."""
    frames_sampled: int
    fps: float
    """The file's frame rate."""
    duration_s: float
    mean_score: float | None
    max_score: float | None
    fake_fraction: float | None
    """Fraction of scored frames whose most suspicious face scores >= threshold."""
    label: str | None
    """'fake' when mean_score >= threshold (None when no face was found in any frame)."""
    threshold: float
    model: str
    csv: str | None = None
    plot: str | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _frame_rows(
    det: Any, path: Path, every_s: float, thr: float, min_face: int, align: bool = True, progress: bool = False
) -> tuple[list[dict], float, int]:
    from tqdm.auto import tqdm

    cv2 = opencv()
    # FFmpeg's own log lines ("[mjpeg @ 0x...] No JPEG data found") would reach the terminal between our output;
    # what failed is reported below in words. Read when the first capture opens; a user's setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError("OpenCV cannot open this video")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0:
        fps = 25.0
        log.warning("%s: no frame rate in the file, assuming 25 fps", path)
    rows: list[dict] = []
    next_t, i = 0.0, 0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    bar = tqdm(total=total or None, desc=path.name, unit="frame", disable=not progress)
    try:
        # grab() every frame, retrieve() only the sampled ones: skipped frames are decoded but never converted
        # to BGR pixels (half the decoding time at 30 fps sampled once a second).
        while cap.grab():
            t = i / fps
            i += 1
            bar.update(1)
            if t + 1e-9 < next_t:
                continue
            ok, frame = cap.retrieve()
            if not ok:
                break
            next_t += every_s
            img = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            r = predict_faces(det, img, threshold=thr, min_face=min_face, align=align)
            has = bool(r.faces)
            top = max(r.faces, key=lambda f: f.score) if has else None
            rows.append(
                {
                    "frame": i - 1,
                    "time_s": round(t, 3),
                    "n_faces": len(r.faces),
                    "score": round(r.score, 6) if has else "",
                    "label": r.label if has else "",
                    "box": " ".join(map(str, top.box)) if top else "",
                    "face_scores": " ".join(f"{f.score:.4f}" for f in r.faces),
                    "warnings": "; ".join(w for w in r.warnings if not w.startswith("no face")),
                }
            )
    finally:
        bar.close()
        cap.release()
    return rows, fps, i


def _plot(rows: list[dict], thr: float, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["time_s"] for r in rows if r["score"] != ""]
    s = [r["score"] for r in rows if r["score"] != ""]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(t, s, marker="o", ms=3, lw=1, label="max face P(fake)")
    ax.axhline(thr, color="r", ls="--", lw=1, label=f"threshold {thr:.3f}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(fake)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def analyze_video(
    det: Any,
    path: str | Path,
    sample_fps: float = 1.0,
    out_dir: str | Path | None = None,
    threshold: float | None = None,
    min_face: int = MIN_FACE,
    align: bool = True,
    progress: bool = False,
) -> VideoResult:
    """Score one video; with ``out_dir``: writes ``<stem>.frames.csv`` and ``<stem>.scores.png`` there.
    ``align``: eye alignment and the rotated search of ``face_crops`` (frames without a face cost ~2x);
    ``progress``: a progress bar over the video's frames on stderr."""
    path = Path(path)
    thr = det.threshold if threshold is None else float(threshold)
    if sample_fps <= 0:
        raise ValueError("sample_fps must be > 0")
    try:
        rows, fps, n = _frame_rows(det, path, 1.0 / sample_fps, thr, min_face, align, progress)
        if n == 0:  # OpenCV "opens" any file its image-sequence reader accepts by name, then reads nothing
            raise ValueError("not a video OpenCV can decode (no frame could be read)")
    except ValueError as e:
        return VideoResult(str(path), 0, 0, 0, 0.0, 0.0, None, None, None, None, thr, det.model_id, error=str(e))
    scores = np.array([r["score"] for r in rows if r["score"] != ""], dtype=np.float64)
    warnings = []
    if not rows:
        warnings.append("no sampled frame could be decoded")
    elif not scores.size:
        warnings.append(f"no face found in any of {len(rows)} sampled frames")
    elif scores.size < len(rows):
        warnings.append(f"no face in {len(rows) - scores.size} of {len(rows)} sampled frames (left out)")
    mean = float(scores.mean()) if scores.size else None
    res = VideoResult(
        path=str(path),
        frames_read=n,
        frames_scored=int(scores.size),
        frames_sampled=len(rows),
        fps=round(fps, 3),
        duration_s=round(n / fps, 3),
        mean_score=None if mean is None else round(mean, 6),
        max_score=round(float(scores.max()), 6) if scores.size else None,
        fake_fraction=round(float((scores >= thr).mean()), 6) if scores.size else None,
        label=None if mean is None else verdict(mean, thr),
        threshold=thr,
        model=det.model_id,
        warnings=warnings,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / f"{path.stem}.frames.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(
                f, fieldnames=["frame", "time_s", "n_faces", "score", "label", "box", "face_scores", "warnings"]
            )
            w.writeheader()
            w.writerows(rows)
        png = out / f"{path.stem}.scores.png"
        _plot(rows, thr, png, f"{path.name}: mean {mean if mean is None else round(mean, 3)}")
        res.csv, res.plot = str(csv_path), str(png)
    return res
