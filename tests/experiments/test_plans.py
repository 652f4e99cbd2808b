"""Plan expansion: cell counts, stage sharing, narrowing, TOML plans, shard partition."""

from __future__ import annotations

from collections import Counter

import pytest

from viny_probe.errors import VinyError
from viny_probe.experiments.plans import PLANS, expand, get_plan, load_plan_file, parse_sizes, with_options
from viny_probe.experiments.sweep import assign_shards, parse_shard


@pytest.mark.parametrize(
    "name, cells, kinds",
    [
        ("baseline", 6 * 3, {"finetune": 18}),
        ("pretrain", 3 * 6 * 3, {"pretrain": 9, "finetune": 54}),
        ("intermediate", 3 * 6 * 3, {"pretrain": 9, "cls-intel": 9, "finetune": 54}),
        ("geometry", 4 * 3, {"pretrain": 3, "cls-intel": 3, "cls-pets": 3, "spatial": 3}),
        # paper: 18 + 54 + 54 segmentation cells + 12 geometry cells; geometry reuses the 200k pre-training;
        # its CLS-Intel runs the geometry schedule (the study's 20-epoch diagnostics variant), so it is
        # a stage of its own beside Table A3's.
        (
            "paper",
            18 + 54 + 54 + 12,
            {"pretrain": 9, "cls-intel": 12, "cls-pets": 3, "spatial": 3, "finetune": 126},
        ),
        ("mini", 3 * 2 * 3, {"pretrain": 2, "cls-intel": 2, "finetune": 18}),
    ],
)
def test_named_plan_counts(name, cells, kinds):
    stages, cell_list = expand(get_plan(name))
    assert len(cell_list) == cells
    assert dict(Counter(s.kind for s in stages)) == kinds
    assert len({s.id for s in stages}) == len(stages)  # deduplicated


def test_stages_shared_and_in_dependency_order():
    stages, cells = expand(PLANS["intermediate"])
    seen = set()
    for s in stages:
        assert s.parent is None or s.parent in seen
        seen.add(s.id)
    by_id = {s.id: s for s in stages}
    # one pre-training per (size, seed), feeding one CLS-Intel stage, feeding 6 fine-tune stages
    pre = [s for s in stages if s.kind == "pretrain"]
    assert {(s.config.train_size, s.config.seed) for s in pre} == {
        (n, k) for n in (45000, 100000, 200000) for k in range(3)
    }
    for s in pre:
        inter = [x for x in stages if x.parent == s.id]
        assert len(inter) == 1 and inter[0].kind == "cls-intel"
        assert sum(x.parent == inter[0].id for x in stages) == 6
    for c in cells:
        st = by_id[c.stage]
        assert st.config.train_size == c.finetune_size and st.config.seed == c.seed
        assert by_id[by_id[st.parent].parent].config.train_size == c.pretrain_size


def test_stage_ids_stable_and_shared_across_plans():
    a, _ = expand(PLANS["pretrain"])
    b, _ = expand(PLANS["paper"])
    assert {s.id for s in a} <= {s.id for s in b}
    again, _ = expand(PLANS["pretrain"])
    assert [s.id for s in a] == [s.id for s in again]
    # execution settings and paths are not identity
    c, _ = expand(with_options(PLANS["pretrain"], data_root="/somewhere/else"))
    assert [s.id for s in a] == [s.id for s in c]


def test_paper_plan_uses_real_data_and_table_a1():
    stages, _ = expand(PLANS["paper"])
    kinds = {s.kind: s.config for s in stages if s.config.phase != "geometry"}
    kinds.update({s.kind: s.config for s in stages if s.kind in ("cls-pets", "spatial")})
    assert kinds["pretrain"].dataset == "imagenet" and kinds["pretrain"].epochs == 100
    assert kinds["pretrain"].lr == 1e-4 and kinds["pretrain"].milestones == (50, 85)
    assert kinds["cls-intel"].dataset == "intel" and kinds["cls-intel"].epochs == 200
    assert kinds["finetune"].dataset == "pets" and kinds["finetune"].milestones == (70, 90, 95)
    assert kinds["cls-pets"].regime == "classify" and kinds["cls-pets"].dataset == "pets"
    assert kinds["spatial"].regime == "spatial" and kinds["spatial"].options.targets == "trimap"


def test_narrowing_and_scaling():
    plan = with_options(
        PLANS["paper"],
        seeds=2,
        pretrain_sizes=(0, 45000),
        finetune_sizes=(250, 500),
        preset="quick",
        epochs_scale=0.5,
        model="demo",
    )
    stages, cells = expand(plan)
    seg = [c for c in cells if c.group != "geometry"]
    assert len(seg) == 2 * (2 + 2 + 2)  # seeds x (baseline + A2 + A3 rows)
    assert {c.seed for c in cells} == {0, 1}
    ft = next(s for s in stages if s.kind == "finetune")
    assert ft.config.model == "demo" and ft.config.preset == "quick" and ft.config.epochs == 15  # quick: 30
    assert ft.config.milestones == (10, 14, 14)  # 21, 27, 29 halved and rounded (banker's rounding on .5)
    assert parse_sizes("0,45k,100k", "x") == (0, 45000, 100000)
    with pytest.raises(VinyError):
        parse_sizes("a,b", "x")


def test_embedded_sizes_are_checked():
    with pytest.raises(VinyError, match="toy-unlabeled"):
        expand(
            with_options(PLANS["pretrain"], data="embedded", pretrain_sizes=(300_000,), finetune_sizes=(250,))
        )
    with pytest.raises(VinyError, match="toy-pets"):
        expand(with_options(PLANS["mini"], finetune_sizes=(6000,)))


def test_toml_plan(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(
        'base = "mini"\nseeds = [3, 4]\npretrain_sizes = [0, 500]\nfinetune_sizes = [100, 200]\n'
        "intermediate = false\n[overrides.finetune]\nlr = 0.001\n"
    )
    plan = load_plan_file(path)
    stages, cells = expand(plan)
    assert plan.name == "mini" and plan.model == "demo" and plan.data == "embedded"
    assert len(cells) == 2 * 2 * 2 and {c.seed for c in cells} == {3, 4}
    assert all(s.config.lr == 0.001 for s in stages if s.kind == "finetune")
    assert not any(s.kind == "cls-intel" for s in stages)
    # CLI options beside the file win
    assert load_plan_file(path, seeds=1).seeds == (0,)
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "mini"\nfinetune_size = [1]\n')
    with pytest.raises(VinyError, match="unknown keys"):
        load_plan_file(bad)
    bad.write_text('base = "mini"\n[overrides.finetune]\nseed = 3\n')
    with pytest.raises(VinyError, match="cannot set"):
        load_plan_file(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_cover_every_stage_exactly_once(n):
    stages, _ = expand(PLANS["paper"])
    owner = assign_shards(stages, n)
    assert set(owner) == {s.id for s in stages}
    assert set(owner.values()) <= set(range(1, n + 1))
    shares = [[s.id for s in stages if owner[s.id] == i] for i in range(1, n + 1)]
    assert sorted(x for share in shares for x in share) == sorted(s.id for s in stages)
    assert owner == assign_shards(list(reversed(stages)), n)  # deterministic
    if n > 1:
        costs = [sum(s.cost() for s in stages if owner[s.id] == i) for i in range(1, n + 1)]
        assert min(costs) > 0.5 * max(costs)  # balanced


def test_parse_shard():
    assert parse_shard(None) == (1, 1) and parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x", "1/0"):
        with pytest.raises(VinyError):
            parse_shard(bad)


def test_mini_plan_cost():
    stages, _ = expand(PLANS["mini"])
    # quick preset scaled by 0.67 (30 -> 20 fine-tune epochs, 12 -> 8 pre-train, 10 -> 7 CLS-Intel):
    # fine-tune 20 x (250+500+1000) x 3 conditions x 2 seeds; pre-train 8 x 3000 x 2; CLS-Intel 7 x 1200 x 2
    assert sum(s.cost() for s in stages) == 20 * 1750 * 6 + 8 * 3000 * 2 + 7 * 1200 * 2 == 274_800


@pytest.mark.parametrize("preset", ["paper", "authors"])
def test_geometry_stages_run_the_codes_diagnostics_schedule(preset):
    """Table 2's stages: 20 epochs, no scheduler (the study's code), apart from Table A3's CLS-Intel
    (Table A1's 200 epochs). Mutant: make_stage ignoring ``phase`` (they would train 200 epochs)."""
    stages, cells = expand(with_options(PLANS["paper"], preset=preset))
    by_id = {s.id: s for s in stages}
    geometry = [by_id[c.stage] for c in cells if c.group == "geometry" and c.regime != "pretrained"]
    assert len(geometry) == 9
    for s in geometry:
        assert (s.config.phase, s.config.epochs, s.config.gamma, s.config.milestones) == (
            "geometry",
            20,
            1.0,
            (),
        )
    a3 = [s for s in stages if s.kind == "cls-intel" and s.config.phase == "intermediate"]
    assert len(a3) == 9 and all(s.config.epochs == 200 for s in a3)
    pre = next(s for s in stages if s.kind == "pretrain")
    assert (pre.config.lr, pre.config.gamma) == ((1e-3, 0.5) if preset == "authors" else (1e-4, 0.1))
    # MixUp only on Table A3's CLS-Intel: the code's Table 2 run (main_intermediates.py) has none
    cls = next(s for s in stages if s.kind == "cls-intel" and s.config.phase == "intermediate")
    assert (cls.config.options.mixup, cls.config.augment) == (
        (0.1, "flip-contrast") if preset == "authors" else (0.0, "crop")
    )
    t2 = next(s for s in stages if s.kind == "cls-intel" and s.config.phase == "geometry")
    assert (t2.config.options.mixup, t2.config.augment) == (
        0.0,
        "flip-contrast" if preset == "authors" else "crop",
    )


def test_a_plugin_registers_a_stage_kind_that_plans_accept(tmp_path):
    """A stage kind is one registration (kinds.register_stage_kind), from a plugin file like any other:
    ``[overrides.KIND]`` refused it before, and accepts it once the plugin is loaded."""
    from viny_probe import plugins
    from viny_probe.experiments.kinds import STAGE_KINDS

    plan = tmp_path / "rot.toml"
    plan.write_text('base = "mini"\n[overrides.rotation]\nlr = 0.001\n')
    with pytest.raises(VinyError, match="unknown stage kind 'rotation'"):
        load_plan_file(plan)
    plugin = tmp_path / "rotation_kind.py"
    plugin.write_text(
        "from viny_probe.experiments.kinds import StageKind, register_stage_kind\n"
        'register_stage_kind(StageKind("rotation", regime="spatial", dataset="pets"))\n'
    )
    try:
        plugins.load_plugins([str(plugin)], entry_points=False, environ={})
        assert STAGE_KINDS.get("rotation").dataset_for("embedded") == "toy-pets"
        assert load_plan_file(plan).overrides == {"rotation": {"lr": 0.001}}
        # a plan file places it: as the intermediate stage of a fine-tuning grid, and beside Table 2's
        plan.write_text(
            'base = "mini"\nplain = false\nintermediate = "rotation"\npretrain_sizes = [3000]\n'
            'finetune_sizes = [250]\ngeometry = ["rotation", "spatial"]\n[overrides.rotation]\nlr = 0.001\n'
        )
        stages, cells = expand(load_plan_file(plan))
        by_id = {s.id: s for s in stages}
        final = [by_id[c.stage] for c in cells if c.group == "intermediate"]
        assert {by_id[s.parent].kind for s in final} == {"rotation"}
        assert {c.condition for c in cells if c.group == "intermediate"} == {"pretrain=3000+rotation"}
        assert (
            sorted(c.regime for c in cells if c.group == "geometry")
            == ["pretrained"] * 2 + ["rotation"] * 2 + ["spatial"] * 2
        )
        assert all(s.config.lr == 0.001 for s in stages if s.kind == "rotation")
        # a registered kind changes no plan that does not name it
        assert len(expand(PLANS["paper"])[0]) == 153
    finally:
        STAGE_KINDS.unregister("rotation")
    with pytest.raises(VinyError, match="unknown stage kind 'rotation'"):
        load_plan_file(plan)


def test_a_plan_places_kinds_by_their_role(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('base = "mini"\nintermediate = ["finetune"]\n')
    with pytest.raises(VinyError, match="intermediate names 'finetune', a stage kind of role final"):
        load_plan_file(path)
    path.write_text('base = "mini"\nintermediate = true\ngeometry = true\n')  # a file of before
    plan = load_plan_file(path)
    assert plan.intermediate == ("cls-intel",) and plan.geometry == ("cls-intel", "cls-pets", "spatial")


def test_the_study_plans_are_files_shipped_in_the_package():
    from viny_probe.experiments.plans import PLAN_FOLDER

    assert sorted(PLANS) == ["baseline", "geometry", "intermediate", "mini", "paper", "pretrain"]
    assert all((PLAN_FOLDER / f"{name}.toml").is_file() for name in PLANS)
    assert PLANS["paper"].geometry == ("cls-intel", "cls-pets", "spatial")
    assert PLANS["intermediate"].intermediate == ("cls-intel",) and not PLANS["intermediate"].plain
