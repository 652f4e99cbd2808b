import pytest
import torch

from viny_probe.analysis import knn_patch_accuracy
from viny_probe.errors import VinyError


def _clusters(n: int, p: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, d, generator=torch.Generator().manual_seed(99)) * 5
    labels = torch.randint(0, 3, (n, p), generator=g)
    return centres[labels] + torch.randn(n, p, d, generator=g), labels


def test_separable_clusters_are_classified_near_perfectly():
    train = _clusters(30, 16, 8, seed=0)
    test = _clusters(10, 16, 8, seed=1)
    result = knn_patch_accuracy(*train, *test, k=5)
    assert result.accuracy > 0.98
    assert result.balanced_accuracy > 0.98
    assert result.num_train_patches == 480 and result.num_test_patches == 160


def test_random_labels_give_chance_accuracy():
    g = torch.Generator().manual_seed(0)
    result = knn_patch_accuracy(
        torch.randn(30, 16, 8, generator=g),
        torch.randint(0, 3, (30, 16), generator=g),
        torch.randn(40, 16, 8, generator=g),
        torch.randint(0, 3, (40, 16), generator=g),
    )
    assert 0.25 < result.accuracy < 0.42


def test_hand_made_neighbours_and_tie_break():
    # Train bank: directions e0 (class 2), e1 (class 1), and near e0 (class 0).
    train = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.0, 1.0]]])
    train_labels = torch.tensor([[2, 1, 0, 1]])
    test = torch.tensor([[[2.0, 0.05], [0.1, 3.0], [1.0, 0.0], [1.0, 0.02]]])
    # k=1: nearest by cosine (scale-free). k=2 on [1, 0] and [1, 0.02]: neighbours e0 (2) and near-e0 (0)
    # tie 1-1 -> lower class 0.
    one = knn_patch_accuracy(train, train_labels, test, torch.tensor([[2, 1, 2, 2]]), k=1)
    assert one.accuracy == 1.0
    two = knn_patch_accuracy(train, train_labels, test, torch.tensor([[0, 1, 0, 0]]), k=2)
    assert two.accuracy == 1.0


def test_chunking_and_subsampling():
    train = _clusters(20, 16, 8, seed=0)
    test = _clusters(10, 16, 8, seed=1)
    full = knn_patch_accuracy(*train, *test, k=3)
    assert knn_patch_accuracy(*train, *test, k=3, chunk_size=7).accuracy == full.accuracy
    sub = knn_patch_accuracy(*train, *test, k=3, max_train_patches=50)
    assert sub.num_train_patches == 50


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"k": 100}, "exceeds"),
        ({"test_emb": torch.zeros(2, 4, 5)}, "same number of channels"),
        ({"test_labels": torch.zeros(2, 3, dtype=torch.long)}, r"test_labels must have shape \(N, P\)"),
    ],
)
def test_bad_input_raises(change, message):
    kwargs = {
        "train_emb": torch.randn(3, 4, 3),
        "train_labels": torch.zeros(3, 4, dtype=torch.long),
        "test_emb": torch.randn(2, 4, 3),
        "test_labels": torch.zeros(2, 4, dtype=torch.long),
    }
    with pytest.raises(VinyError, match=message):
        knn_patch_accuracy(**{**kwargs, **change})
