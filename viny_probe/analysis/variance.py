"""Within-image and across-image variance of patch embeddings (Table 2 of the study)."""

from __future__ import annotations

import torch

from viny_probe.checks import ArrayLike, as_embeddings

# float64 values converted at once: images are taken in chunks of at most this many values (32 MiB),
# so 1,000 images x 196 patches x 768 channels never exist as one float64 copy.
CHUNK_VALUES = 1 << 22


def images_per_chunk(emb: torch.Tensor, values: int = CHUNK_VALUES) -> int:
    """How many images of ``emb`` (N, P, D) make a chunk of at most ``values`` values (at least one)."""
    return max(1, values // (emb.shape[1] * emb.shape[2]))


def within_image_variance(emb: ArrayLike) -> float:
    """Mean over images and channels of the unbiased variance of each channel across an image's patches.

    emb: ``(N, P, D)`` patch embeddings, P >= 2. Returns a float (float64 arithmetic, image chunks).
    """
    emb = as_embeddings(emb, "emb", min_patches=2)
    n, _, d = emb.shape
    step = images_per_chunk(emb)
    total = sum(emb[s : s + step].double().var(dim=1, correction=1).sum() for s in range(0, n, step))
    return float(total / (n * d))


def across_image_variance(emb: ArrayLike) -> float:
    """Unbiased variance across images of the per-image mean patch embedding, averaged over channels.

    emb: ``(N, P, D)`` patch embeddings, N >= 2. Returns a float (float64 arithmetic, image chunks).
    """
    emb = as_embeddings(emb, "emb", min_images=2)
    step = images_per_chunk(emb)
    means = torch.cat([emb[s : s + step].double().mean(dim=1) for s in range(0, emb.shape[0], step)])
    return float(means.var(dim=0, correction=1).mean())


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
