"""Which images each stage sees, following the study's protocol as viny decides it (reference-notes):
one fixed test set per seed on the segmentation dataset, nested training subsets disjoint from it, and
no intermediate stage, probe or pre-training ever training on those test images."""

from __future__ import annotations

from ..config import TrainConfig
from ..data import load_dataset
from ..data.base import ImageSet
from ..data.protocol import make_split
from ..errors import VinyError

# How many images the embedded datasets hold (they are generated deterministically with data seed 0,
# so every run sees the same dataset and only the split depends on the run's seed).
EMBEDDED_SIZES = {"toy-pets": 3000, "toy-scenes": 1500, "toy-unlabeled": 3000}
SEGMENTATION_DATASETS = ("pets", "toy-pets")
# Datasets that come with their own held-out split.
HAS_TEST_SPLIT = ("intel",)


def load(cfg: TrainConfig, size: int, split: str = "train", limit: int | None = None) -> ImageSet:
    if cfg.dataset in EMBEDDED_SIZES:
        # A fixed size, like a real dataset: asking for more images than it has is an error, not a
        # silently different dataset.
        return load_dataset(cfg.dataset, size=size, limit=EMBEDDED_SIZES[cfg.dataset], seed=0)
    return load_dataset(
        cfg.dataset,
        size=size,
        data_root=cfg.data_root,
        split=split,
        limit=limit,
        seed=cfg.seed,
        on_error=cfg.on_error,
    )


def train_test(cfg: TrainConfig, size: int, need_test: bool = True) -> tuple[ImageSet, ImageSet | None, dict]:
    """The training subset and the held-out set of ``cfg.dataset`` for this run, plus provenance.

    Segmentation datasets use the fixed per-seed test set (``--test-size``, default 1000) and nested
    training subsets (``--train-size``, default: the whole non-test pool). Intel uses seg_train and
    seg_test. Other labelled sets get a seeded hold-out of at most a fifth of the images.
    """
    if cfg.dataset in HAS_TEST_SPLIT:
        train = load(cfg, size, "train")
        test = load(cfg, size, "test") if need_test else None
        if cfg.train_size is not None:
            if cfg.train_size > len(train):
                raise VinyError(
                    f"--train-size {cfg.train_size}: {cfg.dataset} has only {len(train)} training images"
                )
            train = train.subset(make_split(len(train), 0, cfg.seed).train(cfg.train_size))
        return train, test, {"dataset": cfg.dataset, "train": len(train), "test": len(test) if test else 0}

    full = load(cfg, size, "train")
    test_size = cfg.test_size if cfg.dataset in SEGMENTATION_DATASETS else min(cfg.test_size, len(full) // 5)
    split = make_split(len(full), test_size, cfg.seed)
    train_idx = split.train(cfg.train_size if cfg.train_size is not None else len(split.pool))
    info = {
        "dataset": cfg.dataset,
        "images_in_dataset": len(full),
        "train": len(train_idx),
        "test": len(split.test),
        "split_seed": cfg.seed,
    }
    return full.subset(train_idx), full.subset(split.test), info


def unlabeled(cfg: TrainConfig, size: int) -> tuple[ImageSet, dict]:
    """Pre-training images: ``--train-size`` of them (ImageNet-style folders are subset by the seed).
    On a segmentation dataset only the non-test pool is used."""
    if cfg.dataset in SEGMENTATION_DATASETS:
        train, _, info = train_test(cfg, size, need_test=False)
        return train, info
    data = load(cfg, size, "train", limit=cfg.train_size)
    if cfg.train_size is not None:
        if cfg.train_size > len(data):
            raise VinyError(f"--train-size {cfg.train_size}: {cfg.dataset} has only {len(data)} images")
        if cfg.train_size < len(data):
            # Only here is a copy made: a memory-mapped ImageNet subset already has the asked size and stays mapped.
            data = data.subset(list(range(cfg.train_size)))
    return data, {"dataset": cfg.dataset, "train": len(data)}
