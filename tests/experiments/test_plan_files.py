"""Bad plan files (TOML, `viny sweep --plan-file`): every value of the wrong kind or range, a name that
would escape --out, bytes that are not UTF-8, an empty file, a folder: one VinyError line naming the
file and the key, before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from viny_probe.errors import VinyError
from viny_probe.experiments.plans import PLANS, load_plan_file, with_options

BAD_FILES = {
    # id: (file content, what the error says besides the file's name)
    "escaping name": (
        'base = "mini"\nname = "x/../../../escaped"\n',
        "name = 'x/../../../escaped' is not a plan name",
    ),
    "sizes not a list": (
        'base = "mini"\nfinetune_sizes = 32\n',
        "finetune_sizes = 32 must be a list of whole",
    ),
    "seeds a string": ('base = "mini"\nseeds = "abc"\n', "seeds = 'abc' must be a list of whole numbers"),
    "overrides a number": ('base = "mini"\noverrides = 5\n', "overrides = 5 must be tables of settings"),
    "geometry size 0": (
        'base = "mini"\ngeometry = true\ngeometry_pretrain_size = 0\n',
        "geometry_pretrain_size = 0 must be >= 1",
    ),
    "float seeds": ('base = "mini"\nseeds = [0.5, 1]\n', "seeds = [0.5, 1] must be a list of whole numbers"),
    "float sizes": ('base = "mini"\nfinetune_sizes = [250.7]\n', "finetune_sizes = [250.7] must be a list"),
    "float test size": ('base = "mini"\ntest_size = 8.5\n', "test_size = 8.5 must be a whole number"),
    "a flag as text": ('base = "mini"\ngeometry = "yes"\n', "geometry = 'yes' must be true or false"),
    "repeated seed": (
        'base = "mini"\nseeds = [0, 0, 1]\n',
        "seeds [0, 0, 1] repeat [0]; give each seed once",
    ),
    "empty": ("", "is empty (no keys), so its plan would run nothing"),
    "no cells": ('name = "nothing"\n', "its plan has no cells, so it would run nothing"),
    "base a number": ("base = 3\n", "base = 3 must be a named plan in quotes"),
}


@pytest.mark.parametrize("content,said", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_bad_plan_value_is_one_line_naming_the_file_and_the_key(tmp_path, content, said) -> None:
    """Each failed before this check (checked on the code of main): the escaping name, the floats
    (truncated silently), the repeated seed (3/3 cells of 2), the empty file and the plan without
    cells (run nothing, rc 0), geometry_pretrain_size = 0 were accepted; the list of a count, the
    string of seeds and overrides = 5 gave tracebacks. Mutants watched failing: ``check_plan_values``
    returning at once (floats truncated, tracebacks); validate_plan without its name check, or
    without its repeated-seed check."""
    path = tmp_path / "plan.toml"
    path.write_text(content)
    with pytest.raises(VinyError) as caught:
        load_plan_file(path)
    message = str(caught.value)
    assert message.startswith(f"plan file {path}") and said in message and "\n" not in message


def test_bytes_that_are_not_utf8_are_one_line(tmp_path) -> None:
    """Failed before (UnicodeDecodeError traceback)."""
    path = tmp_path / "plan.toml"
    path.write_bytes(b'base = "mini"\ndescription = "\xff\xfe"\n')
    with pytest.raises(VinyError, match=r"plan\.toml is not UTF-8 text \(byte 0xff at offset 29\)"):
        load_plan_file(path)


def test_a_repeated_seed_on_the_command_line_is_refused_too() -> None:
    """The range checks are validate_plan's, for a file and the CLI alike."""
    with pytest.raises(VinyError, match=r"plan mini: seeds \[1, 1\] repeat \[1\]"):
        with_options(PLANS["mini"], seeds=[1, 1])


def test_plan_names_that_are_fine_still_load(tmp_path) -> None:
    path = tmp_path / "small_study-2.toml"
    path.write_text('base = "mini"\nseeds = [3]\n')
    assert load_plan_file(path).name == "mini"
    path.write_text("pretrain_sizes = [0]\nfinetune_sizes = [100]\nseeds = 2\n")
    assert load_plan_file(path).name == "small_study-2"


def _viny(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "viny_probe", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_a_folder_as_plan_file_and_an_escaping_name_in_a_real_sweep(tmp_path) -> None:
    """`viny sweep --plan-file DIR` was an IsADirectoryError traceback; a name with '..' wrote
    plan-x/../../escaped.json outside --out. Both are one line now, and nothing is written."""
    out = tmp_path / "sweep"
    proc = _viny("sweep", "--plan-file", str(tmp_path), "-o", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == f"error: plan file {tmp_path} is a folder; give a TOML file (see docs/experiments.md)"
    )
    plan = tmp_path / "plan.toml"
    plan.write_text('base = "mini"\nname = "x/../../escaped"\nmodel = "tiny"\n')
    proc = _viny("sweep", "--plan-file", str(plan), "-o", str(out), "--device", "cpu", "-q")
    assert proc.returncode == 2 and "name = 'x/../../escaped' is not a plan name" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]  # no sweep folder, no escaped file
