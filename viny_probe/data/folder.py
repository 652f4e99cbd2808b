"""ImageNet-1K (``train/<wnid>/*.JPEG``) or any folder of images, cut to a seeded subset.

Only the subset is decoded (and stat-ed for the cache key); the rest of a 1.28M-file tree is only listed.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from viny_probe.data.base import ImageSet
from viny_probe.data.cache import DecodeOptions, Sample, decode_cached
from viny_probe.data.decode import IMAGE_EXTENSIONS
from viny_probe.data.protocol import split_order
from viny_probe.data.spec import DatasetSpec, register_dataset
from viny_probe.errors import VinyError, VinyWarning

_WNID = re.compile(r"n\d{8}")
_EXTENSIONS = ", ".join(sorted(IMAGE_EXTENSIONS))


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


class LinkedImagesWarning(VinyWarning):
    """Images or folders reached twice through symbolic links were listed once (or a link loop was cut)."""


@dataclass
class ImageListing:
    """What ``scan_images`` found: ``files`` (relative POSIX paths, sorted, each file once) and
    ``dropped`` (relative paths left out, each with why: another name of a file or folder already
    listed, or a link back into a folder above it)."""

    files: list[str]
    dropped: list[tuple[str, str]] = field(default_factory=list)


def scan_images(folder: Path, recursive: bool = True) -> ImageListing:
    """The image files under ``folder``, each file once however many names reach it.

    Uses ``os.scandir``, so that file types come from the directory listing, not one stat per file;
    only symbolic links are resolved. A linked folder whose target lies inside ``folder`` is not
    entered (its files are listed under their own names, so a link ``b -> a`` does not count ``a``
    twice, and a link to a folder above it cannot loop); a linked folder outside ``folder`` is entered
    once, however many links lead to it. A linked file whose target is listed under another name is
    left out. Hidden files and folders (leading '.') are ignored.
    """
    top = os.path.realpath(folder)
    inside = top + os.sep

    def reached_plainly(real: str) -> bool:  # the walk reaches it without a link (not hidden, inside)
        relative = os.path.relpath(real, top)
        return (real == top or real.startswith(inside)) and not any(
            part.startswith(".") for part in relative.split(os.sep)
        )

    candidates: dict[str, list[tuple[bool, str]]] = {}  # real file -> [(through a link, relative path)]
    dropped: list[tuple[str, str]] = []
    entered = {top}
    pending = [("", top, False)]  # (relative path, real path, reached through a link)
    while pending:
        relative, real_dir, linked = pending.pop()
        with os.scandir(os.path.join(folder, relative) if relative else folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = f"{relative}/{entry.name}" if relative else entry.name
            link = entry.is_symlink()
            real = os.path.realpath(entry.path) if link else os.path.join(real_dir, entry.name)
            try:
                is_dir = entry.is_dir()
            except OSError as err:  # a link to itself, or in a ring of links
                dropped.append((path, f"a link that leads nowhere ({err.strerror})"))
                continue
            if is_dir:
                if not recursive:
                    continue
                if link and reached_plainly(real):
                    dropped.append((path, f"a link to {os.path.relpath(real, top)}, listed under that name"))
                elif real in entered:
                    dropped.append((path, "a link to a folder listed under another name (or a loop)"))
                else:
                    entered.add(real)
                    pending.append((path, real, linked or link))
            elif is_image_file(entry.name):
                candidates.setdefault(real, []).append((link or linked, path))
    found = []
    for names in candidates.values():
        names.sort()  # a name reached without a link first, then by path
        found.append(names[0][1])
        dropped += [(path, f"another name of {names[0][1]}") for _, path in names[1:]]
    found.sort()
    return ImageListing(found, sorted(dropped))


def list_images(folder: Path, recursive: bool = True) -> list[str]:
    """Paths of image files under ``folder``, relative to it, in POSIX form, sorted, each file once
    (``scan_images``, which also says what it left out)."""
    return scan_images(folder, recursive).files


def warn_dropped(folder: Path, listing: ImageListing) -> None:
    """A LinkedImagesWarning naming what ``scan_images`` left out of ``folder``, if anything."""
    if not listing.dropped:
        return
    named = "; ".join(f"{path} ({why})" for path, why in listing.dropped[:3])
    more = f"; and {len(listing.dropped) - 3} more" if len(listing.dropped) > 3 else ""
    warnings.warn(
        f"{folder}: {len(listing.dropped)} symbolic link(s) lead to images or folders listed already, "
        f"each counted once: {named}{more}",
        LinkedImagesWarning,
        stacklevel=3,
    )


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
    cache_dir: str | Path | None = None,
    name: str | None = None,
    decoding: DecodeOptions = DecodeOptions(),
) -> ImageSet:
    """``limit`` images from a folder tree, chosen by split seed ``seed`` (the first ``limit`` in split
    order, keyed by each file's path), as (N, 3, S, S) uint8 (N = limit or all).

    In class-folder layout (ImageNet's ``train/<wnid>/*.JPEG``), labels (N,) index the sorted class
    folders; otherwise labels are None. Images come in the seeded order, so ``limit=k`` gives the first
    k of ``limit=2k``. Unreadable images are left out (``decoding.on_error`` "skip", fewer than
    ``limit`` remain) or raise ("fail"). ``name`` defaults to "imagenet" for WordNet-id class folders,
    else "folder". ``decoding`` as ``decode_cached``.
    """
    tree = find_image_tree(root)
    listing = scan_images(tree)
    warn_dropped(tree, listing)
    files = listing.files
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
        decoding=decoding,
        cache_dir=cache_dir,
        key={"root": str(tree), "limit": limit, "seed": seed, "listed": len(files)},
    )


def _loader(name: str):
    def load(root, *, size, limit, seed, on_error, cache_dir, workers, **decoding):
        return load_image_folder(
            root,
            size=size,
            limit=limit,
            seed=seed,
            cache_dir=cache_dir,
            name=name,
            decoding=DecodeOptions.from_loader(on_error, workers, decoding),
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
