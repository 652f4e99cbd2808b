"""Real `viny` processes for the fault tests: started, paused at a known point, killed with SIGKILL.

A process is paused deterministically, never after a guessed delay: inside an atomic write by the
test-only ``VINY_TEST_PAUSE_IN_WRITE`` (``viny_probe.checkpoint``), or before a training step by the
launcher below, which wraps ``engine.train_step`` and then runs ``viny``'s own ``main()``. Both say so
on stderr; the test reads that line and kills the process there.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 180  # for a process to reach its pause or its end (generous: 2 shared cores)
TIMING_KEYS = ("seconds", "img_per_s")

# `python -c LAUNCHER ARGS...` is `viny ARGS...`, pausing before training step VINY_FAULTS_PAUSE_AT_STEP
# (for 600 s, or until the file VINY_FAULTS_CONTINUE_FILE exists).
# With VINY_FAULTS_PAUSE_BLOCKS=1 the pause is one the main thread cannot leave promptly on a signal:
# its way out waits for a thread, as the shutdown of a decode pool does (or as one long C call, a
# backward pass on a CPU, holds off Python's signal handler until it returns).
LAUNCHER = """
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
from viny_probe.trainers import engine
real_step, calls = engine.train_step, [0]
pause_at = int(os.environ.get("VINY_FAULTS_PAUSE_AT_STEP", "0"))
go = os.environ.get("VINY_FAULTS_CONTINUE_FILE")
blocks = os.environ.get("VINY_FAULTS_PAUSE_BLOCKS") == "1"
def step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == pause_at:
        print(f"viny-test: paused before training step {pause_at}", file=sys.stderr, flush=True)
        if blocks:
            with ThreadPoolExecutor(1) as pool:
                pool.submit(time.sleep, 600)
                time.sleep(600)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (go and os.path.exists(go)):
            time.sleep(0.05)
    return real_step(*args, **kwargs)
engine.train_step = step
from viny_probe.cli import main
sys.argv = ["viny", *sys.argv[1:]]
main()
"""


def _limit_file_size(limit: int):
    def apply() -> None:
        # The write then fails with EFBIG, as on a full disk, instead of the process being killed.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@dataclass
class Proc:
    """A running `viny` process; stderr is read line by line in a thread, stdout goes to a file."""

    popen: subprocess.Popen
    stdout_path: Path
    lines: queue.Queue = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def wait_for(self, marker: str) -> str:
        """The first stderr line holding ``marker``; fails if the process ends first."""
        while True:
            try:
                line = self.lines.get(timeout=WAIT_S)
            except queue.Empty:
                self.kill()
                pytest.fail(f"no {marker!r} on stderr within {WAIT_S} s")
            if line is None:
                self.popen.wait()
                pytest.fail(f"ended (rc {self.popen.returncode}) before {marker!r}:\n{self.output()}")
            if marker in line:
                return line

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, as the OOM killer or a lost node would end it."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=WAIT_S)

    def stop(self) -> None:
        """Kill it if it still runs (a test that failed before it ended it)."""
        if self.popen.poll() is None:
            self.kill()

    def finish(self) -> int:
        rc = self.popen.wait(timeout=WAIT_S)
        self.reader.join(timeout=WAIT_S)
        return rc

    def output(self) -> str:
        return self.stdout_path.read_text() + "".join(self.stderr)


def tiny_train_args(epochs: int = 3) -> list[str]:
    """`viny train segment` on the tiny model, 16 training images in batches of 8 (2 steps an epoch),
    8 test images, on the CPU, quiet: the run every fault test kills, races or signals."""
    return ["train", "segment", "--model", "tiny", "--epochs", str(epochs), "--batch-size", "8",
            "--train-size", "16", "--test-size", "8", "--device", "cpu", "-q"]  # fmt: skip


def tiny_plan(name: str) -> str:
    """A plan file of one fine-tuning stage of 3 epochs of one step each (8 toy-pets images, tiny model)."""
    return f"""
base = "mini"
name = "{name}"
model = "tiny"
seeds = [0]
pretrain_sizes = [0]
finetune_sizes = [8]
intermediate = false
test_size = 8
epochs_scale = 0.1
"""


def start(
    args: list[str],
    log: Path,
    *,
    pause_at_step: int = 0,
    continue_file: Path | None = None,
    pause_blocks: bool = False,
    pause_in_write: str | None = None,
    file_size_limit: int | None = None,
) -> Proc:
    """Start `viny ARGS` (through the launcher when ``pause_at_step``; the pause ends once
    ``continue_file`` exists, if given; ``pause_blocks``: see LAUNCHER)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("VINY_TEST_PAUSE_IN_WRITE", None)
    if pause_in_write:
        env["VINY_TEST_PAUSE_IN_WRITE"] = pause_in_write
    env["VINY_FAULTS_PAUSE_AT_STEP"] = str(pause_at_step)
    env.pop("VINY_FAULTS_CONTINUE_FILE", None)
    if continue_file is not None:
        env["VINY_FAULTS_CONTINUE_FILE"] = str(continue_file)
    env["VINY_FAULTS_PAUSE_BLOCKS"] = "1" if pause_blocks else "0"
    command = [sys.executable, "-c", LAUNCHER] if pause_at_step else [sys.executable, "-m", "viny_probe"]
    out = open(log, "w")  # noqa: SIM115 - closed by the child's end
    popen = subprocess.Popen(
        [*command, *args],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limit_file_size(file_size_limit) if file_size_limit else None,
    )
    out.close()
    proc = Proc(popen, log)

    def read() -> None:
        for line in popen.stderr:
            proc.stderr.append(line)
            proc.lines.put(line)
        proc.lines.put(None)

    proc.reader = threading.Thread(target=read, daemon=True)
    proc.reader.start()
    return proc


def run(args: list[str], log: Path, **options) -> tuple[int, str]:
    """Run `viny ARGS` to its end: (return code, stdout + stderr)."""
    proc = start(args, log, **options)
    rc = proc.finish()
    return rc, proc.output()


def read_jsonl(path: Path) -> list[dict]:
    """Every line of ``path`` as JSON (a torn line fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def one_line(text: str) -> str:
    """Rich wraps long messages at the terminal width; read them as the one line they are."""
    return " ".join(text.split())
