"""High-norm token share: the fraction of patch tokens whose L2 norm exceeds K x the median norm
(the "register"/artifact tokens of Darcet et al. 2024 show up as such outliers)."""

from __future__ import annotations

import torch

from viny_probe.analysis.registry import Column, Diagnostic, LayerTokens, register

K = 4.0


def high_norm_share(tokens: torch.Tensor, k: float = K) -> float:
    """tokens ``(N, P, D)`` -> the share of the N * P patch tokens with norm > k x the median norm."""
    norms = tokens.float().norm(dim=-1).reshape(-1)
    return float((norms > k * norms.median()).float().mean())


def _compute(layer: LayerTokens) -> float:
    return layer.measure(high_norm_share)


register(
    Diagnostic(
        "high_norm_share",
        "high-norm token share",
        f"share of patch tokens whose norm exceeds {K:g} x the median norm (example plugin)",
        _compute,
        (Column("high_norm_pct", "high-norm %", ".2f", lambda r: 100 * r),),
        per_block=True,
        settings={"k": K},
    )
)
