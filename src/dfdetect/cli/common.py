"""What every CLI verb shares: the error exit, logging set-up and option validators.

Verb modules import only light things at top level (typer, stdlib): heavy imports go inside the
command functions, so ``dfdetect --help`` stays instant.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from typing import Any, NoReturn

import typer

from dfdetect.core.errors import DfdetectError

EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    DfdetectError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
"""What a verb turns into one ``error:`` line: the project's own errors (bad checkpoint, data layout, unknown
model, missing device or weights) and bad input or paths. Anything else is a bug and keeps its traceback."""


def fail(msg: str, code: int = 2) -> NoReturn:
    """One red ``error:`` line on stderr and exit ``code`` (2: bad input or usage, 1: nothing could be done)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def setup_logging(verbose: bool = False, level: int = logging.INFO) -> None:
    """Plain messages on stderr (stdout stays for results and ``--json``); ``verbose`` shows debug lines."""
    logging.basicConfig(level=logging.DEBUG if verbose else level, format="%(message)s", stream=sys.stderr, force=True)


def threshold_option(value: float | None) -> float | None:
    """Typer callback for every ``--threshold``: a probability in [0, 1], never NaN."""
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise typer.BadParameter(f"{value} is not a probability in [0, 1] (the P(fake) from which a verdict is fake)")
    return value


DEVICE_HELP = "auto (CUDA when available, else CPU) | cpu | cuda | cuda:N"


def _check_device(value: str) -> str:
    if value not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", value):
        raise typer.BadParameter(f"{value!r} is not a device: {DEVICE_HELP}")
    return value


def device_option() -> Any:
    """The one ``--device`` option: every verb defaults to auto."""
    return typer.Option("auto", help=DEVICE_HELP, callback=_check_device)


def given_settings(ctx: Any, not_settings: tuple[str, ...]) -> dict[str, Any]:
    """The options a user actually gave (not left at their default), by name, minus ``not_settings``: what a
    verb passes to ``TrainConfig.apply_overrides`` so flags and config fields cannot drift apart."""
    given = {}
    for k, v in ctx.params.items():
        source = ctx.get_parameter_source(k)
        if k not in not_settings and source is not None and source.name != "DEFAULT":
            given[k] = v
    return given
