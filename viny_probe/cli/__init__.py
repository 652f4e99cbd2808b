"""The `viny` command: thin typer wrappers, each parsing arguments and calling one library function."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import typer
from rich.markup import escape

from ..errors import VinyError, VinyWarning
from ..progress import console
from ..signals import exit_now_if_interrupted
from . import analysis as _analysis  # noqa: F401
from . import bench as _bench  # noqa: F401
from . import cache as _cache  # noqa: F401
from . import demo as _demo  # noqa: F401  (registers commands)
from . import explore as _explore  # noqa: F401
from . import export as _export  # noqa: F401
from . import sweep as _sweep  # noqa: F401
from . import train as _train  # noqa: F401
from .app import app


def _show_warning(previous, message, category, filename, lineno, file=None, line=None) -> None:
    """VinyWarnings as one line on the console; any other warning as before (Python's form)."""
    if issubclass(category, VinyWarning):
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)  # one line
    else:
        previous(message, category, filename, lineno, file, line)


def _load_plugins() -> None:
    """Plugins before the commands are built (viny_probe.plugins): installed entry points, VINY_PLUGINS
    and the --plugin options, which are taken off the command line here. The --plugin ones join
    VINY_PLUGINS (files by absolute path), so a process viny starts (torchrun, a sweep's worker) loads
    them too."""
    from ..plugins import ENV_VAR, load_plugins, plugin_names_in_env, take_plugin_options

    sys.argv[1:], named = take_plugin_options(sys.argv[1:])
    named = [str(Path(p).resolve()) if p.endswith(".py") or Path(p).is_file() else p for p in named]
    if named:
        os.environ[ENV_VAR] = os.pathsep.join([*plugin_names_in_env(), *named])
    load_plugins()
    from .options import refresh_dataset_options

    refresh_dataset_options()  # the --dataset choices, with the plugins' datasets


# Rich lays tables out for an 80-column terminal when the output is not a terminal (a pipe, a file,
# a CI log), cutting cells to "..." and wrapping words: piped, viny's output gets this width instead
# (COLUMNS, where set, still wins).
PIPED_WIDTH = 200


def wide_when_piped() -> None:
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPED_WIDTH


def main() -> None:
    wide_when_piped()
    warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
    _load_plugins()
    try:
        app()
    except SystemExit:
        exit_now_if_interrupted()  # a command stopped by a signal has said what it kept
        raise
    except VinyError as e:
        # escaped: a message may hold brackets (pip install "viny-probe[timm]") that are not markup
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # one line
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command (each command says what it kept: options.interruptible)
        console.print("[yellow]interrupted.[/]")
        sys.exit(130)
    except Exception as e:
        # A write that failed for want of room, wherever it was (a dataset cache, a figure, a report):
        # one line naming the file, not a traceback. Anything else is a bug and keeps its traceback.
        from ..checkpoint import disk_full_message

        message = disk_full_message(e)
        if message is None:
            raise
        console.print(f"[bold red]error:[/] {message}", highlight=False)
        sys.exit(2)


__all__ = ["app", "main", "typer"]
