"""Datasets by name: real folders (decoded once, cached) and embedded synthetic sets.

``load_dataset(name, ...)`` is the one entry point the trainers and the CLI use; every dataset comes
back as an ``ImageSet`` of (N, 3, S, S) uint8 images.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError

DATA_ROOT_ENV = "VINY_DATA_ROOT"

# Real datasets, and the folder name each is looked for under a shared data root.
REAL_DATASETS = {
    "pets": "oxford-iiit-pet",
    "intel": "intel-image-classification",
    "imagenet": "imagenet",
    "folder": None,
}

# --- Embedded synthetic datasets: registration hook ----------------------------------------------
# They live in viny_probe/data/synthetic.py (owned by the synthetic-data engineer) and are imported
# lazily, so this module works before or without that file. To register another one, add
# "name": "function" here; the function is called as function(n, size, seed) -> ImageSet, where
# n = load_dataset's ``limit`` (or DEFAULT_SYNTHETIC_SIZE) and seed = its ``seed``.
SYNTHETIC_MODULE = "viny_probe.data.synthetic"
SYNTHETIC_DATASETS = {
    "toy-pets": "synthetic_pets",
    "toy-scenes": "synthetic_scenes",
    "toy-unlabeled": "synthetic_unlabeled",
}
DEFAULT_SYNTHETIC_SIZE = 1500
# --------------------------------------------------------------------------------------------------

DATASETS: tuple[str, ...] = (*REAL_DATASETS, *SYNTHETIC_DATASETS)

_SPLITS = ("train", "test")


def resolve_data_root(name: str, data_root: str | Path | None = None) -> Path:
    """Where dataset ``name`` lives: ``data_root``, else ``$VINY_DATA_ROOT``.

    Either may point at the dataset folder itself or at a parent holding ``oxford-iiit-pet/``,
    ``intel-image-classification/``, ``imagenet/``; the loaders accept both for pets and intel, and
    for imagenet the ``imagenet/`` child is picked here.
    """
    chosen = data_root or os.environ.get(DATA_ROOT_ENV)
    if not chosen:
        raise VinyError(
            f"dataset '{name}' needs its folder: pass --data-root PATH (data_root= in Python) or set "
            f"{DATA_ROOT_ENV}=PATH, pointing at the dataset folder or at a parent folder holding "
            "oxford-iiit-pet/, intel-image-classification/, imagenet/. The embedded datasets "
            f"({', '.join(SYNTHETIC_DATASETS)}) need no download."
        )
    root = Path(chosen).expanduser()
    child = REAL_DATASETS.get(name)
    if name == "imagenet" and child and (root / child).is_dir() and not (root / "train").is_dir():
        return root / child
    return root


def _load_synthetic(name: str, size: int, limit: int | None, seed: int, cache_dir=None) -> ImageSet:
    """Generate an embedded set once per machine and keep it in the decode cache (memory-mapped .npy),
    so later runs and every process of a sweep read it instead of generating it again."""
    import numpy as np

    from viny_probe.data.cache import cached_imageset, write_meta

    try:
        module = importlib.import_module(SYNTHETIC_MODULE)
    except ImportError as err:
        raise VinyError(f"the embedded dataset '{name}' is not available in this install ({err})") from err
    n = limit or DEFAULT_SYNTHETIC_SIZE
    generate = getattr(module, SYNTHETIC_DATASETS[name])
    # The generator's own source is part of the key: editing it can never serve stale images.
    here = Path(getattr(module, "__file__", None) or __file__).parent
    code = hashlib.sha256(
        b"".join(
            p.read_bytes() for p in sorted(here.glob("*.py")) if p.name in ("synthetic.py", "_textures.py")
        )
    )
    key = {"name": name, "size": size, "n": n, "seed": seed, "generator": code.hexdigest()[:16]}

    def build(folder: Path) -> None:
        data = generate(n, size, seed)
        np.save(folder / "images.npy", data.images.numpy())
        if data.labels is not None:
            np.save(folder / "labels.npy", data.labels.numpy())
        if data.masks is not None:
            np.save(folder / "masks.npy", data.masks.numpy())
        write_meta(folder, name=data.name, class_names=data.class_names, ids=data.ids)

    dataset, _ = cached_imageset(key, build, cache_dir)
    return dataset


def _seeded_limit(dataset: ImageSet, limit: int | None, seed: int) -> ImageSet:
    """At most ``limit`` images of a fully loaded set, chosen like load_image_folder chooses them."""
    from viny_probe.data.folder import first_by_key

    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.subset(first_by_key(dataset.ids, limit, seed))


def load_dataset(
    name: str,
    *,
    size: int = 128,
    data_root: str | Path | None = None,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    on_error: str = "skip",
    cache_dir: str | Path | None = None,
    workers: int = 0,
) -> ImageSet:
    """Dataset ``name`` (one of DATASETS) at ``size`` x ``size``: images (N, 3, S, S) uint8.

    ``split`` is "train" or "test" for intel (seg_train / seg_test); pets is the pooled trainval + test
    (its test set comes from viny_probe.data.protocol) and the other sets have one split only.
    ``limit`` caps the number of images, chosen by ``seed`` (for imagenet/folder only that subset is
    decoded); for the embedded sets it is the number generated. Real datasets are decoded once and
    cached under ``cache_dir`` (else $VINY_CACHE_DIR, else ~/.cache/viny); ``on_error`` says whether an
    unreadable image is skipped with a warning or stops the load.
    """
    if name in SYNTHETIC_DATASETS:
        return _load_synthetic(name, size, limit, seed, cache_dir)
    if name not in REAL_DATASETS:
        raise VinyError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if split not in _SPLITS or (split == "test" and name != "intel"):
        raise VinyError(
            f"split {split!r} is not available for '{name}': only intel has a 'test' split (seg_test). "
            "Pets' held-out set comes from the split protocol (viny_probe.data.protocol.make_split)."
        )
    root = resolve_data_root(name, data_root)
    if name == "pets":
        from viny_probe.data.pets import load_pets

        dataset = load_pets(root, size=size, on_error=on_error, cache_dir=cache_dir, workers=workers)
    elif name == "intel":
        from viny_probe.data.intel import load_intel

        dataset = load_intel(
            root, size=size, split=split, on_error=on_error, cache_dir=cache_dir, workers=workers
        )
    else:
        from viny_probe.data.folder import load_image_folder

        return load_image_folder(
            root,
            size=size,
            limit=limit,
            seed=seed,
            on_error=on_error,
            cache_dir=cache_dir,
            workers=workers,
            name=name,
        )
    return _seeded_limit(dataset, limit, seed)
