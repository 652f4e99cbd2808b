"""Cosine similarity between patch tokens as a function of their Manhattan distance on the grid (Fig 5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from scipy import stats

from viny_probe.checks import UNLABELLED, ArrayLike, as_embeddings, as_labels, check_positive_int, grid_side
from viny_probe.errors import VinyError

PairKind = Literal["all", "same", "different"]
PAIR_KINDS: tuple[str, ...] = ("all", "same", "different")


@dataclass
class SimilarityCurve:
    """Mean cosine similarity at each Manhattan distance, with a confidence band across images.

    distances:  ``(K,)`` int, 1 .. 2 * (g - 1).
    mean:       ``(K,)`` mean over images of each image's mean cosine at that distance.
    low, high:  ``(K,)`` bounds of the two-sided ``confidence`` Student-t interval of that mean,
                computed across images (NaN where fewer than two images have pairs at that distance).
    num_images: ``(K,)`` int, how many images had at least one pair at that distance.
    pairs:      which pairs were used: "all", "same" (same patch class) or "different".
    """

    distances: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    num_images: np.ndarray
    pairs: str = "all"
    confidence: float = 0.95

    def to_dict(self) -> dict:
        """JSON-ready form (lists; NaN left as float NaN)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def manhattan_distance_matrix(grid: int) -> torch.Tensor:
    """``(P, P)`` int64 Manhattan distance between patches of a ``grid`` x ``grid`` row-major grid, P = grid**2."""
    grid = check_positive_int(grid, "grid")
    index = torch.arange(grid * grid)
    rows, cols = index // grid, index % grid
    return (rows[:, None] - rows[None, :]).abs() + (cols[:, None] - cols[None, :]).abs()


def _per_image_curves(
    emb: torch.Tensor, pair_mask: torch.Tensor | None, distance_onehot: torch.Tensor, chunk: int
) -> np.ndarray:
    """``(N, K)`` mean cosine per image and distance; NaN where an image has no pair at a distance."""
    n, p, _ = emb.shape
    out = torch.empty(n, distance_onehot.shape[0], dtype=torch.float64)
    for start in range(0, n, chunk):
        block = torch.nn.functional.normalize(emb[start : start + chunk].double(), dim=-1)
        cosine = (block @ block.transpose(1, 2)).reshape(block.shape[0], p * p)
        if pair_mask is None:
            sums = cosine @ distance_onehot.T
            counts = distance_onehot.sum(dim=1).expand_as(sums)
        else:
            keep = pair_mask[start : start + chunk].reshape(block.shape[0], p * p).double()
            sums = (cosine * keep) @ distance_onehot.T
            counts = keep @ distance_onehot.T
        out[start : start + chunk] = torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)
    return out.numpy()


def similarity_vs_distance(
    emb: ArrayLike,
    labels: ArrayLike | None = None,
    pairs: PairKind = "all",
    confidence: float = 0.95,
    chunk_images: int = 512,
) -> SimilarityCurve:
    """Mean cosine similarity between distinct patches of an image at each Manhattan distance 1 .. 2(g-1).

    emb:    ``(N, P, D)`` patch embeddings, P = g * g in row-major order. Tokens are L2-normalised.
    labels: ``(N, P)`` integer patch classes (e.g. ``patch_majority_labels``); needed when ``pairs`` is
            "same" (only pairs of patches of the same class) or "different".
    Each image gives one mean per distance over all its ordered pairs at that distance (NaN when it has
    none, which only happens with ``pairs`` != "all"); the curve is the NaN-aware mean over images and the
    band is a Student-t ``confidence`` interval of that mean across images (scipy.stats.t).
    """
    emb = as_embeddings(emb, "emb", min_patches=2)
    n, p, _ = emb.shape
    g = grid_side(p, "emb")
    if pairs not in PAIR_KINDS:
        raise VinyError(f"pairs must be one of {PAIR_KINDS}, got {pairs!r}")
    if not 0.0 < confidence < 1.0:
        raise VinyError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    chunk_images = check_positive_int(chunk_images, "chunk_images")
    # a chunk's float64 tokens and cosines (c x P x D and c x P x P) stay near 128 MiB on big grids
    chunk_images = min(chunk_images, max(1, (1 << 24) // (p * (emb.shape[2] + p))))
    pair_mask = None
    if pairs != "all":
        if labels is None:
            raise VinyError(f"pairs={pairs!r} needs labels: (N, P) patch classes")
        labels = as_labels(labels, "labels", (n, p), "(N, P)")
        same = labels[:, :, None] == labels[:, None, :]
        pair_mask = same if pairs == "same" else ~same
        labelled = labels != UNLABELLED  # a patch without a class is in neither kind of pair
        pair_mask &= labelled[:, :, None] & labelled[:, None, :]
    elif labels is not None:
        raise VinyError(
            "labels are only used with pairs='same' or pairs='different'; drop them for pairs='all'"
        )

    distances = np.arange(1, 2 * (g - 1) + 1)
    dist = manhattan_distance_matrix(g).reshape(-1)
    distance_onehot = (dist[None, :] == torch.from_numpy(distances)[:, None]).double()  # (K, P*P)
    per_image = _per_image_curves(emb, pair_mask, distance_onehot, chunk_images)

    num_images = np.sum(~np.isnan(per_image), axis=0)
    mean = np.full(len(distances), np.nan)
    low, high = mean.copy(), mean.copy()
    for k, count in enumerate(num_images):
        values = per_image[~np.isnan(per_image[:, k]), k]
        if count == 0:
            continue
        mean[k] = values.mean()
        if count >= 2:
            half = stats.t.ppf(0.5 + confidence / 2, df=count - 1) * values.std(ddof=1) / np.sqrt(count)
            low[k], high[k] = mean[k] - half, mean[k] + half
    return SimilarityCurve(distances, mean, low, high, num_images, pairs, confidence)


def similarity_vs_distance_by_class(
    emb: ArrayLike, labels: ArrayLike, confidence: float = 0.95
) -> dict[str, SimilarityCurve]:
    """``similarity_vs_distance`` for all pairs, same-class pairs and different-class pairs.

    emb: ``(N, P, D)``; labels: ``(N, P)``. Returns {"all": ..., "same": ..., "different": ...}.
    """
    return {
        kind: similarity_vs_distance(emb, None if kind == "all" else labels, kind, confidence)
        for kind in PAIR_KINDS
    }
