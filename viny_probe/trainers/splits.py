"""Which images each stage sees, following the study's protocol as viny decides it (reference-notes):
one fixed test set per *split seed* (``--split-seed``, the same for every run seed) on the
segmentation dataset, nested training subsets disjoint from it, and no intermediate stage, probe or
pre-training ever training on those test images. The split is keyed by each image's identity
(``viny_probe.data.protocol``); the run seed (``--seed``) never moves it.
"""

from __future__ import annotations

from ..config import TrainConfig
from ..data import dataset_spec, load_dataset, resolve_data_root
from ..data.base import ImageSet
from ..data.protocol import Split, ids_digest, make_split
from ..data.spec import HELD_OUT_STREAM
from ..errors import VinyError


def load(
    cfg: TrainConfig, size: int, split: str = "train", limit: int | None = None, keep_aspect: bool = False
) -> ImageSet:
    """``cfg.dataset`` at ``size``, decoded with the run's image filter (``cfg.resize``)."""
    spec = dataset_spec(cfg.dataset)
    if spec.fixed_size is not None:
        # A fixed size, like a real dataset: asking for more images than it has is an error, not a
        # silently different dataset.
        return load_dataset(cfg.dataset, size=size, limit=spec.fixed_size, seed=0)
    return load_dataset(
        cfg.dataset,
        size=size,
        data_root=cfg.data_root,
        split=split,
        limit=limit,
        seed=cfg.split_seed,
        decoding=cfg.decoding(keep_aspect),
    )


def crop_sources(cfg: TrainConfig, train: ImageSet, side: int) -> ImageSet:
    """The images of ``train`` with their aspect ratio kept, the longer side at most ``side`` px, padded,
    with ``extents`` (``decode.load_source``): what SimMIM cuts its crops from with ``crop_source
    original``, as the study's code cuts them from the decoded JPEG. Their own decode-cache entry
    (``side`` px, ``aspect: keep`` in its key), matched to ``train`` by image id. An embedded set has no
    original (it is generated at the model's size): ``train`` itself."""
    spec = dataset_spec(cfg.dataset)
    if spec.embedded:
        return train
    # A loader that picks its own subset (an ImageNet folder) picks it from the listing, so the same
    # limit lists the same images; any other set is loaded whole and matched by id.
    limit = None
    if spec.limits_itself and cfg.train_size is not None:
        limit = cfg.test_size + cfg.train_size
    source = load(cfg, side, "train", limit=limit, keep_aspect=True)
    row = {image_id: i for i, image_id in enumerate(source.ids)}
    missing = [image_id for image_id in train.ids if image_id not in row]
    if missing:
        raise VinyError(
            f"{cfg.dataset}: {len(missing)} training image(s) have no aspect-kept copy for the crops "
            f"(first: {missing[0]}); delete the dataset's cache entries and run again"
        )
    return source.subset([row[image_id] for image_id in train.ids])


def held_out_size(dataset: str, test_size: int, num_images: int) -> int:
    """Test images held out of ``dataset``: ``test_size`` under the "fixed" rule (the segmentation
    sets: the study's fixed 1000), at most a fifth of the images for any other set."""
    return test_size if dataset_spec(dataset).held_out == "fixed" else min(test_size, num_images // 5)


def _folder(cfg: TrainConfig) -> str | None:
    """The folder a real dataset is read from (--data-root or VINY_DATA_ROOT), None for an embedded one."""
    return None if dataset_spec(cfg.dataset).embedded else str(resolve_data_root(cfg.dataset, cfg.data_root))


def fixed_split(
    dataset: str, full: ImageSet, test_size: int, split_seed: int, folder: str | None = None
) -> Split:
    """The split of the loaded ``full`` set of ``dataset``: ``held_out_size`` test images keyed by image
    identity under ``split_seed``, the rest the pool (its unreadable images taking their places).
    A set too small to hold out one test image is a VinyError naming ``folder`` (its data root)."""
    listed = len(full) + len(full.skipped)
    held = held_out_size(dataset, test_size, listed)
    if held == 0 and test_size >= 1:
        named = f"{dataset} '{folder}'" if folder else dataset
        raise VinyError(
            f"{named} has {listed} image(s), too few to hold out a test image: a fifth of them is held "
            "out, so it needs at least 5; add images"
        )
    return make_split(full.ids, held, split_seed, full.skipped)


def provenance(cfg: TrainConfig, full: ImageSet, split: Split | None, train: ImageSet, test) -> dict:
    """What data.json records about a stage's images: sizes, the split seed, digests of the train
    and test ids, and the names of images that could not be read."""
    return {
        "dataset": cfg.dataset,
        "images_in_dataset": len(full) + len(full.skipped),
        "train": len(train),
        "test": len(test) if test is not None else 0,
        "split_seed": cfg.split_seed,
        "test_size": split.test_size if split is not None else (len(test) if test is not None else 0),
        "train_ids_sha256": ids_digest(train.ids),
        "test_ids_sha256": ids_digest(test.ids) if test is not None else None,
        "skipped": list(full.skipped),
        **_notes(cfg.dataset),
    }


def _notes(dataset: str) -> dict:
    notes = dataset_spec(dataset).notes
    said = notes() if notes else []
    return {"notes": said} if said else {}


def train_test(cfg: TrainConfig, size: int, need_test: bool = True) -> tuple[ImageSet, ImageSet | None, dict]:
    """The training subset and the held-out set of ``cfg.dataset`` for this run, plus provenance.

    Segmentation datasets use the fixed test set of the split seed (``--test-size``, default 1000) and
    nested training subsets (``--train-size``, default: the whole non-test pool). Intel uses seg_train
    and seg_test. Other sets get a held-out part of at most a fifth of the images.
    """
    if dataset_spec(cfg.dataset).held_out == "own":
        full = load(cfg, size, "train")
        test = load(cfg, size, "test") if need_test else None
        split = make_split(full.ids, 0, cfg.split_seed, full.skipped)
        n = cfg.train_size if cfg.train_size is not None else len(split.pool)
        if n > len(split.pool):
            raise VinyError(
                f"--train-size {cfg.train_size}: {cfg.dataset} has only {len(split.pool)} training images"
            )
        train = full.subset(split.train(n))
        info = provenance(cfg, full, None, train, test)
        if test is not None:
            info["skipped"] = info["skipped"] + list(test.skipped)
        return train, test, info

    full = load(cfg, size, "train")
    split = fixed_split(cfg.dataset, full, cfg.test_size, cfg.split_seed, _folder(cfg))
    train = full.subset(split.train(cfg.train_size if cfg.train_size is not None else len(split.pool)))
    test = full.subset(split.test)
    return train, test, provenance(cfg, full, split, train, test)


def test_set(cfg: TrainConfig, size: int) -> ImageSet:
    """The fixed test images of ``cfg.dataset`` for ``cfg.split_seed`` (what ``train_test`` evaluates
    on), without building a training subset."""
    if dataset_spec(cfg.dataset).held_out == "own":
        return load(cfg, size, "test")
    full = load(cfg, size, "train")
    return full.subset(fixed_split(cfg.dataset, full, cfg.test_size, cfg.split_seed, _folder(cfg)).test)


def unlabeled(cfg: TrainConfig, size: int) -> tuple[ImageSet, ImageSet, dict]:
    """Pre-training images and held-out images (for the reconstruction loss), plus provenance.

    A segmentation dataset gives its non-test pool and its fixed test set. The embedded toy-unlabeled
    stream gives its first ``--train-size`` images and a separate held-out stream. An ImageNet-style
    folder is ordered by the split seed: its first ``--test-size`` images (at most a fifth) are held
    out, the next ``--train-size`` are the training subset; only those are decoded.
    """
    spec = dataset_spec(cfg.dataset)
    if spec.held_out == "fixed" or spec.fixed_size is not None:
        return train_test(cfg, size)
    if spec.held_out == "stream":
        n = cfg.train_size if cfg.train_size is not None else spec.size
        held = cfg.test_size  # the same held-out images whatever the training size
        if spec.max_size is not None and n + held > spec.max_size:
            raise VinyError(
                f"--train-size {n}: the embedded {cfg.dataset} stream is capped at {spec.max_size} images"
            )
        train = load_dataset(cfg.dataset, size=size, limit=n, seed=cfg.split_seed)
        test = load_dataset(cfg.dataset, size=size, limit=held, seed=HELD_OUT_STREAM + cfg.split_seed)
        info = provenance(cfg, train, None, train, test)
        info.update(images_in_dataset=None, test_size=held, stream_seed=cfg.split_seed)
        return train, test, info
    wanted = None if cfg.train_size is None else cfg.test_size + cfg.train_size
    full = load(cfg, size, "train", limit=wanted)
    split = fixed_split(cfg.dataset, full, cfg.test_size, cfg.split_seed, _folder(cfg))
    n = len(split.pool) if cfg.train_size is None else min(cfg.train_size, len(split.pool))
    if cfg.train_size is not None and n + len(split.skipped_pool) < cfg.train_size:
        raise VinyError(
            f"--train-size {cfg.train_size}: {cfg.dataset} has only {split.num_images} images, "
            f"{split.test_size} of them held out"
        )
    # Fewer than --train-size remain only when listed images could not be read: each skipped image
    # removes only itself (data.json names them).
    train = full.subset(split.pool[:n])
    test = full.subset(split.test)
    return train, test, provenance(cfg, full, split, train, test)
