"""Table 2 and Figs 5-6 of a sweep: ``viny diagnose`` over each run seed's geometry stages, written once
into the sweep folder, ``DIR/geometry/seed-<s>/``, and read (never recomputed) by the report.

Which encoders: those after pre-training on the geometry pre-training size (the largest pre-training size
among the CLS-Pets / Spatial stages) and after each stage trained on top of it, in Table 2's order:
Pretrained, CLS-Intel (the geometry-schedule stage where the plan trained one), CLS-Pets, Spatial. They
are measured on the fixed test split of the CLS-Pets stage's dataset (else the Spatial stage's): its
dataset, data root, split seed and test size, from its config.json.

A seed's folder is current when its summary.json names the same encoders (names and stage ids), the same
dataset, split seed and test size, and holds every registered diagnostic's columns; the sweep skips a
current seed, and the report leaves a stale one out, saying which command refreshes it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..runlock import FINAL, StageLock
from .sweep import stage_dir

GEOMETRY = (  # stage kind, name in Table 2, key of the study's Table 2 (viny_probe.published)
    ("pretrain", "Pretrained", "pretrained"),
    ("cls-intel", "CLS-Intel", "cls-intel"),
    ("cls-pets", "CLS-Pets", "cls-pets"),
    ("spatial", "Spatial", "spatial"),
)
PUBLISHED_KEY = {name: key for _, name, key in GEOMETRY}


@dataclass
class SeedGeometry:
    """The geometry encoders of one run seed: ``stages`` = [(name in Table 2, stage id)]."""

    seed: int
    stages: list[tuple[str, str]]
    evaluation_stage: str  # the CLS-Pets (else Spatial) stage whose test split everything is measured on

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.stages]

    def out_dir(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / "geometry" / f"seed-{self.seed}"

    def checkpoints(self, sweep_dir: Path) -> list[Path]:
        return [stage_dir(sweep_dir, stage) / FINAL for _, stage in self.stages]

    def missing(self, sweep_dir: Path) -> list[str]:
        """``"<name> of seed <s> (<stage id>)"`` for each encoder whose final.pt is not there."""
        return [
            f"{name} of seed {self.seed} ({stage})"
            for (name, stage), ckpt in zip(self.stages, self.checkpoints(sweep_dir), strict=True)
            if not ckpt.exists()
        ]

    def evaluation(self, sweep_dir: Path) -> dict:
        """Dataset, data root, split seed and test size of the evaluation stage's config.json."""
        cfg = json.loads((stage_dir(sweep_dir, self.evaluation_stage) / "config.json").read_text())
        return {
            "dataset": cfg["dataset"],
            "data_root": cfg.get("data_root"),
            "split_seed": cfg.get("split_seed", 0),
            "test_size": cfg["test_size"],
        }

    def command(self, sweep_dir: Path) -> str:
        """The ``viny diagnose`` command that writes this seed's folder."""
        where = self.evaluation(sweep_dir)
        words = ["viny", "diagnose", *map(str, self.checkpoints(sweep_dir)), "--names", *self.names]
        words += ["--dataset", where["dataset"]]
        words += ["--data-root", str(where["data_root"])] if where["data_root"] else []
        words += ["--split-seed", str(where["split_seed"]), "--test-size", str(where["test_size"])]
        return shlex.join([*words, "-q", "-o", str(self.out_dir(sweep_dir))])


def geometry_seeds(rows: list[dict]) -> dict[int, SeedGeometry]:
    """Run seed -> its geometry encoders, from the sweep's results rows (finished stages); seeds with
    fewer than two of them are left out."""
    kinds = {kind: name for kind, name, _ in GEOMETRY}
    geo = [r for r in rows if r["kind"] in ("cls-pets", "spatial")]
    if not geo:
        return {}
    pre_size = max(int(r["pretrain_size"]) for r in geo)
    by_seed: dict[int, dict[str, dict]] = {}
    for r in rows:
        if r["kind"] not in kinds or int(r["pretrain_size"]) != pre_size:
            continue
        if r["kind"] == "cls-intel" and r.get("intermediate", "") == "":
            continue
        chosen = by_seed.setdefault(int(r["seed"]), {})
        # Table 2's CLS-Intel is the geometry-schedule stage where the plan trained one
        if r["kind"] in chosen and chosen[r["kind"]].get("phase") == "geometry":
            continue
        chosen[r["kind"]] = r
    seeds = {}
    for seed, chosen in sorted(by_seed.items()):
        stages = [(name, chosen[kind]["stage"]) for kind, name, _ in GEOMETRY if kind in chosen]
        if len(stages) >= 2:
            evaluation = chosen.get("cls-pets", chosen.get("spatial"))
            seeds[seed] = SeedGeometry(seed, stages, evaluation["stage"] if evaluation else stages[-1][1])
    return seeds


def read_summary(sweep_dir: Path, seed: SeedGeometry) -> dict | None:
    """The seed's summary.json if it is there and current (see the module doc), else None."""
    from viny_probe.analysis.registry import columns

    path = seed.out_dir(sweep_dir) / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    info = next(iter(summary.get("data", {}).values()), {})
    where = seed.evaluation(sweep_dir)
    written = [(c["name"], Path(c["path"]).parent.name) for c in summary.get("checkpoints", [])]
    current = (
        written == seed.stages
        and all(info.get(k) == where[k] for k in ("dataset", "split_seed", "test_size"))
        and {c.key for c in columns()} <= set((summary.get("table2") or [{}])[0])
    )
    return summary if current else None


def diagnose_seed(sweep_dir: Path, seed: SeedGeometry, log: Callable[[str], None] = print) -> str:
    """Write the seed's folder unless it is current or another worker is writing it. Returns 'current',
    'locked', 'missing' (a checkpoint is not there), 'ran' or 'failed' (logged; the sweep goes on)."""
    from viny_probe.analysis.diagnose import diagnose

    sweep_dir = Path(sweep_dir)
    if seed.missing(sweep_dir):
        return "missing"
    if read_summary(sweep_dir, seed) is not None:
        return "current"
    out = seed.out_dir(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = StageLock(out / "lock")
    if not lock.acquire():
        return "locked"
    try:
        where = seed.evaluation(sweep_dir)
        log(f"  geometry diagnostics of seed {seed.seed} ({', '.join(seed.names)}) -> {out}")
        diagnose(seed.checkpoints(sweep_dir), seed.names, out, **where, progress=False)
        return "ran"
    except Exception as e:  # noqa: BLE001 - the trained stages stand; the report names the command to retry
        log(f"  FAILED geometry diagnostics of seed {seed.seed}: {type(e).__name__}: {e}")
        return "failed"
    finally:
        lock.release()
