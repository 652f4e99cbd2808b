import json
import subprocess
import sys

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
