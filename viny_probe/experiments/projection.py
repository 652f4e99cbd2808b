"""A plan's training time at measured fleet speeds, with its stages grouped as `viny sweep --fleet` groups
them: stages whose parents finish in the same wave (equal depth in the plan) and whose configs agree up
to the member fields (``trainers.fleet.fleet_config_key``; train sizes may differ) train together, in
fleets of at most K.

A fleet's members step together, one batch each per step, and each leaves when its own image-steps are
done: with members of s_1 <= ... <= s_k image-steps, the fleet trains k members for s_1, then k - 1 for
s_2 - s_1, and so on, each stretch taking (members x its image-steps) / rate(members) seconds, where
rate(m) is the aggregate training img/s measured for the stage's regime at fleet size m (linear between
measured sizes, the nearest measured size beyond them). Data loading, evaluation and checkpoints are
not counted: the figure is the training steps' time.
"""

from __future__ import annotations

from ..trainers.fleet import fleet_config_key
from .plans import Plan, Stage, expand, get_plan


def _depth(stage: Stage, by_id: dict[str, Stage]) -> int:
    depth = 0
    while stage.parent is not None:
        stage, depth = by_id[stage.parent], depth + 1
    return depth


def rate_at(rates: dict[int, float], k: int) -> float:
    """Aggregate img/s at fleet size ``k`` from the measured {size: img/s}."""
    sizes = sorted(rates)
    if k <= sizes[0]:
        return rates[sizes[0]] * (k / sizes[0] if k < sizes[0] else 1.0)
    if k >= sizes[-1]:
        return rates[sizes[-1]]
    lo = max(s for s in sizes if s <= k)
    hi = min(s for s in sizes if s >= k)
    if lo == hi:
        return rates[lo]
    return rates[lo] + (rates[hi] - rates[lo]) * (k - lo) / (hi - lo)


def fleets_of(plan: str | Plan = "paper", max_size: int = 64) -> list[dict]:
    """The plan's fleets (a plan's name or the plan): regime, members, image-steps per member, wave."""
    stages, _ = expand(get_plan(plan) if isinstance(plan, str) else plan)
    by_id = {s.id: s for s in stages}
    groups: dict[tuple, list[Stage]] = {}
    for s in stages:
        groups.setdefault((_depth(s, by_id), fleet_config_key(s.config)), []).append(s)
    out = []
    for (depth, _key), members in groups.items():
        for i in range(0, len(members), max_size):
            chunk = members[i : i + max_size]
            out.append(
                {
                    "wave": depth + 1,
                    "regime": chunk[0].config.regime,
                    "kind": chunk[0].kind,
                    "members": len(chunk),
                    "train_images": sorted({s.train_images() for s in chunk}),
                    "image_steps_per_member": [s.cost() for s in chunk],
                }
            )
    return sorted(out, key=lambda f: f["wave"])


def fleet_seconds(image_steps: list[int], rates: dict[int, float]) -> float:
    """Seconds for a fleet whose members take ``image_steps`` each (module docstring), at the measured
    aggregate {fleet size: img/s} ``rates``."""
    seconds, done = 0.0, 0
    ordered = sorted(image_steps)
    for j, steps in enumerate(ordered):
        members = len(ordered) - j
        seconds += members * (steps - done) / rate_at(rates, members)
        done = steps
    return seconds


def project_fleets(
    rows: list[dict], plan_name: str = "paper", max_size: int = 64, precision: str = "bf16"
) -> dict:
    """Seconds to train ``plan_name`` at the measured ``rows`` (`viny bench --fleet` rows: regime,
    precision, fleet, train_img_per_s; the best of any variants per size), in fleets of at most
    ``max_size``, and alone (fleets of 1) for comparison."""
    rates: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["precision"] != precision:
            continue
        per = rates.setdefault(r["regime"], {})
        per[r["fleet"]] = max(per.get(r["fleet"], 0.0), r["train_img_per_s"])
    fleets = fleets_of(plan_name, max_size)
    missing = sorted({f["regime"] for f in fleets} - set(rates))
    if missing:
        return {"plan": plan_name, "missing_regimes": missing, "total_hours": None}
    seconds = solo = 0.0
    per_kind: dict[str, float] = {}
    for f in fleets:
        t = fleet_seconds(f["image_steps_per_member"], rates[f["regime"]])
        f["seconds"] = t
        seconds += t
        per_kind[f["kind"]] = per_kind.get(f["kind"], 0.0) + t
        solo += sum(f["image_steps_per_member"]) / rate_at(rates[f["regime"]], 1)
    return {
        "plan": plan_name,
        "precision": precision,
        "max_fleet": max_size,
        "fleets": fleets,
        "seconds_by_kind": per_kind,
        "total_seconds": seconds,
        "total_hours": seconds / 3600,
        "alone_total_hours": solo / 3600,
        "speedup": solo / seconds if seconds else None,
        "rates_from": "best measured aggregate train img/s per regime and fleet size",
    }
