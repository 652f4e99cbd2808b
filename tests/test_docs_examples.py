"""The example commands in README.md and docs/*.md run as written.

Every `viny ...` line of a ```bash block is read through the real command line parser, down to its
command, so each option it uses exists, each choice is valid and each value converts (a renamed flag,
such as `--seed` on `viny probe` or `bench --batch`, fails here). Lines that cannot be parsed as
written are skipped with the reason, listed by test_report_the_skipped_examples. Those that run
offline in seconds are run for real with tiny settings (RUN below); the rest need a GPU, real
datasets, downloaded weights or earlier runs.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import typer

from viny_probe.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bash_commands() -> list[tuple[str, str]]:
    """(file:line, command) of every `viny` line in a ```bash block (continuation lines joined)."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        inside = False
        pending, start = "", 0
        for number, line in enumerate(lines, 1):
            if line.strip().startswith("```"):
                inside = line.strip() == "```bash" and not inside
                continue
            if not inside:
                continue
            text = (pending + " " + line.strip()) if pending else line.strip()
            if text.endswith("\\"):
                pending, start = text[:-1], start or number
                continue
            where = f"{doc.relative_to(ROOT)}:{start or number}"
            pending, start = "", 0
            if text.startswith("viny ") or text.startswith("VINY_") and " viny " in text:
                found.append((where, text))
    return found


def why_skipped(command: str) -> str | None:
    """Why a line cannot be parsed as written (placeholders, shell syntax), or None."""
    if re.search(r"\.\.\.|<[A-Za-z_ ]+>|\$\{?[A-Z]|[|;&]|\[[A-Z]", command.split(" #")[0]):
        return "a placeholder or shell syntax (..., <X>, $VAR, a pipe)"
    return None


def words(command: str) -> list[str]:
    args = shlex.split(command, comments=True)
    while args and re.fullmatch(r"[A-Z_]+=\S*", args[0]):  # VINY_PLUGINS=... viny ...
        args = args[1:]
    assert args[0] == "viny", command
    if ">" in args:  # a redirection of the output: the shell's, not viny's
        args = args[: args.index(">")]
    return args[1:]


def parse(args: list[str]) -> None:
    """Parse ``args`` as `viny` would, down to the command (callbacks and conversions run; the command
    itself does not)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("viny", list(args))

    def pending(ctx) -> list[str]:
        return [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]

    while hasattr(command, "resolve_command") and pending(ctx):
        name, command, rest = command.resolve_command(ctx, pending(ctx))
        ctx = command.make_context(name, rest, parent=ctx)


EXAMPLES = bash_commands()


def test_the_docs_have_examples():
    assert len(EXAMPLES) > 40


@pytest.mark.parametrize("where, command", EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_example_parses_as_written(where, command):
    """Mutant applied once, failing this test: docs/diagnostics.md's reconstruct example with --seed
    again (the mask seed is --mask-seed)."""
    reason = why_skipped(command)
    if reason:
        pytest.skip(f"{where}: {reason}")
    args = words(command)
    if "-h" in args or "--help" in args or "--version" in args or "--show-completion" in args:
        pytest.skip(f"{where}: prints help")
    try:
        parse(args)
    except SystemExit as e:  # click's usage errors in standalone mode
        pytest.fail(f"{where}: `{command}` exited {e.code}")
    except Exception as e:
        if type(e).__name__ in (
            "UsageError",
            "BadParameter",
            "NoSuchOption",
            "MissingParameter",
            "BadOptionUsage",
        ):
            pytest.fail(f"{where}: `{command}`: {e.format_message()}")
        raise


def test_report_the_skipped_examples(capsys):
    """The examples not parsed, and why (printed with -s; the count is held so none slips out unseen)."""
    skipped = [(w, c, why_skipped(c)) for w, c in EXAMPLES if why_skipped(c)]
    with capsys.disabled():
        for where, command, reason in skipped:
            print(f"skipped {where}: {reason}: {command}", file=sys.stderr)
    assert len(skipped) < len(EXAMPLES) / 2


def test_py_sources_are_found_in_the_current_folder(tmp_path, monkeypatch):
    """docs/any-model.md's `viny probe py:my_models:build`, run from the folder holding my_models.py
    (the installed script does not put it on sys.path). Mutant applied once, failing this test:
    py_callable._module without the current folder."""
    from viny_probe.analysis.sources import load_model

    (tmp_path / "my_models_doc_example.py").write_text(
        "from viny_probe.analysis.sources import TokenModel\n"
        "from viny_probe.analysis.sources.viny import viny_token_model\n"
        "from viny_probe.model import ViNy\n\n"
        "def build():\n"
        "    return viny_token_model(ViNy('tiny'))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    model = load_model("py:my_models_doc_example:build")
    assert model.depth == 2 and str(tmp_path) not in sys.path
