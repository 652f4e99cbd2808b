"""Effective rank of patch embeddings (RankMe, Garrido et al. 2023)."""

from __future__ import annotations

import torch

from viny_probe.analysis.variance import CHUNK_VALUES
from viny_probe.checks import ArrayLike, as_float

RANKME_EPS = 1e-7  # added to each normalised singular value, as in RankMe


def singular_values(features: ArrayLike) -> torch.Tensor:
    """Singular values, descending, of the ``(M, D)`` matrix (an ``(N, P, D)`` input is read as ``(N*P, D)``).

    Computed from the ``(D, D)`` Gram matrix in float64, accumulated over row blocks, so M = 128,000
    patches cost one pass over them and no float64 copy of the whole matrix.
    Returns ``(D,)`` float64 (min(M, D) of them are meaningful; the rest are ~0).
    """
    x = as_float(features, "features", (2, 3), "(M, D) or (N, P, D)")
    x = x.reshape(-1, x.shape[-1])
    rows = max(1, CHUNK_VALUES // x.shape[1])  # float64 rows converted at once (32 MiB)
    gram = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows].double()
        gram += block.T @ block
    eigenvalues = torch.linalg.eigvalsh(gram).flip(0)
    return eigenvalues.clamp(min=0).sqrt()


def effective_rank(features: ArrayLike, eps: float = RANKME_EPS) -> float:
    """RankMe: ``exp(-sum p_k log p_k)`` with ``p_k = sigma_k / sum(sigma) + eps`` over the singular values.

    features: ``(N, P, D)`` patch embeddings (flattened to ``(N*P, D)``, not centred, as in RankMe) or
    ``(M, D)``. Ranges from ~1 (rank one) to D (all singular values equal).
    """
    sigma = singular_values(features)
    total = sigma.sum()
    if total == 0:
        return 0.0
    p = sigma / total + eps
    return float(torch.exp(-(p * p.log()).sum()))
