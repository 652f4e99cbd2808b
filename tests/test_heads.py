"""Known-answer tests of the heads' wiring: which token and which output unit lands on which pixel."""

import torch

from viny_probe.heads import ClassificationHead, SegmentationHead, class_argmax
from viny_probe.model import ViTConfig

# A 3 x 3 grid of 4 x 4 patches: small, not symmetric under a swap of ph and pw once encoded below,
# and with dim >= patches, so a token can be the one-hot of its patch index.
CFG = ViTConfig(image_size=12, patch_size=4, dim=12, depth=1, heads=1, dim_head=4, mlp_dim=8)
G, PATCH, P, CLASSES = CFG.grid, CFG.patch_size, CFG.num_patches, 3


def _code(c: int, k: int, ph: int, pw: int) -> float:
    """A distinct number for (class, patch index, pixel row and column inside the patch)."""
    return 1000.0 * c + 100.0 * k + 10.0 * ph + pw


def _one_hot_tokens(batch: int) -> torch.Tensor:
    """(B, P, D): token k of image b is (b + 1) times the one-hot of k."""
    tokens = torch.zeros(batch, P, CFG.dim)
    for b in range(batch):
        tokens[b, torch.arange(P), torch.arange(P)] = b + 1.0
    return tokens


def _segmentation_head(value) -> SegmentationHead:
    """A head whose output unit for (class c, ph, pw), the documented (class, ph, pw) order of its
    classes x patch x patch outputs, reads ``value(c, k, ph, pw)`` from input dimension k."""
    head = SegmentationHead(CFG, CLASSES)
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.zero_()
        for c in range(CLASSES):
            for ph in range(PATCH):
                for pw in range(PATCH):
                    unit = (c * PATCH + ph) * PATCH + pw
                    for k in range(P):
                        head.fc.weight[unit, k] = value(c, k, ph, pw)
    return head


def test_segmentation_head_puts_every_unit_on_its_pixel():
    """Token k = one-hot of patch k, so the logit of class c at pixel (y, x) must be the weight of unit
    (c, ph, pw) on dimension k, with (r, ph) = divmod(y, patch), (q, pw) = divmod(x, patch) and
    k = r * grid + q (row-major, patchify's order): checked on the whole (B, classes, H, W) output,
    and as class maps through class_argmax. Kills: a transposed patch grid (rows and columns of patches
    swapped, k = q * grid + r), a CLS-slot shift (tokens read one position late, as if a CLS token sat
    in front), the 768 outputs read pixel-major (ph, pw, class) instead of class-major (class, ph, pw),
    and ph / pw swapped inside the patch."""
    batch = 2
    out = _segmentation_head(_code)(_one_hot_tokens(batch))
    expected = torch.zeros(batch, CLASSES, G * PATCH, G * PATCH)
    for b in range(batch):
        for c in range(CLASSES):
            for y in range(G * PATCH):
                for x in range(G * PATCH):
                    (r, ph), (q, pw) = divmod(y, PATCH), divmod(x, PATCH)
                    expected[b, c, y, x] = (b + 1) * _code(c, r * G + q, ph, pw)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

    # The same wiring seen as class maps: each pixel's winning class is a known function of its
    # patch index and its place inside the patch.
    def winner(k, ph, pw):
        return (k + ph + 2 * pw) % CLASSES

    maps = class_argmax(
        _segmentation_head(lambda c, k, ph, pw: float(c == winner(k, ph, pw)))(_one_hot_tokens(1))
    )
    want = torch.tensor(
        [
            [winner((y // PATCH) * G + x // PATCH, y % PATCH, x % PATCH) for x in range(G * PATCH)]
            for y in range(G * PATCH)
        ]
    )
    assert torch.equal(maps[0], want)


def test_classification_head_reads_the_cls_slot_only():
    """ClassificationHead on (B, 1 + P, D) = the linear layer of position 0, the CLS token. Known
    answer with an identity layer; then changing any patch slot leaves the logits alone and changing
    the CLS slot moves them. Kills: reading tokens[:, 1] (the first patch), tokens.mean(1) (CLS and
    patches averaged), tokens[:, 1:].mean(1) (patch mean), tokens[:, -1]."""
    head = ClassificationHead(CFG, CFG.dim)
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(CFG.dim))
        head.fc.bias.zero_()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 1 + P, CFG.dim, generator=gen)
    torch.testing.assert_close(head(tokens), tokens[:, 0], rtol=0, atol=0)
    patches_changed = tokens.clone()
    patches_changed[:, 1:] += torch.randn(3, P, CFG.dim, generator=gen)
    torch.testing.assert_close(head(patches_changed), head(tokens), rtol=0, atol=0)
    cls_changed = tokens.clone()
    cls_changed[:, 0] += 1.0
    torch.testing.assert_close(head(cls_changed), head(tokens) + 1.0)
