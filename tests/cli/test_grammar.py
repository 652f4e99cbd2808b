"""One grammar for every `viny` command (the rules are in viny_probe/cli/options.py's docstring): the
tests walk every command's --help through the real CLI and hold each to them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from viny_probe.cli import app
from viny_probe.cli.options import SEED_HELP, SPLIT_SEED_HELP, datasets_that_fit
from viny_probe.config import option_specs, options_class, regimes_taking
from viny_probe.data.spec import dataset_names
from viny_probe.errors import VinyError
from viny_probe.registry import REGIMES

ROOT = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "250"}

# The commands that run a model (and so take --device); every other command must not need one.
RUNS_A_MODEL = {
    "train",
    "demo",
    "sweep",
    "bench",
    "probe",
    "diagnose",
    "similarity-map",
    "reconstruct",
    "explore",
    "extract",
}
# The commands whose --dataset is scored against per-pixel masks: only datasets with masks fit.
NEEDS_MASKS = {"probe", "diagnose", "bench"}
# Arguments that let each command reach its output check (none of these files exists).
ARGUMENTS = {
    "probe": ["x.pt"],
    "diagnose": ["x.pt"],
    "similarity-map": ["x.pt", "toy-pets:1"],
    "reconstruct": ["x.pt"],
    "import-checkpoint": ["x.pth"],
    "export": ["x.pt"],
    "report": ["SW"],
    "explore": ["x.pt"],
    "extract": ["x.pt"],
}


def invoke(args, **kw):
    return CliRunner().invoke(app, args, prog_name="viny", **kw)


def all_commands() -> list[tuple[tuple[str, ...], object]]:
    """Every leaf command, by its path: `viny train REGIME` for each registered regime, the cache
    subcommands, and the rest."""
    found = []

    def walk(command, path, ctx):
        sub = getattr(command, "list_commands", None)
        if sub is None:
            found.append((path, command))
            return
        for name in command.list_commands(ctx):
            child = command.get_command(ctx, name)
            walk(child, (*path, name), ctx)

    root = typer.main.get_command(app)
    walk(root, (), root.make_context("viny", ["--help"], resilient_parsing=True))
    return found


COMMANDS = all_commands()
IDS = [" ".join(p) for p, _ in COMMANDS]


def options_of(command) -> dict[str, object]:
    """Every spelling of every option -> the option."""
    return {name: p for p in command.params if p.param_type_name == "option" for name in p.opts}


def test_the_walk_finds_every_command():
    names = {p[0] for p, _ in COMMANDS}
    assert RUNS_A_MODEL | set(ARGUMENTS) | {"cache"} <= names
    assert {p[1] for p, _ in COMMANDS if p[0] == "train"} == set(REGIMES.names())


@pytest.mark.parametrize("path, command", COMMANDS, ids=IDS)
def test_every_command_follows_the_grammar(path, command):
    """-h is --help; --seed only the run seed and --split-seed only the split seed, each with its
    wording, never one as an alias of the other; --batch-size, never --batch; --device exactly where a
    model runs; -o/--out shown as FILE or FOLDER. Mutants applied once, each failing this test: the
    `--seed` alias of probe's --split-seed back; bench's `--batch` back; reconstruct without --device;
    diagnose's -o without its FOLDER metavar (typer's PATH)."""
    res = invoke([*path, "-h"], env=WIDE)
    assert res.exit_code == 0 and "Usage:" in res.output, res.output
    help_text = res.output
    options = options_of(command)
    seeds = {name for name in options if "seed" in name}
    assert seeds <= {"--seed", "--split-seed", "--seeds", "--mask-seed"}, seeds
    if "--seed" in options:
        assert options["--seed"].opts == ["--seed"] and options["--seed"].help.startswith(SEED_HELP)
    if "--split-seed" in options:
        assert options["--split-seed"].opts == ["--split-seed"]
        assert options["--split-seed"].help.startswith(SPLIT_SEED_HELP)
    if "--seeds" in options:
        assert options["--seeds"].help.startswith("run seeds")
    assert "--batch" not in options and "--bs" not in options
    assert ("--device" in options) == (path[0] in RUNS_A_MODEL), path
    if "--out" in options:
        out = options["--out"]
        assert out.opts == ["--out", "-o"] and out.metavar in ("FILE", "FOLDER"), (path, out.metavar)
        assert out.metavar in help_text
    for name in ("--seed", "--split-seed", "--batch-size", "--device", "--out"):
        assert (name in options) == (f" {name} " in help_text), name  # hidden ones are the regime's


@pytest.mark.parametrize(
    "path, command",
    [c for c in COMMANDS if "--out" in options_of(c[1])],
    ids=lambda c: " ".join(c) if isinstance(c, tuple) else "",
)
def test_out_is_refused_when_it_is_the_other_kind(path, command, tmp_path):
    """The FILE / FOLDER shown in --help is what the command checks: a folder given to a FILE command
    and a file given to a FOLDER command are refused in one line naming -o/--out, before any work.
    Mutant applied once, failing this test: explore's -o shown as FOLDER (it writes one HTML file)."""
    kind = options_of(command)["--out"].metavar
    target = tmp_path / "taken"
    target.mkdir() if kind == "FILE" else target.write_text("x")
    args = [*path, *ARGUMENTS.get(path[0], []), "-o", str(target)]
    res = invoke(args, env=WIDE)
    assert isinstance(res.exception, VinyError), (args, res.output)
    said = str(res.exception)
    assert "-o/--out" in said and ("is a folder" if kind == "FILE" else "is a file") in said, said


@pytest.mark.parametrize(
    "path, command",
    [c for c in COMMANDS if "--dataset" in options_of(c[1])],
    ids=lambda c: " ".join(c) if isinstance(c, tuple) else "",
)
def test_dataset_lists_the_registered_datasets_that_fit(path, command):
    """--dataset is a choice of the dataset registry: --help lists those that fit the command (with
    masks for the diagnostics) and the parser refuses any other, listing them. Mutant applied once,
    failing this test: probe's --dataset a plain string again (toy-scenes, without masks, got past
    the parser)."""
    help_text = invoke([*path, "-h"], env=WIDE).output
    if path[0] == "train":
        return  # each regime's --dataset: every registered dataset (test_conventions checks the choice)
    bench = path[0] == "bench"  # the bench reads embedded data only, or random tensors
    fits = datasets_that_fit(
        masks=path[0] in NEEDS_MASKS, embedded=True if bench else None, extra=("random",) if bench else ()
    )
    option = options_of(command)["--dataset"]
    assert option.metavar == "[" + "|".join(fits) + "]"
    assert f"(one of: {', '.join(fits)})" in " ".join(help_text.replace("│", " ").split())
    unfit = [n for n in dataset_names() if n not in fits]
    if unfit:
        res = invoke([*path, *ARGUMENTS.get(path[0], []), "--dataset", unfit[0]], env=WIDE)
        assert res.exit_code == 2 and unfit[0] in res.output, res.output
        assert all(repr(n) in res.output for n in fits), res.output


# Every option some regime declares (Regime.Options), by name.
REGIME_OPTIONS = sorted({s.name for r in REGIMES.names() for s in option_specs(options_class(r))})


@pytest.mark.parametrize("option", REGIME_OPTIONS)
def test_a_regime_refuses_an_option_it_does_not_take_and_says_which_do(option, monkeypatch):
    """`train simmim --mixup 0.5` said nothing and trained without MixUp; now every regime option is
    refused by the regimes without it, naming those with it, and absent from their --help. Mutants
    applied once, each failing this test: RegimeCommand.parse_args re-raising the parser's NoSuchOption
    (typer's "No such option", no regime named); every regime's flags built from classify's Options."""

    def trained(*_a, **_k):
        raise AssertionError("the command went on to train")

    monkeypatch.setattr("viny_probe.cli.train.run_training", trained)
    flag = "--" + option.replace("_", "-")
    takers = regimes_taking(option)
    assert takers, option
    sample = {
        "targets": "patch-label",
        "mixup": "0.5",
        "mask_token_std": "1",
        "inputs": "raw",
        "crop_source": "original",
    }
    for regime in REGIMES.names():
        args = ["train", regime, flag] + ([sample[option]] if option in sample else [])
        shown = f" {flag}" in invoke(["train", regime, "-h"], env=WIDE).output
        assert shown == (regime in takers), (regime, flag)
        if regime in takers:
            continue
        res = invoke(args)
        assert isinstance(res.exception, VinyError), (args, res.output)
        said = str(res.exception)
        assert said.startswith(f"{flag} does not apply to `viny train {regime}`") and takers[0] in said, said


def test_usage_errors_are_one_line_naming_the_option_as_typed():
    """Mutant applied once, failing this test: the rich_format_error replacement left out of app.py
    (typer's usage line, hint and box)."""
    res = invoke(["probe", "x.pt", "--batch-size", "many"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'--batch-size'" in lines[0], res.output
    res = invoke(["probe", "x.pt", "--batch-size", "0"])  # a range check: viny's own wording, as typed
    assert isinstance(res.exception, VinyError) and str(res.exception) == "--batch-size must be >= 1 (got 0)"
    res = invoke(["probe", "x.pt", "--seed", "3"])  # the old alias: the parser points at --split-seed
    assert res.exit_code == 2 and "--split-seed" in res.output and len(res.output.strip().splitlines()) == 1


def viny(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The real `viny` (python -m viny_probe, through main()), its output piped."""
    environment = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "viny_probe", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_piped_tables_are_not_cut_to_80_columns_and_library_errors_are_one_line(tmp_path):
    """Through main(): a VinyError is one `error:` line; tables piped into a file are not cut to rich's
    80 columns. Mutant applied once, failing this test: main() without wide_when_piped()."""
    res = viny("sweep", "mini", "-o", str(tmp_path / "sw"), "--dry-run")
    assert res.returncode == 0, res.stderr
    text = res.stdout + res.stderr
    assert "…" not in text and max(len(line) for line in text.splitlines()) > 80
    res = viny("probe", str(tmp_path / "none.pt"))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'none.pt'}"]


def test_training_prints_its_held_out_results_as_words_not_a_dict(tmp_path, tiny_train_args):
    """Mutant applied once, failing this test: run_training printing the regime's summary dict as it is."""
    res = invoke(["train", "classify", *tiny_train_args(), "-o", str(tmp_path / "run")], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "{'" not in res.output and "held-out: test accuracy " in res.output, res.output
