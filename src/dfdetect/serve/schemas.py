"""Pydantic response models of the REST API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    id: str = Field(description="Model id (architecture + weights hash), as in `predict` output.")
    arch: str
    backend: str = Field(description="torch, onnxruntime or openvino")
    device: str
    precision: str = Field("fp32", description="fp32 or bf16: what the backend runs in (read back from it).")
    threshold: float = Field(description="Stored decision threshold: fake when P(fake) >= threshold.")
    input_size: list[int] | None = Field(None, description="(channels, height, width) the model sees.")
    explain: bool | None = Field(None, description="Whether POST /explain can run (None: not tried yet).")


class Health(BaseModel):
    status: str = "ok"
    version: str = Field(description="dfdetect version")
    model: ModelInfo


class Models(BaseModel):
    models: list[ModelInfo]


class FaceOut(BaseModel):
    """One detected face (face mode)."""

    box: list[int] = Field(description="Detector box x, y, width, height in pixels of the uploaded image.")
    crop: list[int] = Field(description="The training-framed square that was scored: left, top, right, bottom.")
    score: float = Field(description="P(fake) of this face's crop.")
    label: str = Field(description="'fake' or 'real' for this face at the request's threshold.")
    aligned: bool = Field(description="Two plausible eyes were found (the face was levelled when tilted).")
    roll: float | None = Field(None, description="Tilt from the eyes in degrees; None when no eye pair was found.")
    warnings: list[str] = Field(default_factory=list, description="This face's warnings (small, border, not aligned).")


class PredictionOut(BaseModel):
    """Exactly what `dfdetect predict --json` prints per image (face-mode fields only in face mode)."""

    path: str = Field(description="The uploaded file name.")
    sha256: str | None
    label: str | None = Field(description="'fake' or 'real'; None when the file could not be scored.")
    score: float | None = Field(description="P(fake) in [0, 1], rounded to 6 decimals.")
    threshold: float
    model: str
    error: str | None = None
    mode: str | None = Field(None, description="'faces' (face mode), 'image' (the whole image was scored).")
    decision_rule: str | None = Field(
        None, description="Face mode: how face scores make the image score: 'max' (the most suspicious face decides)."
    )
    decided_by: str | None = Field(None, description="Face mode: which face decided, e.g. 'max of 2 face(s): ...'.")
    faces: list[FaceOut] | None = Field(None, description="Face mode: one row per detected face, largest first.")
    warnings: list[str] | None = Field(
        None,
        description="What makes the score less trustworthy: no face found, image far smaller than the model input "
        "or far from square, heavy JPEG compression, noise-like content, small faces, faces at the border.",
    )


class PredictResponse(BaseModel):
    predictions: list[PredictionOut] = Field(description="One per uploaded file, in upload order.")
    scan_ids: list[int | None] = Field(description="Scan-history id per file (None when not scored).")
    case_id: str | None = None


class ExplainResponse(BaseModel):
    path: str
    sha256: str
    label: str
    score: float = Field(description="P(fake) from the PyTorch model the CAM was computed on.")
    threshold: float
    model: str
    method: str = "gradcam"
    overlay_png: str = Field(description="Grad-CAM overlay, base64-encoded PNG.")
    panel_png: str | None = Field(None, description="Side-by-side panel of the heat maps, base64-encoded PNG.")
    scan_id: int | None = None
    mode: str | None = Field(None, description="'faces' in face mode: the maps are of the deciding face's crop.")
    decided_by: str | None = None
    faces: list[FaceOut] | None = Field(None, description="Face mode: one row per detected face.")
    warnings: list[str] | None = None
    overview_png: str | None = Field(None, description="Face mode: the image with face boxes drawn, base64 PNG.")


class ForensicsResponse(BaseModel):
    path: str
    sha256: str
    label: str
    score: float = Field(description="P(fake) from the served model.")
    threshold: float
    model: str
    summary: dict[str, Any] = Field(description="Scalars, flags and metadata (what `dfdetect analyze --json` prints).")
    ela_png: str | None = Field(None, description="Error-level-analysis image, base64 PNG.")
    noise_png: str | None = Field(None, description="Noise residual image, base64 PNG.")
    spectrum_png: str | None = Field(None, description="Log-magnitude spectrum, base64 PNG.")
    report_html: str = Field(description="Self-contained HTML report (no external resources).")
    scan_id: int | None = None


class Scan(BaseModel):
    id: int
    created_at: str = Field(description="UTC, ISO 8601")
    sha256: str
    file_name: str
    size_bytes: int
    width: int | None
    height: int | None
    model_id: str
    dfdetect_version: str
    score: float
    label: str
    threshold: float
    case_id: str | None
    source: str = Field(description="predict, explain or forensics")
    backend: str | None
    has_image: bool = Field(False, description="Whether a copy of the image was stored (--store-images).")
    mode: str | None = Field(None, description="'faces' when scored in face mode, else None (whole image).")
    decided_by: str | None = None
    faces: list[FaceOut] | None = Field(None, description="Face mode: the per-face rows as returned then.")
    warnings: list[str] | None = None


class ScanPage(BaseModel):
    total: int = Field(description="Scans matching the filters.")
    limit: int
    offset: int
    items: list[Scan]


class ErrorItem(BaseModel):
    path: str
    error: str


class ErrorResponse(BaseModel):
    detail: str | list[ErrorItem] | list[dict] = Field(description="What went wrong.")
