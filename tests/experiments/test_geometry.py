"""The report's Table 2 / Figs 5-6 read what the sweep's diagnostics wrote into DIR/geometry/seed-<s>/:
a hand-made sweep folder (no training, no diagnose run), with known numbers."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from matplotlib.figure import Figure

from viny_probe.analysis import diagnose as diagnose_module
from viny_probe.analysis.registry import Column, Diagnostic, columns, temporarily
from viny_probe.experiments.geometry import geometry_seeds, read_summary
from viny_probe.experiments.report import geometry_section, render_markdown

KINDS = (
    ("pretrain", "Pretrained"),
    ("cls-intel", "CLS-Intel"),
    ("cls-pets", "CLS-Pets"),
    ("spatial", "Spatial"),
)
WITHIN = {0: [0.50, 0.40, 0.30, 0.20], 1: [0.70, 0.60, 0.50, 0.10]}  # per seed, in KINDS order
PROBE = {0: [60.0, 61.0, 62.0, 80.0], 1: [62.0, 63.0, 66.0, 84.0]}


def stage_id(kind: str, seed: int) -> str:
    return f"{kind}-s{seed}"


def row(kind: str, seed: int) -> dict:
    return {
        "stage": stage_id(kind, seed),
        "kind": kind,
        "pretrain_size": 16,
        "intermediate": "cls-intel" if kind == "cls-intel" else "",
        "phase": "geometry" if kind != "pretrain" else "pretrain",
        "seed": seed,
        "labels": {"pretrain_size": 16, "seed": seed, **({"geometry": True} if kind != "pretrain" else {})},
    }


def summary_of(sweep, seed: int, test_size: int = 8) -> dict:
    """summary.json as diagnose writes it (only what the report reads), every registered column set."""
    table2 = []
    for k, (_, name) in enumerate(KINDS):
        numbers = {c.key: 1.0 for c in columns()}
        numbers.update(within=WITHIN[seed][k], probe_acc_pct=PROBE[seed][k], knn_acc_pct=None)
        table2.append({"checkpoint": name, **numbers})
    return {
        "checkpoints": [
            {"name": name, "path": str(sweep / "stages" / stage_id(kind, seed) / "final.pt")}
            for kind, name in KINDS
        ],
        "data": {"32": {"dataset": "toy-pets", "split_seed": 0, "test_size": test_size}},
        "table2": table2,
        "files": {"fig5": "fig5_similarity_vs_distance.png", "cka": "cka.png"},
    }


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """Two seeds of finished geometry stages; the report must not run diagnose."""

    def refuse(*args, **kwargs):
        raise AssertionError("the report ran diagnose")

    monkeypatch.setattr(diagnose_module, "diagnose", refuse)
    sweep = tmp_path / "sweep"
    for seed in WITHIN:
        for kind, _ in KINDS:
            stage = sweep / "stages" / stage_id(kind, seed)
            stage.mkdir(parents=True)
            (stage / "final.pt").write_bytes(b"")
            config = {"dataset": "toy-pets", "split_seed": 0, "test_size": 8, "data_root": None}
            (stage / "config.json").write_text(json.dumps(config))
        out = sweep / "geometry" / f"seed-{seed}"
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(summary_of(sweep, seed)))
        fig = Figure(figsize=(2, 2))
        fig.add_subplot().plot([0, 1], [seed, 1])
        fig.savefig(out / "fig5_similarity_vs_distance.png")
    return sweep


def rows() -> list[dict]:
    return [row(kind, seed) for seed in WITHIN for kind, _ in KINDS]


def section(sweep, report_dir):
    blocks = geometry_section(sweep, rows(), report_dir / "figures")
    return blocks, render_markdown(blocks, report_dir)


def table_line(md: str, name: str) -> list[str]:
    (line,) = [x for x in md.splitlines() if x.startswith(f"| {name} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_geometry_section_reads_the_seeds_summaries(sweep, tmp_path):
    """Mean ± sample std over the two seeds' table2 rows, in Table 2's order, a missing number (kNN
    off) as n/a, the published values beside, the first seed's figure copied beside the report.
    Kills: the std with ddof=0, the seeds' rows not pooled (n seeds 1), the figure of the wrong seed."""
    blocks, md = section(sweep, tmp_path / "report")
    for k, (_, name) in enumerate(KINDS):
        within = [WITHIN[s][k] for s in WITHIN]
        probe = [PROBE[s][k] for s in PROBE]
        cells = table_line(md, name)
        assert cells[1] == "2"
        assert cells[2] == f"{np.mean(within):.3f} ± {np.std(within, ddof=1):.3f}"
        assert cells[4] == f"{np.mean(probe):.1f} ± {np.std(probe, ddof=1):.1f}"
        assert cells[5] == "n/a"
    assert table_line(md, "Spatial")[-1] == "0.32 / 0.06 / 93.3"
    copied = tmp_path / "report" / "figures" / "geometry-seed0" / "fig5_similarity_vs_distance.png"
    assert (
        copied.read_bytes()
        == (sweep / "geometry" / "seed-0" / "fig5_similarity_vs_distance.png").read_bytes()
    )
    assert "figures/geometry-seed0/fig5_similarity_vs_distance.png" in md
    assert [b.kind for b in blocks].count("figure") == 1  # cka.png is listed but not there: left out


def test_a_registered_diagnostic_with_a_report_title_becomes_a_report_column(sweep, tmp_path):
    """The report's columns come from the registry. Mutant applied once, failing this test:
    _geometry_table over a fixed list of the built-in report columns."""
    toy = Diagnostic(
        "toy", "toy", "a toy", lambda layer: 0.0, (Column("toy_col", "toy", ".2f", report="Toy"),)
    )
    with temporarily(toy):
        for seed in WITHIN:
            summary = summary_of(sweep, seed)
            for k, r in enumerate(summary["table2"]):
                r["toy_col"] = float(k + seed)
            (sweep / "geometry" / f"seed-{seed}" / "summary.json").write_text(json.dumps(summary))
        _, md = section(sweep, tmp_path / "report")
    header = [x for x in md.splitlines() if x.startswith("| Encoder |")][0]
    assert "| Toy |" in header
    toy_at = [c.strip() for c in header.strip("|").split("|")].index("Toy")
    assert table_line(md, "CLS-Intel")[toy_at] == f"1.50 ± {np.std([1.0, 2.0], ddof=1):.2f}"


def test_missing_or_stale_diagnostics_name_the_command_that_writes_them(sweep, tmp_path):
    """Seed 1 without summary.json, seed 0 written for another test size: both are left out, each named
    with the `viny diagnose` command that writes its folder; the report does not crash."""
    (sweep / "geometry" / "seed-1" / "summary.json").unlink()
    (sweep / "geometry" / "seed-0" / "summary.json").write_text(
        json.dumps(summary_of(sweep, 0, test_size=1000))
    )
    _, md = section(sweep, tmp_path / "report")
    assert "are not there" in md and "are stale" in md
    assert "not all finished and diagnosed yet" in md
    seeds = geometry_seeds(rows())
    command = seeds[1].command(sweep)
    assert f"`{command}`" in md
    words = shlex.split(command)
    assert words[:2] == ["viny", "diagnose"] and words[-2:] == ["-o", str(sweep / "geometry" / "seed-1")]
    assert words[2:6] == [str(sweep / "stages" / stage_id(kind, 1) / "final.pt") for kind, _ in KINDS]
    assert words[words.index("--names") + 1 : words.index("--names") + 5] == [n for _, n in KINDS]
    assert words[words.index("--test-size") + 1] == "8"


def test_a_summary_without_a_registered_column_is_stale(sweep):
    """A diagnostic registered after the folder was written makes it stale (the sweep rewrites it)."""
    seed = geometry_seeds(rows())[0]
    assert read_summary(sweep, seed) is not None
    toy = Diagnostic("toy", "toy", "a toy", lambda layer: 0.0, (Column("toy_col", "toy", ".2f"),))
    with temporarily(toy):
        assert read_summary(sweep, seed) is None
    (sweep / "stages" / stage_id("spatial", 0) / "final.pt").unlink()
    assert geometry_seeds(rows())[0].missing(sweep) == ["Spatial of seed 0 (spatial-s0)"]


def test_geometry_seeds_take_the_geometry_cls_intel_stage():
    """Where a plan trained CLS-Intel twice at the geometry pre-training size (the intermediate stage of
    the segmentation chain and the geometry-schedule stage), Table 2 takes the geometry one, whatever the
    order of the rows."""
    intermediate = {
        **row("cls-intel", 0),
        "stage": "cls-intel-intermediate",
        "phase": "intermediate",
        "labels": {"pretrain_size": 16, "seed": 0},  # the plan labels only the geometry stages
    }
    for order in (1, -1):
        found = geometry_seeds([row(k, 0) for k, _ in KINDS] + [intermediate])
        assert dict(found[0].stages)["CLS-Intel"] == "cls-intel-s0"
        found = geometry_seeds([intermediate] + [row(k, 0) for k, _ in KINDS][::order])
        assert dict(found[0].stages)["CLS-Intel"] == "cls-intel-s0"
    assert geometry_seeds([row("pretrain", 0), row("spatial", 0)])[0].names == ["Pretrained", "Spatial"]
    assert geometry_seeds([row("spatial", 0)]) == {}  # one encoder: nothing to compare
