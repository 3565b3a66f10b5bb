"""The ``dfdetect`` command line: one verb per mode, one module per verb group (see ``app.py``)."""

from dfdetect.cli.app import app, main

__all__ = ["app", "main"]
