"""Analytic FLOPs per image of ViNy and a regime's head, counted from the configs.

FLOP convention: one multiply-add = 2 FLOPs. Only matrix products are counted (patch embedding, qkv,
attention scores, attention-weighted sum, output projection, MLP, task head); LayerNorm, GELU, softmax,
residual adds and the optimizer are not (they are < 2 % of the products' FLOPs for ViNy, but not of
their time). A training step is counted as 3x the forward (backward = 2x
forward), the usual rule. The head's count is the regime's own (``Regime.head_macs``).
"""

from __future__ import annotations

from ..model import ViTConfig, model_config
from ..registry import REGIMES
from ..trainers import Regime

FLOP_CONVENTION = "1 multiply-add = 2 FLOPs; matrix products only; training = 3 x forward"


def regime_named(name: str) -> Regime:
    """The registered regime called ``name``, or an error listing the registered names."""
    return REGIMES.get(name)()


def analytic_flops(cfg: ViTConfig | str, regime: str = "simmim", num_classes: int | None = None) -> dict:
    """Forward FLOPs per image of encoder + ``regime``'s head, counted from the config; the head
    ``num_classes`` wide (default: the regime's ``bench_classes``, its width in the study).

    Returns each term (patch_embed, qkv, attn_scores, attn_weighted_sum, proj, mlp: summed over all
    blocks; head), ``encoder`` and ``forward`` totals, and ``train`` = 3 x forward. See FLOP_CONVENTION.
    """
    cfg = model_config(cfg)
    reg = regime_named(regime)
    # The study's token path: the CLS token runs through the blocks only when the head reads it.
    p, d = cfg.num_patches, cfg.dim
    t = p + int(reg.uses_cls or cfg.cls_in_sequence)
    inner = cfg.heads * cfg.dim_head
    mac = {
        "patch_embed": p * cfg.patch_dim * d,
        "qkv": cfg.depth * t * d * 3 * inner,
        "attn_scores": cfg.depth * cfg.heads * t * t * cfg.dim_head,
        "attn_weighted_sum": cfg.depth * cfg.heads * t * t * cfg.dim_head,
        "proj": cfg.depth * t * inner * d,
        "mlp": cfg.depth * 2 * t * d * cfg.mlp_dim,
        "head": reg.head_macs(cfg, num_classes if num_classes is not None else reg.bench_classes),
    }
    out = {k: 2 * v for k, v in mac.items()}
    out["encoder"] = sum(v for k, v in out.items() if k != "head")
    out["forward"] = out["encoder"] + out["head"]
    out["train"] = 3 * out["forward"]
    return out
