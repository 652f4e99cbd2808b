"""SimMIM pre-training: mask exactly half the patches, reconstruct their raw pixels, L1 loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..config import SOURCE_SIDE
from ..data.augment import (
    normalize,
    random_hflip,
    random_resized_crop,
    random_resized_crop_boxes,
    resized_crops,
    to_float,
)
from ..errors import VinyError
from ..heads import SimMIMHead
from ..model import patchify
from . import splits
from .base import Regime, RegimeData, batched, register


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


def fixed_half_masks(count: int, num_patches: int, seed: int = 0) -> torch.Tensor:
    """(count, P) bool half-masks from their own generator seeded with ``seed``: the same masks for every
    checkpoint, so held-out losses and reconstruction figures compare like with like. Row i does not
    depend on ``count``."""
    return random_half_mask(count, num_patches, torch.Generator().manual_seed(seed), torch.device("cpu"))


@torch.no_grad()
def reconstruction_loss(
    encoder: nn.Module, head: nn.Module, images: torch.Tensor, seed: int = 0, batch_size: int = 128
) -> float:
    """Held-out SimMIM loss: ``masked_l1`` on normalised pixels of (N, 3, S, S) uint8 ``images``, no
    augmentation, half of each image's patches masked by ``fixed_half_masks(N, P, seed)``. With exactly
    P // 2 masked patches per image this is the mean over images of each image's masked L1."""
    if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[0] == 0:
        raise VinyError(
            f"images must be a non-empty (N, 3, S, S) uint8 tensor, got {images.dtype} {tuple(images.shape)}"
        )
    patch_size = encoder.cfg.patch_size
    device = next(encoder.parameters()).device
    masks = fixed_half_masks(images.shape[0], encoder.cfg.num_patches, seed)
    total, count = 0.0, 0
    for sl in batched(images.shape[0], batch_size):
        x = normalize(to_float(images[sl].to(device)))
        mask = masks[sl].to(device)
        pred = head(encoder(x, mask=mask, mask_token=head.mask_token)).float()
        masked = int(mask.sum())
        total += float(masked_l1(pred, patchify(x, patch_size), mask)) * masked
        count += masked
    return total / max(count, 1)


@dataclass(frozen=True)
class SimMIMOptions:
    mask_token_std: float = field(
        default=0.02,
        metadata={
            "help": "std of the mask token's normal init (viny 0.02; the study's code 1: --preset authors)",
            "range": (0, None, True),
        },
    )
    crop_source: Literal["square", "original"] = field(
        default="square",
        metadata={
            "help": "where the RandomResizedCrop is cut from: square = the cached image at the model's size "
            "(viny's); original = the image with its aspect ratio kept at up to 192 px (the study's code: "
            "--preset authors)"
        },
    )


@register
class SimMIM(Regime):
    name = "simmim"
    result_columns = ("test_reconstruction_l1",)
    phase = "pretrain"
    default_dataset = "toy-unlabeled"
    description = "SimMIM pre-training: mask half the patches, reconstruct their pixels (L1)."
    augments = ("crop",)
    Options = SimMIMOptions
    mask_token_std = 0.02
    resize = "bilinear"  # the filter that resizes an "original" crop to the model's size (the run's)

    def load_data(self, cfg, model_cfg) -> RegimeData:
        train, test, info = splits.unlabeled(cfg, model_cfg.image_size)
        self.mask_token_std = cfg.options.mask_token_std
        self.image_size, self.resize = model_cfg.image_size, cfg.resize or "bilinear"
        if cfg.options.crop_source == "original":
            train = splits.crop_sources(cfg, train, SOURCE_SIDE)
            info["crop_source"] = (
                f"original: aspect ratio kept, longer side at most {SOURCE_SIDE} px, crops resized "
                f"{self.resize}"
                if train.extents is not None
                else "square: an embedded set has no original (generated at the model's size)"
            )
        return RegimeData(train=train, test=test, info=info)

    def make_head(self, model_cfg, data) -> nn.Module:
        self.patch_size = model_cfg.patch_size
        return SimMIMHead(model_cfg, mask_token_std=self.mask_token_std)

    def prepare(self, batch, gen):
        if "extents" in batch:  # crop_source original: the box in the image's own pixels
            boxes = random_resized_crop_boxes(batch["extents"], gen, scale=(0.67, 1.0))
            x = resized_crops(batch["images"], boxes, self.image_size, self.resize)
        else:
            x = random_resized_crop(to_float(batch["images"]), gen, scale=(0.67, 1.0))
        x = normalize(random_hflip(gen, x)[0])
        num_patches = (x.shape[-1] // self.patch_size) ** 2
        return {"images": x, "mask": random_half_mask(x.shape[0], num_patches, gen, x.device)}

    def predict(self, encoder, head, inputs):
        return head(encoder(inputs["images"], mask=inputs["mask"], mask_token=head.mask_token))

    def loss(self, outputs, inputs):
        x, mask = inputs["images"], inputs["mask"]
        return masked_l1(outputs.float(), patchify(x, self.patch_size), mask), {}

    @torch.no_grad()
    def evaluate(self, encoder, head, data, batch_size):
        if data.test is None:
            return {}
        return {"test_reconstruction_l1": reconstruction_loss(encoder, head, data.test.images, 0, batch_size)}

    def head_macs(self, model_cfg, num_classes):
        # the decoder runs on every patch token, though the loss reads only the masked half
        return model_cfg.num_patches * model_cfg.dim * model_cfg.patch_dim
