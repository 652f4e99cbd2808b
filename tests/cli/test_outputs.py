"""Every command's output path is checked before any work (cli.options.check_output): a read-only
file system, a file where a folder is expected and the reverse, a file among the parents. One line
naming -o/--out and the path, exit 2, no traceback.

The read-only cases run as real `viny` processes, all started together (a read-only tmpfs mounted for
the test; skipped where mounting is not allowed). The inputs named are missing, so an output error
proves the output was checked first; sweep, demo and bench have no input to miss and would start
training or measuring without the check (they are stopped after TIMEOUT_S)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import typer

from viny_probe import cli

TIMEOUT_S = 90
TINY = ["--model", "tiny", "--epochs", "1", "--train-size", "16", "--test-size", "8", "--device", "cpu", "-q"]

# command -> (its arguments before -o, what -o names)
COMMANDS: dict[str, tuple[list[str], str]] = {
    "train": (["train", "segment", *TINY], "folder"),
    "demo": (["demo", "--model", "tiny", "--epochs-scale", "0.01", "--device", "cpu", "-q"], "folder"),
    "sweep": (["sweep", "mini", "--epochs-scale", "0.01", "--device", "cpu", "-q"], "folder"),
    "report": (["report", "{missing}"], "folder"),
    "bench": (["bench", "--device", "cpu", "--model", "tiny", "-q"], "file"),
    "probe": (["probe", "{missing}"], "file"),
    "diagnose": (["diagnose", "{missing}"], "folder"),
    "similarity-map": (["similarity-map", "{missing}", "toy-pets:0"], "file"),
    "reconstruct": (["reconstruct", "{missing}"], "file"),
    "import-checkpoint": (["import-checkpoint", "{missing}"], "file"),
    "export": (["export", "{missing}"], "folder"),
    "explore": (["explore", "{missing}"], "file"),
    "extract": (["extract", "{missing}"], "folder"),
}


def _args(command: str, tmp: Path, out: Path) -> list[str]:
    before, _ = COMMANDS[command]
    return [a.replace("{missing}", str(tmp / "missing.pt")) for a in before] + ["-o", str(out)]


def _one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps a long line at the terminal's width


def test_the_table_covers_every_command_with_an_output() -> None:
    """A new command with -o/--out must join COMMANDS (and so be tested)."""
    root = typer.main.get_command(cli.app)
    ctx = root.make_context("viny", ["--help"], resilient_parsing=True)
    found = set()
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        subs = (
            [command.get_command(ctx, sub) for sub in command.list_commands(ctx)]
            if hasattr(command, "list_commands")
            else [command]
        )
        if any("--out" in p.opts for sub in subs for p in sub.params):
            found.add(name)
    assert found == set(COMMANDS)


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """An empty folder on a read-only file system (a tmpfs mounted read-only: root may not write there
    either, unlike a folder without write permission)."""
    folder = tmp_path_factory.mktemp("read-only")
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a read-only file system")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture(scope="module")
def read_only_runs(read_only, tmp_path_factory):
    """Every command with -o pointing below the read-only folder, all processes started at once."""
    tmp = tmp_path_factory.mktemp("inputs")
    env = {**os.environ, "COLUMNS": "400"}
    procs = {}
    for command, (_, expect) in COMMANDS.items():
        out = read_only / ("out" if expect == "folder" else "out.json")
        procs[command] = subprocess.Popen(
            [sys.executable, "-m", "viny_probe", *_args(command, tmp, out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    results = {}
    for command, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            err = f"(killed after {TIMEOUT_S} s: it did not stop at the output check)\n{err}"
        results[command] = (proc.returncode, err)
    return read_only, results


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_output_on_a_read_only_file_system_is_one_line_before_any_work(command, read_only_runs) -> None:
    """Mutant watched failing: ``check_output`` returning at once (probe: "checkpoint not found"
    instead; sweep, demo, bench: they start training or measuring)."""
    folder, results = read_only_runs
    rc, err = results[command]
    assert rc == 2, err
    assert "Traceback" not in err
    line = _one_line(err)
    assert line.startswith("error: -o/--out ") and f"{folder} is on a read-only file system" in line, err
    assert len(err.strip().splitlines()) == 1, err


def _main(capsys, monkeypatch, args: list[str]) -> tuple[int, str]:
    """`viny ARGS` through the command line's own main() in this process (exit code, stderr)."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(sys, "argv", ["viny", *args])
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_output_of_the_wrong_kind_is_one_line(command, tmp_path, capsys, monkeypatch) -> None:
    """A file where the command writes a folder, or a folder where it writes a file. Mutant watched
    failing: ``check_output`` returning at once (probe -o DIR, export -o FILE, ...: "checkpoint not
    found" and the like: the output was not looked at first)."""
    _, expect = COMMANDS[command]
    wrong = tmp_path / "taken"
    if expect == "folder":
        wrong.write_text("a file")
    else:
        wrong.mkdir()
    monkeypatch.chdir(tmp_path)
    rc, err = _main(capsys, monkeypatch, _args(command, tmp_path, wrong))
    said = (
        "is a file, and viny writes a folder there"
        if expect == "folder"
        else "is a folder, and viny writes a file"
    )
    assert rc == 2 and _one_line(err).startswith(f"error: -o/--out {wrong} {said}"), err


@pytest.mark.parametrize("command", ["train", "probe"])
def test_a_file_among_the_parents_is_one_line(command, tmp_path, capsys, monkeypatch) -> None:
    """Mutant watched failing: ``check_output`` returning at once (probe: "checkpoint not found")."""
    (tmp_path / "file").write_text("a file")
    out = tmp_path / "file" / "below" / "out"
    rc, err = _main(capsys, monkeypatch, _args(command, tmp_path, out))
    assert rc == 2 and f"{tmp_path / 'file'} is a file, not a folder" in _one_line(err), err
