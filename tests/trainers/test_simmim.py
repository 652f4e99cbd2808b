"""SimMIM's wiring: the loss reads the masked patches' pixels only, and the encoder sees the mask token
exactly where the mask says."""

import torch
from torch import nn

from viny_probe.model import MODEL_PRESETS, ViNy, patchify, unpatchify
from viny_probe.trainers.simmim import SimMIM, random_half_mask

CFG = MODEL_PRESETS["tiny"]  # 32 px, 4 px patches: 64 patches


class _FixedTokens(nn.Module):
    """Stands in for the encoder: ignores the images, returns fixed patch tokens, records its arguments."""

    def __init__(self, tokens: torch.Tensor) -> None:
        super().__init__()
        self.tokens, self.calls = tokens, []

    def forward(self, images, mask=None, mask_token=None, cls=False):
        self.calls.append({"mask": mask, "mask_token": mask_token, "cls": cls})
        return self.tokens


def _pixels_of(patch_mask: torch.Tensor) -> torch.Tensor:
    """(B, P) bool -> (B, 3, H, W) float: 1 on every pixel of the selected patches."""
    per_patch = patch_mask.float().unsqueeze(-1).expand(-1, -1, CFG.patch_dim)
    return unpatchify(per_patch, CFG.patch_size, CFG.channels)


def test_simmim_loss_reads_only_the_masked_patches_targets():
    """compute_loss with an encoder that ignores its images, so changing the images changes only the
    reconstruction target: the loss is the known mean over masked patches of mean |pred - target|;
    adding 10 to every pixel of the unmasked patches leaves it unchanged to the last bit, adding 10 to
    the masked patches moves it; the encoder is called with the batch's mask and the head's mask token.
    Kills: an inverted mask (~mask) in compute_loss or masked_l1, an ignored mask (mean over all
    patches), an encoder called without the mask or without the mask token."""
    regime = SimMIM()
    head = regime.make_head(CFG, None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, CFG.image_size, CFG.image_size, generator=gen)
    mask = random_half_mask(2, CFG.num_patches, gen, torch.device("cpu"))
    encoder = _FixedTokens(torch.randn(2, CFG.num_patches, CFG.dim, generator=gen))
    with torch.no_grad():
        loss, _ = regime.compute_loss(encoder, head, {"images": x, "mask": mask})
        pred, target = head(encoder.tokens), patchify(x, CFG.patch_size)
        expected = torch.stack([(pred[b, k] - target[b, k]).abs().mean() for b, k in mask.nonzero()]).mean()
        torch.testing.assert_close(loss, expected)
        call = encoder.calls[0]
        assert call["mask"] is not None and torch.equal(call["mask"], mask)
        assert call["mask_token"] is head.mask_token and not call["cls"]

        unmasked_changed, _ = regime.compute_loss(
            encoder, head, {"images": x + 10 * _pixels_of(~mask), "mask": mask}
        )
        assert torch.equal(unmasked_changed, loss)
        masked_changed, _ = regime.compute_loss(
            encoder, head, {"images": x + 10 * _pixels_of(mask), "mask": mask}
        )
        assert masked_changed > loss + 1.0


def test_the_encoder_sees_the_mask_token_exactly_at_masked_positions():
    """A prepared SimMIM batch (exactly half the patches masked) through compute_loss with the real
    encoder: the tokens entering block 1 (caught by a hook) are, patch by patch, the mask token where
    the mask is True and the embedded patch where it is False, each plus its position 1..P, built here
    by plain indexing. Kills: an inverted mask in ViNy.embed, an ignored mask (no substitution),
    compute_loss calling the encoder without the mask, the mask token swapped in after the positions
    (so masked patches lose their position), a CLS token in front (a shifted slot)."""
    regime = SimMIM()
    head = regime.make_head(CFG, None)
    torch.manual_seed(0)
    encoder = ViNy(CFG)
    with torch.no_grad():
        head.mask_token.fill_(3.0)  # far from any embedded patch (LayerNorm output) plus position
    gen = torch.Generator().manual_seed(1)
    batch = {
        "images": torch.randint(
            0, 256, (2, 3, CFG.image_size, CFG.image_size), generator=gen, dtype=torch.uint8
        )
    }
    inputs = regime.prepare(batch, gen)
    mask = inputs["mask"]
    assert mask.shape == (2, CFG.num_patches) and mask.sum(1).tolist() == [CFG.num_patches // 2] * 2
    seen = []
    encoder.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        regime.compute_loss(encoder, head, inputs)
        expected = encoder.patch_embed(inputs["images"]).clone()
        for b, k in mask.nonzero().tolist():
            expected[b, k] = head.mask_token
        expected = expected + encoder.pos_embed[0, 1:]
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected)
