"""k-nearest-neighbour patch classification: the non-linear counterpart of the linear patch probe."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from viny_probe.analysis._metrics import balanced_accuracy, per_class_accuracy
from viny_probe.checks import UNLABELLED, ArrayLike, as_labelled_patches, check_positive_int
from viny_probe.errors import VinyError

# Similarity entries held at once (float32): 2^25 is 128 MiB, e.g. 256 test patches x 128,000 train patches.
_SIMILARITY_BUDGET = 1 << 25


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
    d = train_emb.shape[-1]
    bank = torch.nn.functional.normalize(train_emb.reshape(-1, d).float(), dim=-1)
    bank_labels = train_labels.reshape(-1)
    if (bank_labels == UNLABELLED).any():  # patches without a labelled pixel vote for nothing
        bank, bank_labels = bank[bank_labels != UNLABELLED], bank_labels[bank_labels != UNLABELLED]
    if max_train_patches is not None and len(bank) > check_positive_int(
        max_train_patches, "max_train_patches"
    ):
        keep = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:max_train_patches]
        bank, bank_labels = bank[keep], bank_labels[keep]
    if k > len(bank):
        raise VinyError(f"k = {k} exceeds the {len(bank)} train patches available")
    queries = torch.nn.functional.normalize(test_emb.reshape(-1, d).float(), dim=-1)
    target = test_labels.reshape(-1)
    if (target == UNLABELLED).any():  # and are scored nowhere
        queries, target = queries[target != UNLABELLED], target[target != UNLABELLED]
    observed = int(max(bank_labels.max(), target.max())) + 1
    num_classes = observed if num_classes is None else check_positive_int(num_classes, "num_classes")
    if num_classes < observed:
        raise VinyError(f"num_classes = {num_classes}, but the labels hold class {observed - 1}")
    chunk = chunk_size or max(1, _SIMILARITY_BUDGET // len(bank))
    chunk = check_positive_int(chunk, "chunk_size")

    predicted = torch.empty(len(queries), dtype=torch.long)
    for start in range(0, len(queries), chunk):
        neighbours = (queries[start : start + chunk] @ bank.T).topk(k, dim=1).indices
        votes = torch.zeros(len(neighbours), num_classes)
        votes.scatter_add_(1, bank_labels[neighbours], torch.ones(neighbours.shape))
        predicted[start : start + chunk] = votes.argmax(dim=1)  # first maximum: lower class on a tie

    predicted, target = predicted.numpy(), target.numpy()
    per_class = per_class_accuracy(predicted, target, num_classes)
    return KnnResult(
        accuracy=float(np.mean(predicted == target)),
        balanced_accuracy=balanced_accuracy(per_class),
        per_class_accuracy=per_class.tolist(),
        k=k,
        num_train_patches=len(bank),
        num_test_patches=len(target),
    )
