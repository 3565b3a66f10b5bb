"""Pydantic response models of the REST API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    id: str = Field(description="Model id (architecture + weights hash), as in `predict` output.")
    arch: str
    backend: str = Field(description="torch or onnxruntime")
    device: str
    threshold: float = Field(description="Stored decision threshold: fake when P(fake) >= threshold.")
    input_size: list[int] | None = Field(None, description="(channels, height, width) the model sees.")
    explain: bool | None = Field(None, description="Whether POST /explain can run (None: not tried yet).")


class Health(BaseModel):
    status: str = "ok"
    version: str = Field(description="dfdetect version")
    model: ModelInfo


class Models(BaseModel):
    models: list[ModelInfo]


class PredictionOut(BaseModel):
    """Exactly what `dfdetect predict --json` prints per image."""

    path: str = Field(description="The uploaded file name.")
    sha256: str | None
    label: str | None = Field(description="'fake' or 'real'; None when the file could not be scored.")
    score: float | None = Field(description="P(fake) in [0, 1], rounded to 6 decimals.")
    threshold: float
    model: str
    error: str | None = None


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
