"""Dense nearest-neighbour segmentation of frozen patch tokens: the retrieval protocol of Balazevic et al.
2023 ("Towards In-context Scene Understanding", the "Hummingbird" evaluation; open-hummingbird-eval).

A memory bank holds the patch tokens of labelled pool images with their labels; each test patch takes
its ``k`` most cosine-similar bank patches, weighs their labels with ``softmax(similarity /
temperature)`` and predicts the class of largest weight; mIoU is the dataset-level confusion-matrix
mIoU over the test patches (``metrics.iou_from_confusion``). No head is trained.

Departures from the protocol, for a trimap dataset with patch labels (written into the settings):
labels are per patch (the majority trimap class of its pixels, one-hot, as the linear probe's), and mIoU
is computed on patch labels, not on upsampled pixel maps; the bank is a seeded random subset of the
pool's patches (``max_bank_patches``) rather than patches of augmented pool images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from viny_probe.analysis.knn import classes_of
from viny_probe.analysis.neighbours import bank_of, cosine_neighbours, queries_of
from viny_probe.checks import ArrayLike, as_labelled_patches, check_positive_int
from viny_probe.errors import VinyError
from viny_probe.metrics import iou_from_confusion

__all__ = [
    "DenseKnnResult",
    "bank_of",
    "dense_knn_segmentation",
    "retrieve_labels",
    "segmentation_scores",
    "weighted_labels",
]

K = 30  # the protocol's neighbours
TEMPERATURE = 0.02  # the protocol's softmax temperature on cosine similarities


@dataclass
class DenseKnnResult:
    """Outcome of ``dense_knn_segmentation``: mIoU and accuracy over test patches (fractions)."""

    miou: float
    accuracy: float
    per_class_iou: list[float]  # NaN for a class absent from both prediction and target
    k: int
    temperature: float
    bank_patches: int
    test_patches: int

    def to_dict(self) -> dict:
        return asdict(self)


def retrieve_labels(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = K,
    temperature: float = TEMPERATURE,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``(Q, D)`` queries (normalised by ``cosine_neighbours``) -> ``(Q, C)`` label distributions: the softmax-weighted labels of
    each query's ``k`` nearest bank entries by cosine similarity, ``chunk_size`` queries at a time
    (default: ~128 MiB of similarities), so the full ``Q x B`` matrix never exists."""
    ((similarity, index),) = cosine_neighbours(queries, bank, [k], chunk_size)
    return weighted_labels(similarity, bank_labels[index], num_classes, temperature)


def weighted_labels(
    similarity: torch.Tensor,
    neighbour_labels: torch.Tensor,
    num_classes: int,
    temperature: float = TEMPERATURE,
) -> torch.Tensor:
    """``(Q, k)`` cosine similarities of each query's nearest bank entries and their ``(Q, k)`` labels ->
    ``(Q, C)`` label distributions, the labels weighted by ``softmax(similarity / temperature)``."""
    weights = torch.softmax(similarity / temperature, dim=1)
    one_hot = torch.nn.functional.one_hot(neighbour_labels.long(), num_classes).to(weights.dtype)
    return torch.einsum("qk,qkc->qc", weights, one_hot)


def segmentation_scores(
    distribution: torch.Tensor, target: torch.Tensor, k: int, temperature: float, bank_patches: int
) -> DenseKnnResult:
    """``(Q, C)`` label distributions and ``(Q,)`` true labels -> the scores of the class of largest
    weight (a tie goes to the lower class); ``k``, ``temperature`` and ``bank_patches`` for the record."""
    num_classes = distribution.shape[1]
    predicted, target = distribution.argmax(1), target.long()
    cm = torch.bincount(target * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, -1)
    iou = iou_from_confusion(cm)
    return DenseKnnResult(
        miou=float(iou.nanmean()),
        accuracy=float((predicted == target).double().mean()),
        per_class_iou=[float(v) for v in iou],
        k=k,
        temperature=float(temperature),
        bank_patches=bank_patches,
        test_patches=len(target),
    )


def dense_knn_segmentation(
    train_emb: ArrayLike,
    train_labels: ArrayLike,
    test_emb: ArrayLike,
    test_labels: ArrayLike,
    num_classes: int | None = None,
    k: int = K,
    temperature: float = TEMPERATURE,
    max_bank_patches: int | None = None,
    seed: int = 0,
) -> DenseKnnResult:
    """Label every test patch from a memory bank of pool patches and score the labelling.

    train_emb ``(M, P, D)`` with train_labels ``(M, P)`` make the bank (the pool images only: no test
    patch is ever in it); test_emb ``(N, P', D)`` with test_labels ``(N, P')`` are the queries. A
    prediction is the class of largest softmax-weighted vote (a tie goes to the lower class)."""
    train_emb, train_labels, test_emb, test_labels = as_labelled_patches(
        train_emb, train_labels, test_emb, test_labels
    )
    k = check_positive_int(k, "k")
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise VinyError(f"temperature must be a positive number, got {temperature!r}")
    bank, bank_labels = bank_of(train_emb, train_labels, max_bank_patches, seed)
    if k > len(bank):
        raise VinyError(f"k = {k} exceeds the {len(bank)} bank patches available")
    queries, target = queries_of(test_emb, test_labels)
    num_classes = classes_of(bank_labels, target, num_classes)
    distribution = retrieve_labels(queries, bank, bank_labels, num_classes, k, float(temperature))
    return segmentation_scores(distribution, target, k, temperature, len(bank))
