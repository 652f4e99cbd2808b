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

from ..data.spec import dataset_spec
from ..runlock import FINAL, StageLock
from .kinds import STAGE_KINDS, kind_of
from .layout import stage_dir


def published_key(name: str) -> str:
    """The published Table 2's key of the encoder named ``name`` in a sweep's Table 2 ("" if none)."""
    return next((kind.key for kind in STAGE_KINDS.values() if kind.title == name), "")


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


def _is_geometry(row: dict) -> bool:
    """A stage trained on the geometry pre-training to be diagnosed (its plan labels it so)."""
    return bool((row.get("labels") or {}).get("geometry"))


def geometry_pretrain_size(rows: list[dict]) -> int:
    """The pre-training size the sweep's geometry stages were trained on (the largest, if several)."""
    return max(int(r["pretrain_size"]) for r in rows if _is_geometry(r))


def geometry_seeds(rows: list[dict]) -> dict[int, SeedGeometry]:
    """Run seed -> its geometry encoders, from the sweep's results rows (finished stages): the
    pre-training at the geometry pre-training size and every stage labelled ``geometry`` on it, in the
    order of the stage kinds' registry; seeds with fewer than two of them are left out."""
    if not any(_is_geometry(r) for r in rows):
        return {}
    pre_size = geometry_pretrain_size(rows)
    by_seed: dict[int, dict[str, dict]] = {}
    for r in rows:
        kind = kind_of(r["kind"])
        if kind is None or int(r["pretrain_size"]) != pre_size:
            continue
        if _is_geometry(r) or kind.role == "pretrain":
            by_seed.setdefault(int(r["seed"]), {})[kind.name] = r
    seeds = {}
    for seed, chosen in sorted(by_seed.items()):
        kinds = [kind for kind in STAGE_KINDS.values() if kind.name in chosen]
        stages = [(kind.title, chosen[kind.name]["stage"]) for kind in kinds]
        # measured on the test split of the first diagnosed stage whose dataset has masks (CLS-Pets)
        masked = [k for k in kinds if _is_geometry(chosen[k.name]) and dataset_spec(k.dataset).has_trimaps]
        evaluation = chosen[masked[0].name]["stage"] if masked else stages[-1][1]
        if len(stages) >= 2:
            seeds[seed] = SeedGeometry(seed, stages, evaluation)
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
    from viny_probe.analysis.options import EvalSet

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
        diagnose(seed.checkpoints(sweep_dir), seed.names, out, data=EvalSet(**where), progress=False)
        return "ran"
    except Exception as e:  # noqa: BLE001 - the trained stages stand; the report names the command to retry
        log(f"  FAILED geometry diagnostics of seed {seed.seed}: {type(e).__name__}: {e}")
        return "failed"
    finally:
        lock.release()
