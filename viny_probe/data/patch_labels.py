"""Per-patch targets from pixel trimaps: the class fractions of each patch and its majority class."""

from __future__ import annotations

import torch

from viny_probe.checks import UNLABELLED, ArrayLike, as_masks, check_positive_int
from viny_probe.data.base import IGNORE
from viny_probe.errors import VinyError


def _class_counts(masks: ArrayLike, patch_size: int, num_classes: int, check: bool = True) -> torch.Tensor:
    masks = as_masks(masks, "masks", patch_size) if check else masks
    num_classes = check_positive_int(num_classes, "num_classes")
    if check and masks.numel():
        # the ignore value (IGNORE) is no class: it counts for none of them
        top = int(masks.masked_fill(masks == IGNORE, 0).max())
        if top >= num_classes:
            raise VinyError(
                f"masks holds class {top}, but num_classes = {num_classes} "
                f"(mask classes must be 0..{num_classes - 1}, or {IGNORE} for no class)"
            )
    n, h, _ = masks.shape
    g = h // patch_size
    blocks = masks.reshape(n, g, patch_size, g, patch_size)  # a view: no permuted copy of the pixels
    # One class at a time keeps memory at one boolean copy of the masks, not num_classes of them; each
    # patch's count summed over its columns, then its rows (int32 on the way: 3x faster than int64).
    return torch.stack(
        [
            (blocks == c).sum(dim=4, dtype=torch.int32).sum(dim=2).reshape(n, g * g)
            for c in range(num_classes)
        ],
        dim=-1,
    ).long()


def patch_class_fractions(masks: ArrayLike, patch_size: int, num_classes: int = 3) -> torch.Tensor:
    """Fraction of each patch's pixels in each class.

    masks: ``(N, H, W)`` integer mask classes (trimaps: 0 pet, 1 background, 2 boundary; ``IGNORE`` for
    a pixel without a class), H = W = g * patch_size.
    Returns ``(N, P, num_classes)`` float32 with P = g * g patches in row-major order; rows sum to 1
    less the patch's fraction of ignored pixels.
    """
    counts = _class_counts(masks, patch_size, num_classes)
    return counts.float() / float(patch_size * patch_size)


def patch_majority_labels(
    masks: ArrayLike, patch_size: int, num_classes: int = 3, check: bool = True
) -> torch.Tensor:
    """Majority class of each patch's pixels; a tie goes to the LOWER class index, as in the study.
    Ignored pixels (``IGNORE``) do not vote; a patch of ignored pixels only is ``UNLABELLED`` (-1).

    masks: ``(N, H, W)`` integer mask classes, H = W = g * patch_size.
    Returns ``(N, P)`` int64, P = g * g patches in row-major order.
    ``check=False`` (a training batch of an already validated dataset): the masks tensor is used as
    given, on its own device, without the range check that would read it back to the host.
    """
    counts = _class_counts(masks, patch_size, num_classes, check)
    # torch.argmax returns the first maximal index, which is the lower class on a tie.
    return torch.where(counts.sum(dim=-1) > 0, counts.argmax(dim=-1), UNLABELLED)
