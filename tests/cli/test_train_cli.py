import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from viny_probe.cli import app


def test_train_segment_prints_scores_beside_baselines(tmp_path, tiny_train_args):
    result = CliRunner().invoke(app, ["train", "segment", *tiny_train_args(), "--out", str(tmp_path / "seg")])
    assert result.exit_code == 0, result.output
    assert "all-background" in result.output and "position-prior" in result.output
    cfg = json.loads((tmp_path / "seg" / "config.json").read_text())
    assert cfg["epochs"] == 1 and cfg["lr"] == 2e-3 and cfg["milestones"] == [21, 27, 29]


def test_overrides_reach_the_resolved_config(tmp_path, tiny_train_args):
    args = [
        "train",
        "simmim",
        *tiny_train_args(),
        "--lr",
        "0.01",
        "--milestones",
        "1,2",
        "--gamma",
        "0.5",
        "--weight-decay",
        "0",
        "--preset",
        "paper",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "s"),
    ]
    assert CliRunner().invoke(app, args).exit_code == 0
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert (cfg["lr"], cfg["milestones"], cfg["gamma"], cfg["weight_decay"], cfg["seed"]) == (
        0.01,
        [1, 2],
        0.5,
        0.0,
        3,
    )
    assert cfg["preset"] == "paper" and cfg["batch_size"] == 8


def _viny(*args: str) -> subprocess.CompletedProcess:
    """The real command line in a subprocess, as a user types it (``main()`` prints errors)."""
    return subprocess.run(
        [sys.executable, "-m", "viny_probe", *args], capture_output=True, text=True, timeout=120
    )


def test_user_errors_print_a_message_not_a_traceback(tmp_path, tiny_train_args):
    proc = _viny("train", "segment", *tiny_train_args(), "--milestones", "ten", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert "--milestones must be comma-separated" in proc.stderr and "Traceback" not in proc.stderr
    proc = _viny(
        "train",
        "segment",
        "--init",
        str(tmp_path / "missing.pt"),
        *tiny_train_args(),
        "--out",
        str(tmp_path / "y"),
    )
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr


# Each numeric option out of its range, through the real command line: one line naming the flag as typed
# and the value, exit 2, no traceback. Before the fix --workers -1 / 1000, --lr inf and --weight-decay inf
# were accepted and --poll -5 ended in a traceback.
OUT_OF_RANGE = [
    (["train", "simmim", "--workers", "-1"], "--workers must be between 0 and"),
    (["train", "simmim", "--workers", "1000"], "--workers must be between 0 and"),
    (["train", "simmim", "--lr", "inf"], "--lr must be a finite number > 0 (got inf)"),
    (["train", "simmim", "--lr", "0"], "--lr must be a finite number > 0 (got 0.0)"),
    (["train", "simmim", "--weight-decay", "inf"], "--weight-decay must be a finite number >= 0 (got inf)"),
    (["train", "simmim", "--weight-decay", "-0.1"], "--weight-decay must be a finite number >= 0 (got -0.1)"),
    (["train", "simmim", "--epochs", "0"], "--epochs must be >= 1 (got 0)"),
    (["train", "simmim", "--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
    (["sweep", "mini", "--poll", "-5"], "--poll must be a finite number > 0 (got -5.0)"),
    (["bench", "--workers", "-1"], "--workers must be between 0 and"),
]


@pytest.mark.parametrize(("args", "says"), OUT_OF_RANGE, ids=[" ".join(a) for a, _ in OUT_OF_RANGE])
def test_numeric_options_out_of_range_are_one_line_naming_the_flag(tmp_path, args, says):
    """Every case failed before the fix (accepted, a traceback, or the message without the value).
    Mutants watched failing: ``checks.check_range`` without its ``math.isfinite`` (--lr inf trained
    until its loss went non-finite) and ``--workers`` dropped from ``TrainConfig.validate`` (--workers -1
    went on to train)."""
    out = ["--out", str(tmp_path / "out")] if args[0] != "bench" else ["--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "viny_probe", *args, *out],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "1000"},
    )
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("error: ") and says in lines[0]
    assert not (tmp_path / "out").exists() or args[0] == "sweep"
