"""A regime's own metric reaches results.csv and the report by its declaration alone
(``Regime.result_columns``): a toy regime and a toy stage kind registered here, one finished stage
written by hand into a sweep folder."""

from __future__ import annotations

import csv
import json

from viny_probe.config import TrainConfig
from viny_probe.experiments.kinds import STAGE_KINDS, StageKind
from viny_probe.experiments.report import render_markdown, stage_results_section
from viny_probe.experiments.results import csv_columns, rebuild_results
from viny_probe.registry import REGIMES
from viny_probe.trainers import Regime


class Rotation(Regime):
    name = "toy-rotation"
    phase = "intermediate"
    result_columns = ("rotation_accuracy",)


def finished_stage(sweep, stage_id: str, seed: int, score: float) -> None:
    d = sweep / "stages" / stage_id
    d.mkdir(parents=True)
    cfg = TrainConfig(regime="toy-rotation", preset="quick", dataset="toy-pets", seed=seed).resolved()
    info = {"id": stage_id, "kind": "rotation", "parent": None, "labels": {"seed": seed}}
    (d / "stage.json").write_text(json.dumps({**info, "config": cfg.to_dict()}))
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    (d / "results.json").write_text(json.dumps({"rotation_accuracy": score, "final": {"loss": 0.1}}))
    (d / "final.pt").write_bytes(b"")


def test_a_regimes_declared_metric_reaches_results_csv_and_the_report(tmp_path):
    """Mutants watched failing: results rows with the study's fixed columns (no rotation_accuracy
    column); the report without its table of the other stages."""
    sweep = tmp_path / "sweep"
    kind = StageKind("rotation", regime="toy-rotation", dataset="pets")
    with REGIMES.registered(Rotation.name, Rotation), STAGE_KINDS.registered("rotation", kind):
        assert "rotation_accuracy" in csv_columns() and "miou" in csv_columns()
        finished_stage(sweep, "toy-rotation-a", 0, 0.75)
        finished_stage(sweep, "toy-rotation-b", 1, 0.25)
        rows = rebuild_results(sweep)
        written = list(csv.DictReader(open(sweep / "results.csv")))
        assert [float(r["rotation_accuracy"]) for r in written] == [0.75, 0.25]
        markdown = render_markdown(stage_results_section(rows), tmp_path)
    assert "rotation_accuracy" in markdown and "0.5000 ± 0.3536" in markdown
    assert "rotation_accuracy" not in csv_columns()  # gone with its regime
