"""Which sweep results may sit beside the published numbers: both full presets, each on its own schedule."""

import pytest

from viny_probe.experiments.plans import PLANS, expand, with_options
from viny_probe.experiments.results import comparability


def _chains(preset: str) -> list[list[dict]]:
    """The stage chains (root first) of every Table A3 fine-tuning stage of the paper plan."""
    stages, _ = expand(with_options(PLANS["paper"], preset=preset, seeds=1, finetune_sizes=(250,)))
    by_id = {s.id: s for s in stages}
    chains = []
    for s in stages:
        if s.kind != "finetune":
            continue
        chain, current = [], s
        while current is not None:
            chain.append({"kind": current.kind, "config": current.config.to_dict()})
            current = by_id.get(current.parent)
        chains.append(chain[::-1])
    return chains


@pytest.mark.parametrize("preset", ["paper", "authors"])
def test_full_presets_are_comparable_on_their_own_schedule(preset):
    """Every fine-tuning chain of the paper plan under `paper` and under `authors` (the code's recipe)
    is comparable; an authors stage with another learning rate is not, and says so. Mutant applied:
    COMPARABLE_PRESETS = ("paper",) (authors chains get "authors preset": fails)."""
    chains = _chains(preset)
    assert chains and all(comparability(c) == [] for c in chains)
    changed = [dict(c) for c in chains[-1]]
    changed[-1] = {**changed[-1], "config": {**changed[-1]["config"], "lr": 1.0}}
    want = (
        "schedule differs from the study's code" if preset == "authors" else "schedule differs from Table A1"
    )
    assert comparability(changed) == [want]


def test_the_quick_preset_is_not_comparable():
    chain = _chains("quick")[0]
    assert "quick preset" in comparability(chain)
