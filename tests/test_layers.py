"""The package's layers are real: imports only point downwards and nothing imports in a circle.

Every import counts, at module level and inside functions (a lazy import is still a dependency), except those
under ``if TYPE_CHECKING:``. The order, bottom to top (README "Layout"):
core <- data <- models <- faces <- runtime <- engine <- analysis <- serve <- cli; the package root
(``dfdetect/__init__.py``, the public API) and ``__main__`` sit above all of them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "dfdetect"
LAYERS = ("core", "data", "models", "faces", "runtime", "engine", "analysis", "serve", "cli")
TOP = len(LAYERS)


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = ("dfdetect", *p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip.update(id(m) for b in n.body for m in ast.walk(b))
    return skip


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The dfdetect modules ``name`` imports (``from pkg import submodule`` counts as the submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    out: set[str] = set()

    def owner(target: str) -> str | None:
        while target not in mods and "." in target:
            target = target.rsplit(".", 1)[0]
        return target if target in mods else None

    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        targets: list[str] = []
        if isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(here[: len(here) - n.level + 1] + ([n.module] if n.module else []))
            for a in n.names:
                targets.append(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
        for t in targets:
            if t.startswith("dfdetect"):
                m = owner(t)
                if m and m != name:
                    out.add(m)
    return out


def _layer(module: str) -> str:
    r = _rank(module)
    return LAYERS[r] if r < TOP else "top"


def _rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__main__":
        return TOP
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no layer: put it under one of {', '.join(LAYERS)}")
    return LAYERS.index(parts[1])


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_every_module_is_in_a_layer() -> None:
    for m in _graph():
        _rank(m)


def test_imports_only_point_downwards() -> None:
    bad = [
        f"{m} ({_layer(m)}) imports {d} ({_layer(d)})"
        for m, deps in _graph().items()
        for d in sorted(deps)
        if _rank(d) > _rank(m)
    ]
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_library_never_imports_cli_or_serve() -> None:
    leaks = defaultdict(list)
    for m, deps in _graph().items():
        if _rank(m) < LAYERS.index("serve"):
            leaks[m] += [d for d in deps if _rank(d) >= LAYERS.index("serve")]
    assert not {m: d for m, d in leaks.items() if d}


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    # guards the guard: an import inside a function counts, one under TYPE_CHECKING does not
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dfdetect.cli import app\n"
        "def f():\n    from dfdetect.runtime.detector import Detector\n"
    )
    mods = {"dfdetect.core.m": src, "dfdetect.runtime.detector": src, "dfdetect.cli": src}
    assert _imports("dfdetect.core.m", src, mods) == {"dfdetect.runtime.detector"}


def test_the_readme_layout_matches_the_tree() -> None:
    import re

    readme = (PKG.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\w+)/` \|", section, flags=re.M)
    folders = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").is_file())
    assert listed == list(LAYERS), "README Layout rows must be the layers, bottom first"
    assert sorted(listed) == folders, f"package folders {folders} vs README {listed}"


def test_no_module_imports_another_modules_private_names() -> None:
    leaks = []
    for name, path in _modules().items():
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("dfdetect") and n.module != name:
                leaks += [
                    f"{name}: from {n.module} import {a.name}"
                    for a in n.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not leaks, "\n".join(leaks)
