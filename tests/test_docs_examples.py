"""The example commands in README.md and docs/*.md run as written.

Every `viny ...` line of a ```bash block is read through the real command line parser, down to its
command, so each option it uses exists, each choice is valid and each value converts (a renamed flag,
such as `--seed` on `viny probe` or `bench --batch`, fails here). Lines that cannot be parsed as
written are skipped with the reason, listed by test_report_the_skipped_examples. Those that run
offline in seconds are run for real (RUN below), as written plus tiny settings appended, in a folder
holding the files they name (a tiny viny checkpoint at runs/spatial/final.pt, random 224-px ViT-S
weights as vit_s.safetensors, docs/any-model.md's my_models.py and its mine.pt); the rest need a GPU,
real datasets, downloaded weights or earlier runs.
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


# ------------------------------------------------------------------------------------------ RUN
# The examples run for real: `viny ARGS` (as words(), comments dropped) -> the tiny settings appended.
TINY_PROBE = ["--probe-images", "8", "--test-images", "4", "--test-size", "8", "--no-knn", "-q"]
RUN: dict[str, list[str]] = {
    "probe runs/spatial/final.pt": TINY_PROBE,
    "probe viny:runs/spatial/final.pt": TINY_PROBE,
    "probe runs/spatial/final.pt --layer all": TINY_PROBE,
    "similarity-map runs/spatial/final.pt toy-pets:17": ["--test-size", "20", "-q"],
    "export runs/spatial/final.pt --format authors -o spatial-authors": ["-q"],
    "cache info": [],
    "cache clear": [],
    "probe timm:vit_small_patch16_224,pretrained=false --dataset toy-pets": TINY_PROBE,
    "probe timm:vit_small_patch16_224 --img-size 112 --weights vit_s.safetensors": TINY_PROBE,
    "probe timm:vit_tiny_patch16_224,img_size=64,patch_size=8,depth=2,embed_dim=32,num_heads=2,reg_tokens=4,"
    "pretrained=false": TINY_PROBE,
    "probe py:my_models.py:build --weights mine.pt": TINY_PROBE,
    "probe py:my_models:build,image_size=112": TINY_PROBE,
}
# What a run must print (stderr), beyond exiting 0.
RUN_SAYS = {
    "probe timm:vit_small_patch16_224 --img-size 112 --weights vit_s.safetensors": (
        "pos_embed resampled from the weights' 14 x 14 grid to 7 x 7"
    ),
}


def _python_block(doc: Path, first_line: str) -> str:
    """The ```python block of ``doc`` whose first line is ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    found = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"{doc.name}: no single python block starting {first_line!r}"
    return found[0]


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory):
    """A folder holding what the RUN examples name, and a cache folder of their own."""
    import torch

    from viny_probe.checkpoint import save_checkpoint
    from viny_probe.model import ViNy

    folder = tmp_path_factory.mktemp("docs-examples")
    torch.manual_seed(1)
    encoder = ViNy("tiny")
    (folder / "runs" / "spatial").mkdir(parents=True)
    save_checkpoint(
        folder / "runs" / "spatial" / "final.pt",
        {"regime": "fresh", "model_config": encoder.cfg.to_dict(), "encoder": encoder.state_dict()},
    )
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vit_s = timm.create_model("vit_small_patch16_224", pretrained=False)  # 224 px: a 14 x 14 grid
    save_file({k: v.contiguous() for k, v in vit_s.state_dict().items()}, folder / "vit_s.safetensors")
    code = _python_block(ROOT / "docs" / "any-model.md", "# my_models.py")
    (folder / "my_models.py").write_text(code)
    namespace: dict = {}
    exec(compile(code, "my_models.py", "exec"), namespace)  # noqa: S102 - the doc's own example
    torch.save(namespace["MyViT"](224).state_dict(), folder / "mine.pt")
    return folder


def test_every_run_example_is_in_the_docs():
    """RUN names lines of the docs as they are: an edited example leaves its RUN entry behind here."""
    written = {" ".join(words(c)) for _, c in EXAMPLES if not why_skipped(c)}
    assert not sorted(set(RUN) - written)


@pytest.mark.parametrize("args", sorted(RUN), ids=sorted(RUN))
def test_the_offline_examples_run(args, example_folder, monkeypatch, capsys):
    """`viny ARGS` + RUN's tiny settings, run from the folder holding the files the line names, exits 0
    (and prints RUN_SAYS where given). Mutants: py_callable._module without the current folder (the
    py:my_models line fails); timm --weights without the pos_embed resample (the --img-size 112
    --weights line fails, naming pos_embed)."""
    from viny_probe.cli import main

    monkeypatch.chdir(example_folder)
    monkeypatch.setenv("VINY_CACHE_DIR", str(example_folder / "cache"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(example_folder))])
    sys.modules.pop("my_models", None)
    monkeypatch.setattr(sys, "argv", ["viny", *shlex.split(args), *RUN[args]])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    err = capsys.readouterr().err
    assert code == 0, f"`viny {args}` exited {code}: {err[-600:]}"
    if args in RUN_SAYS:
        assert RUN_SAYS[args] in " ".join(err.split()), err[-600:]
