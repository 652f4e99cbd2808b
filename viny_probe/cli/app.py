import click
import typer
import typer.rich_utils
from rich.markup import escape

from .. import __version__
from ..progress import console


def _one_line_usage_error(error: click.ClickException) -> None:
    """The parser's usage errors in viny's one error style: one line, ``error: ...``, naming the
    option as typed and where the help is (typer would draw a usage line, a hint and a box). typer
    calls ``typer.rich_utils.rich_format_error`` for every click error; this replaces it."""
    if error.__class__.__name__ == "NoArgsIsHelpError":  # no arguments: typer prints the help
        return
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
    message = " ".join(error.format_message().split())
    console.print(f"[bold red]error:[/] {escape(message)}{escape(hint)}", highlight=False, soft_wrap=True)


typer.rich_utils.rich_format_error = _one_line_usage_error

app = typer.Typer(
    name="viny",
    context_settings={"help_option_names": ["-h", "--help"]},
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
