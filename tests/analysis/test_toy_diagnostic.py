"""A new diagnostic is one function and one registration: the mean token norm, registered from this test
module only (nothing in viny_probe/ edited), shows up in everything `viny diagnose` and `viny probe`
write and print."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from viny_probe.analysis.registry import Column, Diagnostic, LayerTokens, registered, temporarily
from viny_probe.cli import app

SMALL = ["--probe-images", "24", "--test-images", "8", "-q"]


def mean_token_norm(layer: LayerTokens) -> float:
    """Mean L2 norm of the test images' patch tokens ``(N, P, D)`` -> float."""
    return float(layer.test.norm(dim=-1).mean())


TOY = Diagnostic(
    "mean_token_norm",
    "mean token norm",
    "mean L2 norm of a patch token",
    mean_token_norm,
    (Column("token_norm", "token norm", ".2f", report="Token norm"),),
    per_block=True,
)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the printed tables on one line each, headers unwrapped
    with temporarily(TOY):
        yield TOY
    assert TOY not in registered()


def test_a_registered_diagnostic_reaches_every_output_of_diagnose(toy, tiny_ckpt, tmp_path):
    """table2.md, table2.json, summary.json (Table 2, final layer, per-block curve), summary.md and the
    table `viny diagnose` prints all carry the toy column with the value the function gives. Mutants
    applied once each, each failing this test: table2_markdown over a fixed list of the built-in
    columns; the CLI's diagnose_table over that fixed list; measure_layer skipping diagnostics
    registered after the built-ins; measure_block over the built-in curves only."""
    out = tmp_path / "diag"
    args = ["diagnose", str(tiny_ckpt), "--names", "Spatial", "-o", str(out), "--depth-probe-images", "8"]
    result = CliRunner().invoke(app, [*args, "--cka-images", "4", "--fig6-images", "1", *SMALL])
    assert result.exit_code == 0, result.output

    summary = json.loads((out / "summary.json").read_text())
    value = summary["final_layer"]["Spatial"]["mean_token_norm"]
    assert value > 0
    assert summary["table2"][0]["token_norm"] == value
    curve = summary["per_block"]["Spatial"]["mean_token_norm"]
    assert curve[0] is None and len(curve) == 3 and curve[-1] == pytest.approx(value)

    table2 = json.loads((out / "table2.json").read_text())
    assert "token_norm" in table2["columns"] and table2["rows"][0]["token_norm"] == value
    header, _, row = (out / "table2.md").read_text().splitlines()[:3]
    assert header.endswith("| eff. rank | token norm |")
    assert row.endswith(f"| {value:.2f} |")
    # the probe's convergence reaches the files (issue: it never left the terminal table)
    assert isinstance(summary["table2"][0]["probe_converged"], bool)
    assert table2["rows"][0]["probe_converged"] == summary["final_layer"]["Spatial"]["probe"]["converged"]
    md = (out / "summary.md").read_text()
    assert "The probe's solver" in md
    assert "| token norm |" in md and "mean token norm: mean L2 norm of a patch token" in md

    printed = result.output.splitlines()
    assert any("token norm" in line for line in printed)
    assert any("Spatial" in line and f"{value:.2f}" in line for line in printed)


def test_a_registered_diagnostic_reaches_the_probe_tables(toy, tiny_ckpt):
    """`viny probe` (one layer: a row per diagnostic; every block: a column per registered column) and
    its JSON. Mutant applied once, failing this test: probe_tables iterating a fixed list of the
    built-in diagnostics."""
    one = CliRunner().invoke(app, ["probe", str(tiny_ckpt), "--no-knn", *SMALL])
    assert one.exit_code == 0, one.output
    assert "mean token norm" in one.output
    data = json.loads(CliRunner().invoke(app, ["probe", str(tiny_ckpt), "--no-knn", "--json", *SMALL]).stdout)
    value = data["layers"]["final"]["mean_token_norm"]
    assert any("mean token norm" in line and f"{value:.2f}" in line for line in one.output.splitlines())
    every = CliRunner().invoke(app, ["probe", str(tiny_ckpt), "--layer", "all", "--no-knn", *SMALL])
    assert every.exit_code == 0, every.output
    assert "token norm" in every.output
