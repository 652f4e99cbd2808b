"""The runner: every unfinished stage of a plan, each in its own folder (``experiments.layout``),
resumable, shardable (``experiments.shards``), its results row recorded as it finishes
(``experiments.results``).

Rules:

* A stage is finished when ``final.pt`` exists; it is never trained again. A stage folder holding a
  ``config.json`` but no ``final.pt`` was interrupted and continues with ``train(resume=True)``.
* A worker takes a stage by its lock (``runlock.StageLock``: an O_EXCL file refreshed by a heartbeat,
  taken over when stale, said so and why), which is also the run folder's lock: the run the worker then
  trains borrows it (``runlock.hold_run_folder``), and any other `viny` writing there is refused.
* ``--shard I/N`` (1 <= I <= N): a worker trains only the stages of its share. When a stage's parent
  belongs to another share and is not finished yet, the worker *defers* it and goes on with its other
  stages; when only deferred stages are left it *waits*, polling every ``poll_s`` seconds, and trains
  each as soon as its parent's ``final.pt`` appears (``wait=False``: it returns instead and reports the
  deferred stages; run the same command again later). A stage whose parent failed is skipped.
* ``results.csv``/``results.jsonl`` get a stage's row as it finishes, and are rebuilt from all
  finished stage folders at the end of every sweep.
* A full disk stops the sweep (every later stage would fail the same way); the next sweep resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import DiskFullError, atomic_write_text, damage, write_json
from ..config import TrainConfig
from ..runlock import FINAL, StageLock, clear_finished_lock
from ..trainers import train
from ..trainers.fleet import auto_fleet_size, fleet_config_key, train_fleet
from .dryrun import DryRun, dry_run
from .layout import is_failed, is_finished, legacy_stages, stage_dir
from .plans import Cell, Plan, Stage, describe_labels, expand
from .results import append_row, collect_rows, load_results, rebuild_results
from .shards import assign_shards, parse_shard


@dataclass
class Execution:
    """How to run (never part of a stage's identity)."""

    device: str = "auto"
    precision: str = "fp32"
    workers: int = 0
    compile: bool = False
    progress: bool = True
    # Stages trained at once as one fleet (trainers.fleet): 1 = one at a time; "auto" = as many as the
    # device's free memory holds (fleet.auto_fleet_size).
    fleet: int | str = 1
    cuda_graphs: bool = True  # a fleet's step replayed from a CUDA graph (GPU only; trainers.fleet.Stack)


@dataclass
class SweepSummary:
    out: Path
    plan: Plan
    shard: tuple[int, int]
    ran: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(
        default_factory=dict
    )  # id -> why (parent failed / other shard / deferred)
    cells_total: int = 0
    cells_done: int = 0

    @property
    def complete(self) -> bool:
        return self.cells_done == self.cells_total


def _reconcile_paths(run_dir: Path, cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """An interrupted stage continued from another machine or mount point: config.json may name another
    path for the parent checkpoint or the data. Paths are not part of a stage's identity, so they are
    updated; any other difference is left for train(resume=True) to refuse."""
    path = run_dir / "config.json"
    old = json.loads(path.read_text())
    new = cfg.to_dict()
    changed = [k for k in ("init", "data_root") if old.get(k) != new.get(k)]
    if changed:
        log(f"  {run_dir.name}: updating {', '.join(changed)} in config.json to this machine's paths")
        old.update({k: new[k] for k in changed})
        write_json(path, old)


@dataclass
class Claim:
    """A stage this worker holds the lock of, ready to train: its folder, config and resume flag."""

    stage: Stage
    dir: Path
    cfg: TrainConfig
    resume: bool
    lock: StageLock


def claim_stage(
    stage: Stage, out: Path, execution: Execution, log: Callable[[str], None] = print
) -> Claim | str:
    """Take ``stage``'s lock and prepare its folder (stage.json, paths, a damaged checkpoint set
    aside): a ``Claim``, or 'done' (finished) or 'locked' (another worker has it)."""
    out = Path(out)
    d = stage_dir(out, stage.id)
    if (d / FINAL).exists():
        clear_finished_lock(d)  # a worker killed after final.pt, before releasing the lock
        return "done"
    d.mkdir(parents=True, exist_ok=True)
    lock = StageLock(d / "lock")
    if not lock.acquire():
        return "locked"
    if lock.took_over:
        log(f"  {stage.id}: took over its stale lock ({lock.took_over}); the stage is continued here")
    try:
        if (d / FINAL).exists():  # finished by another worker between our check and the lock
            lock.release()
            return "done"
        worker = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json(d / "stage.json", {**stage.to_dict(), "worker": worker})
        init = str((stage_dir(out, stage.parent) / FINAL).resolve()) if stage.parent else None
        cfg = dataclasses.replace(
            stage.config,
            init=init,
            device=execution.device,
            precision=execution.precision,
            workers=execution.workers,
            compile=execution.compile,
        )
        resume = (d / "config.json").exists()
        if resume:
            _reconcile_paths(d, cfg, log)
            _set_aside_damaged(d, log)
    except BaseException:
        lock.release()
        raise
    return Claim(stage, d, cfg, resume, lock)


def _announce(claim: Claim, log: Callable[[str], None]) -> None:
    stage = claim.stage
    log(
        f"  {'resuming' if claim.resume else 'training'} {stage.id} ({stage.kind}, {describe_labels(stage.labels)})"
    )


def settle(claim: Claim, error: BaseException | None) -> None:
    """After training: record the failure in error.txt (or clear an earlier one), release the lock."""
    try:
        if error is None:
            (claim.dir / "error.txt").unlink(missing_ok=True)
        elif not isinstance(error, KeyboardInterrupt):
            trace = "".join(traceback.format_exception(error))
            with contextlib.suppress(OSError):  # on a full disk error.txt may not fit either
                atomic_write_text(claim.dir / "error.txt", f"{type(error).__name__}: {error}\n\n{trace}")
    finally:
        claim.lock.release()


def run_stage(stage: Stage, out: Path, execution: Execution, log: Callable[[str], None] = print) -> str:
    """Train one stage unless finished or taken. Returns 'done', 'ran' or 'locked'; raises on failure."""
    claim = claim_stage(stage, out, execution, log)
    if isinstance(claim, str):
        return claim
    _announce(claim, log)
    try:
        train(claim.cfg, claim.dir, resume=claim.resume, progress=execution.progress)
    except BaseException as e:  # recorded, the sweep goes on with independent stages
        settle(claim, e)
        raise
    settle(claim, None)
    return "ran"


def _depth(stage: Stage, by_id: dict[str, Stage]) -> int:
    depth = 0
    while stage.parent is not None and stage.parent in by_id:
        stage, depth = by_id[stage.parent], depth + 1
    return depth


def run_sweep(
    plan: Plan,
    out: str | Path,
    shard: tuple[int, int] = (1, 1),
    execution: Execution | None = None,
    wait: bool = True,
    poll_s: float = 30.0,
    wait_timeout_s: float | None = None,
    log: Callable[[str], None] = print,
) -> SweepSummary:
    """Run every unfinished stage of ``plan`` that belongs to ``shard`` (see the module doc)."""
    out = Path(out)
    execution = execution or Execution()
    stages, cells = expand(plan)
    by_id = {s.id: s for s in stages}
    owner = assign_shards(stages, shard[1])
    mine = [s for s in stages if owner[s.id] == shard[0]]
    mine.sort(key=lambda s: (_depth(s, by_id), stages.index(s)))
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / f"plan-{plan.name}.json",
        {"plan": plan_to_dict(plan), "stages": len(stages), "cells": len(cells)},
    )
    summary = SweepSummary(out=out, plan=plan, shard=shard, cells_total=len(cells))
    log(f"plan {plan.describe()}")
    log(f"{len(stages)} stages, {len(cells)} cells; shard {shard[0]}/{shard[1]} owns {len(mine)} stages")

    pending = list(mine)
    waited_since: float | None = None
    while pending:
        progressed = False
        ready = []  # with --fleet: the stages that can run now, trained together after this pass
        for stage in list(pending):
            outcome = _parent_state(stage, out, owner, shard, summary)
            if outcome is None and execution.fleet != 1:
                ready.append(stage)
                continue
            if outcome is None:
                outcome = _attempt(stage, out, execution, summary, log)
            if outcome in ("done", "skipped"):
                pending.remove(stage)
                progressed = True
        for stage_id, outcome in _attempt_fleets(ready, out, execution, summary, log).items():
            if outcome == "done":
                pending.remove(by_id[stage_id])
                progressed = True
        if not pending:
            break
        if progressed:
            waited_since = None
            continue
        # Nothing runnable: every pending stage waits for a parent of another shard or a locked stage.
        waited_since = waited_since or time.time()
        if not _wait_for_others(pending, out, summary, wait, poll_s, wait_timeout_s, waited_since, log):
            break
    _finish(out, cells, summary, log)
    return summary


def _parent_state(stage: Stage, out: Path, owner: dict, shard: tuple[int, int], summary) -> str | None:
    """None when the stage can run (no parent, or a finished one); "skipped" when its parent failed
    (here or in another shard); "deferred" while the parent is unfinished."""
    parent = stage.parent
    if parent is None or is_finished(out, parent):
        return None
    if parent in summary.failed or (
        parent in summary.skipped and summary.skipped[parent].startswith("parent")
    ):
        summary.skipped[stage.id] = f"parent {parent} failed"
        return "skipped"
    if owner.get(parent) != shard[0] and is_failed(out, parent):
        summary.skipped[stage.id] = f"parent {parent} failed (shard {owner.get(parent)})"
        return "skipped"
    return "deferred"


def _attempt(stage: Stage, out: Path, execution: Execution, summary, log) -> str:
    """Train ``stage`` (or find it done, or locked by another worker) and record the outcome: "done"
    (trained, already finished, or failed: recorded in the summary) or "locked"."""
    try:
        status = run_stage(stage, out, execution, log)
    except KeyboardInterrupt:
        log(f"interrupted during {stage.id}; its finished epochs are saved and the next sweep resumes it")
        raise
    except DiskFullError:
        # Every later stage would fail the same way: stop; the next sweep resumes this stage.
        log(f"  stopped during {stage.id}: the disk is full; the next sweep resumes it")
        raise
    except Exception as e:  # noqa: BLE001 - recorded in error.txt, reported in the summary
        _record_failure(stage.id, e, summary, log)
        return "done"
    if status == "locked":
        return "locked"  # another worker trains it; wait for its final.pt
    if status == "ran":
        _record_ran(out, stage.id, summary)
    else:
        summary.already_done.append(stage.id)
    return "done"


def _record_failure(stage_id: str, error: BaseException, summary, log) -> None:
    summary.failed[stage_id] = f"{type(error).__name__}: {error}"
    log(f"  FAILED {stage_id}: {summary.failed[stage_id]}")


def _record_ran(out: Path, stage_id: str, summary) -> None:
    summary.ran.append(stage_id)
    append_row(out, stage_id)


def fleet_groups(stages: list[Stage], size: int) -> list[list[Stage]]:
    """Stages that may train as one fleet (equal config up to ``fleet.MEMBER_FIELDS``: seeds, splits,
    parents and train sizes may differ), in chunks of at most ``size``, in plan order."""
    groups: dict[str, list[Stage]] = {}
    for stage in stages:
        groups.setdefault(fleet_config_key(stage.config), []).append(stage)
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


def _fleet_size(execution: Execution, stage: Stage) -> int:
    if execution.fleet == "auto":
        cfg = dataclasses.replace(stage.config, device=execution.device, precision=execution.precision)
        return auto_fleet_size(cfg)
    return int(execution.fleet)


def _attempt_fleets(ready: list[Stage], out: Path, execution: Execution, summary, log) -> dict[str, str]:
    """Train the ready stages in fleets (``fleet_groups``), each member claimed, recorded and released
    exactly as a stage trained alone. Returns {stage id: "done" | "locked"}."""
    outcomes: dict[str, str] = {}
    if not ready:
        return outcomes
    size = _fleet_size(execution, ready[0])
    for chunk in fleet_groups(ready, size):
        claims = []
        for stage in chunk:
            claim = claim_stage(stage, out, execution, log)
            if isinstance(claim, Claim):
                claims.append(claim)
                continue
            outcomes[stage.id] = "done" if claim == "done" else "locked"
            if claim == "done":
                summary.already_done.append(stage.id)
        if claims:
            outcomes.update(_train_claims(claims, out, execution, summary, log))
    return outcomes


def _train_claims(claims: list[Claim], out: Path, execution: Execution, summary, log) -> dict[str, str]:
    """One ``train_fleet`` call over claimed stages; each member settled and recorded as alone."""
    for claim in claims:
        _announce(claim, log)
    try:
        # train_fleet says what trains together when: it knows once the runs are set up (resumed epochs)
        results = train_fleet(
            [(c.cfg, c.dir, c.resume) for c in claims],
            progress=execution.progress,
            cuda_graphs=execution.cuda_graphs,
            log=lambda message: log(f"  ... {message}"),
        )
    except BaseException as e:
        for claim in claims:
            settle(claim, e)
        if isinstance(e, KeyboardInterrupt):
            log("interrupted; every stage's finished epochs are saved and the next sweep resumes them")
        raise
    full = None
    for claim, result in zip(claims, results, strict=True):
        settle(claim, result.error)
        stage_id = claim.stage.id
        if result.error is None:
            _record_ran(out, stage_id, summary)
        elif isinstance(result.error, DiskFullError):
            full = full or result.error
        else:
            _record_failure(stage_id, result.error, summary, log)
    if full is not None:
        log("  stopped: the disk is full; the next sweep resumes the unfinished stages")
        raise full
    return {c.stage.id: "done" for c in claims}


def _wait_for_others(pending, out, summary, wait, poll_s, wait_timeout_s, waited_since, log) -> bool:
    """Sleep one poll while other workers finish parents or locked stages; False (the pending
    stages recorded as skipped) when not waiting, or after ``wait_timeout_s``."""
    if not wait:
        for stage in pending:
            summary.skipped[stage.id] = "deferred: parent unfinished or stage locked by another worker"
        return False
    if wait_timeout_s is not None and time.time() - waited_since > wait_timeout_s:
        for stage in pending:
            summary.skipped[stage.id] = f"waited {wait_timeout_s:g} s for a parent or a lock"
        return False
    waiting_for = sorted({s.parent for s in pending if s.parent and not is_finished(out, s.parent)})
    log(
        f"  waiting for {len(waiting_for)} parent stage(s) of other shards / {len(pending)} locked or deferred; "
        f"next check in {poll_s:g} s"
    )
    time.sleep(poll_s)
    return True


def _finish(out: Path, cells: list[Cell], summary, log) -> None:
    """After the loop: the results files, the geometry diagnostics, and the closing counts."""
    rebuild_results(out)
    diagnose_geometry(out, cells, log)
    legacy = legacy_stages(out)
    if legacy:
        log(
            f"  {len(legacy)} finished stage(s) in {out / 'stages'} were trained by viny before checkpoint "
            "format 2 (CLS token in every stage, split drawn from the run seed): left out of the results. "
            "Delete them, or keep them apart in another folder."
        )
    summary.cells_done = sum(is_finished(out, c.stage) for c in cells)
    log(
        f"cells finished: {summary.cells_done}/{summary.cells_total}; trained now: {len(summary.ran)}, "
        f"already finished: {len(summary.already_done)}, failed: {len(summary.failed)}, skipped: {len(summary.skipped)}"
    )


def diagnose_geometry(out: Path, cells: list[Cell], log: Callable[[str], None] = print) -> None:
    """Once every geometry stage of a run seed is trained: Table 2 and Figs 5-6 of that seed, written
    once into ``DIR/geometry/seed-<s>/`` for the report to read (``experiments.geometry``)."""
    from .geometry import diagnose_seed, geometry_seeds

    for seed, geometry in geometry_seeds(load_results(out)).items():
        stages = [c.stage for c in cells if c.group == "geometry" and c.seed == seed]
        if stages and all(is_finished(out, stage) for stage in stages):
            diagnose_seed(out, geometry, log)


def plan_to_dict(plan: Plan) -> dict:
    d = dataclasses.asdict(plan)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# -------------------------------------------------------------------------------------------- dry run
def _set_aside_damaged(d: Path, log: Callable[[str], None]) -> None:
    """An interrupted stage whose checkpoint.pt is damaged (empty, zeroed, cut short) trains again from
    its first epoch: the file is moved to checkpoint.pt.damaged, so no rerun fails on it forever."""
    last = d / "checkpoint.pt"
    broken = damage(last) if last.exists() else None
    if broken:
        last.replace(d / "checkpoint.pt.damaged")
        log(f"  {broken}; set aside as checkpoint.pt.damaged, the stage trains again from its first epoch")


__all__ = [
    "Cell",
    "DryRun",
    "Execution",
    "StageLock",
    "SweepSummary",
    "assign_shards",
    "collect_rows",
    "legacy_stages",
    "dry_run",
    "is_finished",
    "load_results",
    "parse_shard",
    "rebuild_results",
    "run_stage",
    "run_sweep",
]
