"""Shares of a plan's stages for workers on several machines (``viny sweep --shard I/N``): a greedy
balance of estimated cost, identical on every machine that expands the same plan."""

from __future__ import annotations

from ..errors import VinyError
from .plans import Stage


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
