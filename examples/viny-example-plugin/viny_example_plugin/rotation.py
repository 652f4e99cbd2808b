"""Rotation prediction (Gidaris et al. 2018): rotate each image by 0/90/180/270 degrees, predict which."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from viny_probe.data.augment import normalize, to_float
from viny_probe.trainers import Regime, RegimeData, register, splits
from viny_probe.trainers.base import batched

ROTATIONS = 4


def rotate(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) images, each turned by its own ``quarter_turns`` (B,) x 90 degrees counter-clockwise."""
    out = images.clone()
    for k in range(1, ROTATIONS):
        chosen = quarter_turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return out


class PooledHead(nn.Module):
    """Mean of the patch tokens (B, P, D) -> rotation logits (B, 4)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, ROTATIONS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(tokens.mean(dim=1)))


@register
class Rotation(Regime):
    name = "rotation"
    phase = "pretrain"
    default_dataset = "toy-unlabeled"
    description = (
        "Rotation prediction: which of 0/90/180/270 degrees an image was turned by (example plugin)."
    )
    # Its held-out number, as a column of a sweep's results.csv and of the report's table of stages.
    result_columns = ("test_rotation_accuracy",)

    def load_data(self, cfg, model_cfg) -> RegimeData:
        train, test, info = splits.unlabeled(cfg, model_cfg.image_size)
        return RegimeData(train=train, test=test, info=info)

    def make_head(self, model_cfg, data) -> nn.Module:
        return PooledHead(model_cfg.dim)

    def prepare(self, batch, gen):
        x = to_float(batch["images"])
        turns = torch.randint(0, ROTATIONS, (x.shape[0],), generator=gen).to(x.device)
        return {"images": normalize(rotate(x, turns)), "turns": turns}

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
            turns = torch.arange(x.shape[0], device=device) % ROTATIONS  # every rotation, in turn
            predicted = head(encoder(normalize(rotate(x, turns)))).argmax(dim=1)
            correct += int((predicted == turns).sum())
            total += x.shape[0]
        return {"test_rotation_accuracy": correct / total}
