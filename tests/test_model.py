import pytest
import torch

from viny_probe.errors import VinyError
from viny_probe.heads import ClassificationHead, SegmentationHead, SimMIMHead, SpatialHead, class_argmax
from viny_probe.model import MODEL_PRESETS, ViNy, attend, count_parameters, patchify, unpatchify


def test_viny_has_the_studys_parameter_count():
    assert count_parameters(ViNy("viny")) == 4_842_880


def test_forward_shapes_and_blocks():
    cfg = MODEL_PRESETS["tiny"]
    enc = ViNy(cfg)
    x = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    assert enc(x).shape == (3, cfg.num_patches + 1, cfg.dim)
    per_block = enc.patch_tokens_per_block(x)
    assert sorted(per_block) == list(range(1, cfg.depth + 1))
    # the last block's tokens are the final-LayerNorm output
    torch.testing.assert_close(per_block[cfg.depth], enc(x)[:, 1:])


def test_layer_out_of_range_and_bad_input_are_clear():
    enc = ViNy("tiny")
    with pytest.raises(VinyError, match="out of range"):
        enc.patch_tokens_per_block(torch.randn(1, 3, 32, 32), [0])
    with pytest.raises(VinyError, match=r"\(B, 3, 32, 32\)"):
        enc(torch.randn(1, 3, 64, 64))


def test_patchify_order_is_row_col_channel():
    x = torch.zeros(1, 3, 32, 32)
    x[0, 2, 17, 5] = 1.0  # channel 2, row 17 -> patch row 1 (ph=1), col 5 -> patch col 0 (pw=5)
    p = patchify(x, 16)
    assert p.shape == (1, 4, 768)
    flat = p[0].nonzero().tolist()
    assert flat == [[2, (1 * 16 + 5) * 3 + 2]]
    torch.testing.assert_close(unpatchify(p, 16, 3), x)


def test_heads_shapes_and_segmentation_layout():
    cfg = MODEL_PRESETS["tiny"]
    tokens = torch.randn(2, cfg.num_patches + 1, cfg.dim)
    assert SimMIMHead(cfg)(tokens).shape == (2, cfg.num_patches, cfg.patch_dim)
    assert ClassificationHead(cfg, 6)(tokens).shape == (2, 6)
    assert SpatialHead(cfg, 3)(tokens).shape == (2, cfg.num_patches, 3)
    seg = SegmentationHead(cfg, 3)
    with torch.no_grad():
        seg.fc.weight.zero_()
        seg.fc.bias.zero_()
        # output unit for class 1, pixel (ph=2, pw=3) inside its patch
        seg.fc.bias[1 * cfg.patch_size**2 + 2 * cfg.patch_size + 3] = 1.0
    out = seg(tokens)
    assert out.shape == (2, 3, cfg.image_size, cfg.image_size)
    hits = (out[0, 1] == 1).nonzero().tolist()
    # every patch lights its own (2, 3) pixel, nothing else
    g, p = cfg.grid, cfg.patch_size
    assert hits == sorted([r * p + 2, c * p + 3] for r in range(g) for c in range(g))
    assert out[0, 0].abs().sum() == 0 and out[0, 2].abs().sum() == 0


def test_written_out_attention_matches_torch_sdpa_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 3, 65, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    ours = attend(q, k, v)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)
    # and not trivially: attention is not the mean of v
    assert not torch.allclose(ours, v.mean(dim=2, keepdim=True).expand_as(v), atol=1e-3)


@pytest.mark.parametrize("classes", [1, 3, 5])
def test_class_argmax_equals_argmax_over_classes_ties_included(classes):
    g = torch.Generator().manual_seed(classes)
    # small integer logits: many ties, which must go to the lower class as torch.argmax does
    logits = torch.randint(-2, 3, (4, classes, 8, 8), generator=g).float()
    assert torch.equal(class_argmax(logits), logits.argmax(1))
    noisy = torch.randn(2, classes, 16, 16, generator=g)
    assert torch.equal(class_argmax(noisy), noisy.argmax(1))
