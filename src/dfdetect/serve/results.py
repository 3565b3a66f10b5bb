"""Results as the API returns and records them: a pipeline ``Prediction`` as a ``PredictionOut`` row, a face-mode
result's per-face rows and history extra (``faces_json``), and free-form summaries as plain JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dfdetect.core.labels import verdict
from dfdetect.runtime import pipeline
from dfdetect.serve.errors import without_paths
from dfdetect.serve.schemas import FaceOut, PredictionOut


def prediction_out(r: Any) -> PredictionOut:
    """A pipeline ``Prediction`` as the API's row: the keys of ``predict --json`` (plus ``decision_rule`` in face
    mode), and each face's own verdict; server paths in its messages cut to file names (``serve.errors``)."""
    fields: dict[str, Any] = {
        "warnings": [without_paths(w) for w in r.warnings],
        "mode": r.mode,
        "decided_by": r.decided_by,
        "faces": [FaceOut(**f) for f in pipeline.face_rows(r)],
    }
    if r.mode == "faces":
        fields["decision_rule"] = pipeline.DECISION_RULE
    return PredictionOut(
        path=r.path,
        sha256=r.sha256,
        label=r.label,
        score=r.score,
        threshold=r.threshold,
        model=r.model,
        error=None if r.error is None else without_paths(r.error),
        **fields,
    )


def face_rows(result: Any) -> list[FaceOut]:
    """``FaceResult`` -> the API's per-face rows (label at the result's threshold)."""
    return [
        FaceOut(
            box=[int(v) for v in f.box],
            crop=[int(v) for v in f.crop],
            score=round(f.score, 6),
            label=verdict(f.score, result.threshold),
            aligned=f.aligned,
            roll=None if f.roll is None else round(f.roll, 1),
            warnings=list(f.warnings),
        )
        for f in result.faces
    ]


def face_extra(result: Any) -> dict[str, Any]:
    """What the scan history keeps of a face-mode result (the ``faces_json`` column): a ``FaceResult`` or a
    face-mode pipeline ``Prediction``."""
    faces = pipeline.face_rows(result) if hasattr(result, "mode") else [f.model_dump() for f in face_rows(result)]
    return {
        "decision_rule": pipeline.DECISION_RULE,
        "decided_by": result.decided_by,
        "faces": faces,
        "warnings": list(result.warnings),
    }


def jsonable(x: Any) -> Any:
    """Plain JSON types (numpy scalars, tuples, NaN -> None) for a free-form summary dict."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)
