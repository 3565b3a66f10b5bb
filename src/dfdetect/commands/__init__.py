"""CLI verbs that live beside their feature modules; each module here has ``register(app)``.

Modules must import only light things at top level (typer, stdlib): heavy imports go inside the
command functions, so ``dfdetect --help`` stays instant.
"""

PLUGINS = ("explain", "forensics", "serve", "bench", "compare", "robustness", "faces", "fusion", "scale", "split")


def threshold_option(value: float | None) -> float | None:
    """Typer callback for every ``--threshold``: a probability in [0, 1], never NaN."""
    import math

    import typer

    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise typer.BadParameter(f"{value} is not a probability in [0, 1] (the P(fake) from which a verdict is fake)")
    return value
