"""Stage locks: one taker at a time, stale locks broken, a held lock keeps a stage from being run twice."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from viny_probe import runlock
from viny_probe.experiments import sweep as sw
from viny_probe.experiments.plans import PLANS, expand, with_options


def test_second_taker_is_refused(tmp_path):
    a, b = runlock.StageLock(tmp_path / "lock"), runlock.StageLock(tmp_path / "lock")
    assert a.acquire()
    assert not b.acquire()
    b.release()  # not its lock: must leave it
    assert (tmp_path / "lock").exists()
    a.release()
    assert not (tmp_path / "lock").exists()
    assert b.acquire()
    b.release()


def test_concurrent_takers_exactly_one(tmp_path):
    locks = [runlock.StageLock(tmp_path / "lock") for _ in range(8)]
    won = []
    barrier = threading.Barrier(len(locks))

    def take(lock):
        barrier.wait()
        if lock.acquire():
            won.append(lock)

    threads = [threading.Thread(target=take, args=(lk,)) for lk in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    won[0].release()


def _fake_lock(path, pid, host, age_s=0.0):
    path.write_text(json.dumps({"pid": pid, "host": host, "time": time.time() - age_s, "token": "x"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_stale_locks(tmp_path):
    path = tmp_path / "lock"
    _fake_lock(path, 2**22 + 12345, socket.gethostname())  # this host, pid that does not exist
    assert runlock.lock_is_stale(path)
    _fake_lock(path, os.getpid(), socket.gethostname())  # this host, live pid
    assert not runlock.lock_is_stale(path)
    _fake_lock(path, 1, "another-host", age_s=10)  # other host, recently touched
    assert not runlock.lock_is_stale(path)
    _fake_lock(path, 1, "another-host", age_s=runlock.STALE_S + 5)  # other host, silent for too long
    assert runlock.lock_is_stale(path)
    lock = runlock.StageLock(path)
    assert lock.acquire()  # broke the stale lock
    assert json.loads(path.read_text())["token"] == lock.token
    lock.release()


def test_heartbeat_touches_lock(tmp_path):
    lock = runlock.StageLock(tmp_path / "lock", heartbeat_s=0.05)
    assert lock.acquire()
    os.utime(tmp_path / "lock", (0, 0))
    time.sleep(0.3)
    assert time.time() - (tmp_path / "lock").stat().st_mtime < 5
    lock.release()


def test_locked_stage_is_not_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sw, "train", lambda *a, **k: calls.append(a))
    plan = with_options(
        PLANS["mini"], seeds=1, pretrain_sizes=(0,), finetune_sizes=(250,), intermediate=False
    )
    (stage,), _ = expand(plan)
    d = tmp_path / "stages" / stage.id
    d.mkdir(parents=True)
    _fake_lock(d / "lock", os.getpid(), socket.gethostname())  # held by a live worker
    assert sw.run_stage(stage, tmp_path, sw.Execution(progress=False), log=lambda m: None) == "locked"
    summary = sw.run_sweep(
        plan, tmp_path, execution=sw.Execution(progress=False), wait=False, log=lambda m: None
    )
    assert calls == [] and stage.id in summary.skipped and summary.cells_done == 0
