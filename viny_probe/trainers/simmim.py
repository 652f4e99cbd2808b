"""SimMIM pre-training: mask exactly half the patches, reconstruct their raw pixels, L1 loss."""

from __future__ import annotations

import torch
from torch import nn

from ..data.augment import normalize, random_hflip, random_resized_crop, to_float
from ..heads import SimMIMHead
from ..model import patchify
from . import splits
from .base import Regime, RegimeData, register


def random_half_mask(
    batch: int, num_patches: int, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(B, P) bool with exactly P // 2 True per row, uniformly at random."""
    ranks = torch.rand(batch, num_patches, generator=gen).argsort(dim=1).argsort(dim=1)
    return (ranks < num_patches // 2).to(device)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over the pixels of masked patches only. pred/target (B, P, K), mask (B, P).

    (The authors' code divides this once more by the number of masked patches; that only rescales the
    learning rate, and viny uses the plain mean.)"""
    per_patch = (pred - target).abs().mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


@register
class SimMIM(Regime):
    name = "simmim"

    def load_data(self, cfg, model_cfg) -> RegimeData:
        train, test, info = splits.unlabeled(cfg, model_cfg.image_size)
        return RegimeData(train=train, test=test, info=info)

    def make_head(self, model_cfg, data) -> nn.Module:
        self.patch_size = model_cfg.patch_size
        return SimMIMHead(model_cfg)

    def prepare(self, batch, gen):
        x = to_float(batch["images"])
        x = normalize(random_hflip(gen, random_resized_crop(x, gen, scale=(0.67, 1.0)))[0])
        num_patches = (x.shape[-1] // self.patch_size) ** 2
        return {"images": x, "mask": random_half_mask(x.shape[0], num_patches, gen, x.device)}

    def compute_loss(self, encoder, head, inputs):
        x, mask = inputs["images"], inputs["mask"]
        pred = head(encoder(x, mask=mask, mask_token=head.mask_token))
        return masked_l1(pred.float(), patchify(x, self.patch_size), mask), {}
