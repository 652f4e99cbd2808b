"""Patch-aligned ("spatial") supervision: a linear classifier on every patch token.

``--targets trimap``: each patch's majority trimap class (Pets-like data; what the authors' code does).
``--targets patch-label``: every patch of an image predicts the image's class (Intel-like data; the
paper's text, "the same dataset as the classification task")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import INPUTS, SPATIAL_TARGETS
from ..data.augment import contrast_jitter, random_hflip, to_float
from ..data.patch_labels import patch_majority_labels
from ..errors import VinyError
from ..heads import SpatialHead
from . import splits
from .base import Regime, RegimeData, batched, device_batch, encoder_input, register
from .classify import INPUTS_HELP


@dataclass(frozen=True)
class SpatialOptions:
    targets: Literal[SPATIAL_TARGETS] = field(
        default="trimap",
        metadata={"help": "trimap = the trimap class of each patch; patch-label = the image's class"},
    )
    inputs: Literal[INPUTS] = field(default="normalized", metadata={"help": INPUTS_HELP})


@register
class Spatial(Regime):
    name = "spatial"
    result_columns = ("test_patch_accuracy",)
    phase = "intermediate"
    default_dataset = "toy-pets"
    description = "Patch-aligned supervision: a linear classifier on every patch token."
    augments = ("flip", "flip-contrast")
    Options = SpatialOptions
    targets = "trimap"
    augment = "flip"
    inputs = "normalized"

    def load_data(self, cfg, model_cfg) -> RegimeData:
        self.targets, self.augment, self.inputs = cfg.options.targets, cfg.augment, cfg.options.inputs
        train, test, info = splits.train_test(cfg, model_cfg.image_size)
        if self.targets == "trimap" and train.masks is None:
            raise VinyError(
                f"dataset {cfg.dataset!r} has no trimaps, so `spatial --targets trimap` cannot use it; "
                "use --targets patch-label for a classification dataset"
            )
        if self.targets == "patch-label" and train.labels is None:
            raise VinyError(
                f"dataset {cfg.dataset!r} has no image labels for `spatial --targets patch-label`"
            )
        return RegimeData(train=train, test=test, info={**info, "targets": self.targets})

    def make_head(self, model_cfg, data) -> nn.Module:
        self.patch_size = model_cfg.patch_size
        classes = 3 if self.targets == "trimap" else data.train.num_classes
        return SpatialHead(model_cfg, classes)

    def _targets(self, batch, patch_size: int, num_patches: int) -> torch.Tensor:
        if self.targets == "trimap":
            # trimaps were validated when the dataset loaded: no range check (a host read) per step
            return patch_majority_labels(batch["masks"], patch_size, check=False)
        return batch["labels"].unsqueeze(1).expand(-1, num_patches)

    def prepare(self, batch, gen):
        tensors = [to_float(batch["images"])] + ([batch["masks"]] if "masks" in batch else [])
        flipped = random_hflip(gen, *tensors)
        batch = {**batch, "masks": flipped[1]} if len(flipped) > 1 else batch
        x = flipped[0]
        if self.augment == "flip-contrast":  # the study's code: flip + contrast jitter 0.3
            x = contrast_jitter(x, 0.3, gen)
        num_patches = (x.shape[-1] // self.patch_size) ** 2
        return {
            "images": encoder_input(x, self.inputs),
            "targets": self._targets(batch, self.patch_size, num_patches),
        }

    def predict(self, encoder, head, inputs):
        return head(encoder(inputs["images"]))

    def loss(self, outputs, inputs):
        logits = outputs.float()
        target = inputs["targets"]
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        return loss, {"train_patch_accuracy": (logits.argmax(-1) == target).float().mean().detach()}

    @torch.no_grad()
    def evaluate(self, encoder, head, data, batch_size):
        if data.test is None:
            return {}
        device = next(encoder.parameters()).device
        cfg = encoder.cfg
        correct = total = 0
        for sl in batched(len(data.test), batch_size):
            b = device_batch(data.test, sl, device)
            target = self._targets(b, cfg.patch_size, cfg.num_patches)
            pred = head(encoder(encoder_input(to_float(b["images"]), self.inputs))).argmax(-1)
            correct += int((pred == target).sum())
            total += target.numel()
        return {"test_patch_accuracy": correct / total}

    bench_classes = 3  # the trimap classes

    def head_macs(self, model_cfg, num_classes):
        return model_cfg.num_patches * model_cfg.dim * num_classes
