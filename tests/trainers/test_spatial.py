"""The spatial regime's patch targets follow the encoder's token order: row-major (row, col), as patchify."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from viny_probe.data.augment import IMAGENET_MEAN, IMAGENET_STD
from viny_probe.data.base import ImageSet
from viny_probe.data.patch_labels import patch_majority_labels
from viny_probe.model import ViTConfig, patchify
from viny_probe.trainers.base import RegimeData
from viny_probe.trainers.spatial import Spatial

# A 3 x 3 grid of 4 x 4 patches.
CFG = ViTConfig(image_size=12, patch_size=4, dim=8, depth=1, heads=1, dim_head=4, mlp_dim=8)
G, PATCH = CFG.grid, CFG.patch_size
# Majority class of patch (row, col): not symmetric, so a transposed grid gives other labels.
LAYOUT = torch.tensor([[0, 1, 1], [2, 0, 1], [2, 2, 0]])


def _trimap(layout: torch.Tensor) -> torch.Tensor:
    """(S, S) uint8: patch (r, c) is class layout[r, c] except its top pixel row (4 of 16 pixels), which
    is the next class, so the majority is a count and not the whole patch."""
    mask = layout.repeat_interleave(PATCH, 0).repeat_interleave(PATCH, 1).clone()
    mask[::PATCH] = (mask[::PATCH] + 1) % 3
    return mask.to(torch.uint8)


def _token_modes(classes: torch.Tensor) -> torch.Tensor:
    """(B, S, S) class map -> (B, P): the most frequent class among each token's pixels, tokens taken
    in patchify's order (the order the encoder embeds them in)."""
    image = classes.float().unsqueeze(1).expand(-1, 3, -1, -1)
    return patchify(image, PATCH).mode(dim=-1).values.long()


def test_patch_labels_are_row_major_like_patchify():
    """An asymmetric 3 x 3 layout: the labels are the layout read row by row, and label k is the
    majority class of the pixels of patchify's token k. Kills: a transposed grid in
    patch_majority_labels (column-major order), ph / pw mixed into the patch axis."""
    masks = torch.stack([_trimap(LAYOUT), _trimap(LAYOUT.T.flip(0))])
    labels = patch_majority_labels(masks, PATCH)
    assert labels[0].tolist() == [0, 1, 1, 2, 0, 1, 2, 2, 0]
    assert torch.equal(labels, _token_modes(masks))


class _Tokens(nn.Module):
    """Stands in for the encoder: returns the tokens it was given, whatever the images."""

    def __init__(self, tokens: torch.Tensor) -> None:
        super().__init__()
        self.tokens = tokens

    def forward(self, images, mask=None, mask_token=None, cls=False):
        assert not cls
        return self.tokens


def test_spatial_targets_match_the_tokens_the_encoder_sees():
    """Spatial.prepare on images whose pixels encode their trimap class (value 80 x class), half of
    them flipped by the random flip: decoding the prepared images back to classes, target k of each
    image is the majority class of token k's pixels. Then compute_loss with tokens whose logits are 3
    for that class: the known loss log(1 + 2 e^-3) and patch accuracy 1. Kills: a transposed
    grid in the targets (in patch_majority_labels or in Spatial), trimaps not flipped with their
    images, logits and targets paired in different orders in compute_loss."""
    layouts = [LAYOUT, LAYOUT.T, LAYOUT.flip(1), LAYOUT.flip(0), LAYOUT.roll(1, 0), LAYOUT.roll(1, 1)]
    masks = torch.stack([_trimap(layout) for layout in layouts])
    images = (80 * masks).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    data = ImageSet(name="t", images=images, masks=masks)
    regime = Spatial()
    head = regime.make_head(CFG, RegimeData(train=data))
    inputs = regime.prepare({"images": images, "masks": masks}, torch.Generator().manual_seed(0))

    pixels = inputs["images"][:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    seen = (pixels * 255 / 80).round().long()  # the class each prepared pixel encodes
    flipped = [not torch.equal(seen[b], masks[b].long()) for b in range(len(layouts))]
    assert any(flipped) and not all(flipped)  # the flip is exercised both ways
    for b in range(len(layouts)):
        assert torch.equal(seen[b], (masks[b].flip(-1) if flipped[b] else masks[b]).long())
    targets = inputs["targets"]
    assert torch.equal(targets, _token_modes(seen))

    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.weight[:, :3] = torch.eye(3)
        head.fc.bias.zero_()
        tokens = F.pad(3.0 * F.one_hot(targets, 3).float(), (0, CFG.dim - 3))
        loss, stats = regime.compute_loss(_Tokens(tokens), head, inputs)
    assert math.isclose(float(loss), math.log1p(2 * math.exp(-3.0)), rel_tol=1e-5)
    assert float(stats["train_patch_accuracy"]) == 1.0
