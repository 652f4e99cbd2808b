"""One tiny sweep end to end: run, rerun (nothing trains), interrupt and resume, shards, report."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from viny_probe.analysis import diagnose as diagnose_module
from viny_probe.cli import app
from viny_probe.errors import VinyError
from viny_probe.experiments import report
from viny_probe.experiments import sweep as sw
from viny_probe.experiments.plans import PLANS, expand, with_options
from viny_probe.experiments.report import write_report
from viny_probe.registry import DATASETS
from viny_probe.trainers import train as real_train

QUIET = sw.Execution(device="cpu", progress=False)


def silent(_msg: str) -> None:
    pass


@pytest.fixture
def small_data():
    """Generate only 64 images of each embedded set (the test and train subsets are tiny anyway)."""
    with contextlib.ExitStack() as stack:
        for name in ("toy-pets", "toy-scenes"):
            small = dataclasses.replace(DATASETS.get(name), size=64)
            stack.enter_context(DATASETS.registered(name, small, replace=True))
        yield


@pytest.fixture
def calls(monkeypatch):
    """Record every train() the sweep makes: (stage id, resume)."""
    made = []

    def recording(cfg, run_dir, resume=False, progress=True):
        made.append((run_dir.name, resume))
        return real_train(cfg, run_dir, resume=resume, progress=progress)

    monkeypatch.setattr(sw, "train", recording)
    return made


def tiny_plan(seeds=2, finetune=(8, 12, 16), geometry=True):
    return with_options(
        PLANS["mini"],
        name="tiny",
        model="tiny",
        seeds=seeds,
        pretrain_sizes=(0, 16),
        finetune_sizes=finetune,
        test_size=8,
        epochs_scale=0.01,
        geometry=geometry,
    )


def test_sweep_rerun_interrupt_report(tmp_path, small_data, calls, monkeypatch):
    plan = tiny_plan(geometry=False)
    stages, cells = expand(plan)
    out = tmp_path / "sweep"
    summary = sw.run_sweep(plan, out, execution=QUIET, log=silent)
    assert summary.complete and not summary.failed
    assert sorted(c[0] for c in calls) == sorted(s.id for s in stages)  # each stage trained once
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted(r["stage"] for r in rows) == sorted(s.id for s in stages)  # complete, no duplicates
    seg = [r for r in rows if r["kind"] == "finetune"]
    assert len(seg) == len([c for c in cells if c.group != "geometry"]) == 2 * 3 * 3
    assert all(0 <= float(r["miou"]) <= 1 and r["position_prior_miou"] != "" for r in seg)
    assert {r["group"] for r in seg} == {"baseline", "pretrain", "intermediate"}
    assert all(r["comparable"] == "False" and "embedded data" in r["not_comparable_because"] for r in seg)
    line = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert {"results", "configs", "provenance"} <= set(line)

    # rerun: nothing trains, nothing is rewritten
    mtimes = {s.id: (out / "stages" / s.id / "final.pt").stat().st_mtime_ns for s in stages}
    calls.clear()
    again = sw.run_sweep(plan, out, execution=QUIET, log=silent)
    assert calls == [] and again.complete and len(again.already_done) == len(stages)
    assert mtimes == {s.id: (out / "stages" / s.id / "final.pt").stat().st_mtime_ns for s in stages}

    # an interrupted stage (checkpoint.pt but no final.pt) resumes, and only it
    victim = next(s for s in stages if s.kind == "finetune" and s.parent)
    (out / "stages" / victim.id / "final.pt").unlink()
    again = sw.run_sweep(plan, out, execution=QUIET, log=silent)
    assert calls == [(victim.id, True)] and again.complete

    # ... and one whose checkpoint.pt is empty trains again from its first epoch instead of failing on
    # every rerun (mutant: no _set_aside_damaged call -> the stage fails, "is empty (0 bytes)")
    calls.clear()
    (out / "stages" / victim.id / "final.pt").unlink()
    (out / "stages" / victim.id / "checkpoint.pt").write_bytes(b"")
    said = []
    again = sw.run_sweep(plan, out, execution=QUIET, log=said.append)
    assert calls == [(victim.id, True)] and again.complete and not again.failed
    assert (out / "stages" / victim.id / "checkpoint.pt.damaged").stat().st_size == 0
    assert any("is empty (0 bytes)" in line and "first epoch" in line for line in said)
    calls.clear()

    # Ctrl-C in the middle of a sweep: the lock is released, the rerun finishes only what is missing
    two = [s for s in stages if s.kind == "finetune"][:2]
    for s in two:
        (out / "stages" / s.id / "final.pt").unlink()
    calls.clear()

    def interrupted(cfg, run_dir, resume=False, progress=True):
        calls.append((run_dir.name, resume))
        raise KeyboardInterrupt

    monkeypatch.setattr(sw, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(plan, out, execution=QUIET, log=silent)
    assert len(calls) == 1 and not (out / "stages" / calls[0][0] / "lock").exists()
    calls.clear()

    def recording(cfg, run_dir, resume=False, progress=True):
        calls.append((run_dir.name, resume))
        return real_train(cfg, run_dir, resume=resume, progress=progress)

    monkeypatch.setattr(sw, "train", recording)
    again = sw.run_sweep(plan, out, execution=QUIET, log=silent)
    assert sorted(calls) == sorted((s.id, True) for s in two) and again.complete
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(stages)  # still no duplicates after appends

    # the report has every table and figure; every log-scaled axis is ticked at the fine-tune sizes
    drawn = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (drawn.append(fig), save(fig, path))[1])
    rep = write_report(out, tmp_path / "report")
    md, page = rep["markdown"].read_text(), rep["html"].read_text()
    for text in (
        "Table 1 analogue",
        "Table A2 analogue",
        "Table A3 analogue",
        "Fig 3 analogue",
        "Fig 4 analogue",
        "Effect of pre-training",
        "saturating fits",
        "Marginal gain per doubling",
        "All-background",
        "Position prior",
        "not comparable",
        "model tiny",
        "(seeds 0,1)",
    ):
        assert text in md and text in page, text
    figs = (
        "fig3.png",
        "fig4.png",
        "pretraining-effect.png",
        "fits.png",
        "figA1.png",
        "figA2.png",
        "fig2.png",
    )
    for fig in figs:
        assert (tmp_path / "report" / "figures" / fig).stat().st_size > 1000
        assert f"figures/{fig}" in md
    assert page.count("data:image/png;base64,") == 7
    log_axes = [ax for fig in drawn for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(log_axes) == 5  # Fig 3 (per-image and dataset-level panels), Fig 4, pre-training effect, fits
    for ax in log_axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "12", "16"]
        assert [t.get_text() for t in ax.get_xticklabels(minor=True)] == []
    # Fig A1: every condition at the largest fine-tune size, seed 0; Fig 2: the pre-training stage, seed 0
    assert "Fig A1 analogue" in md and "after fine-tuning on 16 images (run seed 0)" in md
    # Fig A2: the CLS-Intel condition's error maps beside the pre-trained-only one, on its worst images
    a2 = json.loads((tmp_path / "report" / "figures" / "figA2.json").read_text())
    assert "Fig A2 analogue" in md and a2["chosen_by"].endswith("+ cls-intel") and len(a2["ids"]) == 3
    assert len(a2["wrong_share"]) == 2 and not any(
        k.endswith("+ cls-intel") for k in list(a2["wrong_share"])[:1]
    )
    assert "Fig 2 analogue" in md and "Left out" not in md
    fig2 = json.loads((tmp_path / "report" / "figures" / "fig2.json").read_text())
    assert list(fig2["mean_masked_l1"]) == ["pre-train 16"] and len(fig2["images"]) == 4

    # a stage whose checkpoint went missing is named in the text; the report still runs
    by_kind = {}
    for s in stages:
        if s.config.seed == 0:
            by_kind.setdefault(s.kind, []).append(s)
    gone = [by_kind["pretrain"][0], next(s for s in by_kind["finetune"] if s.labels["finetune_size"] == 16)]
    for s in gone:
        (out / "stages" / s.id / "final.pt").unlink()
    md = write_report(out, tmp_path / "report2")["markdown"].read_text()
    assert "Left out of Fig 2 (model tiny): pre-train 16" in md and "Left out of Fig A1:" in md
    assert all(f"stage {s.id}): no final.pt" in md for s in gone)
    assert (tmp_path / "report2" / "figures" / "figA1.png").is_file()  # the other conditions are still drawn
    assert "<img" in page and 'src="http' not in page and "src='figures" not in page  # self-contained
    assert "within noise" in md or "excludes 0" in md or "cannot be told" in md

    # a stage trained by viny before checkpoint format 2 (no split_seed in its config) is left out of
    # the results, and the sweep says so
    legacy = stages[-1].id
    config = out / "stages" / legacy / "config.json"
    config.write_text(
        json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "split_seed"})
    )
    logged = []
    sw.run_sweep(plan, out, execution=QUIET, log=logged.append)
    assert sw.legacy_stages(out) == [legacy]
    assert legacy not in {r["stage"] for r in csv.DictReader(open(out / "results.csv"))}
    assert any("before checkpoint format 2" in m for m in logged)


def test_two_shards_cover_the_plan_once(tmp_path, small_data, calls, monkeypatch):
    """Two shards train every stage once; the worker that finishes a seed's geometry stages writes its
    diagnostics once into DIR/geometry/seed-0; a rerun and the report only read them. Mutants applied
    once, each failing this test: run_sweep without its diagnose_geometry call (no folder); read_summary
    never finding a folder current (the rerun diagnoses again); diagnose_geometry not waiting for all of
    a seed's geometry stages (it diagnosed a partial set first)."""
    plan = tiny_plan(seeds=1, finetune=(8, 16), geometry=True)
    stages, cells = expand(plan)
    out = tmp_path / "sweep"
    diagnosed = []
    real_diagnose = diagnose_module.diagnose
    monkeypatch.setattr(
        diagnose_module,
        "diagnose",
        lambda *args, **kw: (diagnosed.append(args), real_diagnose(*args, **kw))[1],
    )
    for _ in range(4):  # alternate the two workers until both are done (no waiting in a test)
        for i in (2, 1):
            sw.run_sweep(plan, out, shard=(i, 2), execution=QUIET, wait=False, log=silent)
        if all(sw.is_finished(out, s.id) for s in stages):
            break
    trained = [c[0] for c in calls]
    assert sorted(trained) == sorted(s.id for s in stages)  # every stage exactly once
    owner = sw.assign_shards(stages, 2)
    assert {owner[s] for s in trained} == {1, 2}
    assert all(sw.is_finished(out, c.stage) for c in cells)
    assert len(diagnosed) == 1  # once, when the seed's last geometry stage was trained
    # Table 2 / Figs 5-6 of seed 0, written by the sweep: the four geometry encoders, each its stage's
    geometry = out / "geometry" / "seed-0"
    summary = json.loads((geometry / "summary.json").read_text())
    by_regime = {c.regime: c.stage for c in cells if c.group == "geometry"}
    assert [(c["name"], Path(c["path"]).parent.name) for c in summary["checkpoints"]] == [
        ("Pretrained", by_regime["pretrained"]),
        ("CLS-Intel", by_regime["cls-intel"]),
        ("CLS-Pets", by_regime["cls-pets"]),
        ("Spatial", by_regime["spatial"]),
    ]
    assert not (geometry / "lock").exists()
    written = (geometry / "summary.json").stat().st_mtime_ns

    # a rerun finds them current and the report only reads them: diagnose is not called again
    diagnosed.clear()
    monkeypatch.setattr(diagnose_module, "diagnose", lambda *args, **kwargs: diagnosed.append(args))
    for i in (1, 2):
        sw.run_sweep(plan, out, shard=(i, 2), execution=QUIET, wait=False, log=silent)
    result = CliRunner().invoke(app, ["report", str(out), "-o", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert diagnosed == [] and (geometry / "summary.json").stat().st_mtime_ns == written
    # the CLI report on it: one seed is said plainly; the geometry section shows the sweep's diagnostics
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Only one seed" in md and "Table 2 and Figs 5-6" in md and "| Spatial | 1 |" in md
    spatial = next(r for r in summary["table2"] if r["checkpoint"] == "Spatial")
    assert f"| Spatial | 1 | {spatial['within']:.3f} | {spatial['across']:.3f} |" in md
    for png in ("fig5_similarity_vs_distance.png", "fig6_reference_patches.png"):
        assert (tmp_path / "rep" / "figures" / "geometry-seed0" / png).stat().st_size > 1000
        assert f"geometry-seed0/{png}" in md


def test_cli_dry_run(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            "mini",
            "--out",
            str(tmp_path / "s"),
            "--dry-run",
            "--seeds",
            "1",
            "--pretrain-sizes",
            "0,750",
            "--finetune-sizes",
            "250,500",
            "--shard",
            "1/2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "image-steps" in result.output and "per shard" in result.output
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    # mini scales the quick epochs by 0.67: 20 epochs x (250 + 500) x 3 conditions + 8 x 750 pre-training
    # + 7 x 1200 CLS-Intel
    assert f"{20 * 750 * 3 + 8 * 750 + 7 * 1200:,}" in result.output


def test_failed_stage_is_reported_and_children_skipped(tmp_path, small_data, monkeypatch):
    plan = tiny_plan(seeds=1, finetune=(8,), geometry=False)

    def broken(cfg, run_dir, resume=False, progress=True):
        raise VinyError("no data here")

    monkeypatch.setattr(sw, "train", broken)
    summary = sw.run_sweep(plan, tmp_path, execution=QUIET, log=silent)
    stages, _ = expand(plan)
    roots = {s.id for s in stages if s.parent is None}
    assert set(summary.failed) == roots
    assert set(summary.skipped) == {s.id for s in stages} - roots
    assert all((tmp_path / "stages" / r / "error.txt").exists() for r in roots)
    assert not summary.complete


def _rows_by_stage(out):
    return {r["stage"]: r for r in csv.DictReader(open(out / "results.csv"))}


def test_a_sweep_in_fleets_gives_the_rows_of_a_sweep_one_stage_at_a_time(tmp_path, small_data, monkeypatch):
    """`viny sweep --fleet 3` on the tiny plan: every stage trained once, in fleets where stages agree
    (the fine-tunes of one wave, 3 train sizes x 2 seeds, in fleets of 3; the two seeds of the
    pre-training and of CLS-Intel in pairs), each row equal to the one-at-a-time sweep's; a rerun
    trains nothing. Mutants: fleets of one (the chunk size ignored in ``_attempt_fleets``) fails the
    count of fleets here; the train size kept in ``fleet_config_key``, the fleet sizes."""
    plan = tiny_plan(geometry=False)
    stages, _ = expand(plan)
    alone, fleets = tmp_path / "alone", tmp_path / "fleets"
    sw.run_sweep(plan, alone, execution=QUIET, log=silent)
    said = []
    summary = sw.run_sweep(plan, fleets, execution=dataclasses.replace(QUIET, fleet=3), log=said.append)
    assert summary.complete and not summary.failed and sorted(summary.ran) == sorted(s.id for s in stages)
    assert sum("stages as one fleet" in line for line in said) >= 4
    a, b = _rows_by_stage(alone), _rows_by_stage(fleets)
    assert a.keys() == b.keys() == {s.id for s in stages}
    for stage_id, row in a.items():
        for k in ("miou", "pixel_accuracy", "test_accuracy", "test_reconstruction_l1", "final_loss"):
            if row[k] != "":
                assert float(b[stage_id][k]) == pytest.approx(float(row[k]), rel=1e-3, abs=1e-4), (
                    stage_id,
                    k,
                )
    fleet_sizes = {  # how many members its fleet had as its first epoch began
        s.id: json.loads((fleets / "stages" / s.id / "metrics.jsonl").read_text().splitlines()[0]).get(
            "fleet", 1
        )
        for s in stages
    }
    assert sorted(fleet_sizes.values()) == [2] * 4 + [3] * 18
    again = sw.run_sweep(plan, fleets, execution=dataclasses.replace(QUIET, fleet=3), log=silent)
    assert not again.ran and len(again.already_done) == len(stages)


def test_a_failing_member_of_a_fleet_fails_alone_and_its_children_are_skipped(
    tmp_path, small_data, monkeypatch
):
    """One pre-training stage of a fleet fails at set-up: it gets error.txt and is reported, its lock
    is released, its children are skipped; its fleet partner finishes."""
    from viny_probe.trainers import fleet as fleet_module

    plan = tiny_plan(geometry=False)
    stages, _ = expand(plan)
    victim = next(s for s in stages if s.kind == "pretrain")
    original = fleet_module.Run.__init__

    def failing(self, cfg, run_dir, *a, **k):
        if run_dir.name == victim.id:
            raise VinyError("planted failure")
        original(self, cfg, run_dir, *a, **k)

    monkeypatch.setattr(fleet_module.Run, "__init__", failing)
    summary = sw.run_sweep(plan, tmp_path / "s", execution=dataclasses.replace(QUIET, fleet=4), log=silent)
    assert list(summary.failed) == [victim.id] and "planted failure" in summary.failed[victim.id]
    d = tmp_path / "s" / "stages" / victim.id
    assert "planted failure" in (d / "error.txt").read_text() and not (d / "lock").exists()
    children = [s.id for s in stages if s.parent == victim.id]
    assert children and all(c in summary.skipped for c in children)
    partner = next(s for s in stages if s.kind == "pretrain" and s.id != victim.id)
    assert (tmp_path / "s" / "stages" / partner.id / "final.pt").exists()
