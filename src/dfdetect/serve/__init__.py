"""``dfdetect serve``: a REST API, a web page and a scan-history database around one detector.

``create_app(model=..., db=...)`` builds the FastAPI app (``dfdetect.serve.api``); importing this package
does not import FastAPI or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from dfdetect.serve.api import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from dfdetect.serve.api import create_app

        return create_app
    raise AttributeError(f"module 'dfdetect.serve' has no attribute {name!r}")
