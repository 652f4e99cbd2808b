"""A regime and a dataset registered from this file alone (nothing in viny_probe/ edited) run end to
end through the `viny` command: `viny train <toy>` on the toy dataset, then `viny diagnose` on its
checkpoint. This is the promise of the registries: a new regime or dataset is one file plus one
registration."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

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


@pytest.fixture
def toy_registrations():
    spec = DatasetSpec(
        name="toy-stripes",
        load=toy_stripes,
        description="toy: bright squares on stripes, with trimaps",
        targets="trimaps",
        held_out="fixed",
        size=48,
        embedded=True,
    )
    with DATASETS.registered("toy-stripes", spec), REGIMES.registered("toy-mean", MeanToken):
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
    assert "test_mse" in result.output  # the regime's summary (the default: its scalar results)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

    diag = tmp_path / "diag"
    result = runner.invoke(
        app,
        [
            "diagnose",
            str(out / "final.pt"),
            "-o",
            str(diag),
            "--probe-images",
            "24",
            "--test-images",
            "8",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((diag / "summary.json").read_text())
    (info,) = summary["data"].values()
    assert info["dataset"] == "toy-stripes"  # read off the toy stage's lineage
