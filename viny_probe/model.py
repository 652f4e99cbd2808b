"""ViNy: the study's tiny Vision Transformer, as one short file (timm-style Attention / Block / encoder).

The layout follows the authors' code exactly (see reference-notes.md), so their state_dict maps onto
this one name for name: patch embedding LayerNorm(768) -> Linear(768, 128) -> LayerNorm(128), learned
CLS token and positions, pre-norm blocks with 8 heads of 64, a final LayerNorm. 4,842,880 parameters.

The token path is the study's: the blocks run on the P patch tokens plus position embeddings 1..P;
the CLS token (plus position 0) is prepended only when a caller asks for it (``cls=True``: the
classification regime). ``ViTConfig.cls_in_sequence`` puts it into every forward instead, which is
how viny ran before checkpoint format 2 (docs/fidelity.md).

Stacked members (a fleet, ``trainers/fleet.py``): every module also has a ``stacked_forward(p, x)``
next to its ``forward``, the same layer on K models at once. ``p`` (``StackedParams``) holds the K
members' parameters stacked along a leading axis under the module's own names, and ``x`` has the
members first: (K, B, ...). Linear layers are one batched matrix product for all members
(``stacked_linear``), LayerNorm normalises without affine and then applies each member's weight
(``stacked_layer_norm``; moved into the next linear layer's weights where one follows,
``stacked_norm_linear``), and attention (which has no weights) runs on the members' batches folded
together, (K * B, T), through the same ``attend_qkv`` a model alone uses. ``Stacked`` wraps a
module and its stacked parameters into something a regime's ``predict`` calls like the module.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import VinyError


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 128
    patch_size: int = 16
    dim: int = 128
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 512
    channels: int = 3
    # True: the CLS token runs through the blocks in every stage (viny before checkpoint format 2);
    # False (the study's code): only the classification regime prepends it.
    cls_in_sequence: bool = False

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise VinyError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )

    @property
    def grid(self) -> int:
        """Patches per side of the square patch grid."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size**2

    def activation_bytes_per_image(self) -> int:
        """Rough fp32 bytes one training image keeps alive for the backward pass: per block, the
        LayerNorm inputs and outputs and the residual (5 x tokens x dim), q, k, v and the merged heads
        (4 x tokens x inner), the MLP's hidden layer before and after GELU (2 x tokens x mlp_dim) and
        the attention probabilities (heads x tokens^2). 13.2 MB for ViNy, 2.1 MB for the demo model."""
        t, inner = self.num_patches + int(self.cls_in_sequence), self.heads * self.dim_head
        per_block = t * (5 * self.dim + 4 * inner + 2 * self.mlp_dim) + self.heads * t * t
        return 4 * self.depth * per_block

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_PRESETS: dict[str, ViTConfig] = {
    # The study's ViNy.
    "viny": ViTConfig(),
    # Same code, ~15x cheaper per image, still an 8x8 patch grid: what runs in minutes on a CPU.
    "demo": ViTConfig(image_size=64, patch_size=8, dim=64, depth=6, heads=4, dim_head=16, mlp_dim=256),
    # For tests only.
    "tiny": ViTConfig(image_size=32, patch_size=4, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64),
}


def model_config(name_or_config: str | ViTConfig | dict) -> ViTConfig:
    """A ViTConfig from a preset name, a dict of fields, or a config."""
    if isinstance(name_or_config, ViTConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return ViTConfig(**name_or_config)
    if name_or_config not in MODEL_PRESETS:
        raise VinyError(f"unknown model {name_or_config!r}; choose one of {', '.join(MODEL_PRESETS)}")
    return MODEL_PRESETS[name_or_config]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, P, patch*patch*C), each patch flattened in (ph, pw, c) order, row-major grid."""
    b, c, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """Inverse of patchify: (B, P, patch*patch*C) -> (B, C, H, W)."""
    b, p, _ = patches.shape
    g = int(round(p**0.5))
    x = patches.reshape(b, g, g, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, g * patch_size, g * patch_size)


# "auto": torch's fused attention on CUDA and on a CPU without autograd, ``QKVAttention`` in CPU
# training; "math": written out everywhere. A fleet sets it around its vmapped step
# (``trainers.fleet.Stack.attention``).
ATTENTION: ContextVar[str] = ContextVar("viny_attention", default="auto")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (B, heads, T, d). On CUDA, and on a CPU without autograd (the
    diagnostics' extraction, evaluation: 6x faster there), torch's fused kernel; elsewhere written
    out, because on CPU the fused kernel's backward is the slow part of a training step, in bf16 most
    of all (measurements: docs/performance.md, "Why the code is as it is"). ``ATTENTION`` "math"
    writes it out everywhere."""
    if (q.is_cuda or not torch.is_grad_enabled()) and ATTENTION.get() != "math":
        return F.scaled_dot_product_attention(q, k, v)
    return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v


class QKVAttention(torch.autograd.Function):
    """Attention from the qkv projection's output, written out for CPU training with the fewest copies:
    (N, T, 3 * heads * d) -> (N, T, heads * d), the same values and gradients as ``attend`` on
    q, k, v split from it (equal in fp32 and bf16 on this code's CPUs; tested).

    Forward: q, k and v leave the projection's layout in one copy (not three), the 1/sqrt(d) scale is
    the ``alpha`` of the scores' matrix product (no pass over the scores), and the softmax overwrites
    the scores (its backward, likewise, the weights' gradient). Backward: the gradients of
    q, k and v are written by their matrix products into one buffer (the scale again as ``alpha``) and
    go back to the projection's layout in one copy, where autograd on the split views copies each of
    them and then concatenates the three."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        n, t, width = qkv.shape
        d = width // (3 * heads)
        q, k, v = qkv.view(n, t, 3, heads, d).permute(2, 0, 3, 1, 4).reshape(3, n * heads, t, d).unbind(0)
        scores = q.new_empty(n * heads, t, t)
        torch.baddbmm(scores, q, k.transpose(1, 2), beta=0.0, alpha=d**-0.5, out=scores)
        weights = torch._softmax(scores, -1, False, out=scores)  # in place: one (N h, T, T) buffer
        ctx.save_for_backward(q, k, v, weights)
        ctx.heads = heads
        out = torch.bmm(weights, v)  # (n * heads, t, d)
        return out.view(n, heads, t, d).transpose(1, 2).reshape(n, t, heads * d)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        q, k, v, weights = ctx.saved_tensors
        heads = ctx.heads
        nh, t, d = q.shape
        n = nh // heads
        grad_out = grad.view(n, t, heads, d).transpose(1, 2).reshape(nh, t, d)
        grads = q.new_empty(3, nh, t, d)  # dq, dk, dv
        torch.bmm(weights.transpose(1, 2), grad_out, out=grads[2])
        grad_weights = torch.bmm(grad_out, v.transpose(1, 2))
        grad_scores = torch._softmax_backward_data(
            grad_weights, weights, -1, weights.dtype, grad_input=grad_weights
        )
        torch.baddbmm(grads[0], grad_scores, k, beta=0.0, alpha=d**-0.5, out=grads[0])
        torch.baddbmm(grads[1], grad_scores.transpose(1, 2), q, beta=0.0, alpha=d**-0.5, out=grads[1])
        return grads.view(3, n, heads, t, d).permute(1, 3, 0, 2, 4).reshape(n, t, 3 * heads * d), None


def attend_qkv(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention from the qkv projection's output: (N, T, 3 * heads * d), q, k, v chunked in
    that order with heads contiguous inside each (the authors' layout) -> (N, T, heads * d), the
    heads' outputs side by side. CPU training (``ATTENTION`` "auto", autograd on, eager):
    ``QKVAttention``; otherwise, and under ``torch.compile`` (where the autograd function would cut
    each block's graph in two: ``--compile`` 1.025x eager this way, 1.005x with it;
    docs/performance.md), q, k, v as views through ``attend``."""
    n, t, width = qkv.shape
    d = width // (3 * heads)
    if (
        ATTENTION.get() != "math"
        and not qkv.is_cuda
        and torch.is_grad_enabled()
        and qkv.requires_grad
        and not torch.compiler.is_compiling()  # torch.compile traces the plain ops whole, and fuses them
    ):
        return QKVAttention.apply(qkv, heads)
    q, k, v = (z.reshape(n, t, heads, d).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
    return attend(q, k, v).transpose(1, 2).reshape(n, t, heads * d)


class StackedParams:
    """K members' parameters, each stacked along a leading member axis (K, *its shape), read under a
    module's own names: ``p["qkv.weight"]`` is ``params[prefix + "qkv.weight"]``, and ``p.child("attn")``
    the same view one module down. ``params`` maps full names (a fleet's ``Stack.params``)."""

    __slots__ = ("params", "prefix")

    def __init__(self, params: Mapping[str, torch.Tensor], prefix: str = "") -> None:
        self.params, self.prefix = params, prefix

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.params[self.prefix + name]

    def __contains__(self, name: str) -> bool:
        return self.prefix + name in self.params

    def child(self, name: str) -> StackedParams:
        return StackedParams(self.params, f"{self.prefix}{name}.")


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """K members' ``nn.Linear`` at once: (K, ..., in) with ``weight`` (K, out, in) and ``bias`` (K, out)
    or None -> (K, ..., out), as one batched matrix product (K, N, in) x (K, in, out) for all members,
    the bias added by the same kernel."""
    members, *middle, width = x.shape
    flat = x.reshape(members, -1, width)
    w = weight.transpose(1, 2)
    out = torch.bmm(flat, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, w)
    return out.view(members, *middle, weight.shape[1])


def stacked_layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """K members' ``nn.LayerNorm`` over the last axis of (K, ..., D): normalised without affine (one
    kernel for all members), then each member's ``weight`` and ``bias`` (K, D) in one multiply-add."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    normed = F.layer_norm(x, x.shape[-1:], eps=eps)
    return torch.addcmul(bias.view(shape), normed, weight.view(shape))


def stacked_norm_linear(
    x: torch.Tensor, norm: StackedParams, linear: StackedParams, eps: float
) -> torch.Tensor:
    """A LayerNorm then a Linear, K members at once, on (K, ..., D): ``stacked_linear`` of
    ``stacked_layer_norm`` with the LayerNorm's weight and bias moved into the linear layer's, W diag(g)
    and b + W beta, which are (K, out, D) and (K, out) products on the weights: the activations only
    pass through the LayerNorm without affine and one matrix product (no activation-sized multiply-add,
    nor its backward's products and sums). Equal to the two layers in a row up to float rounding."""
    weight = linear["weight"]  # (K, out, D)
    folded = weight * norm["weight"].unsqueeze(1)
    shift = norm["bias"].unsqueeze(1)  # (K, 1, D)
    if "bias" in linear:
        bias = torch.baddbmm(linear["bias"].unsqueeze(1), shift, weight.transpose(1, 2))
    else:
        bias = torch.bmm(shift, weight.transpose(1, 2))
    return stacked_linear(F.layer_norm(x, x.shape[-1:], eps=eps), folded, bias.squeeze(1))


def _norm(module: nn.LayerNorm, p: StackedParams, x: torch.Tensor) -> torch.Tensor:
    """``module`` (a LayerNorm child of the caller, its parameters under ``p``) on stacked ``x``."""
    return stacked_layer_norm(x, p["weight"], p["bias"], module.eps)


def _linear(p: StackedParams, x: torch.Tensor) -> torch.Tensor:
    """A Linear child of the caller (its parameters under ``p``) on stacked ``x``."""
    return stacked_linear(x, p["weight"], p["bias"] if "bias" in p else None)


class Stacked:
    """``module`` read with K members' stacked parameters (``StackedParams``): calling it calls
    ``module.stacked_forward(params, ...)``, a parameter read as an attribute (``head.mask_token``) is
    the members' stacked tensor (K, ...), and anything else (``cfg``) is the module's own. A regime's
    ``predict`` runs on it as on the module itself, with every input (K, B, ...)."""

    def __init__(self, module: nn.Module, params: StackedParams) -> None:
        self._module, self._params = module, params

    def __call__(self, *args, **kwargs):
        return self._module.stacked_forward(self._params, *args, **kwargs)

    def __getattr__(self, name: str):
        if name in self._module._parameters:
            return self._params[name]
        return getattr(self._module, name)


def has_stacked_forward(module: nn.Module) -> bool:
    """Whether ``module`` runs stacked: its class that defines ``forward`` defines ``stacked_forward``
    too (a subclass that changes ``forward`` alone does not, nor does a plugin's module)."""
    for klass in type(module).__mro__:
        if "forward" in vars(klass):
            return "stacked_forward" in vars(klass)
    return False


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(attend_qkv(self.qkv(self.norm(x)), self.heads))

    def stacked_forward(self, p: StackedParams, x: torch.Tensor) -> torch.Tensor:
        """(K, B, T, D) -> (K, B, T, D): attention on the members' batches folded together, (K * B, T)."""
        members, b, t, _ = x.shape
        qkv = stacked_norm_linear(x, p.child("norm"), p.child("qkv"), self.norm.eps)
        out = attend_qkv(qkv.view(members * b, t, qkv.shape[-1]), self.heads)
        return _linear(p.child("proj"), out.view(members, b, t, out.shape[-1]))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))

    def stacked_forward(self, p: StackedParams, x: torch.Tensor) -> torch.Tensor:
        """(K, B, T, D) -> (K, B, T, D)."""
        hidden = F.gelu(stacked_norm_linear(x, p.child("norm"), p.child("fc1"), self.norm.eps))
        return _linear(p.child("fc2"), hidden)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x)); dropout 0."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dim_head)
        self.mlp = MLP(cfg.dim, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)

    def stacked_forward(self, p: StackedParams, x: torch.Tensor) -> torch.Tensor:
        """(K, B, T, D) -> (K, B, T, D)."""
        x = x + self.attn.stacked_forward(p.child("attn"), x)
        return x + self.mlp.stacked_forward(p.child("mlp"), x)


class PatchEmbed(nn.Module):
    """Flattened patches -> LayerNorm -> Linear -> LayerNorm."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.norm_in = nn.LayerNorm(cfg.patch_dim)
        self.proj = nn.Linear(cfg.patch_dim, cfg.dim)
        self.norm_out = nn.LayerNorm(cfg.dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm_out(self.proj(self.norm_in(patchify(images, self.patch_size))))

    def stacked_forward(self, p: StackedParams, images: torch.Tensor) -> torch.Tensor:
        """(K, B, C, H, W) -> (K, B, P, D)."""
        members, b = images.shape[:2]
        patches = patchify(images.flatten(0, 1), self.patch_size)
        x = patches.view(members, b, *patches.shape[1:])
        x = stacked_norm_linear(x, p.child("norm_in"), p.child("proj"), self.norm_in.eps)
        return _norm(self.norm_out, p.child("norm_out"), x)


class ViNy(nn.Module):
    """The encoder. ``forward`` returns final-LayerNorm patch tokens (B, P, D), or (B, 1 + P, D) with
    the CLS token first when called with ``cls=True``."""

    def __init__(self, cfg: ViTConfig | str = "viny") -> None:
        super().__init__()
        cfg = model_config(cfg)
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches + 1, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def _check(self, images: torch.Tensor, members: bool = False) -> None:
        want = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)
        lead = ("K", "B") if members else ("B",)
        if images.ndim != len(lead) + 3 or tuple(images.shape[len(lead) :]) != want:
            form = ", ".join((*lead, *map(str, want)))
            raise VinyError(f"images must be ({form}), got {tuple(images.shape)}")

    def embed(
        self,
        images: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        cls: bool = False,
    ) -> torch.Tensor:
        """Tokens entering block 1: (B, P, D) patch tokens plus positions 1..P; with the CLS token (plus
        position 0) in front, (B, 1 + P, D), when ``cls`` or ``cfg.cls_in_sequence``. ``mask`` (B, P)
        bool swaps in ``mask_token`` (D,) before the positions are added."""
        self._check(images)
        x = self.patch_embed(images)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), mask_token.to(x.dtype).expand_as(x), x)
        x = x + self.pos_embed[:, 1:].to(x.dtype)
        if cls or self.cfg.cls_in_sequence:
            first = (self.cls_token + self.pos_embed[:, :1]).to(x.dtype)
            x = torch.cat([first.expand(x.shape[0], -1, -1), x], dim=1)
        return x

    def forward(
        self,
        images: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        cls: bool = False,
    ) -> torch.Tensor:
        """Final-LayerNorm tokens: (B, P, D), or (B, 1 + P, D) CLS first when ``cls``."""
        x = self.embed(images, mask, mask_token, cls)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 1:] if self.cfg.cls_in_sequence and not cls else x

    def stacked_forward(
        self,
        p: StackedParams,
        images: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        cls: bool = False,
    ) -> torch.Tensor:
        """``forward`` of K members at once: ``images`` (K, B, C, S, S), ``mask`` (K, B, P), each member's
        ``mask_token`` (K, D), parameters ``p`` stacked (K, ...) under this module's names ->
        (K, B, P, D), or (K, B, 1 + P, D) CLS first when ``cls``."""
        self._check(images, members=True)
        x = self.patch_embed.stacked_forward(p.child("patch_embed"), images)
        members = x.shape[0]
        if mask is not None:
            token = mask_token.to(x.dtype).view(members, 1, 1, -1)
            x = torch.where(mask.unsqueeze(-1), token, x)
        pos = p["pos_embed"]  # (K, 1, 1 + P, D): its own axis 1 spans the batch
        x = x + pos[:, :, 1:].to(x.dtype)
        if cls or self.cfg.cls_in_sequence:
            first = (p["cls_token"] + pos[:, :, :1]).to(x.dtype)  # (K, 1, 1, D)
            x = torch.cat([first.expand(-1, x.shape[1], -1, -1), x], dim=2)
        for i, block in enumerate(self.blocks):
            x = block.stacked_forward(p.child(f"blocks.{i}"), x)
        x = _norm(self.norm, p.child("norm"), x)
        return x[:, :, 1:] if self.cfg.cls_in_sequence and not cls else x

    def patch_tokens_per_block(
        self, images: torch.Tensor, blocks: list[int] | None = None
    ) -> dict[int, torch.Tensor]:
        """Patch tokens (B, P, D) after each requested block (1..depth); block ``depth`` includes the
        final LayerNorm, earlier blocks are the raw residual stream. ``blocks=None``: every block."""
        depth = self.cfg.depth
        wanted = list(range(1, depth + 1)) if blocks is None else list(blocks)
        for b in wanted:
            if not 1 <= b <= depth:
                raise VinyError(f"layer {b} is out of range: this encoder has blocks 1..{depth}")
        out: dict[int, torch.Tensor] = {}
        x = self.embed(images)
        prefix = int(self.cfg.cls_in_sequence)
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i in wanted:
                out[i] = (self.norm(x) if i == depth else x)[:, prefix:]
            if i >= max(wanted):
                break
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
