import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from viny_probe.analysis import (
    manhattan_distance_matrix,
    similarity_vs_distance,
    similarity_vs_distance_by_class,
)
from viny_probe.errors import VinyError


def _row_one_hot(n: int, g: int) -> torch.Tensor:
    """(n, g*g, g): each patch is the one-hot vector of its row, so cos = 1 on the same row, else 0."""
    rows = torch.arange(g * g) // g
    return torch.nn.functional.one_hot(rows, g).float().expand(n, -1, -1).clone()


def test_manhattan_matrix_on_a_2x2_grid():
    expected = [[0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 1], [2, 1, 1, 0]]
    assert manhattan_distance_matrix(2).tolist() == expected
    assert manhattan_distance_matrix(8).max() == 14


def test_identical_patches_have_cosine_one_at_every_distance():
    emb = (
        torch.randn(1, 1, 16).expand(5, 64, 16) * torch.arange(1, 65.0)[None, :, None]
    )  # scale is irrelevant
    curve = similarity_vs_distance(emb)
    assert curve.distances.tolist() == list(range(1, 15))
    np.testing.assert_allclose(curve.mean, 1.0, atol=1e-6)
    np.testing.assert_allclose(curve.low, 1.0, atol=1e-6)
    np.testing.assert_allclose(curve.high, 1.0, atol=1e-6)
    assert curve.num_images.tolist() == [5] * 14


def test_row_one_hot_on_2x2_gives_half_then_zero():
    # Distance 1: 4 ordered horizontal pairs (same row, cos 1) + 4 vertical (cos 0) -> 0.5.
    # Distance 2: the diagonals, always different rows -> 0.
    curve = similarity_vs_distance(_row_one_hot(3, 2))
    np.testing.assert_allclose(curve.mean, [0.5, 0.0], atol=1e-12)


def _brute_force(emb: np.ndarray) -> np.ndarray:
    """(N, K) per-image mean cosine at each distance, by looping over ordered pairs."""
    n, p, _ = emb.shape
    g = int(round(p**0.5))
    unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    out = np.zeros((n, 2 * (g - 1)))
    for i in range(n):
        sums, counts = np.zeros(2 * g), np.zeros(2 * g)
        for a, b in itertools.permutations(range(p), 2):
            d = abs(a // g - b // g) + abs(a % g - b % g)
            sums[d] += unit[i, a] @ unit[i, b]
            counts[d] += 1
        out[i] = sums[1 : 2 * g - 1] / counts[1 : 2 * g - 1]
    return out


def test_matches_a_brute_force_loop_with_a_t_interval():
    emb = np.random.default_rng(0).normal(size=(6, 9, 5)) + 0.5
    per_image = _brute_force(emb)
    curve = similarity_vs_distance(torch.from_numpy(emb), confidence=0.9)
    np.testing.assert_allclose(curve.mean, per_image.mean(0), atol=1e-10)
    low, high = stats.t.interval(0.9, df=5, loc=per_image.mean(0), scale=stats.sem(per_image, axis=0))
    np.testing.assert_allclose(curve.low, low, atol=1e-10)
    np.testing.assert_allclose(curve.high, high, atol=1e-10)
    assert curve.to_dict()["mean"] == curve.mean.tolist()


def test_chunking_does_not_change_the_result():
    emb = torch.randn(7, 16, 4, generator=torch.Generator().manual_seed(3))
    a, b = similarity_vs_distance(emb), similarity_vs_distance(emb, chunk_images=2)
    np.testing.assert_allclose(a.mean, b.mean)
    np.testing.assert_allclose(a.high, b.high)


def test_same_and_different_class_split_with_nan_where_no_pairs():
    g = 3
    emb = _row_one_hot(4, g)
    labels = (torch.arange(g * g) // g).expand(4, -1)  # class = row
    curves = similarity_vs_distance_by_class(emb, labels)
    # Same-row pairs exist only at distances 1, 2 (horizontal); there cos = 1. Different rows: cos 0.
    np.testing.assert_allclose(curves["same"].mean[:2], 1.0)
    assert np.isnan(curves["same"].mean[2:]).all()
    assert curves["same"].num_images.tolist() == [4, 4, 0, 0]
    np.testing.assert_allclose(curves["different"].mean, 0.0)
    assert curves["all"].pairs == "all" and curves["different"].pairs == "different"


def test_nan_aware_mean_over_images():
    # Image 0: one class everywhere (same-class pairs at every distance). Image 1: checkerboard classes,
    # so same-class pairs only at even distances; odd distances average image 0 alone.
    g = 4
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(2, g * g, 6, generator=gen)
    index = torch.arange(g * g)
    labels = torch.stack([torch.zeros(g * g, dtype=torch.long), (index // g + index % g) % 2])
    curve = similarity_vs_distance(emb, labels, pairs="same")
    assert curve.num_images.tolist() == [1, 2, 1, 2, 1, 2]
    only_first = similarity_vs_distance(emb[:1])
    np.testing.assert_allclose(curve.mean[0::2], only_first.mean[0::2], atol=1e-12)
    assert np.isnan(curve.low[0::2]).all()  # one image: no interval


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"emb": torch.zeros(2, 10, 4)}, "not a square"),
        ({"emb": torch.zeros(10, 4)}, r"\(N, P, D\)"),
        ({"emb": torch.ones(2, 4, 3), "pairs": "same"}, "needs labels"),
        (
            {"emb": torch.ones(2, 4, 3), "pairs": "same", "labels": torch.zeros(2, 5, dtype=torch.long)},
            r"\(N, P\)",
        ),
        ({"emb": torch.ones(2, 4, 3), "pairs": "near"}, "pairs must be one of"),
        ({"emb": torch.ones(2, 4, 3), "confidence": 1.5}, "confidence"),
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(VinyError, match=message):
        similarity_vs_distance(**kwargs)
