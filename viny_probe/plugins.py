"""Plugins: code outside viny that registers regimes, datasets, diagnostics, model sources or stage kinds.

A plugin is a Python module that registers its entries when it is imported (``@register`` for a
regime, ``register_dataset``, ``analysis.registry.register``, ``register_source``), exactly as viny's
own files do. The `viny` command loads every plugin before it builds its commands, so a plugin's regime
is a `viny train` command and its dataset a ``--dataset`` choice. Three ways to name one, loaded in
this order, each module once:

1. an installed package's entry point in the group ``viny.plugins`` (its pyproject.toml:
   ``[project.entry-points."viny.plugins"] my-name = "my_package"``; a ``module:function`` value is
   called with no arguments after the import);
2. ``VINY_PLUGINS``: modules or ``.py`` files separated by ``os.pathsep`` (``:``; ``;`` on Windows);
3. ``viny --plugin MODULE_OR_FILE`` (repeatable; anywhere on the command line).

A plugin that fails to load is one ``PluginWarning`` line naming it and the error, and viny goes on
without it. A plugin adds a stage kind for `viny sweep` plans the same way
(``experiments.kinds.register_stage_kind(StageKind(name, regime, dataset, role))``); a plan then
names it and ``[overrides.NAME]`` sets its fields.

From Python (a notebook, a script): ``load_plugins()`` does the same (entry points and VINY_PLUGINS).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import VinyWarning

ENTRY_POINT_GROUP = "viny.plugins"
ENV_VAR = "VINY_PLUGINS"
OPTION = "--plugin"


class PluginWarning(VinyWarning):
    """A plugin could not be loaded; viny runs without it."""


_loaded: dict[str, object] = {}  # plugin name -> its module (or its entry point's object)


def _import(spec: str):
    """A module by name, or a ``.py`` file (imported under its own name, ``viny_plugin_<stem>``)."""
    path = Path(spec).expanduser()
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no such file {spec}")
        name = f"viny_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    return importlib.import_module(spec)


def _load_one(name: str, load) -> None:
    if name in _loaded:
        return
    try:
        _loaded[name] = load()
    except Exception as err:  # noqa: BLE001 - any failure of a plugin is its own; viny goes on
        message = str(err).splitlines()[0] if str(err) else ""
        warnings.warn(
            f"plugin {name} failed to load: {type(err).__name__}: {message}", PluginWarning, stacklevel=3
        )


def _entry_point_loader(entry_point):
    def load():
        target = entry_point.load()
        if callable(target) and ":" in entry_point.value:
            target()
        return target

    return load


def plugin_names_in_env(environ=None) -> list[str]:
    """The plugins named by ``VINY_PLUGINS`` (os.pathsep-separated), in order."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [part for part in value.split(os.pathsep) if part.strip()]


def load_plugins(extra: Sequence[str] = (), *, entry_points: bool = True, environ=None) -> list[str]:
    """Import every plugin: installed entry points (group ``viny.plugins``), then ``VINY_PLUGINS``,
    then ``extra`` (modules or .py files). Returns the names of the plugins loaded so far; each one
    that fails is a PluginWarning naming it."""
    if entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load_one(entry_point.value, _entry_point_loader(entry_point))
    for spec in [*plugin_names_in_env(environ), *extra]:
        _load_one(spec, lambda spec=spec: _import(spec))
    return list(_loaded)


def take_plugin_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(argv without its --plugin options, the plugins they name)``: ``--plugin X`` and
    ``--plugin=X`` anywhere (they change which commands exist, so they are read before the command
    line is parsed). A ``--plugin`` with nothing after it is left for the parser to report."""
    rest, plugins, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == OPTION and i + 1 < len(argv):
            plugins.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(OPTION + "="):
            plugins.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest, plugins
