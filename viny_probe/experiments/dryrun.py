"""What a sweep would do, without doing it (``viny sweep --dry-run``): every stage with its status in
the sweep folder and its estimated image-steps, and every cell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import layout
from .plans import Plan, describe_labels, expand
from .shards import assign_shards


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
        return layout.status(out, stage_id)

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
