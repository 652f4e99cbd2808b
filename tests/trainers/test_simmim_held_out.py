"""The held-out SimMIM loss: fixed masks, known answers, and SimMIM.evaluate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from viny_probe.data.augment import normalize, to_float
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError
from viny_probe.heads import SimMIMHead
from viny_probe.model import ViTConfig, patchify
from viny_probe.trainers.base import RegimeData
from viny_probe.trainers.simmim import SimMIM, fixed_half_masks, reconstruction_loss

# A 32 px image of 4 px patches: 64 patches of 48 pixel values; dim = 48 so a decoder can echo pixels.
CFG = ViTConfig(image_size=32, patch_size=4, dim=48, depth=1, heads=1, dim_head=8, mlp_dim=16)


class PixelEncoder(nn.Module):
    """Stands in for ViNy: its 'tokens' are each patch's own normalised pixels, mask ignored."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the encoder a device

    def forward(self, x, mask=None, mask_token=None, cls=False):
        return patchify(x, self.cfg.patch_size)


def echo_head() -> SimMIMHead:
    """Decoder = identity: outputs exactly the target pixels."""
    head = SimMIMHead(CFG)
    with torch.no_grad():
        head.decoder.weight.copy_(torch.eye(CFG.patch_dim))
        head.decoder.bias.zero_()
    return head


def constant_head(c: float) -> SimMIMHead:
    head = SimMIMHead(CFG)
    with torch.no_grad():
        head.decoder.weight.zero_()
        head.decoder.bias.fill_(c)
    return head


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def hand_loss(pictures: torch.Tensor, masks: torch.Tensor, c: float) -> float:
    """Mean over masked patches of mean |normalised pixel - c|, patch by patch in pixel space."""
    x = normalize(to_float(pictures))
    values = []
    for i in range(x.shape[0]):
        for k in torch.nonzero(masks[i]).flatten().tolist():
            r, col = divmod(k, 8)
            patch = x[i, :, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4]
            values.append((patch - c).abs().mean().item())
    return sum(values) / len(values)


def test_fixed_masks_are_half_reproducible_and_prefix_stable():
    m = fixed_half_masks(10, 64, seed=3)
    assert m.dtype == torch.bool and m.shape == (10, 64) and (m.sum(dim=1) == 32).all()
    assert torch.equal(m, fixed_half_masks(10, 64, seed=3))
    assert torch.equal(m[:4], fixed_half_masks(4, 64, seed=3))  # row i does not depend on the count
    assert not torch.equal(m, fixed_half_masks(10, 64, seed=4))


def test_a_decoder_that_outputs_the_target_has_zero_loss():
    assert reconstruction_loss(PixelEncoder(CFG), echo_head(), images(5)) == pytest.approx(0.0, abs=1e-6)


def test_a_constant_decoder_gives_the_mean_distance_over_masked_pixels_only():
    """Mutants: the held-out loss over every patch (mask ignored) or over the visible ones (inverted)."""
    pictures, c = images(5), 0.3
    expected = hand_loss(pictures, fixed_half_masks(5, 64, seed=0), c)
    got = reconstruction_loss(PixelEncoder(CFG), constant_head(c), pictures, seed=0, batch_size=2)
    assert got == pytest.approx(expected, rel=1e-5)
    # Visible patches do not count: change them all and the loss stays the same.
    masks = fixed_half_masks(5, 64, seed=0).reshape(5, 1, 8, 8)
    visible = ~masks.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3).expand(5, 3, 32, 32)
    changed = torch.where(visible, 255 - pictures, pictures)
    assert reconstruction_loss(PixelEncoder(CFG), constant_head(c), changed) == pytest.approx(got, rel=1e-6)
    # Another mask seed masks other patches: another value, the hand-computed one for those masks.
    other = reconstruction_loss(PixelEncoder(CFG), constant_head(c), pictures, seed=1)
    assert other == pytest.approx(hand_loss(pictures, fixed_half_masks(5, 64, seed=1), c), rel=1e-5)
    assert other != pytest.approx(got, rel=1e-4)


def test_the_loss_does_not_depend_on_the_batch_size():
    pictures, head = images(7), constant_head(-0.2)
    values = {reconstruction_loss(PixelEncoder(CFG), head, pictures, batch_size=b) for b in (1, 3, 128)}
    assert max(values) - min(values) < 1e-6


def test_bad_images_are_a_clear_error():
    with pytest.raises(VinyError, match="uint8"):
        reconstruction_loss(PixelEncoder(CFG), echo_head(), to_float(images(2)))


def test_evaluate_reports_the_held_out_loss_only_with_a_test_set():
    pictures = images(6, seed=1)
    train = ImageSet(name="t", images=images(4), ids=[str(i) for i in range(4)])
    test = ImageSet(name="t", images=pictures, ids=[str(i) for i in range(6)])
    encoder, head = PixelEncoder(CFG), constant_head(0.1)
    regime = SimMIM()
    result = regime.evaluate(encoder, head, RegimeData(train=train, test=test), batch_size=4)
    assert set(result) == {"test_reconstruction_l1"}
    assert result["test_reconstruction_l1"] == pytest.approx(
        hand_loss(pictures, fixed_half_masks(6, 64), 0.1)
    )
    assert regime.evaluate(encoder, head, RegimeData(train=train), batch_size=4) == {}
