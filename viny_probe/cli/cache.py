"""`viny cache info` and `viny cache clear`: the token cache (``viny_probe.analysis.embeddings``)."""

from __future__ import annotations

import typer

from ..progress import console
from .app import app
from .options import json_option, print_json

cache_app = typer.Typer(
    help="The token cache: patch tokens of (model, images, block), reused by probe and diagnose.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@cache_app.command("info")
def info_command(as_json: bool = json_option()) -> None:
    """Where the token cache is ($VINY_CACHE_DIR/embeddings, else ~/.cache/viny/embeddings), its entries
    and their size."""
    from ..analysis.embeddings import cache_info

    result = cache_info()
    if as_json:
        print_json(result)
        return
    console.print(
        f"token cache in {result['folder']}: {result['entries']} entries, {_size(result['bytes'])}",
        highlight=False,
        soft_wrap=True,  # one line: a path is not broken in two
    )


@cache_app.command("clear")
def clear_command(as_json: bool = json_option()) -> None:
    """Remove every entry of the token cache, without asking (the decoded datasets stay)."""
    from ..analysis.embeddings import clear_cache

    result = clear_cache()
    if as_json:
        print_json(result)
    elif result["entries"]:
        console.print(
            f"removed the token cache: {result['entries']} entries ({_size(result['bytes'])}) "
            f"from {result['folder']}",
            highlight=False,
            soft_wrap=True,  # one line: a path is not broken in two
        )
    else:
        console.print(
            f"the token cache {result['folder']} is empty: nothing removed", highlight=False, soft_wrap=True
        )
