"""A regime, a dataset and a diagnostic registered from this file alone (nothing in viny_probe/ edited)
run end to end through the `viny` command: `viny train <toy>` on the toy dataset, `viny diagnose` on
its checkpoint (the toy diagnostic's column in table2.md, summary.json and the printed table), and
`viny report` on a sweep folder holding them. This is the promise of the registries: a new regime,
dataset or diagnostic is one file plus one registration."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from viny_probe.analysis.registry import Column, Diagnostic, LayerTokens, temporarily
from viny_probe.cli import app
from viny_probe.data.augment import normalize, to_float
from viny_probe.data.base import ImageSet
from viny_probe.data.spec import DatasetSpec
from viny_probe.registry import DATASETS, REGIMES
from viny_probe.trainers import Regime, RegimeData, splits


def toy_stripes(root, *, size, limit, seed, **_) -> ImageSet:
    """``limit`` images (default 48): a bright square ("pet") on a striped background, with trimaps."""
    n = limit or 48
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=gen) * 60).to(torch.uint8)
    images[:, :, :, ::4] += 80  # stripes
    masks = torch.ones(n, size, size, dtype=torch.uint8)  # background
    for i in range(n):
        a = int(torch.randint(0, size // 2, (1,), generator=gen))
        masks[i, a : a + size // 2, a : a + size // 2] = 2  # boundary ring
        masks[i, a + 1 : a + size // 2 - 1, a + 1 : a + size // 2 - 1] = 0  # pet
        images[i, :, a : a + size // 2, a : a + size // 2] = 220
    return ImageSet(
        name="toy-stripes", images=images, masks=masks, ids=[f"stripes-{i:03d}" for i in range(n)]
    )


class MeanToken(Regime):
    """Toy regime: predict each image's mean brightness from its mean patch token."""

    name = "toy-mean"
    phase = "intermediate"
    default_dataset = "toy-stripes"
    description = "Toy: regress the image's mean brightness from the mean patch token."

    def load_data(self, cfg, model_cfg) -> RegimeData:
        train, test, info = splits.train_test(cfg, model_cfg.image_size)
        return RegimeData(train=train, test=test, info=info)

    def make_head(self, model_cfg, data) -> nn.Module:
        return nn.Linear(model_cfg.dim, 1)

    def prepare(self, batch, gen):
        x = to_float(batch["images"])
        return {"images": normalize(x), "target": x.mean(dim=(1, 2, 3))}

    def compute_loss(self, encoder, head, inputs):
        pred = head(encoder(inputs["images"]).mean(dim=1)).squeeze(1)
        loss = F.mse_loss(pred, inputs["target"])
        return loss, {"abs_error": (pred - inputs["target"]).abs().mean().detach()}

    @torch.no_grad()
    def evaluate(self, encoder, head, data, batch_size):
        batch = self.prepare({"images": data.test.images}, torch.Generator())
        loss, stats = self.compute_loss(encoder, head, batch)
        return {"test_mse": float(loss), "test_abs_error": float(stats["abs_error"])}


def brightest_patch_share(layer: LayerTokens) -> float:
    """Toy diagnostic: the share of test patches whose token has the largest norm of its image."""
    norms = layer.test.norm(dim=-1)  # (N, P)
    return float((norms == norms.max(dim=1, keepdim=True).values).float().mean())


TOY_DIAGNOSTIC = Diagnostic(
    "brightest_share",
    "brightest-token share",
    "share of patches holding their image's largest token norm",
    brightest_patch_share,
    (Column("brightest_share", "brightest share", ".3f", report="Brightest share"),),
)


@pytest.fixture
def toy_registrations(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # printed tables on one line each
    spec = DatasetSpec(
        name="toy-stripes",
        load=toy_stripes,
        description="toy: bright squares on stripes, with trimaps",
        targets="trimaps",
        held_out="fixed",
        size=48,
        embedded=True,
    )
    with (
        DATASETS.registered("toy-stripes", spec),
        REGIMES.registered("toy-mean", MeanToken),
        temporarily(TOY_DIAGNOSTIC),
    ):
        yield


def test_toy_regime_trains_through_the_cli_on_the_toy_dataset(
    toy_registrations, tmp_path, tiny_train_args
) -> None:
    """Mutants: RegimeCommands.list_commands/get_command ignoring the registry (the old fixed dict)
    -> no `toy-mean` command; config taking the dataset from a fixed table -> KeyError / other data."""
    runner = CliRunner()
    listed = runner.invoke(app, ["train", "--help"])
    assert "toy-mean" in listed.output and "mean brightness" in listed.output

    out = tmp_path / "toy"
    result = runner.invoke(app, ["train", "toy-mean", *tiny_train_args(2), "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["regime"] == "toy-mean" and config["dataset"] == "toy-stripes"
    assert config["phase"] == "intermediate"
    data = json.loads((out / "data.json").read_text())
    assert data["train"] == 16 and data["test"] == 8  # the "fixed" rule: --test-size images held out
    results = json.loads((out / "results.json").read_text())
    assert results["regime"] == "toy-mean" and results["test_mse"] >= 0
    shown = re.search(r"held-out: test mse ([0-9.e-]+)", result.output)  # the regime's summary, one line
    assert shown and abs(float(shown[1]) - results["test_mse"]) < 1e-4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

    diag = tmp_path / "diag"
    result = runner.invoke(app, ["diagnose", str(out / "final.pt"), "-o", str(diag), *SMALL_DIAGNOSE])
    assert result.exit_code == 0, result.output
    summary = json.loads((diag / "summary.json").read_text())
    (info,) = summary["data"].values()
    assert info["dataset"] == "toy-stripes"  # read off the toy stage's lineage
    value = summary["final_layer"]["toy"]["brightest_share"]
    assert 0 < value <= 1 and summary["table2"][0]["brightest_share"] == value
    assert "| brightest share |" in (diag / "table2.md").read_text()
    assert any("brightest share" in line for line in result.output.splitlines())


SMALL_DIAGNOSE = ["--names", "toy", "--probe-images", "24", "--test-images", "8", "-q"]


def test_report_shows_the_toy_diagnostic_of_a_sweep_folder(toy_registrations, tmp_path, tiny_train_args):
    """A sweep folder whose two geometry stages are toy-mean runs on toy-stripes, diagnosed into
    DIR/geometry/seed-0 by `viny diagnose`: `viny report` reads them and its Table 2 has the toy
    diagnostic's column (header and value). Mutant: the report's Table 2 over the built-in columns
    only -> no "Brightest share" header."""
    runner = CliRunner()
    sweep = tmp_path / "sweep"
    rows = []
    for kind in ("pretrain", "spatial"):
        stage = f"{kind}-toy"
        run = sweep / "stages" / stage
        result = runner.invoke(app, ["train", "toy-mean", *tiny_train_args(1), "--out", str(run)])
        assert result.exit_code == 0, result.output
        rows.append(
            {
                "stage": stage,
                "kind": kind,
                "pretrain_size": 16,
                "intermediate": "",
                "seed": 0,
                "model": "tiny",
                "labels": {"pretrain_size": 16, "seed": 0, "geometry": kind != "pretrain"},
            }
        )
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    geometry = sweep / "geometry" / "seed-0"
    ckpts = [str(sweep / "stages" / r["stage"] / "final.pt") for r in rows]
    args = ["diagnose", *ckpts, "--names", "Pretrained", "Spatial", "--dataset", "toy-stripes"]
    args += ["--test-size", "8", "-o", str(geometry), "--probe-images", "24", "--test-images", "8", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    value = json.loads((geometry / "summary.json").read_text())["table2"][1]["brightest_share"]

    result = runner.invoke(app, ["report", str(sweep), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report" / "report.md").read_text()
    header = next(line for line in md.splitlines() if "Brightest share" in line)
    assert header.startswith("|")
    spatial = next(line for line in md.splitlines() if line.startswith("| Spatial |"))
    assert f"{value:.3f}" in spatial
    shutil.rmtree(sweep / "stages")  # the report never needed the checkpoints themselves
