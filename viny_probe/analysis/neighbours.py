"""Cosine nearest neighbours of test patches in a bank of pool patches: the search the kNN diagnostics
(``knn``, ``dense_knn``) share.

Both diagnostics build the same bank (the pool's labelled patches, L2-normalised, a seeded random
subset) and the same queries (the test images' labelled patches), and differ only in ``k`` and in how
the neighbours vote. The similarity product is most of their cost (ViT-S/16, 39,004 queries x 16,384
bank patches x 384 channels: 491 GFLOP), so ``cosine_neighbours`` computes it once per chunk of queries
and takes each ``k``'s top entries from it; each ``k`` still gets its own ``topk`` call, so the
neighbours (and their order among exact ties) are the ones a search for that ``k`` alone returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from viny_probe.checks import UNLABELLED, check_positive_int

# Similarity entries held at once (float32): 2^25 is 128 MiB, e.g. 256 test patches x 128,000 train patches.
SIMILARITY_BUDGET = 1 << 25


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


def queries_of(test_emb: torch.Tensor, test_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, P, D)`` test tokens and ``(N, P)`` labels -> the labelled patches, L2-normalised ``(Q, D)``,
    and their ``(Q,)`` labels (a patch without a labelled pixel is scored nowhere)."""
    queries = torch.nn.functional.normalize(test_emb.reshape(-1, test_emb.shape[-1]).float(), dim=-1)
    target = test_labels.reshape(-1)
    if (target == UNLABELLED).any():
        queries, target = queries[target != UNLABELLED], target[target != UNLABELLED]
    return queries, target


def cosine_neighbours(
    queries: torch.Tensor, bank: torch.Tensor, ks: Sequence[int], chunk_size: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(Q, D)`` and ``(B, D)`` L2-normalised rows -> for each ``k`` in ``ks`` the ``(Q, k)`` cosine
    similarities and bank indices of each query's ``k`` nearest bank rows, largest first. One similarity
    product per chunk of ``chunk_size`` queries (default: ~128 MiB of similarities) serves every ``k``,
    so the full ``Q x B`` matrix never exists."""
    chunk = check_positive_int(chunk_size or max(1, SIMILARITY_BUDGET // max(1, len(bank))), "chunk_size")
    found: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in ks]
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ bank.T
        for out, k in zip(found, ks, strict=True):
            out.append(similarity.topk(k, dim=1))
    return [
        (torch.cat([v for v, _ in out]), torch.cat([i for _, i in out]))
        if out
        else (torch.empty(0, k), torch.empty(0, k, dtype=torch.long))
        for out, k in zip(found, ks, strict=True)
    ]
