"""The first principal components of patch tokens, as colours: the DINO / DINOv2 papers' picture of what
a model's patches encode (patches of one part of an object share a colour across images).

``pca_rgb`` fits one PCA over all patches of all images given (so colours are comparable across the
images of one model and block), projects every patch on the first three components and maps each
component to [0, 1] between its 1st and 99th percentile (clipped). The sign of each component is fixed
so that its largest loading is positive: the same tokens always give the same colours.
"""

from __future__ import annotations

import torch

from viny_probe.errors import VinyError

LOW_QUANTILE = 0.01
HIGH_QUANTILE = 0.99


def principal_components(tokens: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tokens`` ``(N, P, D)`` or ``(M, D)`` -> (mean ``(D,)``, components ``(k, D)`` orthonormal rows,
    explained variance ratio ``(k,)``), from the eigendecomposition of the ``(D, D)`` covariance in
    float64 (M may be large; D is a model width). Component signs: largest absolute loading positive."""
    flat = tokens.reshape(-1, tokens.shape[-1]).double()
    if flat.shape[0] < 2:
        raise VinyError(f"PCA needs at least 2 patch tokens, got {flat.shape[0]}")
    if not torch.isfinite(flat).all():
        raise VinyError("PCA: the patch tokens hold NaN or infinite values")
    k = min(k, flat.shape[1])
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / (flat.shape[0] - 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    order = values.flip(0)[:k]
    comps = vectors.flip(1)[:, :k].T.contiguous()
    pivot = comps.abs().argmax(dim=1)
    signs = torch.sign(comps.gather(1, pivot[:, None])).squeeze(1)
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    total = values.clamp_min(0).sum()
    ratio = order.clamp_min(0) / total if total > 0 else torch.zeros_like(order)
    return mean, comps, ratio


def pca_rgb(tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``(N, P, D)`` patch tokens -> ``(N, P, 3)`` float colours in [0, 1] (R, G, B = components 1, 2, 3)
    and a description (explained variance ratios, the percentile range of each component). A model of
    width < 3 fills the missing channels with 0.5."""
    if tokens.ndim != 3:
        raise VinyError(f"pca_rgb takes (N, P, D) patch tokens, got shape {tuple(tokens.shape)}")
    mean, comps, ratio = principal_components(tokens, 3)
    scores = (tokens.double() - mean) @ comps.T  # (N, P, k)
    flat = scores.reshape(-1, scores.shape[-1])
    low = torch.quantile(flat, LOW_QUANTILE, dim=0)
    high = torch.quantile(flat, HIGH_QUANTILE, dim=0)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    colours = ((scores - low) / span).clamp(0, 1)
    if colours.shape[-1] < 3:
        pad = torch.full((*colours.shape[:-1], 3 - colours.shape[-1]), 0.5, dtype=colours.dtype)
        colours = torch.cat([colours, pad], dim=-1)
    info = {
        "explained_variance_ratio": [float(r) for r in ratio],
        "range": [[float(a), float(b)] for a, b in zip(low, high, strict=True)],
        "quantiles": [LOW_QUANTILE, HIGH_QUANTILE],
    }
    return colours.float(), info
