"""The base class of the project's expected failures.

An expected failure is one the user can fix (a missing or broken file, bad input, an unavailable device or
optional package): the CLI prints it as one ``error:`` line. Every other exception is a bug and keeps its
traceback. The project's error classes derive from :class:`DfdetectError` and keep their older base
(``ValueError``, ``RuntimeError``) so existing ``except`` clauses still catch them.
"""

from __future__ import annotations


class DfdetectError(Exception):
    """A failure with a message meant for the user (bad input, config, weights or environment)."""


class UnsupportedError(DfdetectError, RuntimeError):
    """A request the loaded model or backend cannot serve (e.g. a CAM from an ONNX model): ask differently."""
