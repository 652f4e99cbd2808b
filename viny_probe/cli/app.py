import typer

from .. import __version__

app = typer.Typer(
    name="viny",
    help="Train ViNy through the study's regimes and probe how each reshapes its patch representations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(show: bool) -> None:
    if show:
        typer.echo(f"viny {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print viny's version and exit"
    ),
    plugin: list[str] = typer.Option(
        None,
        "--plugin",
        help="a plugin module or .py file to load first (repeatable; also VINY_PLUGINS and installed "
        "'viny.plugins' entry points): it may add regimes, datasets, diagnostics, model sources",
    ),
) -> None:
    """Train ViNy through the study's regimes and probe how each reshapes its patch representations."""
