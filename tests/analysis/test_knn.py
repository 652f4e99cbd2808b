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


def test_a_subsampled_bank_keeps_each_patch_with_its_own_label():
    """Train patch j points along axis j and is labelled j % 3; test patch j is train patch j, labelled
    the same, so with k = 1 a test patch in the bank finds itself (cosine 1) and is right. Of 24
    patches the bank keeps 12: exactly the 12 kept test patches are scored right, through their own
    labels. Mutant: labels not subsampled with the bank (``bank_labels[keep]`` -> ``bank_labels[:
    max_train_patches]``) -> kept patches carry other patches' labels."""
    n, p = 4, 6
    train = torch.eye(n * p).view(n, p, n * p)
    labels = (torch.arange(n * p) % 3).view(n, p)
    res = knn_patch_accuracy(train, labels, train, labels, k=1, max_train_patches=12)
    assert res.num_train_patches == 12
    kept = torch.randperm(n * p, generator=torch.Generator().manual_seed(0))[:12]
    per_patch = []
    for j in range(n * p):
        one = knn_patch_accuracy(
            train, labels, train.view(-1, n * p)[j].view(1, 1, -1), labels.view(-1)[j].view(1, 1), k=1,
            num_classes=3, max_train_patches=12,
        )  # fmt: skip
        per_patch.append(one.accuracy)
    for j in kept.tolist():
        assert per_patch[j] == 1.0, j


def test_test_patches_never_join_the_bank():
    """Every train patch sits at direction a with label 0; every test patch sits at direction a too but
    is labelled 1: the only neighbours are train patches, so accuracy is exactly 0. Mutant: the bank's
    labels read off the queries (``bank_labels = train_labels.reshape(-1)`` -> ``test_labels``
    repeated, i.e. queries leaking their labels into the bank) -> 1."""
    a = torch.tensor([1.0, 0.0, 0.0])
    train, test = a.expand(2, 4, 3).clone(), a.expand(1, 4, 3).clone()
    res = knn_patch_accuracy(
        train, torch.zeros(2, 4, dtype=torch.long), test, torch.ones(1, 4, dtype=torch.long), k=3
    )
    assert res.accuracy == 0.0 and res.num_train_patches == 8


def _before_knn(train, train_labels, test, test_labels, k, num_classes, bank_size, seed):
    """knn_patch_accuracy as it was before the shared search (viny 2026-12-06): predictions ``(Q,)``."""
    d = train.shape[-1]
    bank, bank_labels = torch.nn.functional.normalize(train.reshape(-1, d), dim=-1), train_labels.reshape(-1)
    bank, bank_labels = bank[bank_labels != -1], bank_labels[bank_labels != -1]
    keep = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:bank_size]
    bank, bank_labels = bank[keep], bank_labels[keep]
    queries, target = torch.nn.functional.normalize(test.reshape(-1, d), dim=-1), test_labels.reshape(-1)
    queries = queries[target != -1]
    neighbours = (queries @ bank.T).topk(k, dim=1)
    votes = torch.zeros(len(queries), num_classes)
    votes.scatter_add_(1, bank_labels[neighbours.indices], torch.ones(neighbours.indices.shape))
    weights = torch.softmax(neighbours.values / 0.02, dim=1)
    dense = torch.einsum(
        "qk,qkc->qc",
        weights,
        torch.nn.functional.one_hot(bank_labels, num_classes)[neighbours.indices].float(),
    )
    return votes.argmax(1), dense.argmax(1), target[target != -1]  # fmt: skip


def test_the_knn_diagnostics_share_one_search_and_find_what_each_found_alone(monkeypatch):
    """The registered kNN and dense kNN diagnostics of one layer run one similarity search between them
    (``diagnostics._neighbours``) and score exactly what the search of each alone scored before (the
    same bank, queries, neighbours and votes; ``_before_knn``), on overlapping clusters with unlabelled
    patches, a bank smaller than the pool and more test images than are queried. Mutants killed: each
    diagnostic its own search (``layer.shared`` bypassed: two searches), kNN voting over dense kNN's 30
    neighbours, the bank drawn with another seed."""
    from viny_probe.analysis import diagnostics
    from viny_probe.analysis.dense_knn import K as DENSE_K
    from viny_probe.analysis.registry import LayerTokens
    from viny_probe.metrics import iou_from_confusion

    monkeypatch.setattr(diagnostics, "KNN_BANK_PATCHES", 300)
    monkeypatch.setattr(diagnostics, "KNN_TEST_IMAGES", 12)
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(3, 16, generator=g)
    pool_labels, test_labels = (
        torch.randint(0, 3, (40, 16), generator=g),
        torch.randint(0, 3, (15, 16), generator=g),
    )
    pool = centres[pool_labels] + 3 * torch.randn(40, 16, 16, generator=g)
    test = centres[test_labels] + 3 * torch.randn(15, 16, 16, generator=g)
    pool_labels[:, 0], test_labels[:, 1] = -1, -1
    searches = []
    search = diagnostics.cosine_neighbours
    monkeypatch.setattr(
        diagnostics, "cosine_neighbours", lambda *a, **k: searches.append(1) or search(*a, **k)
    )
    layer = LayerTokens(test, test_labels, pool, pool_labels, seed=3)
    knn, dense = diagnostics.knn(layer), diagnostics.dense_knn(layer)
    assert len(searches) == 1
    voted, weighted, target = _before_knn(pool, pool_labels, test[:12], test_labels[:12], 20, 3, 300, seed=3)
    assert knn["accuracy"] == float((voted == target).double().mean())
    assert 0.3 < knn["accuracy"] < 0.95  # neighbours and votes matter
    assert knn["num_train_patches"] == dense["bank_patches"] == 300
    assert knn["num_test_patches"] == dense["test_patches"] == 12 * 15
    assert dense["k"] == DENSE_K and dense["accuracy"] == float((weighted == target).double().mean())
    iou = iou_from_confusion(torch.bincount(target * 3 + weighted, minlength=9).reshape(3, 3))
    assert dense["miou"] == pytest.approx(float(iou.nanmean()), abs=1e-12)
