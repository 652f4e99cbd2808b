"""k-nearest-neighbour patch classification: the non-linear counterpart of the linear patch probe."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from viny_probe.analysis._metrics import balanced_accuracy, per_class_accuracy
from viny_probe.analysis.neighbours import bank_of, cosine_neighbours, queries_of
from viny_probe.checks import ArrayLike, as_labelled_patches, check_positive_int
from viny_probe.errors import VinyError


@dataclass
class KnnResult:
    """Outcome of ``knn_patch_accuracy``. Accuracies are fractions in [0, 1] over test patches."""

    accuracy: float
    balanced_accuracy: float
    per_class_accuracy: list[float]  # recall of each class; NaN for a class absent from the test set
    k: int
    num_train_patches: int  # after any subsampling
    num_test_patches: int

    def to_dict(self) -> dict:
        return asdict(self)


def knn_patch_accuracy(
    train_emb: ArrayLike,
    train_labels: ArrayLike,
    test_emb: ArrayLike,
    test_labels: ArrayLike,
    k: int = 20,
    num_classes: int | None = None,
    max_train_patches: int | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
) -> KnnResult:
    """Classify each test patch by a majority vote of its ``k`` most cosine-similar train patches.

    train_emb: ``(N, P, D)``, train_labels: ``(N, P)``; test_emb: ``(M, P', D)``, test_labels: ``(M, P')``.
    Votes are uniform; a tie goes to the lower class index. ``max_train_patches`` caps the train bank by
    a ``seed``-ed random subset (cost is test patches x train patches x D). Test patches are processed
    ``chunk_size`` at a time (default: ~128 MiB of similarities), so the full similarity matrix never exists.
    """
    train_emb, train_labels, test_emb, test_labels = as_labelled_patches(
        train_emb, train_labels, test_emb, test_labels
    )
    k = check_positive_int(k, "k")
    bank, bank_labels = bank_of(train_emb, train_labels, max_train_patches, seed)
    if k > len(bank):
        raise VinyError(f"k = {k} exceeds the {len(bank)} train patches available")
    queries, target = queries_of(test_emb, test_labels)
    num_classes = classes_of(bank_labels, target, num_classes)
    ((_, neighbours),) = cosine_neighbours(queries, bank, [k], chunk_size)
    return knn_vote(bank_labels[neighbours], target, num_classes, len(bank))


def classes_of(bank_labels: torch.Tensor, target: torch.Tensor, num_classes: int | None) -> int:
    """``num_classes``, checked against the labels of the bank and the queries; None: as many as they hold."""
    observed = int(max(bank_labels.max(), target.max() if len(target) else -1)) + 1
    num_classes = observed if num_classes is None else check_positive_int(num_classes, "num_classes")
    if num_classes < observed:
        raise VinyError(f"num_classes = {num_classes}, but the labels hold class {observed - 1}")
    return num_classes


def knn_vote(
    neighbour_labels: torch.Tensor, target: torch.Tensor, num_classes: int, bank_patches: int
) -> KnnResult:
    """``(Q, k)`` labels of each query's nearest bank patches and the ``(Q,)`` true labels -> the
    majority vote's scores over ``num_classes`` classes (uniform votes; a tie goes to the lower class).
    ``bank_patches``: the bank's size, for the record."""
    votes = torch.zeros(len(neighbour_labels), num_classes)
    votes.scatter_add_(1, neighbour_labels, torch.ones(neighbour_labels.shape))
    predicted = votes.argmax(dim=1).numpy()  # first maximum: lower class on a tie
    target = target.numpy()
    per_class = per_class_accuracy(predicted, target, num_classes)
    return KnnResult(
        accuracy=float(np.mean(predicted == target)),
        balanced_accuracy=balanced_accuracy(per_class),
        per_class_accuracy=per_class.tolist(),
        k=neighbour_labels.shape[1],
        num_train_patches=bank_patches,
        num_test_patches=len(target),
    )
