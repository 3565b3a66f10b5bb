"""The hand-written parts of the OpenAPI schema: the multipart request bodies (the endpoints read their bodies
themselves, streaming, so FastAPI cannot derive them) and the error answers each endpoint documents.

``tests/data/openapi.json`` is the snapshot of the whole schema; a change here shows up there.
"""

from __future__ import annotations

from typing import Any

from dfdetect.serve.schemas import ErrorResponse


def multipart_body(required: str, properties: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for an endpoint that reads a multipart/form-data body with these fields."""
    schema = {"type": "object", "required": [required], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def faces_field(description: str) -> dict[str, Any]:
    return {"type": "string", "enum": ["auto", "on", "off"], "default": "auto", "description": description}


ALIGN_FIELD = {"type": "boolean", "default": True, "description": "Face mode: level the eyes."}

UPLOAD_BODY = multipart_body(
    "files",
    {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more images (JPEG, PNG, WebP, BMP, TIFF, GIF).",
        },
        "case_id": {"type": "string", "description": "Your case / reference id, kept in history."},
        "threshold": {"type": "number", "description": "Override the model's threshold."},
        "faces": faces_field(
            "Face mode: score each face, the most suspicious decides. auto: when the "
            "shorter side > 2x the model input or the image is not square."
        ),
        "align": ALIGN_FIELD,
    },
)
_ONE_FILE = {
    "file": {"type": "string", "format": "binary", "description": "One image."},
    "case_id": {"type": "string"},
    "threshold": {"type": "number"},
    "record": {"type": "boolean", "description": "Record in scan history (default true)."},
}
EXPLAIN_BODY = multipart_body("file", _ONE_FILE)
EXPLAIN_FACES_BODY = multipart_body(
    "file",
    _ONE_FILE
    | {
        "faces": faces_field("Face mode (as in /predict): the maps are of the deciding face's crop."),
        "align": ALIGN_FIELD,
    },
)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "API key missing"},
    403: {"model": ErrorResponse, "description": "API key wrong"},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = ERRORS | {
    413: {"model": ErrorResponse, "description": "A file exceeds the upload limit, or too many files"},
    415: {"model": ErrorResponse, "description": "Not an image, or an unsupported format"},
    422: {"model": ErrorResponse, "description": "Empty, corrupt, or decompression-bomb image; bad form field"},
}
