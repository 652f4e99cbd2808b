"""Downstream 3-class trimap segmentation (pet / background / boundary), evaluated on the fixed test set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import encoder_from_checkpoint, load_checkpoint, load_state_strict, write_json
from ..config import INPUTS
from ..data.augment import contrast_jitter, random_hflip, to_float
from ..data.base import SEG_CLASSES
from ..errors import VinyError
from ..heads import SegmentationHead, class_argmax
from ..metrics import baseline_scores, segmentation_scores
from . import splits
from .base import Regime, RegimeData, batched, encoder_input, register
from .classify import INPUTS_HELP


def position_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """The study's code's segmentation scores: (B, C, H, W) logits -> log_softmax over the H x W pixel
    positions of each class map (same shape). It shifts each class's logits by an image-dependent
    constant, so the class argmax of these scores can differ from that of the logits."""
    return F.log_softmax(logits.flatten(2), dim=-1).view_as(logits)


@torch.no_grad()
def predict_masks(
    encoder: nn.Module,
    head: nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    inputs: str = "normalized",
    position_softmax: bool = False,
) -> torch.Tensor:
    """(N, 3, S, S) uint8 -> (N, S, S) predicted class maps (uint8), no augmentation; ``inputs`` and
    ``position_softmax`` as the model was trained (``TrainConfig``)."""
    device = next(encoder.parameters()).device
    out = []
    for sl in batched(images.shape[0], batch_size):
        x = encoder_input(to_float(images[sl].to(device)), inputs)
        scores = head(encoder(x))
        scores = position_log_softmax(scores.float()) if position_softmax else scores
        out.append(class_argmax(scores).to(torch.uint8).cpu())
    return torch.cat(out)


def segmenter_from_checkpoint(path: str | Path) -> tuple[nn.Module, SegmentationHead]:
    """Encoder and segmentation head (eval mode, CPU) of a `viny train segment` checkpoint."""
    ckpt = load_checkpoint(path)
    if ckpt.get("head_type") != "SegmentationHead" or "head" not in ckpt:
        raise VinyError(
            f"{path} is a '{ckpt.get('regime', 'unknown')}' checkpoint without a segmentation head; "
            "predicting trimaps needs a `viny train segment` checkpoint"
        )
    encoder = encoder_from_checkpoint(ckpt, path)
    head = SegmentationHead(encoder.cfg, num_classes=len(SEG_CLASSES))
    load_state_strict(head, ckpt["head"], f"segmentation head in {path}")
    return encoder.eval(), head.eval()


@dataclass(frozen=True)
class SegmentOptions:
    inputs: Literal[INPUTS] = field(default="normalized", metadata={"help": INPUTS_HELP})
    position_softmax: bool = field(
        default=False,
        metadata={
            "help": "log_softmax over each class map's pixel positions before the loss and the prediction, "
            "as the study's code (on with --preset authors)"
        },
    )


@register
class Segment(Regime):
    name = "segment"
    phase = "finetune"
    default_dataset = "toy-pets"
    description = "Trimap segmentation fine-tuning, evaluated on the fixed test set."
    augments = ("flip-contrast",)
    Options = SegmentOptions
    inputs = "normalized"
    position_softmax = False

    def load_data(self, cfg, model_cfg) -> RegimeData:
        train, test, info = splits.train_test(cfg, model_cfg.image_size)
        self.inputs, self.position_softmax = cfg.options.inputs, cfg.options.position_softmax
        if train.masks is None:
            from ..data.spec import names_with_masks

            raise VinyError(
                f"dataset {cfg.dataset!r} has no masks; `segment` needs one of {names_with_masks()}"
            )
        return RegimeData(train=train, test=test, info=info)

    def make_head(self, model_cfg, data) -> nn.Module:
        return SegmentationHead(model_cfg, num_classes=len(SEG_CLASSES))

    def prepare(self, batch, gen):
        x, masks = random_hflip(gen, to_float(batch["images"]), batch["masks"])
        return {"images": encoder_input(contrast_jitter(x, 0.3, gen), self.inputs), "masks": masks.long()}

    def predict(self, encoder, head, inputs):
        return head(encoder(inputs["images"]))

    def loss(self, outputs, inputs):
        logits = outputs.float()
        if self.position_softmax:
            logits = position_log_softmax(logits)
        target = inputs["masks"]
        loss = F.cross_entropy(logits, target)
        return loss, {"train_pixel_accuracy": (class_argmax(logits.detach()) == target).float().mean()}

    # results.csv: the scores, each class's IoU and the trivial baselines beside them (the study's three
    # trimap classes; another dataset's classes stay in results.jsonl)
    SCORES = ("pixel_accuracy", "miou", "miou_per_image")
    result_columns = (
        *SCORES,
        "iou_pet",
        "iou_background",
        "iou_boundary",
        "all_background_pixel_accuracy",
        "all_background_miou",
        "all_background_miou_per_image",
        "position_prior_pixel_accuracy",
        "position_prior_miou",
        "position_prior_miou_per_image",
    )

    @classmethod
    def result_row(cls, results: dict) -> dict:
        test = results.get("test")
        if not test:
            return {}
        row = {k: test[k] for k in cls.SCORES}
        row.update({f"iou_{k}": v for k, v in test.get("iou", {}).items()})
        for name, scores in results.get("baselines", {}).items():
            row.update({f"{name}_{k}": scores[k] for k in cls.SCORES})
        return {k: v for k, v in row.items() if k in cls.result_columns}

    @torch.no_grad()
    def headline(self, results: dict) -> dict[str, float]:
        return {"mIoU": results["test"]["miou"]}

    def summary(self, results: dict):
        from ..tables import segmentation_table

        return segmentation_table(results)

    def evaluate(self, encoder, head, data, batch_size):
        pred = predict_masks(encoder, head, data.test.images, batch_size, self.inputs, self.position_softmax)
        return {
            "test": segmentation_scores(pred, data.test.masks.cpu()),
            "baselines": baseline_scores(data.train.masks.cpu(), data.test.masks.cpu()),
        }

    def finish(self, run_dir: Path, encoder, head, data, results) -> None:
        write_json(run_dir / "eval.json", results)
        pred = predict_masks(
            encoder, head, data.test.images[:6], inputs=self.inputs, position_softmax=self.position_softmax
        )
        from ..viz import save_prediction_grid

        save_prediction_grid(data.test.images[:6], data.test.masks[:6], pred, run_dir / "predictions.png")

    bench_classes = len(SEG_CLASSES)

    def head_macs(self, model_cfg, num_classes):
        # every patch token gives classes x patch x patch pixel logits
        return model_cfg.num_patches * model_cfg.dim * num_classes * model_cfg.patch_size**2
