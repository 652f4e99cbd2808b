"""A run folder belongs to one process: a second `viny train` (or a --resume) into a folder a run is
writing is refused in one line, a finished run's stale lock is cleared, a --resume refuses a
checkpoint of another run, and `viny export` / `viny import-checkpoint` never write over a run or a
file without --force. Real `viny` processes (faultproc.py) on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faultproc import one_line, read_jsonl, run, start, tiny_plan, tiny_train_args, without_timing

from viny_probe import runlock
from viny_probe.checkpoint import file_digest, load_checkpoint
from viny_probe.data import load_dataset
from viny_probe.data.spec import dataset_spec
from viny_probe.model import model_config

EPOCHS = 3  # 16 training images in batches of 8: 2 steps an epoch
ARGS = tiny_train_args(EPOCHS)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    load_dataset("toy-pets", size=model_config("tiny").image_size, limit=dataset_spec("toy-pets").fixed_size)
    return tmp_path_factory.mktemp("run-folder-faults")


@pytest.fixture(scope="module")
def raced(work):
    """A run paused before the second step of its first epoch (config.json written, no checkpoint yet);
    meanwhile a --resume with its options, a second run with its options and one with another seed, all
    into its folder, started together and run to their end; then the first continues to its end."""
    run_dir, go = work / "shared", work / "go"
    first = start([*ARGS, "--out", str(run_dir)], work / "first.log", pause_at_step=2, continue_file=go)
    try:
        first.wait_for("paused before training step 2")
        others = {
            "resume": start([*ARGS, "--out", str(run_dir), "--resume"], work / "resume.log"),
            "same": start([*ARGS, "--out", str(run_dir)], work / "same.log"),
            "seed 1": start([*ARGS, "--out", str(run_dir), "--seed", "1"], work / "seed1.log"),
        }
        ended = {name: (proc.finish(), proc.output()) for name, proc in others.items()}
        go.touch()
        rc = first.finish()
    finally:
        first.stop()
    return {"dir": run_dir, "pid": first.popen.pid, "first": (rc, first.output()), "others": ended}


def test_a_second_writer_of_a_run_folder_is_refused_in_one_line(raced):
    """While a run trains its first epoch, a --resume of its folder, a second run with the same options
    and one with another --seed are each refused with one line naming the folder and the pid holding
    it (rc 2); the first ends with its own files only: config.json, metrics.jsonl with each epoch once,
    results.json and final.pt, all of seed 0, and no lock left. Failed before the fix (no run lock: all
    three trained beside it, metrics.jsonl held epochs twice, config.json was seed 1's). Mutant watched
    failing: ``loop.Run`` without ``hold_run_folder`` (the same)."""
    run_dir, pid = raced["dir"], raced["pid"]
    rc, output = raced["first"]
    assert rc == 0, output
    for name, (rc, output) in raced["others"].items():
        text = one_line(output)
        assert rc == 2 and "Traceback" not in output, (name, output)
        assert f"error: {run_dir} is in use by another viny process (pid {pid} on " in text, (name, text)
        assert text.count("error:") == 1 and "or choose another --out" in text, (name, text)

    assert json.loads((run_dir / "config.json").read_text())["seed"] == 0
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in metrics] == list(range(1, EPOCHS + 1))
    final = load_checkpoint(run_dir / "final.pt")
    assert final["config"]["seed"] == 0 and final["epoch"] == EPOCHS
    assert [without_timing(h) for h in final["history"]] == [without_timing(r) for r in metrics]
    results = json.loads((run_dir / "results.json").read_text())
    assert without_timing(results["final"]) == without_timing(metrics[-1])
    assert not (run_dir / "lock").exists()


def _dead_pid() -> int:
    """The pid of a process that has ended (not reused within a test's time)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def _dead_lock(folder: Path) -> Path:
    """The lock a process killed after writing final.pt, before releasing its lock, leaves."""
    import socket
    import time

    path = folder / "lock"
    info = {"pid": _dead_pid(), "host": socket.gethostname(), "time": time.time(), "token": "killed"}
    path.write_text(json.dumps(info))
    return path


def test_a_finished_runs_stale_lock_is_cleared_without_a_word(raced, work):
    """A lock of a dead pid beside final.pt (a run killed between final.pt and releasing its lock) is
    removed by the next viny that looks: a second `viny train --out` there is told the folder holds a
    run (not that it is in use, nor that a lock was taken over), and the lock is gone. Failed before the
    fix (the lock stayed). Mutant watched failing: ``runlock.clear_finished_lock`` returning at once
    (the refusal then says "took over its stale lock" first)."""
    run_dir = work / "finished-with-lock"
    shutil.copytree(raced["dir"], run_dir)
    lock = _dead_lock(run_dir)
    rc, output = run([*ARGS, "--out", str(run_dir)], work / "finished-with-lock.log")
    text = one_line(output)
    assert rc == 2 and f"error: {run_dir} already holds a run; pass --resume" in text, text
    assert "took over" not in text and "in use" not in text
    assert not lock.exists()


def test_resume_refuses_a_checkpoint_of_another_run(raced, work):
    """What the race left before the run lock: config.json of a seed-1 run beside the checkpoint of a
    seed-0 run. --resume with the seed-1 options is refused in one line naming the checkpoint,
    config.json and the differing key; nothing is written. Failed before the fix (rc 0: a final.pt
    claiming seed 1 over seed-0 weights). Mutant watched failing: ``loop._check_checkpoint_run``
    skipping the config comparison."""
    run_dir = work / "mixed"
    shutil.copytree(raced["dir"], run_dir)
    (run_dir / "final.pt").unlink()
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "seed": 1}))
    before = file_digest(run_dir / "checkpoint.pt")
    rc, output = run([*ARGS, "--out", str(run_dir), "--resume", "--seed", "1"], work / "mixed.log")
    text = one_line(output)
    assert rc == 2 and "Traceback" not in output, output
    assert f"--resume refused: {run_dir / 'checkpoint.pt'} was written by another run than" in text, text
    assert "seed: 0 -> 1" in text and text.count("error:") == 1
    assert file_digest(run_dir / "checkpoint.pt") == before and not (run_dir / "final.pt").exists()


def test_export_into_a_run_folder_or_over_a_file_needs_force(raced, work):
    """`viny export RUN/final.pt -o RUN` is refused in one line naming the folder and --force, and the
    run's config.json stays; an export over an earlier export is refused the same way, and --force
    replaces it. Failed before the fix (rc 0, the run's config.json was the export's). Mutant watched
    failing: ``export_encoder`` without ``refuse_to_overwrite``."""
    run_dir = raced["dir"]
    config = (run_dir / "config.json").read_bytes()
    rc, output = run(["export", str(run_dir / "final.pt"), "-o", str(run_dir)], work / "export-run.log")
    text = one_line(output)
    assert rc == 2 and f"{run_dir} is a viny run folder" in text and "--force" in text, text
    assert (run_dir / "config.json").read_bytes() == config and not (run_dir / "encoder.safetensors").exists()

    out = work / "exported"
    assert run(["export", str(run_dir / "final.pt"), "-o", str(out)], work / "export-1.log")[0] == 0
    rc, output = run(["export", str(run_dir / "final.pt"), "-o", str(out)], work / "export-2.log")
    text = one_line(output)
    assert rc == 2 and f"{out / 'encoder.safetensors'} exists already" in text and "--force" in text, text
    rc, output = run(["export", str(run_dir / "final.pt"), "-o", str(out), "--force"], work / "export-3.log")
    assert rc == 0, output


def test_import_over_a_runs_final_checkpoint_needs_force(raced, work):
    """`viny import-checkpoint X -o RUN/final.pt` is refused in one line naming the path and --force;
    the trained final.pt stays. Failed before the fix (rc 0, final.pt replaced by the import). Mutant
    watched failing: ``import_authors_checkpoint`` without ``refuse_to_overwrite``."""
    run_dir = raced["dir"]
    authors = work / "authors"
    rc, output = run(
        ["export", str(run_dir / "final.pt"), "-o", str(authors), "--format", "authors"], work / "a.log"
    )
    assert rc == 0, output
    before = file_digest(run_dir / "final.pt")
    rc, output = run(
        ["import-checkpoint", str(authors / "encoder.pth"), "-o", str(run_dir / "final.pt"), "--heads", "2"],
        work / "import.log",
    )
    text = one_line(output)
    assert rc == 2 and f"-o {run_dir / 'final.pt'}: {run_dir} is a viny run folder" in text, text
    assert "--force" in text and file_digest(run_dir / "final.pt") == before


def test_a_finished_lock_is_ignored_by_the_sweep_and_cleared(tmp_path):
    """A stale lock (dead pid) of an unfinished stage is not "running" in a dry run; beside final.pt (a
    worker killed after final.pt, before releasing its lock) a sweep counts the stage done without taking
    anything over, and the lock is removed. Failed before the fix (the lock stayed; the unfinished
    stage showed "running"). Mutant watched failing: ``runlock.clear_finished_lock`` returning at once
    (the lock stays)."""
    from viny_probe.experiments import sweep as sw
    from viny_probe.experiments.plans import PLANS, expand, with_options

    plan = with_options(
        PLANS["mini"], seeds=1, pretrain_sizes=(0,), finetune_sizes=(250,), intermediate=False
    )
    (stage,), _ = expand(plan)
    d = sw.stage_dir(tmp_path, stage.id)
    d.mkdir(parents=True)
    lock = _dead_lock(d)
    statuses = {r["id"]: r["status"] for r in sw.dry_run(plan, tmp_path).stages}
    assert statuses[stage.id] == "todo"  # nothing trained, its worker gone: not "running"
    (d / "final.pt").write_bytes(b"")
    log: list[str] = []
    assert sw.run_stage(stage, tmp_path, sw.Execution(progress=False), log.append) == "done"
    assert not lock.exists() and not any("took over" in m for m in log)
    assert runlock.read_lock(lock) is None


SWEEP_PLAN = tiny_plan("borrow")


def test_a_sweep_stage_and_its_run_hold_one_lock(work, tmp_path, monkeypatch):
    """A sweep worker holds its stage's lock while it trains the stage, and the run takes its folder's
    lock: the same file, which the run borrows from its own worker instead of refusing it. While the
    run trains, the lock is the worker's; after the stage none is left. Mutant watched failing:
    ``runlock.hold_run_folder`` without its look-up of the locks this process holds (the run refuses
    its own worker: "is in use by another viny process (pid <its own>)")."""
    from viny_probe.experiments import sweep as sw
    from viny_probe.experiments.plans import load_plan_file

    (tmp_path / "plan.toml").write_text(SWEEP_PLAN)
    plan = load_plan_file(tmp_path / "plan.toml")
    (stage,), _ = sw.expand(plan)
    lock = sw.stage_dir(tmp_path, stage.id) / "lock"
    seen = []
    real_train = sw.train

    def train(cfg, run_dir, **kwargs):
        seen.append(runlock.read_lock(lock))
        return real_train(cfg, run_dir, **kwargs)

    monkeypatch.setattr(sw, "train", train)
    assert (
        sw.run_stage(stage, tmp_path, sw.Execution(device="cpu", progress=False), log=lambda m: None) == "ran"
    )
    assert len(seen) == 1 and seen[0]["pid"] == os.getpid()
    assert (lock.parent / "final.pt").exists() and not lock.exists()
