"""CLI verbs that live beside their feature modules; each module here has ``register(app)``.

Modules must import only light things at top level (typer, stdlib): heavy imports go inside the
command functions, so ``dfdetect --help`` stays instant.
"""

PLUGINS = ("explain", "forensics", "serve", "bench", "compare", "robustness", "faces", "fusion", "scale", "split")
