"""The study's split protocol, as viny fixes it (reference-notes.md, "test split").

The authors' code took the 1000 test images right after the train prefix, so the test set moved with
the train size. viny instead draws, per seed, one permutation of the labelled pool: its first
``test_size`` images are THE test set for that seed, whatever the train size; the rest, in permuted
order, is the pool. A train subset of size n is the first n of the pool, so subsets are nested
(250 inside 500 inside 1000 ...) and never touch the test set. Intermediate stages and probes that
use the same dataset must draw only from ``Split.pool``.

The permutation comes from ``torch.randperm`` on a CPU ``torch.Generator`` seeded with the seed, so
the same seed gives the same split on every machine, whatever GPU or thread count (the test suite
pins the first indices for seed 0, so a change of torch's generator would be caught).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from viny_probe.errors import VinyError

DEFAULT_TEST_SIZE = 1000


@dataclass(frozen=True)
class Split:
    """Indices into a dataset of ``num_images`` images.

    test: (test_size,) int64, sorted: the fixed held-out set for this seed.
    pool: (num_images - test_size,) int64, in seeded random order: everything a run may train on.
    """

    test: torch.Tensor
    pool: torch.Tensor
    seed: int
    num_images: int

    def train(self, n: int) -> torch.Tensor:
        """(n,) int64: the first ``n`` pool indices; the subset for n contains the one for any smaller n."""
        if not isinstance(n, int) or n < 1:
            raise VinyError(f"the number of training images must be a positive integer, got {n!r}")
        if n > len(self.pool):
            raise VinyError(
                f"asked for {n} training images, but the dataset has {self.num_images} images and the "
                f"test set takes {len(self.test)}, leaving {len(self.pool)} to train on. Use at most "
                f"{len(self.pool)} training images or a smaller test set."
            )
        return self.pool[:n]


def make_split(num_images: int, test_size: int = DEFAULT_TEST_SIZE, seed: int = 0) -> Split:
    """One fixed test set of ``test_size`` images and the disjoint, seeded training pool."""
    if not isinstance(num_images, int) or num_images < 1:
        raise VinyError(f"num_images must be a positive integer, got {num_images!r}")
    if not isinstance(test_size, int) or test_size < 0:
        raise VinyError(f"test_size must be a non-negative integer, got {test_size!r}")
    if test_size >= num_images:
        raise VinyError(
            f"the test set takes {test_size} images, but the dataset has only {num_images}: nothing would "
            f"be left to train on. Use a test size below {num_images} or a bigger dataset."
        )
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    test, pool = order[:test_size], order[test_size:]
    return Split(test=test.sort().values, pool=pool.clone(), seed=seed, num_images=num_images)
