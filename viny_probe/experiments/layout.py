"""Where a stage lives in a sweep folder, and what its files say about it.

Layout of a sweep folder ``DIR``::

    DIR/stages/<id>/            one training run (config.json, metrics.jsonl, checkpoint.pt, final.pt, ...)
    DIR/stages/<id>/stage.json  the stage definition: kind, parent id, labels, resolved config, worker
    DIR/stages/<id>/lock        present while a worker trains the stage (pid, host, time, token)
    DIR/stages/<id>/error.txt   the last failure of the stage, if any (removed when it succeeds)
    DIR/results.csv             one row per finished stage (experiments.results)
    DIR/results.jsonl           the same rows with full metrics, configs and provenance
    DIR/results.lock            taken (flock) while the two files above are rewritten
    DIR/geometry/seed-<s>/      Table 2 / Figs 5-6 of run seed s (experiments.geometry)

A stage is finished when ``final.pt`` exists; a folder holding ``config.json`` but no ``final.pt`` was
interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import is_legacy_config
from ..runlock import FINAL, lock_is_stale


def stage_dir(out: Path, stage_id: str) -> Path:
    return Path(out) / "stages" / stage_id


def is_finished(out: Path, stage_id: str) -> bool:
    return (stage_dir(out, stage_id) / FINAL).exists()


def is_failed(out: Path, stage_id: str) -> bool:
    d = stage_dir(out, stage_id)
    held = (d / "lock").exists() and not lock_is_stale(d / "lock")
    return (d / "error.txt").exists() and not held and not (d / FINAL).exists()


def status(out: str | Path | None, stage_id: str) -> str:
    """done | running (a live lock) | failed | partial (interrupted) | todo (nothing there, or no folder)."""
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


def read_chain(out: Path, stage_id: str) -> list[dict]:
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
