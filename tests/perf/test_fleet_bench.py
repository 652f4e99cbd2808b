"""`viny bench --fleet` and the plan projection at fleet speeds."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from viny_probe.cli import app
from viny_probe.cli.bench import parse_sizes
from viny_probe.errors import VinyError
from viny_probe.experiments import projection
from viny_probe.experiments.plans import PLANS, expand
from viny_probe.perf.fleet import run_fleet_bench
from viny_probe.perf.options import BenchOptions, FleetOptions


def test_fleet_bench_reports_every_size_against_a_fleet_of_one():
    options = BenchOptions(
        device="cpu", precisions=("fp32",), model="tiny", regimes=("simmim",), steps=1, repeats=1
    )
    result = run_fleet_bench(FleetOptions((1, 2)), options)
    rows = {r["fleet"]: r for r in result["fleets"]}
    assert set(rows) == {1, 2} and not result["failures"]
    assert rows[1]["vs_fleet_of_1"] == 1.0
    for k, r in rows.items():
        assert r["train_img_per_s"] == pytest.approx(r["per_member_img_per_s"] * k)
        assert 0 < r["frac_of_peak"] < 1


def test_cli_fleet_sizes_are_checked(monkeypatch):
    assert parse_sizes("1,8, 32") == (1, 8, 32)
    for bad in ("0", "a,b", ""):
        with pytest.raises(VinyError, match="fleet sizes >= 1"):
            parse_sizes(bad)
    out = CliRunner().invoke(app, ["sweep", "mini", "-o", "x", "--fleet", "none"])
    assert out.exit_code != 0 and "--fleet 'none'" in str(out.exception)


def test_cli_fleet_bench_json():
    out = CliRunner().invoke(
        app,
        [
            "bench",
            "--fleet",
            "1",
            "--model",
            "tiny",
            "--precision",
            "fp32",
            "--regimes",
            "segment",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert [r["fleet"] for r in result["fleets"]] == [1] and result["fleets"][0]["regime"] == "segment"


def test_plan_fleets_cover_every_stage_once_and_respect_the_size():
    """Fleets across train sizes: the mini plan's fine-tunes of one wave (3 sizes x 2 seeds) form one
    fleet of 6, the paper plan's pre-training one of 9 (3 sizes x 3 seeds). Mutants: grouping across
    waves (depth left out of the key) puts a child in its parent's fleet, which the wave check here
    catches; the train size kept in ``fleet_config_key`` fails the sizes."""
    stages, _ = expand(PLANS["mini"])
    fleets = projection.fleets_of("mini", max_size=64)
    assert sum(f["members"] for f in fleets) == len(stages)
    assert sum(sum(f["image_steps_per_member"]) for f in fleets) == sum(s.cost() for s in stages)
    assert {f["wave"] for f in fleets} == {1, 2, 3}
    assert sorted((f["kind"], f["members"], len(f["train_images"])) for f in fleets if f["wave"] == 2) == [
        ("cls-intel", 2, 1),
        ("finetune", 6, 3),
    ]
    paper = projection.fleets_of("paper", max_size=64)
    assert [(f["members"], f["train_images"]) for f in paper if f["kind"] == "pretrain"] == [
        (9, [45_000, 100_000, 200_000])
    ]
    assert max(f["members"] for f in projection.fleets_of("paper", max_size=4)) == 4


def test_a_fleet_of_members_of_different_lengths_shrinks_as_they_finish():
    """Members of 100, 300 and 300 image-steps: 3 members for 100, then 2 for 200. Mutant watched
    failing: every member counted to the longest's end (3 x 300 at the rate of 3)."""
    rates = {1: 10.0, 2: 15.0, 3: 20.0}
    assert projection.fleet_seconds([300, 100, 300], rates) == pytest.approx(3 * 100 / 20 + 2 * 200 / 15)
    assert projection.fleet_seconds([50], rates) == pytest.approx(5.0)


def test_rates_between_measured_sizes_are_interpolated():
    rates = {1: 100.0, 3: 300.0, 8: 400.0}
    assert projection.rate_at(rates, 3) == 300.0
    assert projection.rate_at(rates, 5) == pytest.approx(340.0)
    assert projection.rate_at(rates, 64) == 400.0
    rows = [
        {"regime": r, "precision": "bf16", "fleet": k, "train_img_per_s": v}
        for r in ("simmim", "segment", "classify", "spatial")
        for k, v in rates.items()
    ]
    result = projection.project_fleets(rows, "mini")
    assert result["total_hours"] > 0 and result["speedup"] > 1
    assert projection.project_fleets(rows[:3], "mini")["missing_regimes"]


def test_cli_fleet_bench_projects_the_paper_plan_for_its_model_only():
    """With the study's model and every regime measured, the JSON carries the `paper` plan's projected
    time at the measured fleet rates; with another model there is none (its rates say nothing about
    ViNy's plan)."""
    args = [
        "bench",
        "--fleet",
        "1",
        "--precision",
        "fp32",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--repeats",
        "1",
    ]
    out = CliRunner().invoke(app, [*args, "--model", "viny", "--json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)["paper_plan"]["fp32"]
    assert plan["plan"] == "paper" and plan["total_hours"] > 0 and plan["max_fleet"] == 1
    assert plan["total_hours"] == pytest.approx(plan["alone_total_hours"])
    out = CliRunner().invoke(app, [*args, "--model", "tiny", "--regimes", "simmim", "--json"])
    assert out.exit_code == 0 and "paper_plan" not in json.loads(out.output)


def test_a_dry_run_with_fleet_lists_the_fleets_a_sweep_would_form(tmp_path):
    """`viny sweep mini --dry-run --fleet 4`: every stage in exactly one fleet; the fine-tunes of one
    wave (3 train sizes x 2 seeds) in fleets of 4 and 2, the two seeds of the other kinds paired; the
    table names the train sizes of each fleet; without --fleet there is no fleet list."""
    args = ["sweep", "mini", "--dry-run", "-o", str(tmp_path), "--json"]
    out = CliRunner().invoke(app, [*args, "--fleet", "4"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    fleets = result["fleets"]
    assert sum(f["members"] for f in fleets) == len(result["stages"]) == 22
    assert {f["wave"] for f in fleets} == {1, 2, 3}
    assert sorted((f["kind"], f["members"]) for f in fleets) == [
        ("cls-intel", 2),
        *[("finetune", 2)] * 3,
        *[("finetune", 4)] * 3,
        ("pretrain", 2),
    ]
    table = CliRunner().invoke(app, ["sweep", "mini", "--dry-run", "-o", str(tmp_path), "--fleet", "4"])
    assert table.exit_code == 0 and "250, 500, 1,000" in table.output, table.output
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0 and "fleets" not in json.loads(out.output)
