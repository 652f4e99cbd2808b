import numpy as np
import pytest
import torch

from viny_probe.analysis import across_image_variance, within_across_ratio, within_image_variance
from viny_probe.errors import VinyError


def test_constant_per_image_has_zero_within_variance():
    levels = torch.tensor([1.0, 4.0, -2.0])
    emb = levels[:, None, None].expand(3, 16, 5).clone()
    assert within_image_variance(emb) == pytest.approx(0.0, abs=1e-12)
    assert across_image_variance(emb) == pytest.approx(float(levels.var()), rel=1e-9)  # 9.0


def test_identical_image_means_have_zero_across_variance():
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(16, 5, generator=g)
    emb = torch.stack([pattern, pattern.flip(0), pattern.roll(3, 0)])  # same patches, reordered
    assert across_image_variance(emb) == pytest.approx(0.0, abs=1e-12)
    assert within_image_variance(emb) == pytest.approx(float(pattern.var(0).mean()), rel=1e-6)


def test_hand_computed_case():
    # image 0: patches 0, 2 -> var 2; image 1: patches 1, 5 -> var 8; within = 5.
    # means 1, 3 -> unbiased variance 2; ratio 2.5.
    emb = torch.tensor([[[0.0], [2.0]], [[1.0], [5.0]]])
    assert within_image_variance(emb) == pytest.approx(5.0)
    assert across_image_variance(emb) == pytest.approx(2.0)
    assert within_across_ratio(emb) == pytest.approx(2.5)


def test_matches_a_numpy_reference_and_accepts_arrays():
    emb = np.random.default_rng(1).normal(size=(7, 9, 4))
    assert within_image_variance(emb) == pytest.approx(np.var(emb, axis=1, ddof=1).mean())
    assert across_image_variance(emb) == pytest.approx(np.var(emb.mean(axis=1), axis=0, ddof=1).mean())


def test_ratio_is_inf_when_images_share_their_mean():
    emb = torch.tensor([[[0.0], [2.0]], [[2.0], [0.0]]])
    assert within_across_ratio(emb) == float("inf")


@pytest.mark.parametrize(
    ("fn", "emb", "message"),
    [
        (within_image_variance, torch.zeros(4, 8), r"\(N, P, D\)"),
        (within_image_variance, torch.zeros(3, 1, 4), "at least 2 patches"),
        (across_image_variance, torch.zeros(1, 4, 4), "at least 2 images"),
        (across_image_variance, torch.full((2, 4, 4), float("nan")), "NaN"),
    ],
)
def test_bad_input_raises(fn, emb, message):
    with pytest.raises(VinyError, match=message):
        fn(emb)
