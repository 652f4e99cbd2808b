"""Any segmentation dataset laid out as ``images/<id>.<ext>`` + ``masks/<id>.png``, with a declared value map.

The masks' values mean what a ``MaskClasses`` says (any number of classes, ignore values); they are
decoded through it into class indices and cached like Oxford's trimaps, so every trimap diagnostic
(the probe, kNN, Fig 6's references, patch labels) runs on such a set with its own class names.

Two ways to use it: register a dataset whose value map is written in code
(``mask_folder_dataset("my-set", MaskClasses(...))``, what a plugin does), or point the built-in
``mask-folder`` dataset at a folder that declares its map in ``classes.json``::

    {"names": ["sky", "tree", "road"], "values": {"0": 0, "1": 1, "2": 2}, "ignore": [255],
     "background": 0}
"""

from __future__ import annotations

import json
from pathlib import Path

from viny_probe.data.base import ImageSet, MaskClasses
from viny_probe.data.cache import DecodeOptions, Sample, decode_cached
from viny_probe.data.folder import first_by_key, image_id, scan_images
from viny_probe.data.spec import DatasetSpec, register_dataset
from viny_probe.errors import VinyError

CLASSES_FILE = "classes.json"
LAYOUT = (
    "a mask dataset folder holding images/<id>.jpg (or .png, ...) and masks/<id>.png, one mask per image "
    "with the same <id>"
)


def read_classes_file(folder: Path) -> MaskClasses:
    """The ``MaskClasses`` declared in ``folder/classes.json``; a VinyError naming the file otherwise."""
    path = folder / CLASSES_FILE
    example = '{"names": ["a", "b"], "values": {"0": 0, "1": 1}, "ignore": [255]}'
    if not path.is_file():
        raise VinyError(f"no {path}: the mask-folder dataset reads its value map from it, e.g. {example}")
    try:
        return MaskClasses.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise VinyError(f"{path}: {err}; write the value map as {example}") from None


def load_mask_folder(
    root: str | Path,
    mask_classes: MaskClasses | None = None,
    *,
    name: str = "mask-folder",
    size: int = 128,
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    decoding: DecodeOptions = DecodeOptions(),
) -> ImageSet:
    """Images ``(N, 3, S, S)`` and masks ``(N, S, S)`` (class indices of ``mask_classes``, ``IGNORE`` for
    an ignore value) of a folder holding ``images/`` and ``masks/``; ``mask_classes`` None reads
    ``classes.json`` in the folder. ``limit`` images chosen by ``seed`` (split order, keyed by id); an
    image without its mask or with an undeclared mask value is left out (``decoding.on_error`` "skip")
    or stops the load ("fail"). Decoded once, then cached; ``decoding`` as ``decode_cached``."""
    folder = Path(root).expanduser()
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        raise VinyError(f"no images/ and masks/ folders in '{folder}'. Expected {LAYOUT}")
    folder = folder.resolve()
    classes = read_classes_file(folder) if mask_classes is None else mask_classes
    files = scan_images(folder / "images").files
    if not files:
        raise VinyError(f"no image files in '{folder / 'images'}'. Expected {LAYOUT}")
    chosen = [files[i] for i in first_by_key([image_id(f) for f in files], limit, seed)]
    samples = [
        Sample(image=folder / "images" / f, id=image_id(f), mask=folder / "masks" / f"{image_id(f)}.png")
        for f in chosen
    ]
    return decode_cached(
        samples,
        name=name,
        size=size,
        class_names=[],
        decoding=decoding,
        cache_dir=cache_dir,
        key={"root": str(folder), "limit": limit, "seed": seed, "listed": len(files)},
        mask_classes=classes,
    )


def mask_folder_dataset(
    name: str,
    mask_classes: MaskClasses | None,
    description: str,
    *,
    folder: str | None = None,
    held_out: str = "fifth",
    size: int | None = None,
) -> DatasetSpec:
    """A ``DatasetSpec`` for a mask folder with this value map (None: the folder's classes.json), to
    pass to ``register_dataset``."""

    def load(root, *, size, limit, seed, on_error, cache_dir, workers, **decoding):
        return load_mask_folder(
            root,
            mask_classes,
            name=name,
            size=size,
            limit=limit,
            seed=seed,
            cache_dir=cache_dir,
            decoding=DecodeOptions.from_loader(on_error, workers, decoding),
        )

    return DatasetSpec(
        name=name,
        load=load,
        description=description,
        targets="trimaps",
        held_out=held_out,
        size=size,
        folder=folder or name,
        limits_itself=True,
        masks=mask_classes,
    )


register_dataset(
    mask_folder_dataset(
        "mask-folder",
        None,
        "any images/ + masks/ folder; its classes.json declares the mask values (names, values, ignore)",
    )
)
