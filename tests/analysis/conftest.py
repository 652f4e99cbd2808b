"""Tiny checkpoints shared by the command tests (trained once per session)."""

from __future__ import annotations

import pytest
import torch

from viny_probe.checkpoint import save_checkpoint
from viny_probe.config import TrainConfig
from viny_probe.model import ViNy


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny spatial-regime checkpoint (trained on toy-pets, so the toy-pets cache is shared)."""
    from viny_probe.trainers import train

    out = tmp_path_factory.mktemp("tiny-run")
    cfg = TrainConfig(
        regime="spatial", model="tiny", epochs=1, batch_size=8, train_size=16, test_size=8, device="cpu"
    )
    return train(cfg, out, progress=False).final_checkpoint


@pytest.fixture(scope="session")
def fresh_ckpt(tmp_path_factory):
    """An untrained tiny encoder, saved as a viny checkpoint."""
    torch.manual_seed(1)
    model = ViNy("tiny")
    path = tmp_path_factory.mktemp("fresh") / "fresh.pt"
    save_checkpoint(
        path, {"regime": "fresh", "model_config": model.cfg.to_dict(), "encoder": model.state_dict()}
    )
    return path
