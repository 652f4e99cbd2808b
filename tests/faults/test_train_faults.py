"""`viny train` killed with SIGKILL (mid-epoch, inside a checkpoint write) or stopped by a full disk,
then resumed: it ends with exactly the numbers and weights of a run that nothing interrupted.

Every process here is a real `viny` (faultproc.py). The reference run and the two runs that tests
kill start together with the module, so that they share the two cores.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from faultproc import one_line, read_jsonl, run, start, tiny_train_args, without_timing

from viny_probe.checkpoint import DiskFullError, file_digest, load_checkpoint
from viny_probe.data import load_dataset
from viny_probe.data.spec import dataset_spec
from viny_probe.model import model_config
from viny_probe.trainers import loop

EPOCHS, STEPS_PER_EPOCH = 3, 2  # 16 training images in batches of 8
ARGS = tiny_train_args(EPOCHS)
CHECKPOINT_LIMIT = 200_000  # bytes: the tiny model's checkpoint.pt (~300 kB) does not fit, the rest does


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    # The embedded set, generated once here rather than by two processes at once.
    load_dataset("toy-pets", size=model_config("tiny").image_size, limit=dataset_spec("toy-pets").fixed_size)
    return tmp_path_factory.mktemp("train-faults")


@pytest.fixture(scope="module")
def started(work):
    """The uninterrupted reference run, and the runs killed mid-epoch (paused before the second step of
    epoch 2) and inside their second checkpoint write (paused there), all started at once."""
    procs = {
        "reference": start([*ARGS, "--out", str(work / "reference")], work / "reference.log"),
        "mid-epoch": start(
            [*ARGS, "--out", str(work / "mid-epoch")],
            work / "mid-epoch.log",
            pause_at_step=STEPS_PER_EPOCH + 2,
        ),
        "in-write": start(
            [*ARGS, "--out", str(work / "in-write")],
            work / "in-write.log",
            pause_in_write="checkpoint.pt:2:600",
        ),
    }
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture(scope="module")
def reference(work, started):
    """The reference run's folder, once it has ended (call it)."""

    def finished() -> Path:
        assert started["reference"].finish() == 0, started["reference"].output()
        return work / "reference"

    return finished


def assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    """The same losses and statistics every epoch, the same held-out results, the same final weights."""
    ours, theirs = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(reference_dir / "metrics.jsonl")
    assert [without_timing(r) for r in ours] == [without_timing(r) for r in theirs]
    assert [r["epoch"] for r in ours] == list(range(1, EPOCHS + 1))
    results, expected = (json.loads((d / "results.json").read_text()) for d in (run_dir, reference_dir))
    results["final"], expected["final"] = without_timing(results["final"]), without_timing(expected["final"])
    assert results == expected
    final, reference_final = (
        load_checkpoint(run_dir / "final.pt"),
        load_checkpoint(reference_dir / "final.pt"),
    )
    for part in ("encoder", "head"):
        assert all(torch.equal(final[part][k], reference_final[part][k]) for k in reference_final[part])


def temp_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".*.tmp"))


def test_killed_mid_epoch_then_resumed_equals_an_uninterrupted_run(work, started, reference):
    """SIGKILL after epoch 1 is saved and one step of epoch 2 is taken; --resume redoes epoch 2 from the
    checkpoint and ends where the reference ends. Mutant watched failing: ``loop._restore`` without
    ``optimizer.load_state_dict`` (the resumed losses differ from epoch 2 on)."""
    run_dir, victim = work / "mid-epoch", started["mid-epoch"]
    victim.wait_for("paused before training step")
    victim.kill()
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1 and not (run_dir / "final.pt").exists()
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]

    rc, output = run([*ARGS, "--out", str(run_dir), "--resume"], work / "mid-epoch-resume.log")
    assert rc == 0, output
    assert_same_run(run_dir, reference())


@pytest.fixture(scope="module")
def killed_in_write(work, started) -> Path:
    """A run killed inside its second checkpoint write: the new checkpoint is written and synced to its
    temp file, not yet renamed over checkpoint.pt."""
    victim = started["in-write"]
    victim.wait_for("paused in write 2 of")
    victim.kill()
    return work / "in-write"


def copy_of(run_dir: Path, name: str) -> Path:
    copy = run_dir.with_name(name)
    shutil.copytree(run_dir, copy)
    return copy


def test_killed_inside_a_checkpoint_write_keeps_the_previous_one(killed_in_write, reference):
    """The kill leaves checkpoint.pt as it was (epoch 1, loadable), metrics.jsonl at epoch 1 too, and
    the temp file of the killed write; --resume removes the temp file and ends where the reference
    ends. Mutant watched failing: atomic_write_bytes writing in place (no temp file, no rename): the
    killed write's file is checkpoint.pt itself, which holds epoch 2 while metrics.jsonl says 1."""
    run_dir = copy_of(killed_in_write, "in-write-resumed")
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]
    assert len(temp_files(run_dir)) == 1  # .checkpoint.pt.<random>.tmp, whole but never renamed

    rc, output = run([*ARGS, "--out", str(run_dir), "--resume"], run_dir.with_suffix(".log"))
    assert rc == 0, output
    assert temp_files(run_dir) == []
    assert_same_run(run_dir, reference())


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_epoch(killed_in_write, reference):
    """--resume under a file-size limit the checkpoint does not fit in (EFBIG, as a full disk's ENOSPC):
    epoch 2 trains, its checkpoint cannot be written, and viny stops with one line naming the file, the
    reason and the way on; checkpoint.pt and metrics.jsonl still hold epoch 1 and no temp file is left.
    Without the limit, --resume then ends where the reference ends. Mutant watched failing:
    atomic_write_bytes without its DiskFullError (the bare OSError's line names no file and says
    nothing of the epoch)."""
    run_dir = copy_of(killed_in_write, "disk-full")
    before = file_digest(run_dir / "checkpoint.pt")
    rc, output = run(
        [*ARGS, "--out", str(run_dir), "--resume"],
        work_log(run_dir, "limited"),
        file_size_limit=CHECKPOINT_LIMIT,
    )
    text = one_line(output)
    assert rc == 2 and "Traceback" not in output, output
    assert f"error: cannot write {run_dir / 'checkpoint.pt'}: File too large (EFBIG)" in text
    assert "Epoch 2 finished" in text and "hold epoch 1" in text and "with --resume" in text
    assert file_digest(run_dir / "checkpoint.pt") == before
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]
    assert temp_files(run_dir) == [] and not (run_dir / "final.pt").exists()

    rc, output = run([*ARGS, "--out", str(run_dir), "--resume"], work_log(run_dir, "resumed"))
    assert rc == 0, output
    assert_same_run(run_dir, reference())


def work_log(run_dir: Path, name: str) -> Path:
    return run_dir.with_name(f"{run_dir.name}-{name}.log")


def test_a_failed_metrics_line_is_taken_back(tmp_path, monkeypatch):
    """The metrics.jsonl line is the second write of an epoch; when it fails half-written (the disk
    filled up between), the half line is cut off, the new checkpoint is not renamed into place, and the
    error names metrics.jsonl. Mutant watched failing: no ``os.truncate`` in ``loop._save_epoch``."""
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    loop.save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})
    before = file_digest(tmp_path / "checkpoint.pt")

    class HalfWrite:
        def __init__(self, path, mode):
            self.file = open(path, mode)  # noqa: SIM115

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            self.file.write(text[: len(text) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop, "open", HalfWrite, raising=False)
    with pytest.raises(DiskFullError) as caught:
        loop._save_epoch(tmp_path, {"epoch": 2, "loss": 0.5}, {"epoch": 2})
    message = str(caught.value)
    assert f"cannot write {tmp_path / 'metrics.jsonl'}: No space left on device (ENOSPC)" in message
    assert "Epoch 2 finished (loss 0.5) but is not saved" in message and "hold epoch 1" in message
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert file_digest(tmp_path / "checkpoint.pt") == before and temp_files(tmp_path) == []


KILL_TRIALS = int(os.environ.get("VINY_KILL_TRIALS", "0"))


def _state_after_kill(run_dir: Path) -> str:
    if not (run_dir / "config.json").exists():
        return "before config.json"
    if (run_dir / "final.pt").exists():
        return "after final.pt (exiting)"
    if not (run_dir / "checkpoint.pt").exists():
        return "before the first checkpoint"
    return f"after epoch {load_checkpoint(run_dir / 'checkpoint.pt')['epoch']}"


@pytest.mark.skipif(KILL_TRIALS == 0, reason="VINY_KILL_TRIALS=N kills N runs at random moments (slow)")
def test_runs_killed_at_random_moments_end_like_the_reference(work, reference):
    """VINY_KILL_TRIALS times: a run killed at a random moment, then run again (--resume once its
    config.json exists) until it ends; it must end like the reference. The moment is uniform between
    a fifth of and the whole time an uninterrupted run just took (start-up, epochs, checkpoint writes,
    evaluation, exit). The sleep only picks the moment; nothing is asserted about time."""
    reference_dir = reference()
    rng = random.Random(int(os.environ.get("VINY_KILL_SEED", "0")))
    t0 = time.monotonic()
    rc, output = run([*ARGS, "--out", str(work / "timed")], work / "timed.log")
    assert rc == 0, output
    whole = time.monotonic() - t0
    landed: Counter = Counter()
    for trial in range(KILL_TRIALS):
        run_dir = work / f"random-{trial}"
        victim = start([*ARGS, "--out", str(run_dir)], work / f"random-{trial}.log")
        time.sleep(rng.uniform(0.2 * whole, whole))
        if victim.popen.poll() is None:
            victim.kill()
            landed[_state_after_kill(run_dir)] += 1
        else:
            landed["none: the run had ended"] += 1
        resume = ["--resume"] if (run_dir / "config.json").exists() else []
        rc, output = run([*ARGS, "--out", str(run_dir), *resume], work / f"random-{trial}-again.log")
        assert rc == 0, output
        assert_same_run(run_dir, reference_dir)
    print(f"kill trials: {KILL_TRIALS} (an uninterrupted run took {whole:.1f} s); killed {dict(landed)}")
