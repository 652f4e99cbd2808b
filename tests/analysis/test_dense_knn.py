"""Dense nearest-neighbour segmentation (the Hummingbird protocol) on constructed tokens with a known
answer."""

from __future__ import annotations

import pytest
import torch

from viny_probe.analysis.dense_knn import dense_knn_segmentation, retrieve_labels
from viny_probe.analysis.registry import DIAGNOSTICS, LayerTokens
from viny_probe.errors import VinyError

G, D, C = 4, 24, 3


def _case():
    """Two pool images whose 16 patch positions each have their own direction (one-hot-like tokens),
    labelled with a pattern that differs from patch to patch; one test image whose patch p is the pool's
    direction p plus noise, and whose label is the pool label of patch p. The right answer is every
    label, mIoU 1. The test image's own labels are set to a DIFFERENT pattern at its last row, so a bank
    that contained the test patches themselves would copy those instead of the pool's."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(G * G, D, generator=gen), dim=-1)
    pool = torch.stack([directions + 0.01 * torch.randn(G * G, D, generator=gen) for _ in range(2)])
    pool_labels = torch.tensor([(3 * p + p // G) % C for p in range(G * G)]).expand(2, -1).clone()
    test = (directions + 0.01 * torch.randn(G * G, D, generator=gen))[None]
    truth = pool_labels[:1].clone()
    return pool, pool_labels, test, truth


def test_each_test_patch_takes_the_label_of_its_nearest_pool_patches():
    """Known answer: every test patch recovers its label (mIoU 1, accuracy 1) with k = 2 (the two pool
    copies of its direction carry nearly all the softmax weight). Mutants watched failing: bank labels
    shifted by one patch (``labels.roll(1)`` in ``bank_of``): accuracy 0; the bank built from the
    test tokens (the queries in their own bank) with the test image's own labels: its mislabelled last
    row is copied."""
    pool, pool_labels, test, truth = _case()
    result = dense_knn_segmentation(pool, pool_labels, test, truth, num_classes=C, k=2)
    assert result.miou == 1.0 and result.accuracy == 1.0
    assert result.bank_patches == 32 and result.test_patches == 16

    # the test image's own labels disagree on its last row: scored against them, exactly those 4 miss
    wrong = truth.clone()
    wrong[0, -G:] = (wrong[0, -G:] + 1) % C
    scored = dense_knn_segmentation(pool, pool_labels, test, wrong, num_classes=C, k=1)
    assert scored.accuracy == pytest.approx(12 / 16)


def test_the_softmax_weights_follow_the_temperature():
    """A query at similarity 1.0 to a bank entry of class 0 and 0.9 to two entries of class 1: with the
    protocol's temperature 0.02 class 0 wins (weight 1 / (1 + 2 e^-5)); at temperature 1 the two class-1
    entries outweigh it. Mutant watched failing: similarities multiplied by the temperature instead of
    divided."""
    q = torch.tensor([[1.0, 0.0]])
    near = torch.tensor([1.0, 0.0])
    angle = torch.acos(torch.tensor(0.9))
    far = torch.stack([torch.cos(angle), torch.sin(angle)])
    bank = torch.stack([near, far, far])
    labels = torch.tensor([0, 1, 1])
    sharp = retrieve_labels(q, bank, labels, 2, k=3, temperature=0.02)
    expected = 1 / (1 + 2 * torch.exp(torch.tensor(-0.1 / 0.02)))
    assert sharp[0, 0].item() == pytest.approx(expected.item(), rel=1e-5)
    soft = retrieve_labels(q, bank, labels, 2, k=3, temperature=1.0)
    assert soft[0].argmax() == 1


def test_chunking_does_not_change_the_answer():
    """The same labels with the queries 1, 5 or all at a time."""
    gen = torch.Generator().manual_seed(3)
    bank = torch.nn.functional.normalize(torch.randn(50, 8, generator=gen), dim=-1)
    labels = torch.randint(0, 3, (50,), generator=gen)
    q = torch.nn.functional.normalize(torch.randn(13, 8, generator=gen), dim=-1)
    full = retrieve_labels(q, bank, labels, 3, k=5)
    for chunk in (1, 5):
        assert torch.allclose(retrieve_labels(q, bank, labels, 3, k=5, chunk_size=chunk), full)


def test_bad_arguments_are_one_line_errors():
    pool, pool_labels, test, truth = _case()
    with pytest.raises(VinyError, match="k = 40 exceeds the 32 bank patches"):
        dense_knn_segmentation(pool, pool_labels, test, truth, k=40)
    with pytest.raises(VinyError, match="temperature must be a positive number"):
        dense_knn_segmentation(pool, pool_labels, test, truth, temperature=0)


def test_it_is_a_registered_per_block_diagnostic_beside_the_probe():
    """Registered: a Table 2 column and a per-block curve, switched off with the kNN (--no-knn)."""
    entry = DIAGNOSTICS.get("dense_knn")
    assert entry.per_block and entry.needs_labels and entry.switch == "knn"
    pool, pool_labels, test, truth = _case()
    layer = LayerTokens(
        test=test.repeat(2, 1, 1), test_labels=truth.repeat(2, 1), train=pool, train_labels=pool_labels
    )
    assert entry.compute(layer)["miou"] == 1.0
    assert entry.block_compute(layer) == 1.0
