"""Linear centred kernel alignment (Kornblith et al. 2019) between two sets of features on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from viny_probe.checks import ArrayLike, as_float
from viny_probe.errors import VinyError

# Size of the float64 row blocks of all layers together: 128 MiB gives 65,536 rows for one pair of
# 128-channel sets and ~5,000 rows for 13 x 13 layers; bigger blocks only add memory, smaller ones overhead.
_BLOCK_BYTES = 1 << 27


class _Features:
    """One feature set as given (rows x D, no copy) with its float64 column mean."""

    def __init__(self, features: ArrayLike, name: str) -> None:
        x = as_float(features, name, (2, 3), "(M, D) or (N, P, D)")
        self.x = x.reshape(-1, x.shape[-1])
        self.rows, self.dim = self.x.shape
        self.mean = self.x.sum(dim=0, dtype=torch.float64) / self.rows

    def centred_block(self, start: int, rows: int) -> torch.Tensor:
        return self.x[start : start + rows].double() - self.mean


def _check_same_rows(a: _Features, b: _Features, name_a: str, name_b: str) -> None:
    if a.rows != b.rows:
        raise VinyError(
            f"{name_a} and {name_b} must describe the same M examples (rows), got {a.rows} and {b.rows}"
        )


def _cka(a: list[_Features], b: list[_Features]) -> np.ndarray:
    """``(len(a), len(b))`` linear CKA; every set already checked to have the same rows."""
    a_edges = np.cumsum([0] + [f.dim for f in a])
    b_edges = np.cumsum([0] + [f.dim for f in b])
    cross = torch.zeros(a_edges[-1], b_edges[-1], dtype=torch.float64)
    grams = [torch.zeros(f.dim, f.dim, dtype=torch.float64) for f in a + b]
    rows = max(1, _BLOCK_BYTES // (8 * (a_edges[-1] + b_edges[-1])))
    for start in range(0, a[0].rows, rows):
        block_a = [f.centred_block(start, rows) for f in a]
        block_b = [f.centred_block(start, rows) for f in b]
        cross += torch.cat(block_a, dim=1).T @ torch.cat(block_b, dim=1)
        for gram, block in zip(grams, block_a + block_b, strict=True):
            gram += block.T @ block
    norms = [float(torch.linalg.matrix_norm(g)) for g in grams]
    a_norms, b_norms = norms[: len(a)], norms[len(a) :]
    out = np.full((len(a), len(b)), np.nan)  # NaN stays where a set is constant (zero Gram matrix)
    for i in range(len(a)):
        for j in range(len(b)):
            if a_norms[i] > 0.0 and b_norms[j] > 0.0:
                block = cross[a_edges[i] : a_edges[i + 1], b_edges[j] : b_edges[j + 1]]
                out[i, j] = float(torch.linalg.matrix_norm(block) ** 2) / (a_norms[i] * b_norms[j])
    return out


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred features.

    x: ``(M, D1)``, y: ``(M, D2)`` (an ``(N, P, D)`` input is read as ``(N*P, D)``), rows aligned.
    The feature-space (D x D) form never builds an M x M matrix. Rows are centred in float64, block by
    block, before multiplying (subtracting M * mean_x mean_y^T afterwards would cancel badly when the
    means are large). Returns a float in [0, 1]; NaN if either input is constant.
    """
    a, b = _Features(x, "x"), _Features(y, "y")
    _check_same_rows(a, b, "x", "y")
    return float(_cka([a], [b])[0, 0])


def cka_matrix(layers_a: Sequence[ArrayLike], layers_b: Sequence[ArrayLike]) -> np.ndarray:
    """Linear CKA between every layer of one model and every layer of another, on the same inputs.

    layers_a: La feature sets, each ``(M, D)`` or ``(N, P, D)``; layers_b: Lb such sets, same M rows in
    the same order. Returns ``(La, Lb)`` float64; entry [i, j] is ``linear_cka(layers_a[i], layers_b[j])``.
    Each block of rows of every layer is converted and centred once, and all cross products are one
    matrix product per block.
    """
    if len(layers_a) == 0 or len(layers_b) == 0:
        raise VinyError(
            f"layers_a and layers_b must be non-empty, got {len(layers_a)} and {len(layers_b)} layers"
        )
    a = [_Features(x, f"layers_a[{i}]") for i, x in enumerate(layers_a)]
    b = [_Features(y, f"layers_b[{j}]") for j, y in enumerate(layers_b)]
    for i, f in enumerate(a):
        _check_same_rows(a[0], f, "layers_a[0]", f"layers_a[{i}]")
    for j, f in enumerate(b):
        _check_same_rows(a[0], f, "layers_a[0]", f"layers_b[{j}]")
    return _cka(a, b)
