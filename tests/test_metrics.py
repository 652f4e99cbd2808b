import math

import torch

from viny_probe.metrics import (
    baseline_scores,
    confusion_matrix,
    iou_from_confusion,
    per_image_miou,
    segmentation_scores,
)


def test_confusion_and_known_miou():
    target = torch.tensor([[[0, 0], [1, 2]]])
    pred = torch.tensor([[[0, 1], [1, 2]]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    iou = iou_from_confusion(cm)
    # class 0: tp 1, union 2 -> .5; class 1: tp 1, union 2 -> .5; class 2: 1
    assert iou.tolist() == [0.5, 0.5, 1.0]
    s = segmentation_scores(pred, target)
    assert math.isclose(s["miou"], 2 / 3)
    assert math.isclose(s["pixel_accuracy"], 0.75)


def test_absent_class_dataset_vs_per_image():
    # class 2 appears nowhere: the dataset mIoU ignores it, the study's per-image variant counts it as 0
    target = torch.tensor([[[0, 1], [1, 1]]])
    pred = target.clone()
    s = segmentation_scores(pred, target)
    assert s["iou"]["boundary"] is None
    assert math.isclose(s["miou"], 1.0)
    assert math.isclose(per_image_miou(pred, target, 3), 2 / 3)


def test_per_image_is_averaged_over_images():
    target = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    pred = torch.tensor([[[0, 0], [0, 0]], [[0, 0], [0, 0]]])
    # image 1: class 0 IoU 1, others absent (0) -> 1/3; image 2: all wrong -> 0
    assert math.isclose(per_image_miou(pred, target, 3), 1 / 6)


def test_baselines():
    train = torch.tensor([[[0, 1], [1, 1]], [[0, 1], [2, 1]], [[1, 1], [2, 1]]])
    test = torch.tensor([[[0, 1], [2, 1]]])
    b = baseline_scores(train, test)
    assert math.isclose(b["all_background"]["pixel_accuracy"], 0.5)
    # prior: pixel (0,0) -> 0 (2 of 3), (1,0) -> 2, rest 1: perfect on this test image
    assert math.isclose(b["position_prior"]["pixel_accuracy"], 1.0)
