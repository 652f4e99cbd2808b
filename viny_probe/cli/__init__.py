"""The `viny` command: thin typer wrappers, each parsing arguments and calling one library function."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from ..errors import VinyError
from ..progress import console
from . import analysis as _analysis  # noqa: F401
from . import bench as _bench  # noqa: F401
from . import demo as _demo  # noqa: F401  (registers commands)
from . import sweep as _sweep  # noqa: F401
from . import train as _train  # noqa: F401
from .app import app


def main() -> None:
    try:
        app()
    except VinyError as e:
        # escaped: a message may hold brackets (pip install "viny-probe[timm]") that are not markup
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted.[/] Finished epochs are saved; continue with the same command and --resume."
        )
        sys.exit(130)


__all__ = ["app", "main", "typer"]
