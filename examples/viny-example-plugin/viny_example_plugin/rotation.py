"""Rotation prediction (Gidaris et al. 2018): rotate each image by 0/90/180/270 degrees, predict which.
Its one option (``RotationOptions``, `viny train rotation --rotations 2`): tell apart 4 rotations, or 2
(0/180 degrees)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from viny_probe.data.augment import normalize, to_float
from viny_probe.trainers import Regime, RegimeData, register, splits
from viny_probe.trainers.base import batched

ROTATIONS = 4  # quarter turns: 0, 90, 180, 270 degrees


def rotate(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) images, each turned by its own ``quarter_turns`` (B,) x 90 degrees counter-clockwise."""
    out = images.clone()
    for k in range(1, ROTATIONS):
        chosen = quarter_turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return out


class PooledHead(nn.Module):
    """Mean of the patch tokens (B, P, D) -> rotation logits (B, classes)."""

    def __init__(self, dim: int, classes: int = ROTATIONS) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(tokens.mean(dim=1)))


@dataclass(frozen=True)
class RotationOptions:
    """The regime's own options: `viny train rotation` offers each field as a flag (``--rotations``)."""

    rotations: Literal[2, 4] = field(
        default=4, metadata={"help": "rotations told apart: 4 = 0/90/180/270 degrees, 2 = 0/180"}
    )


@register
class Rotation(Regime):
    name = "rotation"
    phase = "pretrain"
    default_dataset = "toy-unlabeled"
    description = (
        "Rotation prediction: which of 0/90/180/270 degrees an image was turned by (example plugin)."
    )
    Options = RotationOptions
    rotations = ROTATIONS
    # Its held-out number, as a column of a sweep's results.csv and of the report's table of stages.
    result_columns = ("test_rotation_accuracy",)

    def load_data(self, cfg, model_cfg) -> RegimeData:
        self.rotations = cfg.options.rotations
        train, test, info = splits.unlabeled(cfg, model_cfg.image_size)
        return RegimeData(train=train, test=test, info=info)

    def make_head(self, model_cfg, data) -> nn.Module:
        return PooledHead(model_cfg.dim, self.rotations)

    def _turned(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Each image turned by its class's angle (class k: k x 360 / rotations degrees)."""
        return rotate(x, classes * (ROTATIONS // self.rotations))

    def prepare(self, batch, gen):
        x = to_float(batch["images"])
        turns = torch.randint(0, self.rotations, (x.shape[0],), generator=gen).to(x.device)
        return {"images": normalize(self._turned(x, turns)), "turns": turns}

    def compute_loss(self, encoder, head, inputs):
        logits = head(encoder(inputs["images"])).float()
        accuracy = (logits.detach().argmax(dim=1) == inputs["turns"]).float().mean()
        return F.cross_entropy(logits, inputs["turns"]), {"train_rotation_accuracy": accuracy}

    @torch.no_grad()
    def evaluate(self, encoder, head, data, batch_size):
        if data.test is None:
            return {}
        device = next(encoder.parameters()).device
        correct = total = 0
        for sl in batched(len(data.test), batch_size):
            x = to_float(data.test.images[sl].to(device))
            turns = torch.arange(x.shape[0], device=device) % self.rotations  # every rotation, in turn
            predicted = head(encoder(normalize(self._turned(x, turns)))).argmax(dim=1)
            correct += int((predicted == turns).sum())
            total += x.shape[0]
        return {"test_rotation_accuracy": correct / total}
