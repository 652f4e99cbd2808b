"""Cosine nearest neighbours of test patches in a bank of pool patches: the search the kNN diagnostics
(``knn``, ``dense_knn``) share.

Both diagnostics build the same bank (the pool's labelled patches, L2-normalised, a seeded random
subset) and the same queries (the test images' labelled patches), and differ only in ``k`` and in how
the neighbours vote. The similarity product is most of their cost (ViT-S/16, 39,004 queries x 16,384
bank patches x 384 channels: 491 GFLOP), so ``cosine_neighbours`` computes it once per chunk of queries
and takes each ``k``'s top entries from it; each ``k`` still gets its own ``topk`` call, so the
neighbours (and their order among exact ties) are the ones a search for that ``k`` alone returns.

Tokens stored in bfloat16 / float16 (``ModelOptions.token_dtype``) are upcast only where they are used:
the bank's chosen rows once (at most ``max_bank_patches``), the queries one chunk at a time inside
``cosine_neighbours``; every norm and similarity is a float32 sum.
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
    """``(M, P, D)`` pool tokens and ``(M, P)`` labels -> the bank: L2-normalised float32 ``(B, D)``
    tokens and their ``(B,)`` labels, a ``seed``-ed random subset of at most ``max_bank_patches``
    patches (the same indices select tokens and labels). Only the chosen rows are upcast and normalised."""
    labels = train_labels.reshape(-1)
    rows = torch.arange(len(labels))
    if (labels == UNLABELLED).any():  # patches without a labelled pixel (ignore values only) are left out
        rows = rows[labels != UNLABELLED]
    if max_bank_patches is not None and len(rows) > check_positive_int(max_bank_patches, "max_bank_patches"):
        keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_bank_patches]
        rows = rows[keep]
    bank = train_emb.reshape(-1, train_emb.shape[-1])[rows]
    return torch.nn.functional.normalize(bank.float(), dim=-1), labels[rows]


def queries_of(test_emb: torch.Tensor, test_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, P, D)`` test tokens and ``(N, P)`` labels -> the labelled patches ``(Q, D)``, in the tokens'
    own dtype and not yet normalised (``cosine_neighbours`` normalises them a chunk at a time in
    float32), and their ``(Q,)`` labels (a patch without a labelled pixel is scored nowhere)."""
    queries = test_emb.reshape(-1, test_emb.shape[-1])
    target = test_labels.reshape(-1)
    if (target == UNLABELLED).any():
        queries, target = queries[target != UNLABELLED], target[target != UNLABELLED]
    return queries, target


def cosine_neighbours(
    queries: torch.Tensor, bank: torch.Tensor, ks: Sequence[int], chunk_size: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(Q, D)`` query rows (any float dtype) and ``(B, D)`` L2-normalised float32 bank rows -> for each
    ``k`` in ``ks`` the ``(Q, k)`` cosine similarities and bank indices of each query's ``k`` nearest
    bank rows, largest first. Each chunk of ``chunk_size`` queries (default: ~128 MiB of similarities)
    is upcast to float32 and L2-normalised (a no-op on normalised rows) and gives one similarity product
    that serves every ``k``, so the full ``Q x B`` matrix, and a float32 copy of half-precision queries,
    never exist."""
    chunk = check_positive_int(chunk_size or max(1, SIMILARITY_BUDGET // max(1, len(bank))), "chunk_size")
    found: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in ks]
    for start in range(0, len(queries), chunk):
        rows = torch.nn.functional.normalize(queries[start : start + chunk].float(), dim=-1)
        similarity = rows @ bank.T
        for out, k in zip(found, ks, strict=True):
            out.append(similarity.topk(k, dim=1))
    return [
        (torch.cat([v for v, _ in out]), torch.cat([i for _, i in out]))
        if out
        else (torch.empty(0, k), torch.empty(0, k, dtype=torch.long))
        for out, k in zip(found, ks, strict=True)
    ]
