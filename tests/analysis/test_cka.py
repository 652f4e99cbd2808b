import numpy as np
import pytest
import torch

import viny_probe.analysis.cka as cka_module
from viny_probe.analysis import cka_matrix, linear_cka
from viny_probe.errors import VinyError


def _features(m: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC form with M x M Gram matrices: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H))."""
    m = len(x)
    h = np.eye(m) - 1.0 / m
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.trace(k @ l_) / np.sqrt(np.trace(k @ k) * np.trace(l_ @ l_)))


def test_identical_features_give_one():
    x = _features(200, 6, 0)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_rotation_isotropic_scale_and_shift():
    x = _features(200, 6, 0)
    q, _ = torch.linalg.qr(_features(6, 6, 1))
    assert linear_cka(x, 3.7 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-10)


def test_not_invariant_to_anisotropic_scaling():
    x = _features(200, 6, 0)
    assert linear_cka(x, x * torch.tensor([10.0, 1, 1, 1, 1, 0.1])) < 0.95


def test_orthogonal_and_independent_features_give_about_zero():
    x = _features(400, 8, 0)
    x = x - x.mean(0)
    q, _ = torch.linalg.qr(x)  # orthonormal basis of x's columns
    z = _features(400, 4, 1)
    y = z - q @ (q.T @ z)
    y = y - y.mean(0)  # centred and orthogonal to every column of x
    assert linear_cka(x, y) == pytest.approx(0.0, abs=1e-12)
    assert linear_cka(_features(5000, 8, 2), _features(5000, 8, 3)) < 0.01


def test_matches_the_naive_hsic_formula_and_chunking(monkeypatch):
    x, y = _features(60, 5, 0), _features(60, 3, 1) + _features(60, 5, 0)[:, :3]
    expected = _naive_cka(x.numpy(), y.numpy())
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)
    monkeypatch.setattr(cka_module, "_BLOCK_BYTES", 8 * 8 * 7)  # blocks of 7 rows
    assert linear_cka(x.float(), y.float()) == pytest.approx(expected, rel=1e-5)


def test_large_offsets_do_not_cancel():
    x = _features(300, 4, 0)
    y = x @ _features(4, 4, 1)
    reference = linear_cka(x, y)
    assert linear_cka(x + 1e6, y - 1e6) == pytest.approx(reference, rel=1e-6)


def test_cka_matrix_matches_pairwise_values_and_accepts_patch_embeddings():
    layers = [_features(64, 4, s).reshape(4, 16, 4) for s in range(3)]
    other = [layers[0], _features(64, 2, 9)]
    matrix = cka_matrix(layers, other)
    assert matrix.shape == (3, 2)
    for i, x in enumerate(layers):
        for j, y in enumerate(other):
            assert matrix[i, j] == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert matrix[0, 0] == pytest.approx(1.0)


def test_bad_input_raises():
    with pytest.raises(VinyError, match="same M examples"):
        linear_cka(torch.zeros(10, 3), torch.zeros(11, 3))
    with pytest.raises(VinyError, match="non-empty"):
        cka_matrix([], [torch.zeros(4, 2)])
    with pytest.raises(VinyError, match=r"layers_b\[1\] must have shape"):
        cka_matrix([torch.randn(4, 2)], [torch.randn(4, 2), torch.randn(4)])
