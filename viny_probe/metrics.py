"""Segmentation metrics: dataset-level confusion-matrix mIoU (headline), the study's per-image mIoU,
pixel accuracy, per-class IoU, and the two trivial baselines every result is printed beside."""

from __future__ import annotations

import torch

from .data.base import BACKGROUND, SEG_CLASSES


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, H, W) predicted and true class maps -> (C, C) int64 counts, rows = true, columns = predicted."""
    return per_image_confusion(pred, target, num_classes).sum(0)


def per_image_confusion(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, chunk: int = 64
) -> torch.Tensor:
    """(N, H, W) maps -> (N, C, C) confusion counts per image, built a few images at a time so a 1000-image
    test set at 128 px never needs more than a few MB of temporaries."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape"
        )
    c2 = num_classes**2
    out = []
    for start in range(0, pred.shape[0], chunk):
        p = pred[start : start + chunk].reshape(-1, pred[0].numel()).long()
        t = target[start : start + chunk].reshape(p.shape).long()
        offset = torch.arange(p.shape[0], device=p.device).unsqueeze(1) * c2
        idx = (offset + t * num_classes + p).reshape(-1)
        out.append(torch.bincount(idx, minlength=p.shape[0] * c2).reshape(-1, num_classes, num_classes))
    return torch.cat(out).cpu()


def iou_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    """(C, C) -> (C,) IoU per class; NaN for a class absent from both prediction and target."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def per_image_miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """The study's variant: IoU per image and class, a class absent from both counted as IoU 0 (as the
    authors' code does), averaged over classes, then over images."""
    return _per_image_miou(per_image_confusion(pred, target, num_classes))


def _per_image_miou(cms: torch.Tensor) -> float:
    cms = cms.double()
    tp = cms.diagonal(dim1=1, dim2=2)
    union = cms.sum(1) + cms.sum(2) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.zeros_like(tp))
    return float(iou.mean())


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor, class_names=SEG_CLASSES) -> dict:
    """Every segmentation number viny reports, as a JSON-ready dict (fractions in [0, 1])."""
    c = len(class_names)
    per_image = per_image_confusion(pred, target, c)
    cm = per_image.sum(0)
    iou = iou_from_confusion(cm)
    return {
        "pixel_accuracy": float(cm.diag().sum() / cm.sum()),
        "miou": float(torch.nanmean(iou)),
        "miou_per_image": _per_image_miou(per_image),
        "iou": {
            name: (None if torch.isnan(v) else float(v)) for name, v in zip(class_names, iou, strict=True)
        },
        "confusion": cm.tolist(),
    }


def position_prior(train_masks: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """Each pixel's most frequent class over the training masks: (N, H, W) -> (H, W)."""
    counts = torch.stack([(train_masks == k).sum(0) for k in range(num_classes)])
    return counts.argmax(0)


def baseline_scores(train_masks: torch.Tensor, test_masks: torch.Tensor) -> dict:
    """Scores of the two trivial predictors: all-background, and the per-pixel position prior."""
    all_bg = torch.full_like(test_masks, BACKGROUND)
    prior = position_prior(train_masks).to(test_masks.dtype).expand_as(test_masks)  # a view: no copy
    return {
        "all_background": segmentation_scores(all_bg, test_masks),
        "position_prior": segmentation_scores(prior, test_masks),
    }
