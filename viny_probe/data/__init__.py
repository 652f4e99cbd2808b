"""Datasets by name: real folders (decoded once, cached) and embedded synthetic sets.

``load_dataset(name, ...)`` is the one entry point the trainers and the CLI use; every dataset comes
back as an ``ImageSet`` of (N, 3, S, S) uint8 images.
"""

from __future__ import annotations

import os
from pathlib import Path

# Registration of the built-in datasets: each module registers its own DatasetSpec.
from viny_probe.data import (  # noqa: E402, F401, I001  (listing order)
    embedded,
    folder,
    intel,
    masks,  # noqa: E402, F401, I001  (listed after the study's sets)
    pets,
)
from viny_probe.data.base import ImageSet
from viny_probe.data.cache import DecodeOptions
from viny_probe.data.spec import DatasetSpec, dataset_names, dataset_spec, register_dataset
from viny_probe.errors import VinyError
from viny_probe.registry import DATASETS

DATA_ROOT_ENV = "VINY_DATA_ROOT"
_SPLITS = ("train", "test")


def resolve_data_root(name: str, data_root: str | Path | None = None) -> Path:
    """Where dataset ``name`` lives: ``data_root``, else ``$VINY_DATA_ROOT``.

    Either may point at the dataset folder itself or at a parent holding the dataset's folder
    (``DatasetSpec.folder``: ``oxford-iiit-pet/``, ``intel-image-classification/``, ``imagenet/``).
    """
    spec = dataset_spec(name)
    chosen = data_root or os.environ.get(DATA_ROOT_ENV)
    if not chosen:
        folders = ", ".join(f"{s.folder}/" for s in DATASETS.values() if s.folder)
        raise VinyError(
            f"dataset '{name}' needs its folder: pass --data-root PATH (data_root= in Python) or set "
            f"{DATA_ROOT_ENV}=PATH, pointing at the dataset folder or at a parent folder holding "
            f"{folders}. The embedded datasets ({', '.join(dataset_names(embedded=True))}) need no download."
        )
    root = Path(chosen).expanduser()
    if spec.folder and (root / spec.folder).is_dir() and not (root / "train").is_dir():
        return root / spec.folder
    return root


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
    cache_dir: str | Path | None = None,
    decoding: DecodeOptions = DecodeOptions(),
) -> ImageSet:
    """Dataset ``name`` (registered in ``viny_probe.registry.DATASETS``) at ``size`` x ``size``: images (N, 3, S, S) uint8.

    ``split`` is "train" or "test" for intel (seg_train / seg_test); pets is the pooled trainval + test
    (its test set comes from viny_probe.data.protocol) and the other sets have one split only.
    ``limit`` caps the number of images, chosen by ``seed`` (for imagenet/folder only that subset is
    decoded); for the embedded sets it is the number generated. Real datasets are decoded once and
    cached under ``cache_dir`` (else $VINY_CACHE_DIR, else ~/.cache/viny).

    ``decoding`` (``cache.DecodeOptions``): the image filter (``resize``), aspect-kept images
    (``keep_aspect``), decoding threads (``workers``) and whether an unreadable image is skipped with a
    warning or stops the load (``on_error``). A real dataset's loader gets them as keywords
    (``DecodeOptions.loader_keywords``: resize and keep_aspect only when they differ from the
    defaults); the embedded sets are generated at ``size`` and ignore them (nothing is resized).
    """
    spec = dataset_spec(name)
    if split not in _SPLITS or (split == "test" and spec.held_out != "own"):
        raise VinyError(
            f"split {split!r} is not available for '{name}': only "
            f"{', '.join(s.name for s in DATASETS.values() if s.held_out == 'own')} has a 'test' split. "
            "Other held-out sets come from the split protocol (viny_probe.data.protocol.make_split)."
        )
    root = None if spec.embedded else resolve_data_root(name, data_root)
    dataset = spec.load(
        root,
        size=size,
        split=split,
        limit=limit,
        seed=seed,
        cache_dir=cache_dir,
        **decoding.loader_keywords(),
    )
    if spec.embedded or spec.limits_itself:
        return dataset
    return _seeded_limit(dataset, limit, seed)


__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DecodeOptions",
    "ImageSet",
    "dataset_names",
    "dataset_spec",
    "load_dataset",
    "register_dataset",
    "resolve_data_root",
]
