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

from viny_probe.checks import UNLABELLED, ArrayLike, as_labelled_patches, check_positive_int
from viny_probe.errors import VinyError
from viny_probe.metrics import iou_from_confusion

K = 30  # the protocol's neighbours
TEMPERATURE = 0.02  # the protocol's softmax temperature on cosine similarities
_SIMILARITY_BUDGET = 1 << 25  # similarity entries held at once (128 MiB of float32)


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


def bank_of(
    train_emb: torch.Tensor, train_labels: torch.Tensor, max_bank_patches: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, P, D)`` pool tokens and ``(M, P)`` labels -> the bank: L2-normalised ``(B, D)`` tokens and
    their ``(B,)`` labels, a ``seed``-ed random subset of at most ``max_bank_patches`` patches (the
    same indices select tokens and labels)."""
    d = train_emb.shape[-1]
    bank = torch.nn.functional.normalize(train_emb.reshape(-1, d).float(), dim=-1)
    labels = train_labels.reshape(-1)
    if (labels == UNLABELLED).any():  # patches without a labelled pixel (ignore values only) are left out
        bank, labels = bank[labels != UNLABELLED], labels[labels != UNLABELLED]
    if max_bank_patches is not None and len(bank) > check_positive_int(max_bank_patches, "max_bank_patches"):
        keep = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:max_bank_patches]
        bank, labels = bank[keep], labels[keep]
    return bank, labels


def retrieve_labels(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = K,
    temperature: float = TEMPERATURE,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``(Q, D)`` L2-normalised queries -> ``(Q, C)`` label distributions: the softmax-weighted labels of
    each query's ``k`` nearest bank entries by cosine similarity, ``chunk_size`` queries at a time
    (default: ~128 MiB of similarities), so the full ``Q x B`` matrix never exists."""
    chunk = chunk_size or max(1, _SIMILARITY_BUDGET // max(1, len(bank)))
    one_hot = torch.nn.functional.one_hot(bank_labels.long(), num_classes).to(bank.dtype)
    out = torch.empty(len(queries), num_classes, dtype=bank.dtype)
    for start in range(0, len(queries), chunk):
        sims, idx = (queries[start : start + chunk] @ bank.T).topk(k, dim=1)
        weights = torch.softmax(sims / temperature, dim=1)  # (q, k)
        out[start : start + chunk] = torch.einsum("qk,qkc->qc", weights, one_hot[idx])
    return out


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
    observed = int(max(bank_labels.max(), test_labels.max())) + 1
    num_classes = observed if num_classes is None else check_positive_int(num_classes, "num_classes")
    if num_classes < observed:
        raise VinyError(f"num_classes = {num_classes}, but the labels hold class {observed - 1}")
    queries = torch.nn.functional.normalize(test_emb.reshape(-1, test_emb.shape[-1]).float(), dim=-1)
    target = test_labels.reshape(-1).long()
    if (target == UNLABELLED).any():
        queries, target = queries[target != UNLABELLED], target[target != UNLABELLED]
    predicted = retrieve_labels(queries, bank, bank_labels, num_classes, k, float(temperature)).argmax(1)
    cm = torch.bincount(target * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, -1)
    iou = iou_from_confusion(cm)
    return DenseKnnResult(
        miou=float(iou.nanmean()),
        accuracy=float((predicted == target).double().mean()),
        per_class_iou=[float(v) for v in iou],
        k=k,
        temperature=float(temperature),
        bank_patches=len(bank),
        test_patches=len(target),
    )
