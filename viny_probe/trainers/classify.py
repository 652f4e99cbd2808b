"""Global classification on the CLS token (CLS-Intel, CLS-Pets; the study's intermediate stage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import INPUTS
from ..data.augment import contrast_jitter, mixup, random_hflip, random_resized_crop, to_float
from ..errors import VinyError
from ..heads import ClassificationHead
from . import splits
from .base import Regime, RegimeData, batched, device_batch, encoder_input, register

INPUTS_HELP = (
    "normalized = ImageNet mean/std; raw = [0, 1] pixels (the study's code in its Pets stages: Spatial "
    "and segmentation)"
)


@dataclass(frozen=True)
class ClassifyOptions:
    mixup: float = field(
        default=0.0,
        metadata={
            "help": "MixUp alpha, 0 = none (the study's code: 0.1 on Intel, --preset authors)",
            "range": (0, None, False),
        },
    )
    inputs: Literal[INPUTS] = field(default="normalized", metadata={"help": INPUTS_HELP})


@register
class Classify(Regime):
    name = "classify"
    result_columns = ("test_accuracy",)
    phase = "intermediate"
    default_dataset = "toy-scenes"
    description = "Global classification on the CLS token (CLS-Intel / CLS-Pets intermediate stage)."
    uses_cls = True
    augments = ("crop", "flip", "flip-contrast")
    Options = ClassifyOptions
    mixup_alpha = 0.0
    augment = "crop"
    inputs = "normalized"

    def load_data(self, cfg, model_cfg) -> RegimeData:
        train, test, info = splits.train_test(cfg, model_cfg.image_size)
        if train.labels is None:
            raise VinyError(f"dataset {cfg.dataset!r} has no image labels, so it cannot train `classify`")
        self.mixup_alpha, self.augment, self.inputs = cfg.options.mixup, cfg.augment, cfg.options.inputs
        return RegimeData(train=train, test=test, info={**info, "classes": train.class_names})

    def make_head(self, model_cfg, data) -> nn.Module:
        self.num_classes = data.train.num_classes
        return ClassificationHead(model_cfg, self.num_classes)

    def prepare(self, batch, gen):
        x = to_float(batch["images"])
        if self.augment == "crop":
            x = random_resized_crop(x, gen, scale=(0.67, 1.0))
        x = random_hflip(gen, x)[0]
        if self.augment == "flip-contrast":  # the authors' Intel transform: no crop
            x = contrast_jitter(x, 0.3, gen)
        x = encoder_input(x, self.inputs)
        labels = batch["labels"]
        soft = F.one_hot(labels, self.num_classes).float()
        if self.mixup_alpha > 0:
            x, soft = mixup(x, soft, self.mixup_alpha, gen)
        return {"images": x, "labels": labels, "soft_targets": soft}

    def predict(self, encoder, head, inputs):
        return head(encoder(inputs["images"], cls=True))

    def loss(self, outputs, inputs):
        logits = outputs.float()
        loss = torch.sum(-inputs["soft_targets"] * F.log_softmax(logits, -1), dim=-1).mean()
        return loss, {"train_accuracy": (logits.argmax(-1) == inputs["labels"]).float().mean().detach()}

    @torch.no_grad()
    def evaluate(self, encoder, head, data, batch_size):
        if data.test is None or data.test.labels is None:
            return {}
        device = next(encoder.parameters()).device
        correct = 0
        for sl in batched(len(data.test), batch_size):
            b = device_batch(data.test, sl, device)
            logits = head(encoder(encoder_input(to_float(b["images"]), self.inputs), cls=True))
            correct += int((logits.argmax(-1) == b["labels"]).sum())
        return {"test_accuracy": correct / len(data.test)}

    bench_classes = 6  # Intel's scene classes: the study's intermediate stage

    def head_macs(self, model_cfg, num_classes):
        return model_cfg.dim * num_classes  # on the CLS token only
