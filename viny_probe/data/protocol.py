"""The study's split protocol ("fixed data splits", "a fixed random seed" for the test set), as viny
fixes it (reference-notes.md, "test split" and "seeds").

A *split seed*, separate from the run seed, orders the images of a dataset by a key computed from
each image's identity (its file name or dataset id) and the seed alone: ``blake2b(f"{seed}:{id}")``.
The first ``test_size`` images in that order are THE test set; the rest, in that order, is the pool,
and a training subset of size n is the first n of the pool. So:

* every run seed sees the same split (the paper's protocol; ``--seed`` moves init, order, masking and
  augmentation only), and ``--split-seed`` changes it;
* subsets are nested (250 inside 500 inside 1000 ...) and never touch the test set;
* the split does not depend on where an image sits among the files that happened to decode: an image
  that cannot be read (left out by ``--on-error skip``) removes only itself. Its key is still computed
  from its name (it is listed in ``skipped``), so the test set keeps its other images (one fewer, not
  another draw) and a training subset takes the next pool image in its place;
* the key is a hash of text, the same on every machine and with every torch version.

Intermediate stages and probes that use the same dataset must draw only from ``Split.pool``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from viny_probe.errors import VinyError

DEFAULT_TEST_SIZE = 1000
DEFAULT_SPLIT_SEED = 0


def split_key(seed: int, image_id: str) -> int:
    """The 64-bit sort key of one image under split seed ``seed``: a hash of the seed and its id."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest(), "big")


def split_order(ids: Sequence[str], seed: int) -> list[int]:
    """Indices of ``ids`` in split order (ascending key; ties, which need equal ids, by position)."""
    return sorted(range(len(ids)), key=lambda i: (split_key(seed, ids[i]), i))


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the ids in the given order, one per line: a short name for a set of images."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    """Indices into a dataset's decoded images (``ids``).

    test: (k,) int64, sorted by index: the fixed held-out set for this split seed (k = test_size
        minus the test images that could not be read).
    pool: (m,) int64, in split order: everything a run may train on.
    skipped_test / skipped_pool: ids that belong to the test set / pool but could not be read.
    """

    test: torch.Tensor
    pool: torch.Tensor
    seed: int
    num_images: int
    test_size: int = 0
    skipped_test: tuple[str, ...] = field(default=())
    skipped_pool: tuple[str, ...] = field(default=())

    def train(self, n: int) -> torch.Tensor:
        """(n,) int64: the first ``n`` pool indices; the subset for n contains the one for any smaller n."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise VinyError(f"the number of training images must be a positive integer, got {n!r}")
        if n > len(self.pool):
            unreadable = (
                f" ({len(self.skipped_pool)} of its images could not be read)" if self.skipped_pool else ""
            )
            raise VinyError(
                f"asked for {n} training images, but the dataset has {self.num_images} images and the "
                f"test set takes {len(self.test)}, leaving {len(self.pool)} to train on{unreadable}. Use at "
                f"most {len(self.pool)} training images or a smaller test set."
            )
        return self.pool[:n]


def make_split(
    ids: Sequence[str],
    test_size: int = DEFAULT_TEST_SIZE,
    seed: int = DEFAULT_SPLIT_SEED,
    skipped: Sequence[str] = (),
) -> Split:
    """One fixed test set and the disjoint training pool of the images named ``ids``.

    ``skipped``: ids of images the dataset lists but that could not be read. They take their place
    in the order (so nothing else moves) and are then left out of both sides.
    """
    if isinstance(ids, int) or not all(isinstance(i, str) for i in ids):
        raise VinyError("make_split takes the images' ids (file names or dataset ids), not a count")
    if not isinstance(test_size, int) or test_size < 0:
        raise VinyError(f"test_size must be a non-negative integer, got {test_size!r}")
    if len(set(ids)) != len(ids):
        raise VinyError("image ids must be unique: the split is keyed by them")
    listed = list(ids) + [s for s in skipped if s not in set(ids)]
    if not ids:
        raise VinyError("the dataset has no readable images to split")
    if test_size >= len(listed):
        raise VinyError(
            f"the test set takes {test_size} images, but the dataset has only {len(listed)}: nothing would "
            f"be left to train on. Use a test size below {len(listed)} or a bigger dataset."
        )
    order = split_order(listed, seed)
    readable = len(ids)
    test = sorted(i for i in order[:test_size] if i < readable)
    pool = [i for i in order[test_size:] if i < readable]
    return Split(
        test=torch.tensor(test, dtype=torch.int64),
        pool=torch.tensor(pool, dtype=torch.int64),
        seed=seed,
        num_images=len(listed),
        test_size=test_size,
        skipped_test=tuple(listed[i] for i in order[:test_size] if i >= readable),
        skipped_pool=tuple(listed[i] for i in order[test_size:] if i >= readable),
    )
