"""Every shipped plan keeps the stage ids it had: a sweep folder planned by an older viny resumes its
stages instead of training them again. The expected ids in data/stage_ids.json were computed by viny at
commit e04042e (before the recipe fields were added), with the plans of that commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from viny_probe.experiments.plans import PLANS, expand, load_plan_file

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = json.loads((Path(__file__).parent / "data" / "stage_ids.json").read_text())["plans"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shipped_plan_keeps_its_stage_ids(name):
    """Mutants watched failing: the fields added later hashed at their defaults (every id changes);
    a regime's default augmentation hashed as its new name (the spatial and fine-tune ids change)."""
    plan = load_plan_file(ROOT / name) if name.endswith(".toml") else PLANS[name]
    stages, _ = expand(plan)
    assert sorted(s.id for s in stages) == EXPECTED[name]
