import dataclasses

import pytest
import torch

from viny_probe.errors import VinyError
from viny_probe.heads import ClassificationHead, SegmentationHead, SimMIMHead, SpatialHead, class_argmax
from viny_probe.model import (
    MODEL_PRESETS,
    QKVAttention,
    ViNy,
    attend,
    count_parameters,
    patchify,
    unpatchify,
)


def test_viny_has_the_studys_parameter_count():
    assert count_parameters(ViNy("viny")) == 4_842_880


def test_forward_shapes_and_blocks():
    cfg = MODEL_PRESETS["tiny"]
    enc = ViNy(cfg)
    x = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    assert enc(x).shape == (3, cfg.num_patches, cfg.dim)
    assert enc(x, cls=True).shape == (3, cfg.num_patches + 1, cfg.dim)
    per_block = enc.patch_tokens_per_block(x)
    assert sorted(per_block) == list(range(1, cfg.depth + 1))
    # the last block's tokens are the final-LayerNorm output
    torch.testing.assert_close(per_block[cfg.depth], enc(x))


def test_blocks_see_the_cls_token_only_when_asked():
    """The study's token path: patch tokens + positions 1..P; CLS + position 0 only with ``cls=True``.
    Mutants: prepending CLS always (the patch tokens change: attention mixes it in) or never (the
    ``cls=True`` patch tokens would equal the plain ones); adding position 0 to the first patch."""
    cfg = MODEL_PRESETS["tiny"]
    torch.manual_seed(0)
    enc = ViNy(cfg).eval()
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    embedded = enc.embed(x)
    torch.testing.assert_close(embedded, enc.patch_embed(x) + enc.pos_embed[:, 1:])
    with_cls = enc.embed(x, cls=True)
    torch.testing.assert_close(with_cls[:, 0], (enc.cls_token[0, 0] + enc.pos_embed[0, 0]).expand(2, -1))
    torch.testing.assert_close(with_cls[:, 1:], embedded)
    with torch.no_grad():
        plain, both = enc(x), enc(x, cls=True)
        # the CLS token changes the patch tokens through attention, so the two paths differ
        assert (both[:, 1:] - plain).abs().max() > 1e-3
        # and the plain path does not depend on the CLS token at all
        enc.cls_token.add_(5.0)
        torch.testing.assert_close(enc(x), plain)
        # cls_in_sequence (viny before format 2): the CLS token runs in every forward
        old = ViNy(dataclasses.replace(cfg, cls_in_sequence=True)).eval()
        old.load_state_dict(enc.state_dict())
        torch.testing.assert_close(old(x), enc(x, cls=True)[:, 1:])
        torch.testing.assert_close(old.patch_tokens_per_block(x, [cfg.depth])[cfg.depth], old(x))


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
    tokens = torch.randn(2, cfg.num_patches, cfg.dim)
    assert SimMIMHead(cfg)(tokens).shape == (2, cfg.num_patches, cfg.patch_dim)
    assert ClassificationHead(cfg, 6)(torch.randn(2, cfg.num_patches + 1, cfg.dim)).shape == (2, 6)
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


def _split_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """The reference: q, k, v split from the projection as views, torch's own attention, heads merged."""
    n, t, width = qkv.shape
    d = width // (3 * heads)
    q, k, v = (z.reshape(n, t, heads, d).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(n, t, heads * d)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_qkv_attention_equals_split_attention_values_and_gradients(dtype):
    """``QKVAttention`` (CPU training's attention: one layout copy each way, the scale as the matrix
    products' alpha) against q, k, v split by views and torch's attention. Mutants killed: the scale
    dropped from the scores (values), dq and dk written to each other's slot, dk without its scale,
    the heads read in (d, heads) order (values and gradients)."""
    g = torch.Generator().manual_seed(1)
    heads, d = 3, 8
    qkv = torch.randn(2, 5, 3 * heads * d, generator=g, dtype=dtype, requires_grad=True)
    probe = torch.randn(2, 5, heads * d, generator=g, dtype=dtype)
    ours = QKVAttention.apply(qkv, heads)
    (ours_grad,) = torch.autograd.grad((ours * probe).sum(), qkv)
    ref = _split_attention(qkv, heads)
    (ref_grad,) = torch.autograd.grad((ref * probe).sum(), qkv)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)


def test_cpu_training_attention_is_qkv_attention_and_equals_written_out_bit_for_bit():
    """A ViNy forward with autograd on a CPU runs every block's attention through ``QKVAttention``
    (mutant: ``attend_qkv`` never choosing it, killed by the count), not while torch.compile traces
    (mutant: the ``is_compiling`` condition dropped, killed by the count), and the encoder's output and every
    parameter's gradient equal the written-out path's (``ATTENTION`` "math") in fp32 and under bf16
    autocast, bit for bit on this CPU's kernels."""
    from viny_probe import model as model_module

    cfg = MODEL_PRESETS["tiny"]
    torch.manual_seed(0)
    enc = ViNy(cfg)
    x = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    calls = []
    original = model_module.QKVAttention.apply

    def counting(*args):
        calls.append(1)
        return original(*args)

    def run(mode: str, bf16: bool):
        token = model_module.ATTENTION.set(mode)
        try:
            enc.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = enc(x)
            out.float().square().mean().backward()
            return out.detach().float(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]
        finally:
            model_module.ATTENTION.reset(token)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_module.QKVAttention, "apply", counting)
        for bf16 in (False, True):
            calls.clear()
            fused, fused_grads = run("auto", bf16)
            assert len(calls) == cfg.depth
            calls.clear()
            written, written_grads = run("math", bf16)
            assert not calls
            assert torch.equal(fused, written)
            assert len(fused_grads) == len(written_grads) > 0
            for a, b in zip(fused_grads, written_grads, strict=True):
                assert torch.equal(a, b)
        with torch.no_grad():  # evaluation and extraction keep torch's fused kernel
            enc(x)
        assert not calls
        # under torch.compile (is_compiling true while dynamo traces) the plain ops, which it fuses whole
        mp.setattr(torch.compiler, "is_compiling", lambda: True)
        traced, traced_grads = run("auto", True)
        assert not calls
        assert torch.equal(traced, fused)


def test_compiled_encoder_trains_like_the_eager_one():
    """``torch.compile`` of the encoder (``--compile``) gives the eager model's output and gradients to
    float rounding on a CPU (attention traced as plain ops there, not ``QKVAttention``). Mutant: the
    written-out attention's scale changed, which only the compiled path runs: killed."""
    cfg = MODEL_PRESETS["tiny"]
    torch.manual_seed(0)
    enc = ViNy(cfg)
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size)

    def run(module):
        enc.zero_grad()
        out = module(x)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]

    eager, eager_grads = run(enc)
    compiled, compiled_grads = run(torch.compile(enc))
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
