"""ImageNet-1K (``train/<wnid>/*.JPEG``) or any folder of images, cut to a seeded subset.

Only the subset is decoded (and stat-ed for the cache key); the rest of a 1.28M-file tree is only listed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from viny_probe.data.base import ImageSet
from viny_probe.data.cache import Sample, check_on_error, decode_cached
from viny_probe.data.decode import IMAGE_EXTENSIONS
from viny_probe.data.protocol import split_order
from viny_probe.data.spec import DatasetSpec, register_dataset
from viny_probe.errors import VinyError

_WNID = re.compile(r"n\d{8}")
_EXTENSIONS = ", ".join(sorted(IMAGE_EXTENSIONS))


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def list_images(folder: Path, recursive: bool = True) -> list[str]:
    """Paths of image files under ``folder``, relative to it, in POSIX form, sorted.

    Uses ``os.scandir`` so that file types come from the directory listing, not one stat per file.
    Hidden files and folders (leading '.') are ignored.
    """
    found: list[str] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(folder / relative) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir():
                    if recursive:
                        pending.append(path)
                elif is_image_file(entry.name):
                    found.append(path)
    found.sort()
    return found


def first_by_key(ids: list[str], limit: int | None, seed: int) -> list[int]:
    """Indices of the first ``limit`` of ``ids`` in split order for split seed ``seed`` (all of them
    if limit is None). The order comes from each id and the seed alone (data.protocol.split_key), so
    a smaller limit gives a prefix of a bigger one and no file's position in the listing matters."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise VinyError(f"limit must be a positive number of images, got {limit!r}")
    order = split_order(ids, seed)
    return order if limit is None else order[:limit]


def find_image_tree(root: str | Path) -> Path:
    """The folder to list: ``root/train`` when it exists (an ImageNet folder), else ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise VinyError(
            f"no such folder '{root}'. Expected an ImageNet-1K folder holding train/<wnid>/*.JPEG, its "
            f"train/ folder itself, or any folder with images ({_EXTENSIONS}) in it or below it."
        )
    return (root / "train").resolve() if (root / "train").is_dir() else root.resolve()


def image_id(path: str) -> str:
    """An image's identity in a folder dataset: its path below the folder, without the extension."""
    return path.rsplit(".", 1)[0]


def class_layout(files: list[str]) -> list[str] | None:
    """Sorted class names when every image sits exactly one folder deep (``<class>/<file>``), else None."""
    if not files or any(path.count("/") != 1 for path in files):
        return None
    return sorted({path.split("/", 1)[0] for path in files})


def load_image_folder(
    root: str | Path,
    size: int = 128,
    limit: int | None = None,
    seed: int = 0,
    on_error: str = "skip",
    cache_dir: str | Path | None = None,
    name: str | None = None,
    workers: int = 0,
) -> ImageSet:
    """``limit`` images from a folder tree, chosen by split seed ``seed`` (the first ``limit`` in split
    order, keyed by each file's path), as (N, 3, S, S) uint8 (N = limit or all).

    In class-folder layout (ImageNet's ``train/<wnid>/*.JPEG``), labels (N,) index the sorted class
    folders; otherwise labels are None. Images come in the seeded order, so ``limit=k`` gives the first
    k of ``limit=2k``. Unreadable images are left out (``on_error="skip"``, fewer than ``limit`` remain)
    or raise (``"fail"``). ``name`` defaults to "imagenet" for WordNet-id class folders, else "folder".
    """
    check_on_error(on_error)
    tree = find_image_tree(root)
    files = list_images(tree)
    if not files:
        raise VinyError(
            f"no image files ({_EXTENSIONS}) in '{tree}' or its subfolders. Expected an ImageNet-1K folder "
            "holding train/<wnid>/*.JPEG, or any folder with images in it or below it."
        )
    classes = class_layout(files)
    if name is None:
        name = "imagenet" if classes and all(_WNID.fullmatch(c) for c in classes) else "folder"
    class_index = {c: i for i, c in enumerate(classes or [])}
    chosen = [files[i] for i in first_by_key([image_id(path) for path in files], limit, seed)]
    samples = [
        Sample(
            image=tree / path,
            id=image_id(path),
            label=class_index[path.split("/", 1)[0]] if classes else None,
        )
        for path in chosen
    ]
    return decode_cached(
        samples,
        name=name,
        size=size,
        class_names=classes or [],
        on_error=on_error,
        cache_dir=cache_dir,
        workers=workers,
        key={"root": str(tree), "limit": limit, "seed": seed, "listed": len(files)},
    )


def _loader(name: str):
    def load(root, *, size, limit, seed, on_error, cache_dir, workers, **_):
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

    return load


register_dataset(
    DatasetSpec(
        name="imagenet",
        load=_loader("imagenet"),
        description="ImageNet-1K train/<wnid>/*.JPEG; only the requested subset is decoded",
        targets="classes",
        folder="imagenet",
        stand_in="toy-unlabeled",
        limits_itself=True,
    )
)
register_dataset(
    DatasetSpec(
        name="folder",
        load=_loader("folder"),
        description="any folder of images (class subfolders give labels)",
        limits_itself=True,
    )
)
