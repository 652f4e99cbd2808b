import typer

app = typer.Typer(
    name="viny",
    help="Train ViNy through the study's regimes and probe how each reshapes its patch representations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
