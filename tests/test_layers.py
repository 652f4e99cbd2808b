"""Imports only point down the layers: base -> data -> model -> config -> trainers -> analysis / perf ->
experiments -> cli (docs/architecture.md). Every import is read, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import viny_probe

PACKAGE = Path(viny_probe.__file__).parent

# Module (or package) prefix -> layer; the longest matching prefix wins.
LAYERS = {
    "viny_probe": 0,  # __init__: the version only
    "viny_probe.errors": 0,
    "viny_probe.registry": 0,
    "viny_probe.checks": 0,
    "viny_probe.progress": 0,
    "viny_probe.signals": 0,  # SIGINT/SIGTERM: the CLI stops on them, a sweep drops its locks
    "viny_probe.runlock": 0,  # one process per run folder: the lock a run and a sweep stage share
    "viny_probe.tables": 0,
    "viny_probe.published": 0,
    "viny_probe.plugins": 0,  # imports plugins by name only (they register into the registries)  # the study's published numbers, read by analysis and experiments
    "viny_probe.data": 1,
    "viny_probe.model": 2,
    "viny_probe.heads": 2,
    "viny_probe.metrics": 2,
    "viny_probe.checkpoint": 2,
    "viny_probe.distributed": 2,
    "viny_probe.viz": 2,
    "viny_probe.precision": 2,
    "viny_probe.config": 3,
    "viny_probe.trainers": 4,
    "viny_probe.analysis": 5,
    "viny_probe.perf": 5,
    "viny_probe.experiments": 6,
    "viny_probe.demo": 6,
    "viny_probe.cli": 7,
    "viny_probe.__main__": 7,
}


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """``(target, names)`` for every import of a viny_probe module anywhere in ``path`` (relative
    imports resolved): ``import viny_probe.x`` -> ``("viny_probe.x", [])``, ``from .x import y, z`` ->
    ``("viny_probe...x", ["y", "z"])``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names if a.name.startswith("viny_probe"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("viny_probe"):
                yield target, [a.name for a in node.names]


def imported(path: Path) -> set[str]:
    """viny_probe modules imported anywhere in ``path``: each import's target, and any name it takes
    from it that is itself a module (a file or a package folder)."""
    found = set()
    for target, names in _imports(path):
        found.add(target)
        found |= {
            f"{target}.{n}"
            for n in names
            if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).exists()
            or (PACKAGE.parent / (f"{target}.{n}".replace(".", "/") + ".py")).exists()
        }
    return found


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for target in imported(path):
            if layer_of(target) > layer_of(name):
                out.append(f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})")
    return out


def test_every_module_has_a_layer() -> None:
    missing = [
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if module_name(p) not in LAYERS
        and not any(module_name(p).startswith(k + ".") for k in LAYERS if k != "viny_probe")
    ]
    assert missing == []


def test_imports_point_down() -> None:
    """Mutant: trainers/spatial.py importing from viny_probe.analysis again -> this test names it."""
    assert violations() == []


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def edges(path: Path) -> set[str]:
    """The viny_probe modules ``path`` imports, anywhere in it: ``from .x import y`` is an edge to the
    module ``x.y`` where that is a module, else to ``x`` (a package's __init__ only where a name is
    taken from it)."""
    found = set()
    for target, names in _imports(path):
        found |= {f"{target}.{n}" if _is_module(f"{target}.{n}") else target for n in names} or {target}
    return {m for m in found if m != "viny_probe" and m != module_name(path)}


def cycles() -> list[list[str]]:
    """Every set of modules that import each other, directly or through a cycle (Tarjan's strongly
    connected components of more than one module), each sorted."""
    graph = {module_name(p): edges(p) for p in sorted(PACKAGE.rglob("*.py"))}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return sorted(found)


# The two circles found when this check came (2026-12) are untangled: ``model_blocks`` moved from
# explore to embeddings, and the viny source wraps an in-memory encoder through its registry entry
# (``ModelSource.wrap``) instead of base importing sources.viny. None may come back.
KNOWN_CIRCLES: list[list[str]] = []


def test_no_import_circles() -> None:
    """No two modules import each other, directly or through others, inside a layer either (a circle
    means a concept lives in the wrong room); the known ones are listed above. Mutant watched failing:
    experiments/sweep.py importing experiments/geometry.py (which reads the stage layout) again."""
    assert [c for c in cycles() if c not in KNOWN_CIRCLES] == []
