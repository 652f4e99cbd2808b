"""The classification regime reads the CLS token's output, not a patch slot or a mean of the tokens."""

import math

import torch
from torch import nn

from viny_probe.data.base import ImageSet
from viny_probe.model import MODEL_PRESETS
from viny_probe.trainers.base import RegimeData
from viny_probe.trainers.classify import Classify

CFG = MODEL_PRESETS["tiny"]
N, CLASSES = 4, 3
LABELS = torch.tensor([0, 1, 2, 1])


class _Slots(nn.Module):
    """Stands in for the encoder: fixed outputs per slot, (B, 1 + P, D) CLS first with ``cls=True``, as
    ViNy does, else (B, P, D). Every patch slot votes for the wrong class, the CLS slot for the label."""

    def __init__(self) -> None:
        super().__init__()
        cls_out = torch.zeros(N, CFG.dim)
        cls_out[torch.arange(N), LABELS] = 5.0
        patches = torch.zeros(N, CFG.num_patches, CFG.dim)
        patches[torch.arange(N), :, (LABELS + 1) % CLASSES] = 5.0
        self.cls_out = nn.Parameter(cls_out, requires_grad=False)  # evaluate reads the device from it
        self.patches = patches

    def forward(self, images, mask=None, mask_token=None, cls=False):
        n = images.shape[0]
        if cls:
            return torch.cat([self.cls_out[:n, None], self.patches[:n]], dim=1)
        return self.patches[:n]


def _regime_and_head():
    images = torch.zeros(N, 3, CFG.image_size, CFG.image_size, dtype=torch.uint8)
    data = ImageSet(name="t", images=images, labels=LABELS, class_names=["a", "b", "c"])
    regime = Classify()
    head = regime.make_head(CFG, RegimeData(train=data, test=data))
    with torch.no_grad():  # logits = the first 3 dimensions of the token the head reads
        head.fc.weight.zero_()
        head.fc.weight[:, :CLASSES] = torch.eye(CLASSES)
        head.fc.bias.zero_()
    return regime, head, RegimeData(train=data, test=data)


def test_classify_logits_come_from_the_cls_position():
    """Known answer: the CLS slot gives logit 5 to the label and 0 elsewhere, so the loss is
    log(e^5 + 2) - 5 and train and test accuracy are 1; every patch slot (and so any mean over slots)
    votes for the wrong class. Changing every patch slot leaves the loss unchanged to the last bit;
    changing only the CLS slot moves it. Kills: a head reading tokens[:, 1] or tokens.mean(1), and
    compute_loss or evaluate calling the encoder without cls=True (the head then reads patch 0)."""
    regime, head, data = _regime_and_head()
    encoder = _Slots()
    images = torch.zeros(N, 3, CFG.image_size, CFG.image_size)
    inputs = {"images": images, "labels": LABELS, "soft_targets": torch.eye(CLASSES)[LABELS]}
    with torch.no_grad():
        loss, stats = regime.compute_loss(encoder, head, inputs)
        assert math.isclose(float(loss), math.log(math.exp(5.0) + 2.0) - 5.0, rel_tol=1e-6)
        assert float(stats["train_accuracy"]) == 1.0
        assert regime.evaluate(encoder, head, data, batch_size=8) == {"test_accuracy": 1.0}

        encoder.patches.add_(torch.randn(encoder.patches.shape, generator=torch.Generator().manual_seed(0)))
        assert torch.equal(regime.compute_loss(encoder, head, inputs)[0], loss)
        encoder.cls_out.mul_(2.0)  # logit 10 for the label: a smaller loss
        assert regime.compute_loss(encoder, head, inputs)[0] < loss - 1e-3
