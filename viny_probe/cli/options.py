"""What every `viny` command shares, spelled and worded once: the result options (-o/--out, --json,
-q/--quiet), the seeds, --batch-size and --device, enumerated choices (listed by --help, checked by
the parser) and what Ctrl-C says.

The grammar every command follows (tests/cli/test_grammar.py walks every command's --help and checks it):

- ``-o/--out FILE`` or ``-o/--out FOLDER``, one rule: a command whose result is one file takes a FILE
  (``probe`` and ``bench`` write their result as JSON there; ``similarity-map``, ``reconstruct`` and
  ``explore`` a figure or page, companion files named after it going beside it: ``OUT.json``,
  ``OUT-REFERENCE.png``; ``import-checkpoint`` a checkpoint); a command that writes a set of files
  takes a FOLDER and names the files in it (``train``, ``demo``, ``sweep``, ``report``, ``diagnose``,
  ``export``, ``extract``). The metavar in --help says which, and ``check_output`` refuses the other;
- ``--json``: the result as JSON on stdout, and nothing else on stdout (no tables, messages or bars;
  warnings and errors go to stderr as always);
- ``-q/--quiet``: no progress bars or progress messages; results, warnings and errors still print;
- ``--seed`` is the run seed (initialisation, batch order, masking, augmentation) wherever it exists,
  ``--split-seed`` which images form the test set and the pools; any other seed is named for what it
  draws (``reconstruct --mask-seed``); no command takes ``--seed`` for anything else;
- ``--batch-size N``: images per step or forward pass, on every command that batches images;
- ``--device``: on every command that runs a model;
- ``-h`` is ``--help`` everywhere;
- an error is one line, ``error: ...``, naming an option as it is typed (``--batch-size``, not
  ``batch_size``): viny's own errors (VinyError) and the parser's usage errors alike (``app.py``);
- an option that does not apply (``train simmim --mixup``) is refused with the reason, not ignored;
- ``--dataset`` is a choice from the dataset registry of the datasets that fit the command.
"""

from __future__ import annotations

import functools
import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from ..checkpoint import jsonable, write_json
from ..config import PRECISION_CHOICES, SCHEDULE_PRESETS
from ..errors import VinyError
from ..model import MODEL_PRESETS
from ..progress import console
from ..signals import exit_status, headline, stopping_on_signals

JSON_HELP = "print the result as JSON on stdout only (no tables, messages or progress bars)"
QUIET_HELP = "no progress bars or progress messages (results, warnings and errors still print)"
RESULT_FILE_HELP = "also write the result as JSON to this file"


OUT_KINDS = ("file", "folder")


def out_option(default: Any, kind: str, help: str) -> Any:
    """``-o/--out FILE`` or ``-o/--out FOLDER`` (the module's rule); ``help`` says what is written
    there (and the default). Pass the same ``kind`` to ``check_output``."""
    if kind not in OUT_KINDS:
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    return typer.Option(default, "--out", "-o", metavar=kind.upper(), help=help)


SEED_HELP = "run seed: initialisation, batch order, masking and augmentation"
SPLIT_SEED_HELP = "split seed: which images form the fixed test set and the pools"


def split_seed_option(default: Any = None, help: str = "default: the checkpoint's, from its lineage") -> Any:
    """``--split-seed`` (never ``--seed``, which is always the run seed)."""
    return typer.Option(default, "--split-seed", help=f"{SPLIT_SEED_HELP} ({help})")


def at_least(flag: str, low: int):
    """A parser callback: None or a number >= ``low``, else viny's one-line error naming ``flag``
    (``--batch-size must be >= 1 (got 0)``), the wording of every range check (``checks.check_range``)."""

    def check(value):
        if value is not None:
            from ..checks import check_range

            check_range(value, flag, low)
        return value

    return check


def batch_size_option(default: Any, help: str = "images per forward pass") -> Any:
    """``--batch-size N`` (at least 1, checked as the command line is read); ``default`` from the
    library's parameter object (``analysis.options.ModelOptions.batch_size``, ...), not written here."""
    return typer.Option(default, "--batch-size", callback=at_least("--batch-size", 1), help=help)


def check_output(path: Path | str | None, expect: str, flag: str = "-o/--out") -> None:
    """Refuse, before a command does any work, an output path it could not write: one VinyError line
    naming ``flag``, the path and the fix. ``expect`` is "folder" (the command writes files into it)
    or "file". Every command with an output calls this first, so that `viny probe` does not compute
    for minutes and then fail to write its result.

    Checked: a file where a folder is expected and the reverse; a file among the missing path's
    parents; the nearest existing folder not writable (a read-only file system, or permissions; by
    ``os.access``, which writes nothing, so a full disk is still found, and named, by the write
    itself)."""
    if path is None:
        return
    if expect not in ("folder", "file"):
        raise ValueError(f"expect must be 'folder' or 'file', got {expect!r}")
    path = Path(path).expanduser()
    if expect == "folder" and path.exists() and not path.is_dir():
        raise VinyError(
            f"{flag} {path} is a file, and viny writes a folder there; give a folder path (or remove the file)"
        )
    if expect == "file" and path.is_dir():
        raise VinyError(
            f"{flag} {path} is a folder, and viny writes a file there; give a file path, e.g. "
            f"{path / ('result' + (path.suffix or '.json'))}"
        )
    existing = path if expect == "folder" else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise VinyError(
            f"{flag} {path}: {existing} is a file, not a folder, so nothing can be written below it; "
            "give another path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "is on a read-only file system" if read_only else "is not writable (its permissions forbid it)"
        raise VinyError(f"{flag} {path}: {existing} {why}; give an output path on a writable disk")


def json_option() -> Any:
    return typer.Option(False, "--json", help=JSON_HELP)


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def print_json(result: Any) -> None:
    """The result as JSON on stdout (tensors, paths, numpy values made plain; NaN as null)."""
    print(json.dumps(jsonable(result), indent=1, allow_nan=False))


def write_result(path: Path | None, result: Any) -> None:
    """``-o`` of a command that only prints: the result as JSON in ``path``."""
    if path is not None:
        write_json(Path(path), jsonable(result))


def choices(name: str, values) -> type[Enum]:
    """A str Enum of ``values``: typer lists them in --help and the parser rejects anything else,
    naming them. Built from the tuple that owns the values (config.PHASES, MODEL_PRESETS, ...)."""
    return Enum(name, {v: v for v in values}, type=str)


def value(option: Any) -> Any:
    """The plain value of a choice option (its Enum member's value; None and plain values as they are)."""
    return option.value if isinstance(option, Enum) else option


Preset = choices("Preset", SCHEDULE_PRESETS)
Model = choices("Model", MODEL_PRESETS)
Precision = choices("Precision", PRECISION_CHOICES)
PRESET_HELP = (
    "paper = Table A1 exactly; authors = the study's code where it differs (pre-training lr 1e-3 gamma 0.5, "
    "CLS-Intel MixUp 0.1 and flip + contrast transform; docs/fidelity.md); quick = short CPU schedule"
)
PRECISION_HELP = (
    "auto: bf16 where the device runs it natively (a CPU with AVX512_BF16/AMX, a CUDA GPU), else fp32; "
    "bf16: autocast, fp32 master weights"
)

# The values of analysis.reference.BACKGROUND_CHOICES and analysis.export.EXPORT_FORMATS, repeated here so
# that starting `viny` does not import viny_probe.analysis (a second on every start, shell completion
# included); tests/cli/test_conventions.py checks that they agree.
Background = choices("Background", ("study", "most-background-corner"))
ExportFormat = choices("ExportFormat", ("viny", "authors"))

# Every --dataset option made by dataset_option, with what fits its command: refresh_dataset_options
# lists the registry again once plugins are loaded (the commands are defined before that).
_DATASET_OPTIONS: list[tuple[Any, dict, str]] = []


def datasets_that_fit(masks: bool = False, embedded: bool | None = None, extra: tuple[str, ...] = ()):
    """The registered datasets (only those with per-pixel masks for ``masks``), then ``extra`` names."""
    from ..data.spec import dataset_names

    return (*dataset_names(trimaps=True if masks else None, embedded=embedded), *extra)


def dataset_option(help: str, default: Any = None, **fits: Any) -> Any:
    """``--dataset``: a choice of the registered datasets that fit the command (``fits``: the
    arguments of ``datasets_that_fit``), listed in --help and checked by the parser against the
    registry as it is when the command line is read (plugins included)."""

    def parse(text: str) -> str:
        names = datasets_that_fit(**fits)
        if text in names:
            return text
        raise typer.BadParameter(f"{text!r} is not one of {', '.join(repr(n) for n in names)}.")

    option = typer.Option(
        default,
        "--dataset",
        parser=parse,
        autocompletion=lambda: list(datasets_that_fit(**fits)),
        help=help,
    )
    _DATASET_OPTIONS.append((option, fits, help))
    refresh_dataset_options()
    return option


def refresh_dataset_options() -> None:
    """Every --dataset option's metavar and help listing the datasets registered now."""
    for option, fits, help in _DATASET_OPTIONS:
        names = datasets_that_fit(**fits)
        option.metavar = "[" + "|".join(names) + "]"
        option.help = f"{help} (one of: {', '.join(names)})"


DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "auto (cuda when torch sees a GPU, else cpu) | cpu | cuda | cuda:N"


def parse_device(text: str) -> str:
    if text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise typer.BadParameter(f"{text!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'.")


def device_option(default: str = "auto", help: str = DEVICE_HELP) -> Any:
    """``--device``: a choice of auto | cpu | cuda that also takes cuda:N (a GPU by index)."""
    return typer.Option(
        default,
        parser=parse_device,
        metavar="<auto|cpu|cuda|cuda:N>",
        autocompletion=lambda: list(DEVICES),
        help=help,
    )


def interruptible(message: str):
    """Wrap a command so that Ctrl-C (SIGINT) and SIGTERM print ``message`` (what is kept, how to
    continue) and exit 130 or 143 (128 + the signal), within about a second (``viny_probe.signals``)."""

    def wrap(fn):
        @functools.wraps(fn)
        def command(*args, **kwargs):
            with stopping_on_signals(message) as stopping:
                try:
                    return fn(*args, **kwargs)
                except KeyboardInterrupt as error:
                    signum = stopping.end(error)
                    console.print(f"[yellow]{headline(signum)}[/] {message}", highlight=False)
                    raise typer.Exit(exit_status(signum)) from None

        return command

    return wrap


# What Ctrl-C or SIGTERM leaves behind, per kind of command.
INTERRUPTED_TRAINING = (
    "Finished epochs are saved in the run folder; continue with the same command and --resume."
)
INTERRUPTED_NOTHING_WRITTEN = "Nothing was written; run the command again."
INTERRUPTED_PARTIAL = (
    "Files written before the interrupt are kept but the set is incomplete (a figure may be cut off); "
    "run the command again to write them all."
)
