import numpy as np
import pytest
import torch

from viny_probe.analysis import linear_patch_probe
from viny_probe.analysis._metrics import balanced_accuracy, per_class_accuracy
from viny_probe.errors import VinyError


def _clusters(n: int, p: int, d: int, seed: int, spread: float = 5.0):
    """Patches whose embedding is their class centre (times ``spread``) plus unit noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, d, generator=torch.Generator().manual_seed(99)) * spread
    labels = torch.randint(0, 3, (n, p), generator=g)
    return centres[labels] + torch.randn(n, p, d, generator=g), labels


def test_separable_clusters_are_probed_near_perfectly():
    train_emb, train_labels = _clusters(40, 16, 8, seed=0)
    test_emb, test_labels = _clusters(20, 16, 8, seed=1)
    result = linear_patch_probe(train_emb, train_labels, test_emb, test_labels, Cs=(0.01, 1.0))
    assert result.test_accuracy > 0.98
    assert result.train_accuracy > 0.98
    assert result.balanced_accuracy > 0.98
    assert min(result.per_class_accuracy) > 0.95
    assert result.chosen_C in (0.01, 1.0)
    assert set(result.validation_accuracy) == {0.01, 1.0}
    assert result.num_train_patches == 640 and result.num_test_patches == 320
    assert result.converged


def test_random_labels_give_chance_accuracy():
    g = torch.Generator().manual_seed(0)
    train_emb, test_emb = torch.randn(40, 16, 8, generator=g), torch.randn(40, 16, 8, generator=g)
    train_labels, test_labels = (
        torch.randint(0, 3, (40, 16), generator=g),
        torch.randint(0, 3, (40, 16), generator=g),
    )
    result = linear_patch_probe(train_emb, train_labels, test_emb, test_labels, Cs=(0.1,))
    assert 0.25 < result.test_accuracy < 0.42  # chance is 1/3; 640 test patches -> sd ~0.02


def test_test_images_never_influence_the_fit():
    train_emb, train_labels = _clusters(30, 16, 8, seed=0, spread=0.5)
    test_emb, test_labels = _clusters(10, 16, 8, seed=1, spread=0.5)
    a = linear_patch_probe(train_emb, train_labels, test_emb, test_labels)
    b = linear_patch_probe(train_emb, train_labels, test_emb * 10 + 3, (test_labels + 1) % 3)
    assert a.chosen_C == b.chosen_C
    assert a.validation_accuracy == b.validation_accuracy
    np.testing.assert_array_equal(a.classifier[-1].coef_, b.classifier[-1].coef_)
    assert a.train_accuracy == b.train_accuracy


def test_validation_holds_out_whole_images():
    # Every patch of an image shares the image's random code and the image's random label: a linear model
    # with D > number of images memorises the fitting images but cannot generalise to new ones. Held-out
    # validation IMAGES therefore score near chance; a split by patch would put each validation patch's
    # twins in the fitting set and score ~1.
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(120, 1, 128, generator=g)
    emb = codes + 0.01 * torch.randn(120, 4, 128, generator=g)
    labels = torch.randint(0, 3, (120, 1), generator=g).expand(120, 4)
    result = linear_patch_probe(emb, labels, emb[:5], labels[:5], Cs=(100.0,), val_fraction=0.25)
    assert result.train_accuracy > 0.95
    assert result.validation_accuracy[100.0] < 0.7


def test_metrics_on_a_hand_made_case():
    predicted = np.array([0, 0, 1, 1, 1, 2])
    target = np.array([0, 1, 1, 1, 1, 0])
    per_class = per_class_accuracy(predicted, target, num_classes=3)
    np.testing.assert_allclose(per_class[:2], [0.5, 0.75])
    assert np.isnan(per_class[2])  # class 2 never appears in the target
    assert balanced_accuracy(per_class) == pytest.approx(0.625)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_emb": torch.zeros(2, 4, 5)}, "same number of channels"),
        ({"train_labels": torch.zeros(6, 3, dtype=torch.long)}, r"train_labels must have shape \(N, P\)"),
        ({"train_labels": torch.zeros(6, 4)}, "integer class indices"),
        ({"train_emb": torch.zeros(6, 4)}, r"train_emb must have shape \(N, P, D\)"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"Cs": ()}, "Cs"),
        ({"train_labels": torch.zeros(6, 4, dtype=torch.long)}, "single patch class"),
    ],
)
def test_bad_input_raises(change, message):
    g = torch.Generator().manual_seed(0)
    kwargs = {
        "train_emb": torch.randn(6, 4, 3, generator=g),
        "train_labels": torch.arange(24).reshape(6, 4) % 3,
        "test_emb": torch.randn(2, 4, 3, generator=g),
        "test_labels": torch.zeros(2, 4, dtype=torch.long),
    }
    with pytest.raises(VinyError, match=message):
        linear_patch_probe(**{**kwargs, **change})
