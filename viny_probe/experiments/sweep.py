"""Run a plan: every stage not yet finished, each in its own folder, resumable, shardable.

Layout of a sweep folder ``DIR``::

    DIR/stages/<id>/          one training run (config.json, metrics.jsonl, checkpoint.pt, final.pt, ...)
    DIR/stages/<id>/stage.json  the stage definition: kind, parent id, labels, resolved config
    DIR/stages/<id>/lock      present while a worker trains the stage (pid, host, time, token)
    DIR/stages/<id>/error.txt the last failure of the stage, if any (removed when it succeeds)
    DIR/results.csv           one row per finished stage (segmentation metrics for fine-tuning stages)
    DIR/results.jsonl         the same rows with full metrics, configs and provenance
    DIR/results.lock          taken (flock) while the two files above are rewritten

Rules:

* A stage is finished when ``final.pt`` exists; it is never trained again. A stage folder holding a
  ``config.json`` but no ``final.pt`` was interrupted and continues with ``train(resume=True)``.
* A worker takes a stage by its lock (``runlock.StageLock``: an O_EXCL file refreshed by a heartbeat,
  taken over when stale, said so and why), which is also the run folder's lock: the run the worker then
  trains borrows it (``runlock.hold_run_folder``), and any other `viny` writing there is refused.
* ``--shard I/N`` (1 <= I <= N): the plan's stages are partitioned into N shares by a deterministic greedy
  balance of estimated cost (largest first, to the least loaded share; ties by id), identical on every
  machine that expands the same plan. A worker trains only the stages of its share. When a stage's parent
  belongs to another share and is not finished yet, the worker *defers* it and goes on with its other
  stages; when only deferred stages are left it *waits*, polling every ``poll_s`` seconds, and trains
  each as soon as its parent's ``final.pt`` appears (``wait=False``: it returns instead and reports the
  deferred stages; run the same command again later). A stage whose parent failed is skipped.
* ``results.csv``/``results.jsonl`` get a stage's row as it finishes, and are rebuilt from all
  finished stage folders at the end of every sweep. Both are only ever rewritten whole (temp file +
  rename) under ``DIR/results.lock`` (flock), so workers sharing ``DIR`` never leave a torn line or a
  row twice in them.
* A full disk stops the sweep (every later stage would fail the same way); the next sweep resumes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import os
import platform
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..checkpoint import DiskFullError, atomic_write_text, damage, write_json
from ..config import TrainConfig, is_legacy_config
from ..data.spec import dataset_spec
from ..errors import VinyError
from ..registry import REGIMES
from ..runlock import FINAL, StageLock, clear_finished_lock, lock_is_stale
from ..trainers import train
from ..trainers.fleet import auto_fleet_size, fleet_config_key, train_fleet
from .kinds import STAGE_KINDS, kind_of, role_of
from .plans import Cell, Plan, Stage, expand

CSV_COLUMNS = [
    "stage",
    "kind",
    "group",
    "condition",
    "pretrain_size",
    "intermediate",
    "finetune_size",
    "seed",
    "split_seed",
    "model",
    "preset",
    "phase",
    "pretrain_dataset",
    "intermediate_dataset",
    "dataset",
    "train_images",
    "test_size",
    "epochs",
    "comparable",
    "not_comparable_because",
    "pixel_accuracy",
    "miou",
    "miou_per_image",
    "iou_pet",
    "iou_background",
    "iou_boundary",
    "all_background_pixel_accuracy",
    "all_background_miou",
    "all_background_miou_per_image",
    "position_prior_pixel_accuracy",
    "position_prior_miou",
    "position_prior_miou_per_image",
    "test_accuracy",
    "test_reconstruction_l1",
    "final_loss",
    "train_seconds",
    "finished_at",
    "parent",
]


# ----------------------------------------------------------------------------------------------- shards
def parse_shard(text: str | None) -> tuple[int, int]:
    """'2/4' -> (2, 4); None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VinyError(f"--shard must look like I/N, e.g. 1/4; got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise VinyError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def assign_shards(stages: list[Stage], n: int) -> dict[str, int]:
    """Stage id -> share 1..n: greedy balance of estimated cost, deterministic for a given plan."""
    load = [0] * n
    owner: dict[str, int] = {}
    for stage in sorted(stages, key=lambda s: (-s.cost(), s.id)):
        k = min(range(n), key=lambda j: (load[j], j))
        owner[stage.id] = k + 1
        load[k] += max(stage.cost(), 1)
    return owner


# ------------------------------------------------------------------------------------------------ sweep
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


def stage_dir(out: Path, stage_id: str) -> Path:
    return Path(out) / "stages" / stage_id


def is_finished(out: Path, stage_id: str) -> bool:
    return (stage_dir(out, stage_id) / FINAL).exists()


def _failed(out: Path, stage_id: str) -> bool:
    d = stage_dir(out, stage_id)
    held = (d / "lock").exists() and not lock_is_stale(d / "lock")
    return (d / "error.txt").exists() and not held and not (d / FINAL).exists()


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


def describe_labels(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items() if v is not None)


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
    if owner.get(parent) != shard[0] and _failed(out, parent):
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
    _append_row(out, stage_id)


def fleet_groups(stages: list[Stage], size: int) -> list[list[Stage]]:
    """Stages that may train as one fleet (equal config up to ``fleet.MEMBER_FIELDS``, the train size
    kept: it decides the steps per epoch), in chunks of at most ``size``, in plan order."""
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
@dataclass
class DryRun:
    stages: list[dict]
    cells: list[dict]
    total_image_steps: int
    remaining_image_steps: int
    shard_image_steps: dict[int, int]


def dry_run(plan: Plan, out: str | Path | None = None, shard: tuple[int, int] = (1, 1)) -> DryRun:
    """What a sweep would do: cells, the stages they need, status and estimated image-steps."""
    stages, cells = expand(plan)
    owner = assign_shards(stages, shard[1])

    def status(stage_id: str) -> str:
        if out is None:
            return "todo"
        d = stage_dir(Path(out), stage_id)
        if (d / FINAL).exists():
            return "done"
        if (d / "lock").exists() and not lock_is_stale(d / "lock"):
            return "running"
        if (d / "error.txt").exists():
            return "failed"
        if (d / "config.json").exists():
            return "partial"
        return "todo"

    stage_rows = [
        {
            "id": s.id,
            "kind": s.kind,
            "dataset": s.config.dataset,
            "train_images": s.train_images(),
            "epochs": s.config.epochs,
            "image_steps": s.cost(),
            "parent": s.parent or "",
            "shard": owner[s.id],
            "status": status(s.id),
            "labels": describe_labels(s.labels),
        }
        for s in stages
    ]
    cell_rows = [
        {
            "group": c.group,
            "condition": c.condition,
            "pretrain_size": c.pretrain_size,
            "finetune_size": c.finetune_size,
            "intermediate": c.intermediate or "",
            "regime": c.regime or "",
            "seed": c.seed,
            "stage": c.stage,
            "status": status(c.stage),
        }
        for c in cells
    ]
    shard_cost: dict[int, int] = {}
    for s in stages:
        shard_cost[owner[s.id]] = shard_cost.get(owner[s.id], 0) + s.cost()
    remaining = sum(r["image_steps"] for r in stage_rows if r["status"] != "done")
    return DryRun(stage_rows, cell_rows, sum(s.cost() for s in stages), remaining, shard_cost)


# -------------------------------------------------------------------------------------------- results
def _chain(out: Path, stage_id: str) -> list[dict]:
    """stage.json of the stage and its ancestors, root first."""
    chain = []
    current: str | None = stage_id
    while current:
        path = stage_dir(out, current) / "stage.json"
        if not path.exists():
            break
        info = json.loads(path.read_text())
        chain.append(info)
        current = info.get("parent")
    return chain[::-1]


# Presets whose runs may sit beside the published numbers: Table A1's text, and the study's own code.
COMPARABLE_PRESETS = ("paper", "authors")


def comparability(chain: list[dict]) -> list[str]:
    """Why a fine-tuning result can not be set beside the paper's (empty list = comparable). Both full
    presets are comparable when each stage ran its preset's own schedule: `paper` is Table A1's text,
    `authors` the study's own code, which produced the published numbers (docs/fidelity.md)."""
    from ..config import PAPER, TrainConfig

    reasons: list[str] = []
    for info in chain:
        cfg = TrainConfig.from_dict(info["config"])
        kind = info["kind"]
        study = kind_of(kind).dataset if kind_of(kind) else cfg.dataset
        if dataset_spec(cfg.dataset).embedded:
            reasons.append("embedded data")
        elif cfg.dataset != study:
            reasons.append(f"{kind} on {cfg.dataset}")
        if cfg.preset not in COMPARABLE_PRESETS:
            reasons.append(f"{cfg.preset} preset")
        if cfg.model != "viny":
            reasons.append(f"{cfg.model} model")
        phase = cfg.phase or REGIMES.get(cfg.regime).phase
        if cfg.preset in COMPARABLE_PRESETS:  # the preset's own schedule for this stage, recipe included
            sched = TrainConfig(
                regime=cfg.regime, preset=cfg.preset, dataset=cfg.dataset, phase=phase
            ).resolved()
        else:
            sched = PAPER[phase]
        if (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.gamma, tuple(cfg.milestones)) != (
            sched.epochs,
            sched.lr,
            sched.weight_decay,
            sched.gamma,
            tuple(sched.milestones),
        ):
            reasons.append(
                "schedule differs from the study's code"
                if cfg.preset == "authors"
                else "schedule differs from Table A1"
            )
        if cfg.regime == "segment" and cfg.test_size != 1000:
            reasons.append(f"test set of {cfg.test_size}")
    return list(dict.fromkeys(reasons))


def _set_aside_damaged(d: Path, log: Callable[[str], None]) -> None:
    """An interrupted stage whose checkpoint.pt is damaged (empty, zeroed, cut short) trains again from
    its first epoch: the file is moved to checkpoint.pt.damaged, so no rerun fails on it forever."""
    last = d / "checkpoint.pt"
    broken = damage(last) if last.exists() else None
    if broken:
        last.replace(d / "checkpoint.pt.damaged")
        log(f"  {broken}; set aside as checkpoint.pt.damaged, the stage trains again from its first epoch")


def stage_row(out: Path, stage_id: str) -> dict | None:
    """One results row (flat ``csv`` part plus full ``results``/``configs``) of a finished stage."""
    d = stage_dir(out, stage_id)
    if not (d / FINAL).exists() or not (d / "results.json").exists() or not (d / "stage.json").exists():
        return None
    chain = _chain(out, stage_id)
    info = chain[-1]
    results = json.loads((d / "results.json").read_text())
    cfg = info["config"]
    labels = info.get("labels", {})
    kind = info["kind"]
    by_role: dict[str, dict] = {}  # the chain's first stage of each role (kinds.ROLES)
    for c in chain:
        by_role.setdefault(role_of(c["kind"]) or "", c)
    intermediate = by_role["intermediate"]["kind"] if "intermediate" in by_role else None
    pretrain_size = labels.get("pretrain_size", 0) or 0
    group = ""
    if role_of(kind) == "final":
        group = "intermediate" if intermediate else ("baseline" if pretrain_size == 0 else "pretrain")
    reasons = comparability(chain)
    history = (
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if (d / "metrics.jsonl").exists()
        else []
    )
    data_info = json.loads((d / "data.json").read_text()) if (d / "data.json").exists() else {}
    row = {
        "stage": stage_id,
        "kind": kind,
        "group": group,
        "condition": f"pretrain={pretrain_size}" + (f"+{intermediate}" if intermediate else ""),
        "pretrain_size": pretrain_size,
        "intermediate": intermediate or "",
        "finetune_size": labels.get("finetune_size", ""),
        "seed": cfg["seed"],
        "split_seed": cfg.get("split_seed", ""),
        "model": cfg["model"],
        "preset": cfg["preset"],
        "phase": cfg.get("phase") or "",
        "pretrain_dataset": by_role.get("pretrain", {}).get("config", {}).get("dataset", ""),
        "intermediate_dataset": by_role.get("intermediate", {}).get("config", {}).get("dataset", ""),
        "dataset": cfg["dataset"],
        "train_images": data_info.get("train", ""),
        "test_size": cfg["test_size"],
        "epochs": cfg["epochs"],
        "comparable": not reasons,
        "not_comparable_because": "; ".join(reasons),
        "final_loss": results.get("final", {}).get("loss", ""),
        "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((d / FINAL).stat().st_mtime)),
        "parent": info.get("parent") or "",
        "test_accuracy": results.get("test_accuracy", ""),
        "test_reconstruction_l1": results.get("test_reconstruction_l1", ""),
    }
    test = results.get("test")
    if test:
        row.update({k: test[k] for k in ("pixel_accuracy", "miou", "miou_per_image")})
        row.update({f"iou_{k}": v for k, v in test.get("iou", {}).items()})
        for name, scores in results.get("baselines", {}).items():
            row.update({f"{name}_{k}": scores[k] for k in ("pixel_accuracy", "miou", "miou_per_image")})
    row = {k: row.get(k, "") for k in CSV_COLUMNS}
    full = {
        **row,
        "labels": labels,
        "results": results,
        "configs": [{"stage": c["id"], "kind": c["kind"], "config": c["config"]} for c in chain],
        "provenance": _provenance(info),
    }
    return full


def _provenance(info: dict) -> dict:
    import torch

    return {
        "viny_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        **info.get("worker", {}),
    }


def _csv_line(row: dict, header: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerow(row)
    return buf.getvalue()


@contextlib.contextmanager
def _results_lock(out: Path):
    """Hold ``DIR/results.lock`` (flock) while results.csv/jsonl are read and rewritten, so that workers
    sharing ``DIR`` never lose or repeat each other's rows."""
    with open(out / "results.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_results(out: Path, rows: list[dict]) -> None:
    text = (
        "".join(_csv_line(r, header=(i == 0)) for i, r in enumerate(rows))
        if rows
        else ",".join(CSV_COLUMNS) + "\n"
    )
    atomic_write_text(out / "results.csv", text)
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))


def _append_row(out: Path, stage_id: str) -> None:
    """Add a finished stage's row to results.csv/jsonl unless it is there already. Both files are
    rewritten whole (temp file + rename) under the results lock: never a torn line or a row twice."""
    row = stage_row(out, stage_id)
    if row is None:
        return
    with _results_lock(out):
        rows = load_results(out) if (out / "results.jsonl").exists() else []
        if any(r["stage"] == stage_id for r in rows):
            return
        _write_results(out, [*rows, json.loads(json.dumps(row, default=str))])


def is_legacy_stage(d: Path) -> bool:
    """A stage trained by viny before checkpoint format 2 (CLS token in every stage, the split drawn
    from the run seed): its config.json has no split_seed. Such results are not comparable with the
    current ones and are left out of results.csv (``legacy_stages`` lists them)."""
    config = d / "config.json"
    return config.exists() and is_legacy_config(json.loads(config.read_text()))


def legacy_stages(out: str | Path) -> list[str]:
    """Finished stages in ``out`` written before checkpoint format 2 (left out of the results)."""
    stages = Path(out) / "stages"
    found = sorted(stages.glob("*")) if stages.exists() else []
    return [d.name for d in found if (d / FINAL).exists() and is_legacy_stage(d)]


def collect_rows(out: str | Path) -> list[dict]:
    """Rows of every finished stage in ``out`` (whatever plan ran it), in a stable order; stages from
    before checkpoint format 2 are left out (see ``legacy_stages``)."""
    out = Path(out)
    rows = []
    for d in sorted((out / "stages").glob("*")) if (out / "stages").exists() else []:
        if is_legacy_stage(d):
            continue
        row = stage_row(out, d.name)
        if row is not None:
            rows.append(row)

    order = {kind: i for i, kind in enumerate(STAGE_KINDS)}

    def key(r):
        ft = r["finetune_size"] if r["finetune_size"] != "" else -1
        return (
            order.get(r["kind"], len(order)),
            r["pretrain_size"],
            r["intermediate"],
            ft,
            r["seed"],
            r["stage"],
        )

    return sorted(rows, key=key)


def rebuild_results(out: str | Path) -> list[dict]:
    """Rewrite results.csv and results.jsonl from all finished stages (atomic replace)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _results_lock(out):
        rows = collect_rows(out)
        _write_results(out, rows)
    return rows


def load_results(out: str | Path, problems: list[str] | None = None) -> list[dict]:
    """The rows of ``DIR/results.jsonl`` (rebuilt from the stage folders when missing). A line that
    is not a whole row (torn by a crash mid-write) is skipped, and said so in ``problems``."""
    path = Path(out) / "results.jsonl"
    if not path.exists():
        if not (Path(out) / "stages").exists():
            raise VinyError(
                f"{out} holds no sweep (no results.jsonl and no stages/); run `viny sweep PLAN --out {out}`"
            )
        return rebuild_results(out)
    seen, rows = set(), []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or "stage" not in row:
                if problems is not None:
                    problems.append(
                        f"{path} line {number} is not a whole results row (cut short by a crash?) and was "
                        f"skipped; `viny sweep PLAN --out {out}` rebuilds the file from the stage folders"
                    )
                continue
            if row["stage"] not in seen:
                seen.add(row["stage"])
                rows.append(row)
    return rows


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
