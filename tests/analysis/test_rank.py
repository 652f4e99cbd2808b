import math

import pytest
import torch

from viny_probe.analysis import effective_rank, singular_values
from viny_probe.errors import VinyError


def test_identity_like_features_have_full_rank():
    q, _ = torch.linalg.qr(
        torch.randn(256, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    emb = (q * 3.0).reshape(4, 64, 16)  # orthogonal columns of equal norm: all singular values equal
    assert effective_rank(emb) == pytest.approx(16.0, rel=1e-4)


def test_rank_one_features_have_rank_one():
    u, v = torch.randn(500, 1), torch.randn(1, 32)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-3)


def test_hand_computed_entropy():
    # singular values 3 and 1 -> p = (0.75, 0.25); exp(entropy) = 0.75^-0.75 * 0.25^-0.25 ~= 1.7548
    features = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(features, eps=0.0) == pytest.approx(expected, rel=1e-9)


def test_singular_values_match_svd():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * torch.arange(
        1, 13.0
    )
    torch.testing.assert_close(singular_values(x), torch.linalg.svdvals(x), rtol=1e-8, atol=1e-8)


def test_bad_input_raises():
    with pytest.raises(VinyError, match=r"\(M, D\) or \(N, P, D\)"):
        effective_rank(torch.zeros(5))
