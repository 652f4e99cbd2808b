"""Plans as a free stage graph: ``[[stages]]`` tables in a plan file, each a registered stage kind on top
of a named parent. A graph that spells out a shipped grid plan gives that plan's stage ids, parents and
cells exactly, so a graph plan and a grid plan share every run they have in common."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from viny_probe.errors import VinyError
from viny_probe.experiments.plans import expand, get_plan, load_plan_file

MINI_AS_GRAPH = """
name = "mini"
preset = "quick"
model = "demo"
data = "embedded"
seeds = [0, 1]
test_size = 500
epochs_scale = 0.67

[[stages]]
name = "scratch"
kind = "finetune"
sizes = [250, 500, 1000]

[[stages]]
name = "pre"
kind = "pretrain"
sizes = [3000]

[[stages]]
name = "pre-seg"
kind = "finetune"
parent = "pre"
sizes = [250, 500, 1000]

[[stages]]
name = "cls"
kind = "cls-intel"
parent = "pre"

[[stages]]
name = "cls-seg"
kind = "finetune"
parent = "cls"
sizes = [250, 500, 1000]
"""

GEOMETRY_AS_GRAPH = """
name = "geometry"
seeds = [0, 1, 2]

[[stages]]
name = "pre"
kind = "pretrain"
sizes = [200000]
diagnose = true

[[stages]]
name = "cls-intel"
kind = "cls-intel"
parent = "pre"
phase = "geometry"
diagnose = true

[[stages]]
name = "cls-pets"
kind = "cls-pets"
parent = "pre"
phase = "geometry"
diagnose = true

[[stages]]
name = "spatial"
kind = "spatial"
parent = "pre"
phase = "geometry"
diagnose = true
"""


def _write(tmp_path: Path, text: str, name: str = "graph.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _cells(cells) -> list:
    return sorted(
        (c.group, c.pretrain_size, c.seed, c.stage, c.finetune_size, c.intermediate, c.regime) for c in cells
    )


@pytest.mark.parametrize(("plan", "text"), [("mini", MINI_AS_GRAPH), ("geometry", GEOMETRY_AS_GRAPH)])
def test_a_grid_plan_spelled_out_as_a_graph_gives_its_stage_ids_and_cells(tmp_path, plan, text) -> None:
    """Mutants killed: a graph stage whose parent is ignored (every stage from scratch: other ids), the
    pre-training size not inherited by the children (cells' pretrain_size 0), the intermediate kind not
    inherited (group 'pretrain' for the CLS chains), the phase key ignored (geometry ids differ)."""
    grid_stages, grid_cells = expand(get_plan(plan))
    graph_stages, graph_cells = expand(load_plan_file(_write(tmp_path, text)))
    assert {s.id: s.parent for s in graph_stages} == {s.id: s.parent for s in grid_stages}
    assert _cells(graph_cells) == _cells(grid_cells)
    assert {s.id: s.labels for s in graph_stages} == {s.id: s.labels for s in grid_stages}


def test_a_new_kind_in_one_plan_file_changes_no_other_plan(tmp_path) -> None:
    """Adding a stage to a graph adds its runs only: every stage of the smaller graph keeps its id."""
    extra = MINI_AS_GRAPH + '\n[[stages]]\nname = "spatial-seg"\nkind = "spatial"\nparent = "pre"\n'
    base_ids = {s.id for s in expand(load_plan_file(_write(tmp_path, MINI_AS_GRAPH)))[0]}
    more = expand(load_plan_file(_write(tmp_path, extra, "more.toml")))[0]
    assert base_ids < {s.id for s in more}
    assert {s.kind for s in more if s.id not in base_ids} == {"spatial"}
    assert {s.id for s in expand(get_plan("mini"))[0]} == base_ids


def test_a_graph_stage_takes_its_own_config_over_the_plan_overrides(tmp_path) -> None:
    """Mutant killed: the stage's config table dropped in make_stage (lr stays the override's)."""
    text = MINI_AS_GRAPH.replace(
        'name = "cls"\nkind = "cls-intel"', 'name = "cls"\nkind = "cls-intel"\nconfig = { lr = 0.0123 }'
    )
    text += "\n[overrides.cls-intel]\nlr = 0.5\nweight_decay = 0.02\n"
    stages, _ = expand(load_plan_file(_write(tmp_path, text)))
    cls = [s for s in stages if s.kind == "cls-intel"]
    assert len(cls) == 2 and all(s.config.lr == 0.0123 and s.config.weight_decay == 0.02 for s in cls)


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            lambda t: t.replace('parent = "cls"', 'parent = "nowhere"'),
            "parent 'nowhere' is not a stage named above",
        ),
        (lambda t: t.replace('kind = "cls-intel"', 'kind = "rotation-x"'), "unknown stage kind 'rotation-x'"),
        (lambda t: t.replace('name = "pre-seg"', 'name = "scratch"'), "must be unique"),
        (lambda t: t + "pretrain_sizes = [0]\n", "pretrain_sizes belong to grid plans"),
        (lambda t: t.replace("sizes = [3000]", "sizes = [3000.5]"), "sizes = [3000.5] is not valid"),
        (lambda t: t.replace("sizes = [3000]", "sizes = [3000]\nseed = 4"), "unknown keys ['seed']"),
        (
            lambda t: t.replace("sizes = [3000]", "sizes = [3000]\nconfig = { seed = 4 }"),
            "cannot set ['seed']",
        ),
    ],
)
def test_a_bad_graph_is_one_line_naming_the_stage(tmp_path, edit, said) -> None:
    text = edit(MINI_AS_GRAPH)
    if "pretrain_sizes" in said:  # a grid key at the top level: put it before the first table
        text = "pretrain_sizes = [0]\n" + MINI_AS_GRAPH
    with pytest.raises(VinyError) as err:
        load_plan_file(_write(tmp_path, text))
    assert said in str(err.value) and "\n" not in str(err.value)


def test_grid_options_on_the_command_line_are_refused_for_a_graph(tmp_path) -> None:
    with pytest.raises(VinyError, match="belong to grid plans"):
        load_plan_file(_write(tmp_path, MINI_AS_GRAPH), finetune_sizes=(250,))
    plan = load_plan_file(_write(tmp_path, MINI_AS_GRAPH), seeds=1)
    assert plan.seeds == (0,) and len(expand(plan)[1]) == 9
    assert dataclasses.asdict(plan)["stages"][0]["name"] == "scratch"  # the sweep writes plan-NAME.json


def test_the_documented_graph_plan_loads_and_chains(tmp_path) -> None:
    """docs/experiments.md's [[stages]] example, as written: its fine-tune runs descend from CLS-Intel,
    which descends from the pre-training, with the stage's own lr."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    blocks = [b.split("```")[0] for b in doc.split("```toml\n")[1:] if "[[stages]]" in b.split("```")[0]]
    assert len(blocks) == 1
    stages, cells = expand(load_plan_file(_write(tmp_path, blocks[0])))
    by_id = {s.id: s for s in stages}
    assert len(cells) == 6 and {c.group for c in cells} == {"intermediate"}
    for cell in cells:
        cls = by_id[by_id[cell.stage].parent]
        assert cls.kind == "cls-intel" and cls.config.lr == 5e-4 and by_id[cls.parent].kind == "pretrain"


def test_unshared_intermediate_stages_are_one_draw_per_cell(tmp_path) -> None:
    """``shared = ["pretrain"]`` (the authors' code: CLS-Intel trained inside every fine-tune run): each
    fine-tune size gets its own CLS-Intel stage, a distinct draw on the one shared pre-training; nothing
    else changes. Mutants killed: the draw left out of the unshared stage (one id again), the shared
    pre-training given a draw too (three pre-trainings), shared ignored entirely."""
    text = 'base = "mini"\nshared = ["pretrain"]\n'
    plan = load_plan_file(_write(tmp_path, text))
    stages, cells = expand(plan)
    grid_stages, grid_cells = expand(get_plan("mini"))
    by_id = {s.id: s for s in stages}
    cls = [s for s in stages if s.kind == "cls-intel"]
    pre = [s for s in stages if s.kind == "pretrain"]
    assert len(cls) == 2 * 3 and len(pre) == 2  # seeds x fine-tune sizes; one pre-training per seed
    assert sorted(s.config.draw for s in cls) == sorted([250, 500, 1000] * 2)
    assert {s.id for s in pre} <= {s.id for s in grid_stages}
    for cell in cells:
        if cell.intermediate:
            assert by_id[by_id[cell.stage].parent].config.draw == cell.finetune_size
    # cells without an intermediate stage are the grid's own runs
    plain = {c.stage for c in cells if not c.intermediate}
    assert plain == {c.stage for c in grid_cells if not c.intermediate}
    assert len(stages) == len(grid_stages) + 4  # 6 CLS stages for 2; their 6 fine-tunes replace the grid's 6
    chained = {c.stage for c in cells if c.intermediate}
    assert len(chained) == 6 and not chained & {c.stage for c in grid_cells}


def test_a_draw_is_its_own_randomness_and_draw_0_is_the_run_seed() -> None:
    """Mutant killed: random_seed ignoring the draw (every draw the same run)."""
    from viny_probe.config import TrainConfig

    seeds = [TrainConfig(regime="segment", seed=s, draw=d).random_seed for s in (0, 1) for d in (0, 250, 500)]
    assert len(set(seeds)) == 6 and seeds[0] == 0 and seeds[3] == 1
    # torch's CPU generator keeps a seed's low 32 bits: the draws must differ there, above the run seeds
    low = [s % 2**32 for s in seeds]
    assert len(set(low)) == 6 and all(s >= 2**30 for i, s in enumerate(low) if i not in (0, 3))
