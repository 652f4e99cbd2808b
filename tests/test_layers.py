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


def imported(path: Path) -> set[str]:
    """viny_probe modules imported anywhere in ``path`` (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("viny_probe")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("viny_probe"):
                found.add(target)
                found |= {
                    f"{target}.{a.name}"
                    for a in node.names
                    if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).exists()
                    or (PACKAGE.parent / (f"{target}.{a.name}".replace(".", "/") + ".py")).exists()
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
