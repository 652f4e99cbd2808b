"""Within-image and across-image variance of patch embeddings (Table 2 of the study)."""

from __future__ import annotations

from viny_probe.checks import ArrayLike, as_embeddings


def within_image_variance(emb: ArrayLike) -> float:
    """Mean over images and channels of the unbiased variance of each channel across an image's patches.

    emb: ``(N, P, D)`` patch embeddings, P >= 2. Returns a float.
    """
    emb = as_embeddings(emb, "emb", min_patches=2).double()
    return float(emb.var(dim=1, correction=1).mean())


def across_image_variance(emb: ArrayLike) -> float:
    """Unbiased variance across images of the per-image mean patch embedding, averaged over channels.

    emb: ``(N, P, D)`` patch embeddings, N >= 2. Returns a float.
    """
    emb = as_embeddings(emb, "emb", min_images=2).double()
    return float(emb.mean(dim=1).var(dim=0, correction=1).mean())


def ratio_of_variances(within: float, across: float) -> float:
    """``within / across``, the one convention for a zero across-image variance: inf when only the
    across variance is 0 (all images alike, patches differ), NaN when both are 0 (one constant token).
    JSON outputs write both as null."""
    if across == 0.0:
        return float("nan") if within == 0.0 else float("inf")
    return within / across


def within_across_ratio(emb: ArrayLike) -> float:
    """``within_image_variance(emb) / across_image_variance(emb)`` (see ``ratio_of_variances`` for a
    zero across variance).

    emb: ``(N, P, D)`` patch embeddings, N >= 2 and P >= 2. Returns a float.
    """
    return ratio_of_variances(within_image_variance(emb), across_image_variance(emb))
